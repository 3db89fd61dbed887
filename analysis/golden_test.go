package analysis_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/session"
)

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func openModel(t testing.TB, path string) *session.Session { return testutil.OpenSession(t, path) }

// golden is a file of testdata/scores, written by export/scores.py from PyTorch's attention.
type golden struct {
	Model string `json:"model"`
	// ModelPath, relative to the repository, when the model is not testdata/models/<model>.
	ModelPath string `json:"model_path"`
	Probe     struct {
		N   int       `json:"n"`
		BOS *int64    `json:"bos"`
		IDs [][]int64 `json:"ids"`
	} `json:"probe"`
	Prompt []int64          `json:"prompt"`
	Losses []float64        `json:"losses"`
	Heads  []map[string]any `json:"heads"`
}

// wantHeads reads the golden file's heads, failing on a missing or non-numeric score (a
// golden file written by another version of export/scores.py).
func wantHeads(t *testing.T, g *golden) []analysis.HeadScores {
	t.Helper()
	out := make([]analysis.HeadScores, len(g.Heads))
	for i, h := range g.Heads {
		num := func(key string) float64 {
			v, ok := h[key].(float64)
			if !ok {
				t.Fatalf("golden head %d: %q is %v, want a number", i, key, h[key])
			}
			return v
		}
		out[i] = analysis.HeadScores{
			Layer: int(num("layer")), Head: int(num("head")),
			Induction: num("induction"), PrevToken: num("prev_token"), DuplicateToken: num("duplicate_token"),
			FirstToken: num("first_token"), Self: num("self"), Entropy: num("entropy"),
		}
	}
	return out
}

// scoreMismatches compares Go's head scores and per-token losses with Python's: the same
// heads in the same order, every score within tol (NaN on either side is a mismatch), one
// loss per golden loss plus a NaN at the last position (nothing follows it). It returns one
// line per mismatch and the largest score difference.
func scoreMismatches(got, want []analysis.HeadScores, losses, wantLosses []float64, tol float64) ([]string, float64) {
	var bad []string
	if len(got) != len(want) {
		return []string{fmt.Sprintf("%d heads, Python has %d", len(got), len(want))}, math.Inf(1)
	}
	worst := 0.0
	for i, h := range got {
		w := want[i]
		if h.Layer != w.Layer || h.Head != w.Head {
			bad = append(bad, fmt.Sprintf("head %d is %s, Python has %s", i, h.Name(), w.Name()))
			continue
		}
		for _, sc := range analysis.AllScores {
			d := testutil.Diff(h.Get(sc), w.Get(sc))
			if d > tol {
				bad = append(bad, fmt.Sprintf("%s %s: Go %.8f, Python %.8f", h.Name(), sc, h.Get(sc), w.Get(sc)))
			}
			worst = math.Max(worst, d)
		}
	}
	if len(losses) != len(wantLosses)+1 {
		return append(bad, fmt.Sprintf("%d losses, want %d (Python's %d and a NaN at the last position)", len(losses), len(wantLosses)+1, len(wantLosses))), worst
	}
	for i, w := range wantLosses {
		if testutil.Diff(losses[i], w) > tol {
			bad = append(bad, fmt.Sprintf("loss at %d: Go %.8f, Python %.8f", i, losses[i], w))
		}
	}
	if last := losses[len(losses)-1]; !math.IsNaN(last) {
		bad = append(bad, fmt.Sprintf("loss at the last position %d is %g, want NaN (no next token)", len(losses)-1, last))
	}
	return bad, worst
}

// readGolden reads one file of testdata/scores and the path of its model, which must exist
// (every golden file's model is committed).
func readGolden(t *testing.T, f string) (*golden, string) {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("parsing %s: %v", f, err)
	}
	name := strings.TrimSuffix(filepath.Base(f), ".json")
	path := filepath.Join(testutil.Root(), "testdata", "models", name, "model.onnx")
	if g.ModelPath != "" {
		path = filepath.Join(testutil.Root(), g.ModelPath)
	}
	if !fileExists(path) {
		t.Fatalf("%s names model %s, which is not there (regenerate the golden file with python -m export.scores golden, or restore the model)", f, path)
	}
	if len(g.Heads) == 0 || len(g.Losses) == 0 || len(g.Probe.IDs) == 0 {
		t.Fatalf("%s has %d heads, %d losses and %d probe sequences; want some of each", f, len(g.Heads), len(g.Losses), len(g.Probe.IDs))
	}
	return &g, path
}

func goldenFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testutil.Root(), "testdata", "scores", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden scores under testdata/scores (python -m export.scores golden): %v", err)
	}
	return files
}

// Go's scores from onnxruntime's attention equal the Python reference's scores from
// PyTorch's attention within 1e-5, for every committed model; so do the per-token losses.
func TestScoresMatchPython(t *testing.T) {
	for _, f := range goldenFiles(t) {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			g, path := readGolden(t, f)
			s := openModel(t, path)
			p := &analysis.Probe{N: g.Probe.N, BOS: -1, IDs: g.Probe.IDs}
			if g.Probe.BOS != nil {
				p.BOS = *g.Probe.BOS
			}
			probes, err := analysis.RunProbe(s, p, true)
			if err != nil {
				t.Fatal(err)
			}
			text, err := s.Run(g.Prompt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := analysis.Scores(probes, p, []*result.Result{text})
			if err != nil {
				t.Fatal(err)
			}
			bad, worst := scoreMismatches(got, wantHeads(t, g), analysis.TokenLosses(text), g.Losses, 1e-5)
			for _, b := range bad {
				t.Error(b)
			}
			t.Logf("max score difference %.2g over %d heads", worst, len(got))
		})
	}
}

// The comparison TestScoresMatchPython makes fails on wrong scores: NaN (which a plain
// math.Abs(d) > tol let through), a score off by more than the tolerance, heads in another
// order, a missing head, NaN or missing losses. Each golden file's own values stand in for a
// correct Go result.
func TestScoreComparisonFailsOnBadData(t *testing.T) {
	for _, f := range goldenFiles(t) {
		g, _ := readGolden(t, f)
		want := wantHeads(t, g)
		losses := append(append([]float64(nil), g.Losses...), math.NaN())
		if bad, _ := scoreMismatches(want, want, losses, g.Losses, 1e-5); len(bad) > 0 {
			t.Fatalf("%s: the golden values themselves do not match: %v", f, bad)
		}
		mutations := map[string]func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64){
			"all NaN": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				for i := range h {
					h[i].Induction, h[i].PrevToken, h[i].DuplicateToken = math.NaN(), math.NaN(), math.NaN()
					h[i].FirstToken, h[i].Self, h[i].Entropy = math.NaN(), math.NaN(), math.NaN()
				}
				return h, l
			},
			"one NaN entropy": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				h[len(h)-1].Entropy = math.NaN()
				return h, l
			},
			"score off by 2e-5": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				h[0].PrevToken += 2e-5
				return h, l
			},
			"heads swapped": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				h[0], h[1] = h[1], h[0]
				return h, l
			},
			"head missing": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				return h[1:], l
			},
			"NaN loss": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				l[0] = math.NaN()
				return h, l
			},
			"loss missing": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				return h, l[1:]
			},
			"last loss not NaN": func(h []analysis.HeadScores, l []float64) ([]analysis.HeadScores, []float64) {
				l[len(l)-1] = 0
				return h, l
			},
		}
		for name, mutate := range mutations {
			h, l := mutate(append([]analysis.HeadScores(nil), want...), append([]float64(nil), losses...))
			if bad, _ := scoreMismatches(h, want, l, g.Losses, 1e-5); len(bad) == 0 {
				t.Errorf("%s: %s passes the comparison", filepath.Base(f), name)
			}
		}
	}
}

// ProbeScores + TextScores + Merge (what the TUI calls) give what Scores gives.
func TestProbeScoresMerge(t *testing.T) {
	s := openModel(t, filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"))
	p, err := analysis.NewProbe(analysis.ProbeOptions{K: 3, Vocab: s.Limits.Vocab, BOS: -1, Positions: s.Limits.Positions})
	if err != nil {
		t.Fatal(err)
	}
	probe, err := analysis.ProbeScores(s, p)
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int64{5, 9, 14, 5, 9, 14, 2, 7}
	res, err := s.Run(prompt)
	if err != nil {
		t.Fatal(err)
	}
	merged := analysis.Merge(probe, analysis.TextScores(res))
	runs, err := analysis.RunProbe(s, p, false)
	if err != nil {
		t.Fatal(err)
	}
	want, err := analysis.Scores(runs, p, []*result.Result{res})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 || len(merged) != len(want) {
		t.Fatalf("Merge gives %d heads, Scores %d; want the same, more than none", len(merged), len(want))
	}
	for i := range want {
		if merged[i].Layer != want[i].Layer || merged[i].Head != want[i].Head {
			t.Fatalf("head %d: Merge has %s, Scores %s", i, merged[i].Name(), want[i].Name())
		}
		for _, sc := range analysis.AllScores {
			if d := testutil.Diff(merged[i].Get(sc), want[i].Get(sc)); d > 1e-6 {
				t.Errorf("%s %s: merged %g, Scores %g", want[i].Name(), sc, merged[i].Get(sc), want[i].Get(sc))
			}
		}
	}
	if !math.IsNaN(probe[0].Entropy) {
		t.Errorf("probe-only entropy %g, want NaN", probe[0].Entropy)
	}
}
