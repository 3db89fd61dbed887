package session_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
)

// openLayers opens a CPU session that exposes only the given layers (nil: all).
func openLayers(t *testing.T, path string, layers []int, abl, mean bool) *session.Session {
	t.Helper()
	testutil.RequireORT(t)
	m, err := onnxgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Open(m, session.Options{Device: "cpu", Layers: layers, Ablation: abl, Mean: mean})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A session opened with Options.Layers returns those layers' maps under their own layer
// numbers, equal to a full session's, and nil for the others, on every committed model
// (decoders, an encoder, an encoder–decoder, float16, a merged decoder with an If, a
// single-step decoder fed token by token, fused GroupQueryAttention); its outputs take
// less memory, as OutputBytes and AttentionBytes tell before any run.
func TestLayersSelection(t *testing.T) {
	for _, dir := range testutil.Models(t) {
		path := filepath.Join(dir, "model.onnx")
		if _, err := os.Stat(path); err != nil {
			continue // a split encoder–decoder: two files, no model.onnx
		}
		full := openLayers(t, path, nil, false, false)
		n := len(full.Attention.Sites)
		ids := seq(7, int64(max(full.Limits.Vocab, 2)))
		want, err := full.Run(ids)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(dir), err)
		}
		tol := 1e-5
		if name := filepath.Base(dir); name == "fp16" || name == "fp16step" {
			tol = 2e-3 // a float16 graph may be fused differently once fewer tensors are outputs
		}
		for _, layers := range [][]int{{n - 1}, {0}, {0, n - 1}} {
			layers = slices.Compact(layers)
			t.Run(filepath.Base(dir)+"/"+fmtLayers(layers), func(t *testing.T) {
				s := openLayers(t, path, layers, false, false)
				if got := s.Layers(); !slices.Equal(got, layers) {
					t.Fatalf("Layers() = %v, want %v", got, layers)
				}
				res, err := s.Run(ids)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Attn) != n {
					t.Fatalf("Attn has %d entries, want one per layer (%d)", len(res.Attn), n)
				}
				if got := res.Layers(); !slices.Equal(got, layers) {
					t.Errorf("result.Layers() = %v, want %v", got, layers)
				}
				for l := range n {
					if !slices.Contains(layers, l) {
						if res.Attn[l] != nil || res.Exposed(l) || res.Heads(l) != 0 {
							t.Errorf("layer %d was not selected, yet the result holds %d heads of it", l, res.Heads(l))
						}
						continue
					}
					if res.Heads(l) != want.Heads(l) {
						t.Fatalf("layer %d: %d heads, want %d", l, res.Heads(l), want.Heads(l))
					}
					if d := testutil.MaxAbsDiff(testutil.Flatten(res.Attn[l]), testutil.Flatten(want.Attn[l])); d > tol {
						t.Errorf("layer %d differs from the full run's by %.3g", l, d)
					}
				}
				if d := testutil.MaxAbsDiff(res.Logits, want.Logits); d > tol {
					t.Errorf("logits differ from the full run's by %.3g", d)
				}
				fullBytes, okF := full.OutputBytes(len(ids))
				selBytes, okS := s.OutputBytes(len(ids))
				if okF && okS && len(layers) < n && selBytes >= fullBytes {
					t.Errorf("OutputBytes %d with %v, not less than %d with every layer", selBytes, layers, fullBytes)
				}
				if per, other, ok := s.AttentionBytes(len(ids)); ok {
					sum := other
					for _, b := range per {
						sum += b
					}
					if len(per) != len(layers) || sum != selBytes {
						t.Errorf("AttentionBytes gives %d layers summing with the rest to %d; want %d layers, OutputBytes %d", len(per), sum, len(layers), selBytes)
					}
				}
			})
		}
	}
}

func fmtLayers(layers []int) string {
	b := []byte("L")
	for i, l := range layers {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, byte('0'+l))
	}
	return string(b)
}

// A layer that is not exposed can still be ablated, zero or mean (its z comes back with its
// head count, for ablate.MeanZ): the selected layer after it sees what it sees in a full
// session with the same heads off.
func TestLayersSelectionAblation(t *testing.T) {
	for _, name := range []string{"attn2l", "gpt2tiny", "encdec"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(testutil.Root(), "testdata", "models", name, "model.onnx")
			full := openLayers(t, path, nil, true, true)
			last := len(full.Attention.Sites) - 1
			sel := openLayers(t, path, []int{last}, true, true)
			ids := seq(8, int64(full.Limits.Vocab))
			if got, want := sel.HeadCounts(), full.HeadCounts(); !slices.Equal(got, want) {
				t.Fatalf("HeadCounts %v with one layer exposed, %v with all", got, want)
			}
			for _, mode := range []ablate.Mode{ablate.Zero, ablate.Mean} {
				var abl [2]*ablate.Ablation
				for i, s := range []*session.Session{full, sel} {
					a := &ablate.Ablation{Off: []ablate.Head{{Layer: 0, Head: 1}}, Mode: mode}
					if mode == ablate.Mean {
						clean, err := s.Run(ids)
						if err != nil {
							t.Fatal(err)
						}
						if a.ZMean, err = ablate.MeanZ(clean); err != nil {
							t.Fatalf("MeanZ of a run with layer 0 unexposed: %v", err)
						}
					}
					abl[i] = a
				}
				if mode == ablate.Mean {
					if d := testutil.MaxAbsDiff(abl[1].ZMean[0], abl[0].ZMean[0]); d > 1e-5 {
						t.Errorf("layer 0's mean z differs by %.3g with it unexposed", d)
					}
				}
				var got [2][]float32
				for i, s := range []*session.Session{full, sel} {
					if err := s.SetAblation(abl[i]); err != nil {
						t.Fatalf("%v ablation of L0H1 with layers %v: %v", mode, s.Layers(), err)
					}
					res, err := s.Run(ids)
					if err != nil {
						t.Fatal(err)
					}
					got[i] = testutil.Flatten(res.Attn[last])
					s.SetAblation(nil)
				}
				if d := testutil.MaxAbsDiff(got[1], got[0]); d > 1e-5 {
					t.Errorf("%v ablation: layer %d differs from the full session's by %.3g", mode, last, d)
				}
			}
		})
	}
}

// A session for zero ablation alone can switch off heads of a layer it does not expose,
// even where the graph does not declare the head count (gpt2tiny's Reshape takes it from a
// Shape), and gives what a full session gives.
func TestLayersSelectionZeroAblation(t *testing.T) {
	path := filepath.Join(testutil.Root(), "testdata", "models", "gpt2tiny", "model.onnx")
	full := openLayers(t, path, nil, true, false)
	sel := openLayers(t, path, []int{1}, true, false)
	ids := seq(8, int64(full.Limits.Vocab))
	var got [2][]float32
	for i, s := range []*session.Session{full, sel} {
		if err := s.SetAblation(&ablate.Ablation{Off: []ablate.Head{{Layer: 0, Head: 1}}, Mode: ablate.Zero}); err != nil {
			t.Fatalf("layers %v: %v", s.Layers(), err)
		}
		res, err := s.Run(ids)
		if err != nil {
			t.Fatal(err)
		}
		got[i] = testutil.Flatten(res.Attn[1])
	}
	if d := testutil.MaxAbsDiff(got[1], got[0]); d > 1e-5 {
		t.Errorf("layer 1 with L0H1 off differs from the full session's by %.3g", d)
	}
}

// A layer the model does not have is refused with a *onnxgraph.LayerError.
func TestLayersSelectionUnknownLayer(t *testing.T) {
	testutil.RequireORT(t)
	m, err := onnxgraph.Load(filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = session.Open(m, session.Options{Device: "cpu", Layers: []int{2}})
	testutil.ExpectError(t, err, "layer 2 is not one of the model's 2 attention layers")
}
