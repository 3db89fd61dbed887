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

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Model is an ONNX model as read from disk: its original bytes, untouched, and a decoded
// view of its structure in which initializers keep their name, type, shape and
// external-data reference but not their values. The view costs kilobytes even for a
// multi-gigabyte model; Decode gives the whole message when a rewrite needs it.
type Model struct {
	// Path is the file the model was read from ("" when parsed from memory).
	Path string
	// Bytes are the model file's bytes exactly as read.
	Bytes []byte
	// Proto is the structural view (initializer payloads stripped).
	Proto *pb.ModelProto
}

// Dir is the folder that relative external-data locations are resolved against.
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
// not exist beside it.
func Load(path string) (*Model, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("model file %s does not exist", path)
		}
		return nil, fmt.Errorf("cannot read model file: %w", err)
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Path = path
	if err := m.checkExternalData(); err != nil {
		return nil, err
	}
	return m, nil
}

// Parse builds a Model from the bytes of an ONNX file; see Load.
func Parse(data []byte) (*Model, error) {
	if len(data) == 0 {
		return nil, errors.New("the file is empty, not an ONNX model")
	}
	light, err := stripPayloads(data)
	if err != nil {
		// Every ONNX writer puts ir_version (field 1, a varint: tag 0x08) first; a file that
		// starts otherwise and does not parse is something else altogether.
		if data[0] != 0x08 {
			return nil, errors.New("not an ONNX model (the file is not protobuf); check that it is a .onnx export")
		}
		return nil, err
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(light, mp); err != nil {
		return nil, fmt.Errorf("not an ONNX model, or a truncated one (%v)", err)
	}
	if mp.GetIrVersion() <= 0 || mp.GetGraph() == nil || len(mp.GetGraph().GetNode()) == 0 {
		return nil, errors.New("not an ONNX model (no IR version or no graph with nodes); check that the file is a .onnx export")
	}
	return &Model{Bytes: data, Proto: mp}, nil
}

// Decode fully decodes the model's bytes, initializer payloads included. Decoding and
// re-encoding is lossless: fields this schema does not name survive as unknown fields.
func (m *Model) Decode() (*pb.ModelProto, error) {
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(m.Bytes, mp); err != nil {
		return nil, fmt.Errorf("decoding model: %w", err)
	}
	return mp, nil
}

// checkExternalData makes sure every external-data file named by an initializer exists.
func (m *Model) checkExternalData() error {
	seen := map[string]bool{}
	for _, t := range m.Graph().GetInitializer() {
		if t.GetDataLocation() != pb.TensorProto_EXTERNAL {
			continue
		}
		for _, e := range t.GetExternalData() {
			if e.GetKey() != "location" || seen[e.GetValue()] {
				continue
			}
			seen[e.GetValue()] = true
			p := filepath.Join(m.Dir(), e.GetValue())
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("the weights of %s live in the external-data file %s, which is missing; put it beside the model", filepath.Base(m.Path), p)
			}
		}
	}
	return nil
}

// Field numbers of the ONNX IR used by stripPayloads.
const (
	modelGraphField       = 7
	graphInitializerField = 5
)

// tensor fields that hold values; everything else in a TensorProto is kept.
var tensorPayloadFields = map[protowire.Number]bool{4: true, 5: true, 6: true, 7: true, 9: true, 10: true, 11: true}

// stripPayloads returns a copy of an encoded ModelProto whose graph initializers have no
// values. It walks the wire format instead of decoding, so a 650 MB model costs a scan,
// not a second copy of its weights. Errors mean the bytes are not well-formed protobuf.
func stripPayloads(data []byte) ([]byte, error) {
	var out []byte
	err := eachField(data, func(num protowire.Number, typ protowire.Type, field, value []byte) error {
		if num != modelGraphField || typ != protowire.BytesType {
			out = append(out, field...)
			return nil
		}
		var graph []byte
		err := eachField(value, func(num protowire.Number, typ protowire.Type, field, value []byte) error {
			if num != graphInitializerField || typ != protowire.BytesType {
				graph = append(graph, field...)
				return nil
			}
			var tensor []byte
			if err := eachField(value, func(num protowire.Number, _ protowire.Type, field, _ []byte) error {
				if !tensorPayloadFields[num] {
					tensor = append(tensor, field...)
				}
				return nil
			}); err != nil {
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

// eachField calls fn for every top-level field of an encoded message with the field's
// number, wire type, whole encoding (tag included) and, for length-delimited fields, value.
func eachField(data []byte, fn func(num protowire.Number, typ protowire.Type, field, value []byte) error) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return corrupt(protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, data[n:])
		if m < 0 {
			return corrupt(protowire.ParseError(m))
		}
		field := data[:n+m]
		var value []byte
		if typ == protowire.BytesType {
			value, _ = protowire.ConsumeBytes(data[n:])
		}
		if err := fn(num, typ, field, value); err != nil {
			return err
		}
		data = data[n+m:]
	}
	return nil
}

func corrupt(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the file ends in the middle of a record: it is truncated (re-download or re-export it)")
	}
	return fmt.Errorf("not an ONNX model, or a corrupt one (%v)", err)
}
