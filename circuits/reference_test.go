package circuits

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
)

// reference is the part of circuits.json (written by export/circuits_ref.py from the
// PyTorch parameters a model was exported from) these tests compare with.
type reference struct {
	Schema string `json:"schema"`
	Source string `json:"source"`
	DModel int    `json:"d_model"`
	Layers []struct {
		DHead int     `json:"d_head"`
		Scale float64 `json:"scale"`
	} `json:"layers"`
	Heads []struct {
		Layer       int          `json:"layer"`
		Head        int          `json:"head"`
		OVCopying   *float64     `json:"ov_copying"`
		QKPrevToken *float64     `json:"qk_prev_token"`
		QKSelf      *float64     `json:"qk_self"`
		TopOV       [][3]float64 `json:"top_ov"`
	} `json:"heads"`
	Composition []struct {
		FromLayer int      `json:"from_layer"`
		FromHead  int      `json:"from_head"`
		ToLayer   int      `json:"to_layer"`
		ToHead    int      `json:"to_head"`
		Q         *float64 `json:"q_comp"`
		K         *float64 `json:"k_comp"`
		V         *float64 `json:"v_comp"`
	} `json:"composition"`
	Baseline struct {
		Draws       int `json:"draws"`
		Composition []struct {
			DModel    int `json:"d_model"`
			DHeadFrom int `json:"d_head_from"`
			DHeadTo   int `json:"d_head_to"`
			Q         struct{ Mean, Std float64 }
		} `json:"composition"`
	} `json:"baseline"`
	SkipTrigrams map[string][][4]float64 `json:"skip_trigrams"`
}

// tolerance is the relative agreement asked of every number: both sides compute in
// float64 from the same float32 (or float16) weights.
const tolerance = 1e-5

// agree reports whether got matches the reference value want (nil: unavailable, so got
// must be NaN) within tolerance, relative to the larger magnitude (absolute below 1e-3).
func agree(got float64, want *float64) bool { return agreeWithin(got, want, tolerance) }

func agreeWithin(got float64, want *float64, tol float64) bool {
	if want == nil {
		return math.IsNaN(got)
	}
	return testutil.Diff(got, *want) <= tol*math.Max(1e-3, math.Max(math.Abs(got), math.Abs(*want)))
}

func ref(v *float64) any {
	if v == nil {
		return "null"
	}
	return *v
}

// referenceModels are the committed models with a circuits.json, and the shared fixtures
// with one under testdata/circuits.
func referenceModels(t *testing.T) map[string][2]string {
	t.Helper()
	root := testutil.Root()
	out := map[string][2]string{}
	globs, _ := filepath.Glob(filepath.Join(root, "testdata", "models", "*", "circuits.json"))
	shipped, _ := filepath.Glob(filepath.Join(root, "models", "*", "circuits.json"))
	for _, p := range append(globs, shipped...) {
		dir := filepath.Dir(p)
		rel, _ := filepath.Rel(root, dir)
		out[rel] = [2]string{filepath.Join(dir, "model.onnx"), p}
	}
	if len(out) < 10 {
		t.Fatalf("only %d models have a circuits.json (make fixtures writes them)", len(out))
	}
	return out
}

func TestMatchesPyTorchReference(t *testing.T) {
	models := referenceModels(t)
	names := make([]string, 0, len(models))
	for n := range models {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		paths := models[name]
		t.Run(name, func(t *testing.T) {
			checkReference(t, paths[0], paths[1])
		})
	}
}

// TestMatchesNumpyOnSharedFixture checks a com.microsoft.Attention model written by
// onnxruntime's optimizer against numpy's reading of its packed weights.
func TestMatchesNumpyOnSharedFixture(t *testing.T) {
	model := testutil.Shared(t, "fixtures/genai-tiny-gpt2-msattn/past.onnx")
	checkReference(t, model, filepath.Join(testutil.Root(), "testdata", "circuits", "genai-tiny-gpt2-msattn.json"))
}

func checkReference(t *testing.T, modelPath, refPath string) {
	t.Helper()
	data, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%s: %v", refPath, err)
	}
	w, err := onnxgraph.TraceWeights(testutil.FindAttention(t, modelPath))
	if err != nil {
		t.Fatalf("tracing: %v", err)
	}
	c, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	// The positional QK scores go through the graph's own score scale. A float16 graph
	// stores 1/√d_head rounded to float16 (0.35351562 for 1/√8), which onnxruntime uses and
	// PyTorch does not: those scores then agree to the rounding's 1e-4, no better.
	qkTol := tolerance
	if len(w.Layers) != len(r.Layers) {
		t.Fatalf("%d traced layers, reference %d", len(w.Layers), len(r.Layers))
	}
	for i, l := range w.Layers {
		d := math.Abs(l.Scale-r.Layers[i].Scale) / r.Layers[i].Scale
		switch {
		case d > 1e-3:
			t.Errorf("layer %d: score scale %v, reference %v", i, l.Scale, r.Layers[i].Scale)
		case d > 1e-7:
			t.Logf("layer %d: the graph's score scale %v is the reference's %v rounded (float16)", i, l.Scale, r.Layers[i].Scale)
			qkTol = 1e-4
		}
	}
	heads := c.HeadCircuits()
	if len(heads) != len(r.Heads) {
		t.Fatalf("%d heads, reference %d", len(heads), len(r.Heads))
	}
	for i, want := range r.Heads {
		got := heads[i]
		if got.Layer != want.Layer || got.Head != want.Head {
			t.Fatalf("head %d is L%dH%d, reference L%dH%d", i, got.Layer, got.Head, want.Layer, want.Head)
		}
		for _, s := range []struct {
			name string
			got  float64
			want *float64
			tol  float64
		}{{"ov_copying", got.OVCopying, want.OVCopying, tolerance}, {"qk_prev_token", got.QKPrevToken, want.QKPrevToken, qkTol}, {"qk_self", got.QKSelf, want.QKSelf, qkTol}} {
			if !agreeWithin(s.got, s.want, s.tol) {
				t.Errorf("L%dH%d %s %v, reference %v", got.Layer, got.Head, s.name, s.got, ref(s.want))
			}
		}
		if want.TopOV != nil {
			pairs, err := c.TopOV(context.Background(), want.Layer, want.Head, len(want.TopOV), nil)
			if err != nil {
				t.Errorf("L%dH%d TopOV: %v", want.Layer, want.Head, err)
				continue
			}
			for k, p := range pairs {
				wv := want.TopOV[k][2]
				if !agree(p.Value, &wv) {
					t.Errorf("L%dH%d OV pair %d: %d→%d %v, reference %v→%v %v", want.Layer, want.Head, k, p.Source, p.Output, p.Value, want.TopOV[k][0], want.TopOV[k][1], wv)
					break
				}
			}
			// The largest pair is unique unless values tie.
			if len(pairs) > 1 && pairs[0].Value-pairs[1].Value > 1e-6*math.Abs(pairs[0].Value) &&
				(float64(pairs[0].Source) != want.TopOV[0][0] || float64(pairs[0].Output) != want.TopOV[0][1]) {
				t.Errorf("L%dH%d strongest OV pair %d→%d, reference %v→%v", want.Layer, want.Head, pairs[0].Source, pairs[0].Output, want.TopOV[0][0], want.TopOV[0][1])
			}
		}
	}

	comps := c.Compositions()
	type pair struct{ fl, fh, tl, th int }
	index := map[pair]Composition{}
	for _, p := range comps {
		index[pair{p.FromLayer, p.FromHead, p.ToLayer, p.ToHead}] = p
	}
	if len(comps) != len(r.Composition) {
		t.Errorf("%d composition pairs, reference %d", len(comps), len(r.Composition))
	}
	for _, want := range r.Composition {
		got, ok := index[pair{want.FromLayer, want.FromHead, want.ToLayer, want.ToHead}]
		if !ok {
			t.Errorf("no composition L%dH%d→L%dH%d", want.FromLayer, want.FromHead, want.ToLayer, want.ToHead)
			continue
		}
		for _, s := range []struct {
			name string
			got  float64
			want *float64
		}{{"q", got.Q, want.Q}, {"k", got.K, want.K}, {"v", got.V, want.V}} {
			if !agree(s.got, s.want) {
				t.Errorf("L%dH%d→L%dH%d %s-composition %v, reference %v", want.FromLayer, want.FromHead, want.ToLayer, want.ToHead, s.name, s.got, ref(s.want))
			}
		}
	}

	// The random baseline: Monte-Carlo on both sides, so within a few standard errors.
	for _, b := range r.Baseline.Composition {
		got := Baseline(b.DModel, b.DHeadFrom, b.DHeadTo, 400, 1)
		se := b.Q.Std * math.Sqrt(1.0/400+1.0/float64(max(r.Baseline.Draws, 1)))
		if math.Abs(got-b.Q.Mean) > 5*se+1e-9 {
			t.Errorf("baseline for d_model %d, d_head %d→%d: %v, reference %v ± %v", b.DModel, b.DHeadFrom, b.DHeadTo, got, b.Q.Mean, se)
		}
	}

	for name, want := range r.SkipTrigrams {
		var l, h int
		if _, err := fmtSscan(name, &l, &h); err != nil {
			t.Fatalf("skip-trigram key %q", name)
		}
		got, err := c.SkipTrigrams(l, h, len(want), nil)
		if err != nil {
			t.Errorf("%s skip-trigrams: %v", name, err)
			continue
		}
		for k, s := range got {
			wq := want[k][2]
			if !agree(s.QK, &wq) {
				t.Errorf("%s skip-trigram %d: %d … %d qk %v, reference %v … %v qk %v", name, k, s.Source, s.Dest, s.QK, want[k][1], want[k][0], wq)
				break
			}
			if float64(s.Dest) == want[k][0] && float64(s.Source) == want[k][1] && float64(s.Output) != want[k][3] {
				t.Errorf("%s skip-trigram %d: output %d, reference %v", name, k, s.Output, want[k][3])
			}
		}
	}
}

func fmtSscan(name string, l, h *int) (int, error) { return fmt.Sscanf(name, "L%dH%d", l, h) }
