package ablate_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
)

// The demo's induction circuit, causally, as the README and the demo's card state it:
// switching off L0H4 and L0H7 at least halves the best layer-1 induction score on the
// probes, and switching off the induction heads makes the second copy of a repeated
// sequence as hard to predict as the first.
func TestDemoInductionCircuit(t *testing.T) {
	testutil.RequireORT(t)
	dir := filepath.Join(testutil.Root(), "models", "demo")
	m, err := onnxgraph.Load(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Open(m, session.Options{Device: "cpu", Ablation: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	probe, err := analysis.NewProbe(analysis.ProbeOptions{Vocab: s.Limits.Vocab, BOS: -1, Positions: s.Limits.Positions})
	if err != nil {
		t.Fatal(err)
	}
	bestInduction := func(off string) float64 {
		t.Helper()
		heads, err := ablate.ParseHeads(off, s.HeadCounts())
		if off == "" {
			heads, err = nil, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetAblation(&ablate.Ablation{Off: heads}); err != nil {
			t.Fatal(err)
		}
		defer s.SetAblation(nil)
		scores, err := analysis.ProbeScores(s, probe)
		if err != nil {
			t.Fatal(err)
		}
		best := 0.0
		for _, h := range scores {
			if h.Layer == 1 && h.Induction > best {
				best = h.Induction
			}
		}
		return best
	}
	clean, cut := bestInduction(""), bestInduction("L0H4,L0H7")
	if clean < 0.7 || cut > clean/2 {
		t.Errorf("best layer-1 induction %.3f clean, %.3f with L0H4,L0H7 off; want ≥ 0.7 and at most half", clean, cut)
	}

	raw, err := os.ReadFile(filepath.Join(dir, "repeat_ids.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, f := range strings.Split(strings.TrimSpace(string(raw)), ",") {
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	n := len(ids) / 2
	heads, _ := ablate.ParseHeads("L1H3,L1H5,L1H6", s.HeadCounts())
	rs, err := s.RunAblations(ids, []*ablate.Ablation{nil, {Off: heads}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.RecycleBatch(rs)
	copies := func(losses []float64) (first, second float64) {
		for p := 0; p < 2*n-1; p++ {
			if p < n {
				first += losses[p] / float64(n)
			} else {
				second += losses[p] / float64(n-1)
			}
		}
		return first, second
	}
	f0, s0 := copies(analysis.TokenLosses(rs[0]))
	f1, s1 := copies(analysis.TokenLosses(rs[1]))
	if s0 > f0/3 || s1 < f1 {
		t.Errorf("loss on the first/second copy: %.2f/%.2f clean, %.2f/%.2f with the induction heads off; want the repeat learned, then no better than the first copy", f0, s0, f1, s1)
	}
}
