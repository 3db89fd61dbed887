package onnxgraph_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// hfCache lays out the files of a model folder as the Hugging Face cache does: each file's
// bytes in blobs/<name>.blob, and snapshots/rev/<name> a relative symbolic link to it. It
// returns the linked model.onnx.
func hfCache(t *testing.T, dir string, files ...string) string {
	t.Helper()
	root := t.TempDir()
	snap := filepath.Join(root, "snapshots", "rev")
	for _, d := range []string{filepath.Join(root, "blobs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		blob := filepath.Join(root, "blobs", f+".blob")
		if err := os.WriteFile(blob, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", f+".blob"), filepath.Join(snap, f)); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(snap, "model.onnx")
}

// A model.onnx that is a symbolic link into the Hugging Face cache's blobs — weights inside
// the model (whose compact encoding names the model file as its own external data), or in
// a model.onnx.data that is a link too — opens and gives exactly the attention and logits
// of the same model in a plain folder. Before, onnxruntime refused it: "External data
// path … escapes model directory".
func TestSymlinkedModelRunsLikeTheOriginal(t *testing.T) {
	cases := []struct {
		name  string
		dir   string
		files []string
		ids   []int64
	}{
		{"gpt2tiny", filepath.Join(testutil.Root(), "testdata", "models", "gpt2tiny"), []string{"model.onnx"}, []int64{5, 17, 3, 42, 8}},
		{"genai-tiny-llama-fp16-mha-extdata", filepath.Join(testutil.Root(), "..", "shared", "fixtures", "genai-tiny-llama-fp16-mha-extdata"), []string{"model.onnx", "model.onnx.data"}, []int64{1, 5, 9, 200, 7, 31}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := os.Stat(c.dir); err != nil {
				testutil.Skip(t, "%s is not present", c.dir)
			}
			linked := hfCache(t, c.dir, c.files...)
			m, err := onnxgraph.Load(linked)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(linked))), "blobs"); m.DataDir() != want {
				t.Errorf("DataDir %s, want the blobs folder %s", m.DataDir(), want)
			}
			if m.Dir() != filepath.Dir(linked) || len(m.ExternalDataFiles()) != len(c.files)-1 {
				t.Errorf("Dir %s and external data %v, want the link's folder and the locations as written", m.Dir(), m.ExternalDataFiles())
			}
			want := testutil.OpenSession(t, filepath.Join(c.dir, "model.onnx"))
			got := testutil.OpenSession(t, linked)
			wantRes, err := want.Run(c.ids)
			if err != nil {
				t.Fatal(err)
			}
			gotRes, err := got.Run(c.ids)
			if err != nil {
				t.Fatal(err)
			}
			if len(gotRes.Attn) == 0 || len(gotRes.Attn) != len(wantRes.Attn) {
				t.Fatalf("%d layers, want %d", len(gotRes.Attn), len(wantRes.Attn))
			}
			for l := range wantRes.Attn {
				if d := testutil.MaxAbsDiff(testutil.Flatten(gotRes.Attn[l]), testutil.Flatten(wantRes.Attn[l])); d != 0 {
					t.Errorf("layer %d differs from the unlinked model's by %g", l, d)
				}
			}
			if d := testutil.MaxAbsDiff(gotRes.Logits, wantRes.Logits); d != 0 {
				t.Errorf("logits differ from the unlinked model's by %g", d)
			}
		})
	}
}

// extModel writes, into dir, a model whose one initializer lives in the external-data file
// at location (which may name a file anywhere), and returns the model's path.
func extModel(t *testing.T, dir, location string) string {
	t.Helper()
	mp := &pb.ModelProto{
		IrVersion: proto.Int64(8),
		Graph: &pb.GraphProto{
			Node: []*pb.NodeProto{node("Identity", []string{"W"}, "out")},
			Initializer: []*pb.TensorProto{{
				Name: proto.String("W"), DataType: proto.Int32(1), Dims: []int64{2},
				DataLocation: pb.TensorProto_EXTERNAL.Enum(),
				ExternalData: []*pb.StringStringEntryProto{{Key: proto.String("location"), Value: proto.String(location)}},
			}},
		},
	}
	data, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// External-data locations that onnxruntime refuses stay refused, by Load, with one
// sentence: absolute paths, "..", a subfolder that a symbolic link leads out of the model's
// folder, and files that symbolic links scatter over two folders. A file named directly in
// the folder may be a symbolic link, and a real subfolder is fine.
func TestExternalDataLocations(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "w.bin"), make([]byte, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		location string
		setup    func(dir string) error
		problem  onnxgraph.DataProblem
		want     string // in the error; "" when Load must succeed
	}{
		{"beside the model", "w.bin", func(dir string) error { return os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 8), 0o644) }, 0, ""},
		{"in a subfolder", "sub/w.bin", func(dir string) error {
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "sub", "w.bin"), make([]byte, 8), 0o644)
		}, 0, ""},
		{"a symbolic link beside the model", "w.bin", func(dir string) error {
			return os.Symlink(filepath.Join(outside, "w.bin"), filepath.Join(dir, "w.bin"))
		}, 0, ""},
		{"missing", "w.bin", nil, onnxgraph.DataMissing, "w.bin, which is missing; put it beside the model"},
		{"absolute", filepath.Join(outside, "w.bin"), nil, onnxgraph.DataAbsolute, "an absolute path, which onnxruntime refuses"},
		{"dot-dot", "../" + filepath.Base(outside) + "/w.bin", nil, onnxgraph.DataOutside, "outside the model's folder, which onnxruntime refuses"},
		{"dot-dot inside a subfolder path", "sub/../../w.bin", func(dir string) error { return os.Mkdir(filepath.Join(dir, "sub"), 0o755) }, onnxgraph.DataOutside, "outside the model's folder"},
		{"through a subfolder linked out", "sub/w.bin", func(dir string) error { return os.Symlink(outside, filepath.Join(dir, "sub")) }, onnxgraph.DataLinkedOut, "which a symbolic link leads out of the model's folder"},
		{"a linked file in a subfolder", "sub/w.bin", func(dir string) error {
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(outside, "w.bin"), filepath.Join(dir, "sub", "w.bin"))
		}, onnxgraph.DataLinkedOut, "which a symbolic link leads out of the model's folder"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "model")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				if err := c.setup(dir); err != nil {
					t.Fatal(err)
				}
			}
			if c.name == "dot-dot" {
				// ../<outside's name> must exist beside the model's folder for the test to
				// show that existence does not matter.
				if err := os.Symlink(outside, filepath.Join(filepath.Dir(dir), filepath.Base(outside))); err != nil {
					t.Fatal(err)
				}
			}
			m, err := onnxgraph.Load(extModel(t, dir, c.location))
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				want, _ := filepath.EvalSymlinks(dir)
				if c.name == "a symbolic link beside the model" {
					want, _ = filepath.EvalSymlinks(outside)
				}
				if m.DataDir() != want {
					t.Errorf("DataDir %s, want %s", m.DataDir(), want)
				}
				return
			}
			var de *onnxgraph.ExternalDataError
			if !errors.As(err, &de) || de.Problem != c.problem || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want a one-line *ExternalDataError (problem %d) containing %q", err, c.problem, c.want)
			}
		})
	}
}

// A model file that holds weights itself and is a link into one folder, with an
// external-data file that is a link into another, cannot be read from one folder: Load
// says so. (When the model file holds no weights of its own, only the data files' folder
// matters, and it opens.)
func TestExternalDataSplitOverFolders(t *testing.T) {
	src := t.TempDir()
	p := extModel(t, src, "model.onnx.data")
	mp := &pb.ModelProto{}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(data, mp); err != nil {
		t.Fatal(err)
	}
	// 2 KiB inline: the compact encoding reads it from the model file itself.
	mp.Graph.Initializer = append(mp.Graph.Initializer, &pb.TensorProto{Name: proto.String("big"), DataType: proto.Int32(1), Dims: []int64{512}, RawData: make([]byte, 2048)})
	for name, data := range map[string][]byte{"model.onnx.data": make([]byte, 8), "model.onnx": mustMarshal(t, mp)} {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, split := range []bool{false, true} {
		linked := hfCache(t, src, "model.onnx", "model.onnx.data")
		if split {
			elsewhere := filepath.Join(t.TempDir(), "data.blob")
			if err := os.WriteFile(elsewhere, make([]byte, 8), 0o644); err != nil {
				t.Fatal(err)
			}
			dataLink := filepath.Join(filepath.Dir(linked), "model.onnx.data")
			if err := os.Remove(dataLink); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(elsewhere, dataLink); err != nil {
				t.Fatal(err)
			}
		}
		_, err = onnxgraph.Load(linked)
		var de *onnxgraph.ExternalDataError
		switch {
		case !split && err != nil:
			t.Fatalf("both files in one blobs folder: %v", err)
		case split && (!errors.As(err, &de) || de.Problem != onnxgraph.DataSplit || !strings.Contains(err.Error(), "resolve through symbolic links to different folders")):
			t.Fatalf("error %v, want one saying the files resolve to different folders", err)
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
