package analysis_test

import (
	"encoding/json"
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

// Go's scores from onnxruntime's attention equal the Python reference's scores from
// PyTorch's attention within 1e-5, for every committed model; so do the per-token losses.
func TestScoresMatchPython(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(testutil.Root(), "testdata", "scores", "*.json"))
	if len(files) == 0 {
		t.Fatal("no golden scores under testdata/scores (python -m export.scores golden)")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var g golden
			if err := json.Unmarshal(b, &g); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(testutil.Root(), "testdata", "models", name, "model.onnx")
			if g.ModelPath != "" {
				path = filepath.Join(testutil.Root(), g.ModelPath)
			}
			if !fileExists(path) {
				t.Skipf("skipping: %s is not there (a model trained by export/train.py)", path)
			}
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
			if len(got) != len(g.Heads) {
				t.Fatalf("%d heads, Python has %d", len(got), len(g.Heads))
			}
			worst := 0.0
			for i, h := range got {
				want := g.Heads[i]
				if int(want["layer"].(float64)) != h.Layer || int(want["head"].(float64)) != h.Head {
					t.Fatalf("head %d is %s, Python has layer %v head %v", i, h.Name(), want["layer"], want["head"])
				}
				for _, sc := range analysis.AllScores {
					d := math.Abs(h.Get(sc) - want[sc.String()].(float64))
					if d > 1e-5 {
						t.Errorf("%s %s: Go %.8f, Python %.8f", h.Name(), sc, h.Get(sc), want[sc.String()])
					}
					worst = math.Max(worst, d)
				}
			}
			losses := analysis.TokenLosses(text)
			for i, want := range g.Losses {
				if d := math.Abs(losses[i] - want); d > 1e-5 {
					t.Errorf("loss at %d: Go %.8f, Python %.8f", i, losses[i], want)
				}
			}
			t.Logf("max score difference %.2g over %d heads", worst, len(got))
		})
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
	runs, _ := analysis.RunProbe(s, p, false)
	want, _ := analysis.Scores(runs, p, []*result.Result{res})
	for i := range want {
		for _, sc := range analysis.AllScores {
			if d := math.Abs(merged[i].Get(sc) - want[i].Get(sc)); d > 1e-6 {
				t.Errorf("%s %s: merged %g, Scores %g", want[i].Name(), sc, merged[i].Get(sc), want[i].Get(sc))
			}
		}
	}
	if !math.IsNaN(probe[0].Entropy) {
		t.Errorf("probe-only entropy %g, want NaN", probe[0].Entropy)
	}
}
