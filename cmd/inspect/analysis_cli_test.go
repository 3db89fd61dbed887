package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

func readCSV(t *testing.T, s string) [][]string {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(s)).ReadAll()
	if err != nil {
		t.Fatalf("output is not CSV: %v\n%s", err, s)
	}
	return rows
}

// `inspect heads --ids PROMPT` scores the prompt's text columns exactly as export/scores.py
// does from PyTorch's attention (testdata/scores), and prints the contract's columns.
func TestHeadsTextScoresMatchPython(t *testing.T) {
	for _, name := range []string{"attn2l", "gpt2tiny"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testutil.Root(), "testdata", "scores", name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var g struct {
				Prompt []int64          `json:"prompt"`
				Heads  []map[string]any `json:"heads"`
			}
			if err := json.Unmarshal(b, &g); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := inspect(t, "heads", model(name), "--ids", idsFlag(g.Prompt), "--probes", "3", "--device", "cpu")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			rows := readCSV(t, out)
			if got := strings.Join(rows[0], ","); got != "layer,head,induction,prev_token,duplicate_token,first_token,self,entropy" {
				t.Fatalf("header %q", got)
			}
			if len(rows) != 1+len(g.Heads) {
				t.Fatalf("%d rows, want %d", len(rows), 1+len(g.Heads))
			}
			for i, want := range g.Heads {
				r := rows[1+i]
				for c, col := range rows[0] {
					if c < 2 || col == "induction" || col == "duplicate_token" {
						continue // the probe is drawn by the CLI, not the golden file's
					}
					v, err := strconv.ParseFloat(r[c], 64)
					if err != nil {
						t.Fatal(err)
					}
					if d := testutil.Diff(v, want[col].(float64)); d > 1e-5 {
						t.Errorf("L%sH%s %s: %g, Python %g", r[0], r[1], col, v, want[col])
					}
				}
				for _, c := range []int{2, 4} {
					if v, err := strconv.ParseFloat(r[c], 64); err != nil || !(v >= 0 && v <= 1) {
						t.Errorf("row %d column %d: %q", i, c, r[c])
					}
				}
			}
		})
	}
}

// The same seed gives the same probe and scores; another seed another probe; the table is
// sorted and names the probe.
func TestHeadsSeedAndTable(t *testing.T) {
	a, _, _ := inspect(t, "heads", model("attn2l"), "--seed", "5", "--probes", "2")
	b, _, _ := inspect(t, "heads", model("attn2l"), "--seed", "5", "--probes", "2")
	c, _, _ := inspect(t, "heads", model("attn2l"), "--seed", "6", "--probes", "2")
	if a != b || a == c || a == "" {
		t.Errorf("seeded runs: same seed equal %v, other seed differs %v", a == b, a != c)
	}
	out, stderr, code := inspect(t, "heads", model("attn2l"), "--format", "table", "--sort", "entropy")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "probe: 10 sequences of 2 × 16 random tokens, seed 0") || !strings.Contains(out, "entropy↑") {
		t.Errorf("table:\n%s", out)
	}
	if !strings.Contains(stderr, "16 tokens per copy (not 50) to fit the model's 32 positions") {
		t.Errorf("stderr %q", stderr)
	}
	prev := -1.0
	for _, line := range strings.Split(out, "\n")[3:] {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		e, _ := strconv.ParseFloat(strings.TrimSuffix(f[6], "*"), 64)
		if e < prev {
			t.Errorf("table not sorted by entropy:\n%s", out)
		}
		prev = e
	}
}

// modelWithTokenizer copies attn2l beside a word-level tokenizer.
func modelWithTokenizer(t *testing.T) string {
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(testutil.Root(), model("attn2l")))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "model.onnx"), src, 0o644)
	vocab := []string{`"[UNK]":0`}
	for i, w := range strings.Fields("the cat sat on mat a dog ran to park and then home it was late") {
		vocab = append(vocab, strconv.Quote(w)+":"+strconv.Itoa(i+1))
	}
	tok := `{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
 "normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,
 "model":{"type":"WordLevel","vocab":{` + strings.Join(vocab, ",") + `},"unk_token":"[UNK]"}}`
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(tok), 0o644)
	return filepath.Join(dir, "model.onnx")
}

// Corpus mode streams a file in windows and reports how many; the built-in sample is used
// when there is a tokenizer and no prompt.
func TestHeadsCorpusAndSample(t *testing.T) {
	m := modelWithTokenizer(t)
	corpus := filepath.Join(t.TempDir(), "corpus.txt")
	text := strings.Repeat("the cat sat on the mat and then a dog ran to the park\nit was late and the dog ran home\n", 40)
	os.WriteFile(corpus, []byte(text), 0o644)
	out, stderr, code := inspect(t, "heads", m, "--text-file", corpus, "--window", "16")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// 40 × 22 words = 880 tokens: 55 windows of 16, none left over.
	if !strings.Contains(stderr, "scored 55 windows of 16 tokens (0 tokens left over); in-context-learning score") {
		t.Errorf("stderr %q", stderr)
	}
	if rows := readCSV(t, out); len(rows) != 9 {
		t.Errorf("%d rows", len(rows))
	}
	out, stderr, code = inspect(t, "heads", m, "--format", "table")
	if code != 0 || !strings.Contains(out, "other scores on the built-in English sample (32 tokens)") {
		t.Errorf("exit %d, stderr %q, out:\n%s", code, stderr, out)
	}
}

func TestTokens(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "scores")
	b, _ := os.ReadFile(filepath.Join(dir, "attn2l.json"))
	var g struct {
		Prompt []int64   `json:"prompt"`
		Losses []float64 `json:"losses"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := inspect(t, "tokens", model("attn2l"), "--ids", idsFlag(g.Prompt))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rows := readCSV(t, out)
	if got := strings.Join(rows[0], ","); got != "pos,id,token,loss,top1_id,top1_token,top1_prob" {
		t.Fatalf("header %q", got)
	}
	if len(rows) != 1+len(g.Prompt) {
		t.Fatalf("%d rows", len(rows))
	}
	for i, want := range g.Losses {
		v, err := strconv.ParseFloat(rows[1+i][3], 64)
		if err != nil || testutil.Diff(v, want) > 1e-5 {
			t.Errorf("loss at %d: %q, Python %g", i, rows[1+i][3], want)
		}
	}
	if last := rows[len(rows)-1]; last[3] != "" || last[4] == "" {
		t.Errorf("last row %q", last)
	}
	m := modelWithTokenizer(t)
	out, stderr, code = inspect(t, "tokens", m, "--text", "the cat sat on the mat", "--format", "table", "--top-k", "2")
	if code != 0 || !strings.Contains(out, "in-context-learning score") || !strings.Contains(out, "mat") {
		t.Errorf("exit %d, stderr %q:\n%s", code, stderr, out)
	}
}

func TestAnalysisBadUsage(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"heads", "a.onnx", "b.onnx"}, 2, "heads takes one MODEL, or none for the built-in demo model"},
		{[]string{"heads", model("attn2l"), "--format", "xml"}, 2, "heads writes csv, npz, parquet, json or table"},
		{[]string{"heads", model("attn2l"), "--sort", "nope"}, 2, `unknown score "nope"`},
		{[]string{"heads", model("attn2l"), "--window", "16"}, 2, "--window streams a corpus"},
		{[]string{"heads", model("attn2l"), "--probe-len", "1"}, 2, "--probe-len must be at least 2"},
		{[]string{"heads", model("attn2l"), "--bos", "x"}, 2, "--bos takes auto, none or a token id"},
		{[]string{"heads", model("attn2l"), "--text-file", "README.md", "--window", "16"}, 1, "pass --tokenizer PATH"},
		{[]string{"tokens", model("attn2l")}, 2, "give exactly one of"},
		{[]string{"tokens", model("attn2l"), "--ids", "1,99"}, 2, "outside the model's vocabulary"},
	}
	for _, c := range cases {
		_, stderr, code := inspect(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
}

// headRow is one parsed row of `inspect heads`.
type headRow struct {
	layer, head int
	s           map[string]float64
}

func headsCSV(t *testing.T, args ...string) []headRow {
	t.Helper()
	out, stderr, code := inspect(t, append([]string{"heads"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rows := readCSV(t, out)
	var hs []headRow
	for _, r := range rows[1:] {
		h := headRow{s: map[string]float64{}}
		h.layer, _ = strconv.Atoi(r[0])
		h.head, _ = strconv.Atoi(r[1])
		for c := 2; c < len(r); c++ {
			h.s[rows[0][c]], _ = strconv.ParseFloat(r[c], 64)
		}
		hs = append(hs, h)
	}
	return hs
}

func best(hs []headRow, score string, layer int) headRow {
	var b headRow
	first := true
	for _, h := range hs {
		if (layer < 0 || h.layer == layer) && (first || h.s[score] > b.s[score]) {
			b, first = h, false
		}
	}
	return b
}

// trainedModels lists folders under models/ and testdata/models/ that export/train.py made
// (their config.json has a "training" entry) with the given number of layers.
func trainedModels(t *testing.T, layers int) []string {
	var out []string
	for _, pattern := range []string{"models/*/config.json", "testdata/models/*/config.json"} {
		files, _ := filepath.Glob(filepath.Join(testutil.Root(), pattern))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			var cfg struct {
				NLayers  int             `json:"n_layers"`
				Training json.RawMessage `json:"training"`
			}
			if json.Unmarshal(b, &cfg) == nil && cfg.Training != nil && cfg.NLayers == layers {
				rel, _ := filepath.Rel(testutil.Root(), filepath.Join(filepath.Dir(f), "model.onnx"))
				out = append(out, rel)
			}
		}
	}
	return out
}

// On the trained 2-layer demo model, heads ranks a layer-1 head first on induction with a
// score of at least 0.4, and a layer-0 head is its previous-token partner (≥ 0.4).
func TestHeadsFindTrainedInductionHead(t *testing.T) {
	demo := filepath.Join("models", "demo", "model.onnx")
	hs := headsCSV(t, demo, "--device", "cpu")
	top := best(hs, "induction", -1)
	if top.layer != 1 || !(top.s["induction"] >= 0.4) {
		t.Errorf("top induction head L%dH%d scores %.3f; want a layer-1 head ≥ 0.4", top.layer, top.head, top.s["induction"])
	}
	prev := best(hs, "prev_token", 0)
	if !(prev.s["prev_token"] >= 0.4) {
		t.Errorf("best layer-0 previous-token head L0H%d scores %.3f; want ≥ 0.4", prev.head, prev.s["prev_token"])
	}
	t.Logf("induction head L%dH%d %.3f, previous-token partner L0H%d %.3f", top.layer, top.head, top.s["induction"], prev.head, prev.s["prev_token"])
}

// A trained 1-layer attention-only model cannot form an induction head: no head reaches 0.4.
func TestHeadsOneLayerHasNoInductionHead(t *testing.T) {
	models := trainedModels(t, 1)
	if len(models) == 0 {
		t.Fatal("no trained 1-layer model under models/ or testdata/models/ (models/attn1l is committed: restore it)")
	}
	for _, m := range models {
		hs := headsCSV(t, m, "--device", "cpu")
		if top := best(hs, "induction", -1); !(top.s["induction"] < 0.4) {
			t.Errorf("%s: L%dH%d scores %.3f on induction; a 1-layer model should have no head ≥ 0.4", m, top.layer, top.head, top.s["induction"])
		} else {
			t.Logf("%s: best induction L%dH%d %.3f", m, top.layer, top.head, top.s["induction"])
		}
	}
}
