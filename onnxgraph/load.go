// Package onnxgraph reads ONNX models, finds the attention in them and rewrites them so
// that every attention layer's probabilities become graph outputs. It is pure Go: it never
// runs a model and never writes to the user's file.
package onnxgraph

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Model is an ONNX model: its structure, decoded, and a compact encoding of it that
// onnxruntime can load without the weights ever passing through Go memory.
//
// A model loaded from a file keeps no weights in memory: in its compact encoding every
// initializer stored as raw_data becomes an external-data reference to its own bytes
// inside the original file (location = the file's name, offset, length), which
// onnxruntime reads when it creates a session from that folder. Loading a 650 MB model
// maps the file and touches only the pages that hold field headers.
type Model struct {
	// Path is the file the model was read from ("" when parsed from memory).
	Path string
	// Size is the model's size in bytes.
	Size int64
	// Proto is the structural view. Initializers keep name, type, dims and external-data
	// references; raw_data payloads are not in it.
	Proto *pb.ModelProto
	// compact is the encoding Expose builds on: the original bytes for a model parsed
	// from memory, the externalised encoding for a model loaded from a file.
	compact []byte
	// inMemory is true when compact holds the whole model (Parse).
	inMemory bool
	// dataDir is the real folder of the model's data files (see DataDir); "" for Parse.
	dataDir string
	// parts are the files of a model joined from two (JoinEncoderDecoder); nil otherwise.
	parts []string
	// whole builds a joined model's whole bytes (weights inline) for ReadAll; nil otherwise.
	whole func() ([]byte, error)
}

// Dir is the folder the model file is in (as the path to it names it, symbolic links
// not followed), against which the model's external-data locations are written; "." for
// a model parsed from memory. onnxruntime is given DataDir instead.
func (m *Model) Dir() string {
	if m.Path == "" {
		return "."
	}
	return filepath.Dir(m.Path)
}

// Graph is the model's main graph.
func (m *Model) Graph() *pb.GraphProto { return m.Proto.GetGraph() }

// Load reads the ONNX model at path. It fails with a one-sentence error when the file is
// missing, is not an ONNX model, is truncated, or names an external-data file that does
// not exist beside it or that onnxruntime would refuse (an absolute location, one that
// leaves the model's folder, a set of files that symbolic links scatter over several
// folders; a *ExternalDataError). The model file and the data files named directly in its
// folder may be symbolic links, as in a Hugging Face cache (snapshots/<rev>/model.onnx →
// ../../blobs/<hash>): RuntimeBytes and Expose then name the files the links resolve to,
// in DataDir. The file is never written to.
func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("model file %s does not exist", path)
		}
		return nil, fmt.Errorf("cannot read model file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read model file: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a folder; give the .onnx file inside it", path)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("%s: the file is empty, not an ONNX model", path)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("cannot map model file %s: %w", path, err)
	}
	defer syscall.Munmap(data)
	compact, err := lighten(data, filepath.Base(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, notONNX(data, err))
	}
	m, err := fromCompact(compact)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Path, m.Size = path, st.Size()
	selfRef := false // does the compact encoding read weights from the model file itself?
	for _, t := range m.Graph().GetInitializer() {
		for _, e := range t.GetExternalData() {
			if e.GetKey() == "location" && e.GetValue() == filepath.Base(path) {
				selfRef = true
			}
		}
	}
	if err := m.resolveData(selfRef); err != nil {
		return nil, err
	}
	return m, nil
}

// Parse builds a Model from the bytes of an ONNX file held in memory (external-data
// locations then resolve against the working directory). data is kept, not copied.
func Parse(data []byte) (*Model, error) {
	if len(data) == 0 {
		return nil, errors.New("the file is empty, not an ONNX model")
	}
	if _, err := lighten(data, ""); err != nil {
		return nil, notONNX(data, err)
	}
	m, err := fromCompact(data)
	if err != nil {
		return nil, err
	}
	m.Size, m.inMemory = int64(len(data)), true
	return m, nil
}

// fromCompact decodes the structural view of a compact (or whole) encoding.
func fromCompact(compact []byte) (*Model, error) {
	stripped, err := lighten(compact, "")
	if err != nil {
		return nil, err
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(stripped, mp); err != nil {
		return nil, fmt.Errorf("not an ONNX model, or a truncated one (%v)", err)
	}
	if mp.GetIrVersion() <= 0 || mp.GetGraph() == nil || len(mp.GetGraph().GetNode()) == 0 {
		return nil, errors.New("not an ONNX model (no IR version or no graph with nodes); check that the file is a .onnx export")
	}
	return &Model{Proto: mp, compact: compact}, nil
}

// notONNX words a wire-format error: a file that does not even start like an ONNX model
// is "not an ONNX model"; one that does but breaks off is truncated.
func notONNX(data []byte, err error) error {
	// Every ONNX writer puts ir_version (field 1, a varint: tag 0x08) first.
	if len(data) > 0 && data[0] != 0x08 {
		return errors.New("not an ONNX model (the file is not protobuf); check that it is a .onnx export")
	}
	return err
}

// RuntimeBytes is the encoding of the unmodified model to hand onnxruntime, with DataDir
// as its external-data folder (see Model).
func (m *Model) RuntimeBytes() []byte { return m.compact }

// ReadAll returns the model file's whole bytes (or the in-memory bytes given to Parse).
func (m *Model) ReadAll() ([]byte, error) {
	if m.whole != nil {
		return m.whole()
	}
	if m.inMemory {
		return m.compact, nil
	}
	return os.ReadFile(m.Path)
}

// Decode fully decodes the model, initializer values included. Decoding and re-encoding
// is lossless: fields this schema does not name survive as unknown fields.
func (m *Model) Decode() (*pb.ModelProto, error) {
	data, err := m.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading model: %w", err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		return nil, fmt.Errorf("decoding model: %w", err)
	}
	return mp, nil
}

// ExternalDataFiles lists the external-data files the model's initializers name, as
// written in the model (relative to Dir); the references Load makes to the model's own
// file are not among them.
func (m *Model) ExternalDataFiles() []string {
	var files []string
	seen := map[string]bool{filepath.Base(m.Path): m.Path != ""}
	for _, p := range m.parts { // a joined model's files (see JoinEncoderDecoder)
		seen[filepath.Base(p)] = true
	}
	for _, t := range m.Graph().GetInitializer() {
		if t.GetDataLocation() != pb.TensorProto_EXTERNAL {
			continue
		}
		for _, e := range t.GetExternalData() {
			if e.GetKey() == "location" && !seen[e.GetValue()] {
				seen[e.GetValue()] = true
				files = append(files, e.GetValue())
			}
		}
	}
	return files
}

// Field numbers of the ONNX IR used by lighten.
const (
	modelGraphField        = 7
	graphInitializerField  = 5
	tensorRawDataField     = 9
	tensorExternalField    = 13
	tensorDataLocation     = 14
	entryKeyField          = 1
	entryValueField        = 2
	dataLocationExternal   = 1
	minExternalisedPayload = 1024
)

// tensor fields that hold values.
var tensorPayloadFields = map[protowire.Number]bool{4: true, 5: true, 6: true, 7: true, 9: true, 10: true, 11: true}

// lighten re-encodes an encoded ModelProto without the values of its main graph's
// initializers, walking the wire format instead of decoding, so that a 650 MB model costs
// a scan, not a second copy of its weights. With location == "" the values are dropped
// (a structural view); otherwise each raw_data payload of at least 1 KiB becomes an
// external-data reference to its offset in the file called location, and smaller or typed
// payloads are kept. Errors mean the bytes are not well-formed protobuf.
func lighten(data []byte, location string) ([]byte, error) {
	var out []byte
	err := eachField(data, func(num protowire.Number, typ protowire.Type, field, value []byte, at int) error {
		if num != modelGraphField || typ != protowire.BytesType {
			out = append(out, field...)
			return nil
		}
		graphStart := at + len(field) - len(value)
		var graph []byte
		err := eachField(value, func(num protowire.Number, typ protowire.Type, field, value []byte, at int) error {
			if num != graphInitializerField || typ != protowire.BytesType {
				graph = append(graph, field...)
				return nil
			}
			tensorStart := at + len(field) - len(value)
			tensor, err := lightenTensor(value, location, graphStart+tensorStart)
			if err != nil {
				return err
			}
			graph = protowire.AppendTag(graph, num, protowire.BytesType)
			graph = protowire.AppendBytes(graph, tensor)
			return nil
		})
		if err != nil {
			return err
		}
		out = protowire.AppendTag(out, num, protowire.BytesType)
		out = protowire.AppendBytes(out, graph)
		return nil
	})
	return out, err
}

// lightenTensor re-encodes one TensorProto (see lighten); base is the absolute offset of
// the tensor's first byte in the file.
func lightenTensor(t []byte, location string, base int) ([]byte, error) {
	var out []byte
	externalised := false
	err := eachField(t, func(num protowire.Number, typ protowire.Type, field, value []byte, at int) error {
		switch {
		case !tensorPayloadFields[num]:
			out = append(out, field...)
		case location == "":
		case num == tensorRawDataField && len(value) >= minExternalisedPayload:
			offset := base + at + len(field) - len(value)
			out = appendEntry(out, "location", location)
			out = appendEntry(out, "offset", strconv.Itoa(offset))
			out = appendEntry(out, "length", strconv.Itoa(len(value)))
			externalised = true
		default:
			out = append(out, field...)
		}
		return nil
	})
	if externalised {
		out = protowire.AppendTag(out, tensorDataLocation, protowire.VarintType)
		out = protowire.AppendVarint(out, dataLocationExternal)
	}
	return out, err
}

func appendEntry(b []byte, key, value string) []byte {
	var e []byte
	e = protowire.AppendTag(e, entryKeyField, protowire.BytesType)
	e = protowire.AppendString(e, key)
	e = protowire.AppendTag(e, entryValueField, protowire.BytesType)
	e = protowire.AppendString(e, value)
	b = protowire.AppendTag(b, tensorExternalField, protowire.BytesType)
	return protowire.AppendBytes(b, e)
}

// eachField calls fn for every top-level field of an encoded message with the field's
// number, wire type, whole encoding (tag included), value (for length-delimited fields)
// and the offset of the field within data.
func eachField(data []byte, fn func(num protowire.Number, typ protowire.Type, field, value []byte, at int) error) error {
	at := 0
	for at < len(data) {
		rest := data[at:]
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return corrupt(protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return corrupt(protowire.ParseError(m))
		}
		field := rest[:n+m]
		var value []byte
		if typ == protowire.BytesType {
			value, _ = protowire.ConsumeBytes(rest[n:])
		}
		if err := fn(num, typ, field, value, at); err != nil {
			return err
		}
		at += n + m
	}
	return nil
}

func corrupt(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the file ends in the middle of a record: it is truncated (re-download or re-export it)")
	}
	return fmt.Errorf("not an ONNX model, or a corrupt one (%v)", err)
}
