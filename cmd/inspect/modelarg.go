package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/npy"
	"github.com/attnscope/attnscope/modelfolder"
	"github.com/attnscope/attnscope/models"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// modelArgs accepts at most one MODEL: without one, the command uses the built-in demo.
func modelArgs(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 1 {
			return usagef("%s takes one MODEL, or none for the built-in demo model (see `%s --help`)", name, cmd.CommandPath())
		}
		return nil
	}
}

// firstArg is MODEL, or "" (the built-in demo) when none was given.
func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// loadModel loads MODEL: the built-in demo when path is "" (saying so on stderr), else the
// file or folder path names, resolved by package modelfolder with file (--file) picking
// one of a folder's models; which file was chosen, when there was a choice, and a split
// encoder–decoder's two files run as one are said on stderr. The resolution comes back
// too (its tokenizer and config.json), nil for the demo.
func loadModel(path, file string) (*onnxgraph.Model, *modelfolder.Model, error) {
	if path == "" {
		if file != "" {
			return nil, nil, usagef("--file picks a model inside a MODEL folder; give the folder")
		}
		demo, err := models.DemoPath()
		if err != nil {
			return nil, nil, fmt.Errorf("cannot unpack the built-in demo model: %w", err)
		}
		notice("no MODEL given: using the built-in demo model")
		m, err := onnxgraph.Load(demo)
		return m, nil, err
	}
	mf, err := modelfolder.Resolve(path, file)
	if err != nil {
		if file != "" && strings.HasPrefix(err.Error(), "--file") {
			return nil, nil, usageError{err}
		}
		return nil, nil, err
	}
	if n := mf.Notice(); n != "" {
		notice("%s", n)
	}
	m, err := modelfolder.Load(mf)
	if err != nil {
		return nil, nil, err
	}
	return m, mf, nil
}

// applyFolder completes what the session knows from the model's folder: config.json's
// vocabulary and positions (modelfolder.Config.Limits), and the tokenizer.json of a Hub
// layout, one folder above the model, unless --tokenizer names one.
func (f *runFlags) applyFolder(l *loaded, mf *modelfolder.Model) {
	if mf == nil {
		return
	}
	l.sess.Limits = mf.Config.Limits(l.sess.Limits)
	if f.tokenizer == "" && mf.Tokenizer != "" && filepath.Dir(mf.Tokenizer) != filepath.Dir(l.model.Path) {
		f.tokenizer = mf.Tokenizer
	}
}

// givenInputs reads the --input NAME=FILE.npy flags into tensors by input name. A flag
// without NAME=, a NAME given twice, a file that cannot be read or is not an .npy array
// of a type a model input can take are usage errors of one sentence.
func givenInputs(flags []string) (map[string]*pb.TensorProto, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := map[string]*pb.TensorProto{}
	for _, fl := range flags {
		name, file, ok := strings.Cut(fl, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || file == "" {
			return nil, usagef("--input %q: give NAME=FILE.npy, the model input's name and a numpy array file", fl)
		}
		if _, dup := out[name]; dup {
			return nil, usagef("--input %s is given twice; give each input once", name)
		}
		t, err := readNpyTensor(file)
		if err != nil {
			return nil, usagef("--input %s=%s: %v", name, file, err)
		}
		t.Name = proto.String(name)
		out[name] = t
	}
	return out, nil
}

// readNpyTensor reads an .npy file into a TensorProto of the same type and shape.
func readNpyTensor(path string) (*pb.TensorProto, error) {
	file, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("the file does not exist")
		}
		return nil, fmt.Errorf("cannot read the file: %v", errors.Unwrap(err))
	}
	defer file.Close()
	if st, err := file.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("that is a folder, not an .npy file")
	}
	a, err := npy.Read(bufio.NewReader(file))
	if err != nil {
		return nil, err
	}
	t := &pb.TensorProto{}
	for _, d := range a.Shape {
		t.Dims = append(t.Dims, int64(d))
	}
	typ := func(dt pb.TensorProto_DataType) *int32 { return proto.Int32(int32(dt)) }
	switch d := a.Data.(type) {
	case []float32:
		t.DataType, t.FloatData = typ(pb.TensorProto_FLOAT), d
	case []float64:
		t.DataType, t.DoubleData = typ(pb.TensorProto_DOUBLE), d
	case []int64:
		t.DataType, t.Int64Data = typ(pb.TensorProto_INT64), d
	case []int32:
		t.DataType, t.Int32Data = typ(pb.TensorProto_INT32), d
	case []bool:
		t.DataType = typ(pb.TensorProto_BOOL)
		for _, v := range d {
			b := int32(0)
			if v {
				b = 1
			}
			t.Int32Data = append(t.Int32Data, b)
		}
	case []npy.Half:
		t.DataType = typ(pb.TensorProto_FLOAT16)
		for _, v := range d {
			t.Int32Data = append(t.Int32Data, int32(v))
		}
	default:
		return nil, fmt.Errorf("the array holds %s, which no model input takes; save it as float32, int64, int32, float16 or bool", a.DType)
	}
	return t, nil
}
