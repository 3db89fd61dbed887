package testutil

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"testing"
)

// referenceDirs are the folders whose reference.json the session-level tests compare with:
// the committed test models, the Hugging Face exports and the bundled models.
func referenceDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	for _, pattern := range []string{"testdata/models/*/reference.json", "testdata/hf/*/reference.json", "models/*/reference.json"} {
		files, err := filepath.Glob(filepath.Join(Root(), pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			dirs = append(dirs, filepath.Dir(f))
		}
	}
	if len(dirs) < 10 {
		t.Fatalf("only %d reference files under testdata/models, testdata/hf and models", len(dirs))
	}
	sort.Strings(dirs)
	return dirs
}

// layerMap is one layer's [1, heads, query, key] tensor of a reference run.
type layerMap struct {
	h, q, k int
	data    []float32
}

func (m layerMap) at(h, q, k int) float32 { return m.data[(h*m.q+q)*m.k+k] }

// mutate builds a layer of the same length whose value at (h, q, k) is f(h, q, k): the
// result a session with that bug would return, flattened as tests flatten it.
func (m layerMap) mutate(f func(h, q, k int) float32) []float32 {
	out := make([]float32, 0, len(m.data))
	for h := 0; h < m.h; h++ {
		for q := 0; q < m.q; q++ {
			for k := 0; k < m.k; k++ {
				out = append(out, f(h, q, k))
			}
		}
	}
	return out
}

// mutations are the wrong results a broken session could return for one layer, each laid out
// as [head][query][key] with the reference's length, so only values can tell them apart; nil
// when the mutation does not apply (one head, one query).
func (m layerMap) mutations() map[string][]float32 {
	out := map[string][]float32{}
	if m.q >= 2 || m.k >= 2 {
		// Query and key axes exchanged: a square causal map becomes upper-triangular; a
		// rectangular one (cross-attention, a prefix run) is read with the wrong stride.
		out["transposed"] = m.mutate(func(h, q, k int) float32 {
			i := q*m.k + k // position in the transposed [k][q] layout
			return m.at(h, i%m.q, i/m.q)
		})
		// Normalised over queries instead of keys.
		out["softmax over queries"] = m.mutate(func(h, q, k int) float32 {
			sum := 0.0
			for i := 0; i < m.q; i++ {
				sum += float64(m.at(h, i, k))
			}
			if sum == 0 {
				return 0
			}
			return float32(float64(m.at(h, q, k)) / sum)
		})
		// Keys shifted by one (an off-by-one in a past/present offset).
		out["keys shifted"] = m.mutate(func(h, q, k int) float32 { return m.at(h, q, (k+1)%m.k) })
	}
	if m.h >= 2 {
		out["heads reversed"] = m.mutate(func(h, q, k int) float32 { return m.at(m.h-1-h, q, k) })
	}
	return out
}

// Every session-level comparison with reference.json (session, hftest, cmd/inspect, models)
// is MaxAbsDiff(Flatten(result), reference) > tolerance. For that to catch a transposed map,
// heads in the wrong order, softmax over the wrong axis, shifted keys or layers swapped, each
// of these wrong results must differ from the reference by more than the tolerance the
// comparison uses — including int8's loose 0.15 and float16's 0.005. This checks it on the
// references themselves (no onnxruntime needed): a reference too symmetric or too uniform to
// tell these apart would let a broken session pass.
func TestReferencesCatchWrongLayouts(t *testing.T) {
	for _, dir := range referenceDirs(t) {
		rel, _ := filepath.Rel(Root(), dir)
		t.Run(rel, func(t *testing.T) {
			ref := ReadReference(t, dir)
			tol := ref.AttentionTolerance()
			worst := map[string]float64{} // smallest difference per mutation over all layers
			square := 0
			for r, run := range ref.Runs {
				if len(run.Attention) != ref.NLayers || ref.NLayers < 1 {
					t.Fatalf("run %d has %d attention layers, the reference says %d: a comparison looping over the reference's layers would skip some", r, len(run.Attention), ref.NLayers)
				}
				var layers []layerMap
				for l, a := range run.Attention {
					if len(a.Shape) != 4 || a.Shape[0] != 1 || a.Shape[1] != ref.NHeads {
						t.Fatalf("run %d layer %d: shape %v, want [1, %d heads, query, key]", r, l, a.Shape, ref.NHeads)
					}
					m := layerMap{a.Shape[1], a.Shape[2], a.Shape[3], a.Data}
					if len(m.data) != m.h*m.q*m.k {
						t.Fatalf("run %d layer %d: %d values for shape %v", r, l, len(m.data), a.Shape)
					}
					checkRowsSumToOne(t, fmt.Sprintf("run %d layer %d", r, l), m)
					if m.q == m.k && m.q >= 2 {
						square++
					}
					layers = append(layers, m)
					for name, bad := range m.mutations() {
						d := MaxAbsDiff(bad, m.data)
						if _, ok := worst[name]; !ok || d < worst[name] {
							worst[name] = d
						}
						if !(d > tol) {
							t.Errorf("run %d (T=%d) layer %d: a result with %s differs by only %.3g, within the tolerance %g: the reference comparison cannot catch it",
								r, len(run.IDs), l, name, d, tol)
						}
					}
				}
				// Layers in the wrong order: layer l compared with another layer's reference.
				for l := 1; l < len(layers); l++ {
					a, b := layers[l-1], layers[l]
					if len(a.data) != len(b.data) {
						continue // different shapes: the length check catches it
					}
					d := MaxAbsDiff(a.data, b.data)
					if _, ok := worst["layers swapped"]; !ok || d < worst["layers swapped"] {
						worst["layers swapped"] = d
					}
					if !(d > tol) {
						t.Errorf("run %d layers %d and %d differ by only %.3g (tolerance %g): swapped layers would pass", r, l-1, l, d, tol)
					}
				}
			}
			if square == 0 {
				t.Errorf("no run has a square map of 2 or more tokens: a transposition is only caught by values on rectangular maps")
			}
			names := make([]string, 0, len(worst))
			for n := range worst {
				names = append(names, n)
			}
			sort.Strings(names)
			msg := fmt.Sprintf("tolerance %g; smallest difference per wrong layout:", tol)
			for _, n := range names {
				msg += fmt.Sprintf(" %s %.3g (%.0f×);", n, worst[n], worst[n]/tol)
			}
			t.Log(msg)
		})
	}
}

// checkRowsSumToOne fails when a reference row is not a probability distribution over keys:
// a reference normalised over the wrong axis would make every comparison meaningless.
func checkRowsSumToOne(t *testing.T, where string, m layerMap) {
	t.Helper()
	for h := 0; h < m.h; h++ {
		for q := 0; q < m.q; q++ {
			sum := 0.0
			for k := 0; k < m.k; k++ {
				v := float64(m.at(h, q, k))
				if !(v >= 0 && v <= 1) {
					t.Fatalf("%s: head %d query %d key %d is %g, not a probability", where, h, q, k, v)
				}
				sum += v
			}
			if Diff(sum, 1) > 1e-4 {
				t.Fatalf("%s: head %d query %d sums to %g over keys, want 1", where, h, q, sum)
			}
		}
	}
}

// The mutations are what they say on a small map: the transposition of a causal 3×3 map is
// upper-triangular, and every mutation of it is caught at 1e-5.
func TestMutationsOfACausalMap(t *testing.T) {
	causal := []float32{
		1, 0, 0,
		0.4, 0.6, 0,
		0.2, 0.3, 0.5,
	}
	m := layerMap{1, 3, 3, causal}
	mut := m.mutations()
	wantT := []float32{1, 0.4, 0.2, 0, 0.6, 0.3, 0, 0, 0.5}
	if MaxAbsDiff(mut["transposed"], wantT) != 0 {
		t.Errorf("transposed %v, want %v", mut["transposed"], wantT)
	}
	if _, ok := mut["heads reversed"]; ok {
		t.Error("one head cannot be reversed")
	}
	for name, bad := range mut {
		if d := MaxAbsDiff(bad, causal); !(d > 1e-5) {
			t.Errorf("%s differs by %g", name, d)
		}
	}
	rect := layerMap{1, 2, 3, []float32{0.5, 0.25, 0.25, 0.1, 0.2, 0.7}}
	// [2][3] read as [3][2] then laid out [2][3]: the transposed [k][q] layout is
	// 0.5 0.1 / 0.25 0.2 / 0.25 0.7.
	if got, want := rect.mutations()["transposed"], []float32{0.5, 0.1, 0.25, 0.2, 0.25, 0.7}; MaxAbsDiff(got, want) != 0 {
		t.Errorf("rectangular transposed %v, want %v", got, want)
	}
	// What TestReferencesCatchWrongLayouts guards against: on a uniform map (a reference
	// from an untrained model with tiny weights) a transposition changes nothing.
	third := float32(1) / 3
	uniform := layerMap{1, 3, 3, []float32{third, third, third, third, third, third, third, third, third}}
	if d := MaxAbsDiff(uniform.mutations()["transposed"], uniform.data); d != 0 {
		t.Errorf("transposed uniform map differs by %g", d)
	}
	if math.IsNaN(float64(m.mutations()["softmax over queries"][0])) {
		t.Error("NaN in the query-normalised map")
	}
}
