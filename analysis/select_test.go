package analysis

import (
	"errors"
	"slices"
	"testing"
)

// layerRunner is a fakeRunner that exposes only some of its model's layers and tells its
// output sizes layer by layer, as a session opened with Options.Layers does: 4 heads of
// T×T per exposed layer, and vocab-wide logits.
type layerRunner struct {
	*fakeRunner
	exposed []int
}

func (r layerRunner) Layers() []int { return r.exposed }

func (r layerRunner) AttentionBytes(T int) ([]int64, int64, bool) {
	t := int64(T)
	per := make([]int64, len(r.exposed))
	for i := range per {
		per[i] = 4 * 4 * t * t
	}
	return per, 4 * t * int64(r.vocab), true
}

func (r layerRunner) OutputBytes(T int) (int64, bool) {
	per, other, _ := r.AttentionBytes(T)
	for _, b := range per {
		other += b
	}
	return other, true
}

// A run refused by CheckRunSize says which leading part of the exposed layers would fit,
// or none; sizes told without a run are checked at any length.
func TestCheckRunSizeFit(t *testing.T) {
	const T = 100
	layer, logits := int64(4*4*T*T), int64(4*T*100) // 160,000 and 40,000 bytes
	for _, c := range []struct {
		name    string
		exposed []int
		limit   int64
		fit     []int // nil: none fits
		refused bool
	}{
		{"all fit", []int{0, 1, 2, 3}, 4*layer + logits, nil, false},
		{"three of four", []int{0, 1, 2, 3}, 3*layer + logits, []int{0, 1, 2}, true},
		{"one of four", []int{0, 1, 2, 3}, layer + logits + 1, []int{0}, true},
		{"not even one", []int{0, 1, 2, 3}, layer + logits - 1, nil, true},
		{"a selection", []int{2, 5, 7}, 2*layer + logits, []int{2, 5}, true},
		{"one selected, too big", []int{3}, layer, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := layerRunner{&fakeRunner{layers: diagonalModel(8, 4), vocab: 100}, c.exposed}
			err := CheckRunSize(r, "prompt", T, c.limit)
			var le *LimitError
			if !c.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.As(err, &le) {
				t.Fatalf("CheckRunSize = %v, want a *LimitError", err)
			}
			if !slices.Equal(le.Fit, c.fit) || !slices.Equal(le.Layers, c.exposed) || le.Attention != int64(len(c.exposed))*layer || le.Bytes != le.Attention+logits {
				t.Errorf("Fit %v Layers %v Attention %d Bytes %d; want Fit %v, Layers %v, Attention %d", le.Fit, le.Layers, le.Attention, le.Bytes, c.fit, c.exposed, int64(len(c.exposed))*layer)
			}
			if len(r.batches) != 0 {
				t.Errorf("the model was run to measure it: %v", r.batches)
			}
		})
	}
}

// Scores cope with layers that were not exposed (nil in Result.Attn): only the exposed
// layers' heads are scored, under their own layer numbers, equal to a full run's.
func TestScoresOfSelectedLayers(t *testing.T) {
	full := &fakeRunner{layers: diagonalModel(3, 2), vocab: 50}
	sel := &fakeRunner{layers: func(T int) [][][][]float32 {
		attn := diagonalModel(3, 2)(T)
		attn[0], attn[2] = nil, nil // only layer 1 exposed
		return attn
	}, vocab: 50}
	o := HeadsOptions{Probe: ProbeOptions{N: 10, K: 2, Seed: 1, Vocab: 50, BOS: -1}}
	want, err := ScoreHeads(full, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ScoreHeads(sel, o)
	if err != nil {
		t.Fatal(err)
	}
	var wantL1 []HeadScores
	for _, h := range want.Scores {
		if h.Layer == 1 {
			wantL1 = append(wantL1, h)
		}
	}
	if len(got.Scores) != 2 || len(wantL1) != 2 {
		t.Fatalf("%d scores with layer 1 alone (want 2): %+v", len(got.Scores), got.Scores)
	}
	for i := range got.Scores {
		g, w := got.Scores[i], wantL1[i]
		if g.Layer != 1 || g.Head != w.Head {
			t.Errorf("score %d is L%dH%d, want L1H%d", i, g.Layer, g.Head, w.Head)
		}
		for _, sc := range AllScores {
			if a, b := g.Get(sc), w.Get(sc); a != b && !(a != a && b != b) {
				t.Errorf("L1H%d %s: %g, want %g", g.Head, sc, a, b)
			}
		}
	}
}
