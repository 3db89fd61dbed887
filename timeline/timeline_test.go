package timeline

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

// fake is a timeline to write: files by path relative to the folder. Open never loads a
// model, so model.onnx holds a placeholder.
type fake map[string]string

const goodIndex = `{"schema": "attnscope.timeline/1", "model": "attn2l", "steps": [
  {"step": 0, "tokens": 0, "dir": "step-000000"},
  {"step": 100, "tokens": 51200, "dir": "step-000100"},
  {"step": 400, "tokens": 204800, "dir": "step-000400"}]}`

const goodMetrics = "step,tokens,train_loss,eval_loss,icl,lr\n" +
	"0,0,4.16,4.15,,0.001\n" +
	"50,25600,3.9,,,0.001\n" +
	"100,51200,3.5,3.6,-0.01,0.001\n" +
	"400,204800,2.9,3.0,-0.4,0.0005\n"

func good() fake {
	return fake{
		IndexFile:                 goodIndex,
		MetricsFile:               goodMetrics,
		TokenizerFile:             "{}",
		"step-000000/model.onnx":  "onnx",
		"step-000000/config.json": "{}",
		"step-000100/model.onnx":  "onnx",
		"step-000400/model.onnx":  "onnx",
	}
}

// with is f with files changed (a "" value removes the file).
func (f fake) with(kv ...string) fake {
	out := fake{}
	for k, v := range f {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func (f fake) write(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range f {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTimelineOpen(t *testing.T) {
	dir := good().write(t)
	if !IsTimeline(dir) {
		t.Fatal("IsTimeline: false for a timeline")
	}
	tl, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tl.Model != "attn2l" || tl.Tokenizer != filepath.Join(dir, "tokenizer.json") {
		t.Errorf("model %q, tokenizer %q", tl.Model, tl.Tokenizer)
	}
	want := []struct {
		step, tokens int64
		dir          string
		config       bool
		train, icl   float64
	}{
		{0, 0, "step-000000", true, 4.16, math.NaN()},
		{100, 51200, "step-000100", false, 3.5, -0.01},
		{400, 204800, "step-000400", false, 2.9, -0.4},
	}
	if len(tl.Steps) != len(want) {
		t.Fatalf("%d steps, want %d", len(tl.Steps), len(want))
	}
	same := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
	for i, w := range want {
		s := tl.Steps[i]
		if s.Step != w.step || s.Tokens != w.tokens || s.Dir != filepath.Join(dir, w.dir) || s.Model != filepath.Join(dir, w.dir, "model.onnx") {
			t.Errorf("step %d: %+v", i, s)
		}
		if (s.Config != "") != w.config {
			t.Errorf("step %d: config %q", i, s.Config)
		}
		if m := s.Metrics; m.Step != w.step || !same(m.TrainLoss, w.train) || !same(m.ICL, w.icl) {
			t.Errorf("step %d: metrics %+v", i, m)
		}
	}
	if v := tl.Steps[2].Metrics.Get("lr"); v != 0.0005 {
		t.Errorf("lr at step 400: %g", v)
	}
	if !math.IsNaN(tl.Steps[1].Metrics.Get("no such column")) {
		t.Error("an absent column is not NaN")
	}
	if len(tl.Metrics) != 4 || !math.IsNaN(tl.Metrics[1].EvalLoss) {
		t.Errorf("metrics: %+v", tl.Metrics)
	}
	if got := strings.Join(tl.Columns, ","); got != "train_loss,eval_loss,icl,lr" {
		t.Errorf("columns %q", got)
	}
}

func TestTimelineOpenErrors(t *testing.T) {
	index := func(steps string) string {
		return `{"schema": "attnscope.timeline/1", "model": "m", "steps": [` + steps + `]}`
	}
	cases := []struct {
		name  string
		files fake
		kind  Kind
		says  string
	}{
		{"no index", good().with(IndexFile, ""), NotTimeline, "has no timeline.json"},
		{"not JSON", good().with(IndexFile, "{steps"), BadIndex, "is not a timeline index"},
		{"no schema", good().with(IndexFile, `{"steps": []}`), BadSchema, `has no "schema"`},
		{"other schema", good().with(IndexFile, `{"schema": "attnscope.timeline/2", "steps": []}`), BadSchema, `schema "attnscope.timeline/2"`},
		{"no steps", good().with(IndexFile, index("")), NoSteps, "lists no steps"},
		{"entry lacks dir", good().with(IndexFile, index(`{"step": 0, "tokens": 0}`)), BadStep, "lacks"},
		{"negative tokens", good().with(IndexFile, index(`{"step": 0, "tokens": -1, "dir": "step-000000"}`)), BadStep, "cannot be negative"},
		{"dir outside", good().with(IndexFile, index(`{"step": 0, "tokens": 0, "dir": "../step-000000"}`)), BadStep, "not a folder inside the timeline"},
		{"shared dir", good().with(IndexFile, index(`{"step": 0, "tokens": 0, "dir": "step-000000"}, {"step": 100, "tokens": 51200, "dir": "step-000000"}`)), BadStep, "share the folder"},
		{"descending", good().with(IndexFile, index(`{"step": 100, "tokens": 51200, "dir": "step-000100"}, {"step": 0, "tokens": 0, "dir": "step-000000"}`)), NotAscending, "step 0 comes after step 100"},
		{"repeated step", good().with(IndexFile, index(`{"step": 100, "tokens": 51200, "dir": "step-000100"}, {"step": 100, "tokens": 51200, "dir": "step-000400"}`)), NotAscending, "step 100 comes after step 100"},
		{"tokens decrease", good().with(IndexFile, index(`{"step": 0, "tokens": 10, "dir": "step-000000"}, {"step": 100, "tokens": 5, "dir": "step-000100"}`)), NotAscending, "tokens cannot decrease"},
		{"step without model", good().with("step-000100/model.onnx", "", "step-000100/config.json", "{}"), MissingModel, "has no model.onnx"},
		{"step folder missing", good().with("step-000400/model.onnx", ""), MissingModel, "step 400's folder"},
		{"no tokenizer", good().with(TokenizerFile, ""), MissingTokenizer, "has no tokenizer.json"},
		{"no metrics", good().with(MetricsFile, ""), MissingMetrics, "has no metrics.csv"},
		{"empty metrics", good().with(MetricsFile, "\n"), BadMetrics, "is empty"},
		{"metrics without tokens", good().with(MetricsFile, "step,train_loss\n0,4\n"), BadMetrics, "no tokens column"},
		{"metrics short row", good().with(MetricsFile, "step,tokens,train_loss\n0,0\n"), BadMetrics, "header's 3 cells"},
		{"metrics bad number", good().with(MetricsFile, "step,tokens,train_loss\n0,0,four\n"), BadMetrics, `train_loss is "four"`},
		{"metrics bad step", good().with(MetricsFile, "step,tokens\nx,0\n"), BadMetrics, `step is "x"`},
		{"metrics descending", good().with(MetricsFile, "step,tokens\n100,51200\n0,0\n"), BadMetrics, "step 0 comes after step 100"},
		{"metrics lack a step", good().with(MetricsFile, "step,tokens\n0,0\n400,204800\n"), MetricsMismatch, "no row for step 100"},
		{"metrics other tokens", good().with(MetricsFile, "step,tokens\n0,0\n100,51201\n400,204800\n"), MetricsMismatch, "had seen 51201 tokens"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := c.files.write(t)
			tl, err := Open(dir)
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("Open: %v (%v), want a *timeline.Error", err, tl)
			}
			if te.Kind != c.kind || !strings.Contains(err.Error(), c.says) {
				t.Errorf("kind %d, %q; want kind %d saying %q", te.Kind, err, c.kind, c.says)
			}
			if msg := err.Error(); strings.Count(msg, "\n") > 0 || strings.Count(strings.TrimSuffix(msg, "."), ". ") > 0 {
				t.Errorf("not one sentence: %q", msg)
			}
		})
	}
}

func TestTimelineNotAFolder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "timeline.json")
	if err := os.WriteFile(file, []byte(goodIndex), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, filepath.Join(dir, "missing")} {
		if IsTimeline(p) {
			t.Errorf("IsTimeline(%s): true", p)
		}
		var te *Error
		if _, err := Open(p); !errors.As(err, &te) || te.Kind != NotTimeline {
			t.Errorf("Open(%s): %v", p, err)
		}
	}
	if IsTimeline(dir) != true {
		t.Error("IsTimeline: false for a folder with timeline.json")
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if IsTimeline(dir) {
		t.Error("IsTimeline: true without timeline.json")
	}
}

// export/timeline.py's committed fixture reads: every step with its metrics row, the
// columns the writer promises, and each step's config.json pointing at the shared tokenizer.
func TestTimelineFixture(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "timeline", "tiny")
	if !IsTimeline(dir) {
		testutil.Skip(t, "%s is missing: export/timeline.py writes it", dir)
	}
	tl, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(tl.Steps) < 2 {
		t.Fatalf("%d steps", len(tl.Steps))
	}
	for _, col := range []string{"train_loss", "eval_loss", "icl"} {
		if !slices.Contains(tl.Columns, col) {
			t.Errorf("metrics.csv lacks %s: %v", col, tl.Columns)
		}
	}
	for _, s := range tl.Steps {
		if s.Metrics.Step != s.Step || s.Metrics.Tokens != s.Tokens {
			t.Errorf("step %d: metrics %+v", s.Step, s.Metrics)
		}
		b, err := os.ReadFile(s.Config)
		if err != nil {
			t.Fatalf("step %d: %v", s.Step, err)
		}
		var cfg struct {
			Tokenizer struct{ File string } `json:"tokenizer"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("step %d: %v", s.Step, err)
		}
		if got := filepath.Join(s.Dir, cfg.Tokenizer.File); got != tl.Tokenizer {
			t.Errorf("step %d's config.json names tokenizer %s, the timeline's is %s", s.Step, got, tl.Tokenizer)
		}
	}
}

// A model or run folder that holds a timeline/ is named with it: the user gave the
// folder above the timeline.
func TestOpenPointsAtTheTimelineInside(t *testing.T) {
	dir := t.TempDir()
	inner := filepath.Join(dir, "timeline")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inner, IndexFile), []byte(goodIndex), 0o644); err != nil {
		t.Fatal(err)
	}
	var te *Error
	_, err := Open(dir)
	if !errors.As(err, &te) || te.Kind != NotTimeline || !strings.Contains(err.Error(), "but "+inner+" has: give that folder") {
		t.Fatalf("Open(%s): %v", dir, err)
	}
}
