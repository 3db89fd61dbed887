package onnxgraph_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// attnOutputs lists the attn.L{n} outputs of a graph, in order.
func attnOutputs(g *pb.GraphProto) []string {
	var out []string
	for _, o := range g.GetOutput() {
		if strings.HasPrefix(o.GetName(), "attn.L") {
			out = append(out, o.GetName())
		}
	}
	return out
}

// ExposeOptions.Layers: only the selected layers become graph outputs of the rewritten
// model (read back from its bytes), on every committed model and the shared fixture whose
// sites are com.microsoft.Attention nodes; the unselected sites are left as the model
// computes them (no renamed Softmax output, no fused kernel asked for its probabilities,
// no If output), and with Ablate every ablatable site still gets its mask input.
func TestExposeLayersOnlySelectedAreOutputs(t *testing.T) {
	type model struct{ name, path string }
	var models []model
	for _, dir := range testutil.Models(t) {
		if p := filepath.Join(dir, "model.onnx"); fileExists(p) { // a split encoder–decoder has two files
			models = append(models, model{filepath.Base(dir), p})
		}
	}
	models = append(models, model{"genai-tiny-gpt2-msattn", filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-gpt2-msattn", "past.onnx")})
	for _, md := range models {
		m, att := testutil.FindAttention(t, md.path)
		n := len(att.Sites)
		for _, c := range []struct {
			name   string
			layers []int
			ablate bool
		}{
			{"all", nil, false},
			{"last", []int{n - 1}, false},
			{"first", []int{0}, false},
			{"first, ablation", []int{0}, true},
			{"last, mean ablation", []int{n - 1}, true},
		} {
			t.Run(md.name+"/"+c.name, func(t *testing.T) {
				e, err := onnxgraph.ExposeWith(m, att, onnxgraph.ExposeOptions{Layers: c.layers, Ablate: c.ablate, Mean: c.ablate && strings.Contains(c.name, "mean")})
				if err != nil {
					t.Fatal(err)
				}
				exposed, err := onnxgraph.Parse(e.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				g := exposed.Graph()
				var want []string
				for _, s := range att.Sites {
					if c.layers == nil || slices.Contains(c.layers, s.Layer) {
						want = append(want, onnxgraph.OutputName(s.Layer))
					}
				}
				if got := attnOutputs(g); !slices.Equal(got, want) {
					t.Fatalf("attention outputs %q, want %q", got, want)
				}
				for _, s := range att.Sites {
					if c.layers == nil || slices.Contains(c.layers, s.Layer) {
						continue
					}
					checkUnexposed(t, g, s)
					if c.ablate && s.If == nil && (s.Form == onnxgraph.FormSoftmax || s.Form == onnxgraph.FormMSAttention) && e.Ablation[s.Layer] == nil {
						if !hasInput(g, onnxgraph.AblateInput(s.Layer)) {
							t.Errorf("layer %d is ablatable but has no %s input", s.Layer, onnxgraph.AblateInput(s.Layer))
						}
					}
				}
				// Without masks in the way, the model still shows all its sites.
				if again, err := onnxgraph.FindAttention(exposed); !c.ablate && (err != nil || len(again.Sites) != n) {
					t.Errorf("the rewritten graph shows %v sites (%v), want %d", again, err, n)
				}
			})
		}
	}
}

// checkUnexposed fails the test when site s, not selected, was rewritten to give its
// probabilities anyway.
func checkUnexposed(t *testing.T, g *pb.GraphProto, s onnxgraph.Site) {
	t.Helper()
	out := onnxgraph.OutputName(s.Layer)
	for _, n := range g.GetNode() {
		if slices.Contains(n.GetOutput(), out) || slices.Contains(n.GetOutput(), out+".probs") {
			if s.Form != onnxgraph.FormMSAttention { // decomposed for its mask: an inner tensor
				t.Errorf("layer %d is not selected, yet node %s (%s) writes %s", s.Layer, n.GetName(), n.GetOpType(), out)
			}
		}
	}
	if s.If != nil || s.NodeIndex >= len(g.GetNode()) {
		return
	}
	n := g.GetNode()[s.NodeIndex]
	switch s.Form {
	case onnxgraph.FormONNXAttention, onnxgraph.FormGQA, onnxgraph.FormMHA:
		if len(n.GetOutput()) > 3 && n.GetOutput()[3] != "" {
			t.Errorf("layer %d (%s) is not selected, yet its node has a probabilities output %q", s.Layer, s.Form, n.GetOutput()[3])
		}
		for _, a := range n.GetAttribute() {
			if a.GetName() == "qk_output" || a.GetName() == "qk_matmul_output_mode" {
				t.Errorf("layer %d (%s) is not selected, yet its node got %s=%d", s.Layer, s.Form, a.GetName(), a.GetI())
			}
		}
	case onnxgraph.FormSoftmax:
		if n.GetOpType() == "Softmax" && !slices.Contains(n.GetOutput(), s.Tensor) {
			t.Errorf("layer %d is not selected, yet its Softmax writes %q instead of %s", s.Layer, n.GetOutput(), s.Tensor)
		}
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func hasInput(g *pb.GraphProto, name string) bool {
	for _, in := range g.GetInput() {
		if in.GetName() == name {
			return true
		}
	}
	return false
}

// A layer the model does not have is refused, naming the model's layers.
func TestExposeLayersUnknown(t *testing.T) {
	m, att := testutil.FindAttention(t, filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"))
	for _, c := range []struct {
		layers []int
		want   string
	}{
		{[]int{2}, "layer 2 is not one of the model's 2 attention layers (0…1)"},
		{[]int{-1}, "layer -1 is not one of the model's 2 attention layers"},
		{[]int{0, 7}, "layer 7 is not one"},
	} {
		_, err := onnxgraph.ExposeWith(m, att, onnxgraph.ExposeOptions{Layers: c.layers})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("layers %v: error %v, want %q", c.layers, err, c.want)
		}
	}
}
