package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/timeline"
)

// tinyTimeline writes a timeline of three steps into a temporary folder: copies of
// testdata/models attn2l, attn1l and attn2l again (the same 64-id vocabulary and 32
// positions), with testdata/hub/tiny's 64-id tokenizer at its top.
func tinyTimeline(t *testing.T) string {
	t.Helper()
	root := testutil.Root()
	dir := t.TempDir()
	copyFile := func(from, to string) {
		b, err := os.ReadFile(filepath.Join(root, from))
		if err != nil {
			testutil.Skip(t, "the timeline test's inputs are missing: %v", err)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		step, tokens int64
		model        string
	}{{0, 0, "attn2l"}, {30, 15360, "attn1l"}, {250, 128000, "attn2l"}}
	var index struct {
		Schema string           `json:"schema"`
		Model  string           `json:"model"`
		Steps  []map[string]any `json:"steps"`
	}
	index.Schema, index.Model = timeline.Schema, "tiny"
	metrics := "step,tokens,train_loss,eval_loss,icl\n"
	for i, s := range steps {
		name := fmt.Sprintf("step-%06d", s.step)
		for _, f := range []string{"model.onnx", "config.json"} {
			copyFile(filepath.Join("testdata", "models", s.model, f), filepath.Join(dir, name, f))
		}
		index.Steps = append(index.Steps, map[string]any{"step": s.step, "tokens": s.tokens, "dir": name})
		icl := ""
		if i > 0 {
			icl = strconv.FormatFloat(-0.1*float64(i), 'g', -1, 64)
		}
		metrics += fmt.Sprintf("%d,%d,%g,,%s\n", s.step, s.tokens, 4.0-float64(i), icl)
	}
	copyFile(filepath.Join("testdata", "hub", "tiny", "tokenizer.json"), filepath.Join(dir, "tokenizer.json"))
	b, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"timeline.json": b, "metrics.csv": []byte(metrics)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// timelines are the timelines the tests run on: one written from copies of the test
// models, and export/timeline.py's committed fixture.
func timelines(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"copies": tinyTimeline,
		"fixture": func(t *testing.T) string {
			dir := committedTimeline(t)
			return dir
		},
	}
}

// `heads --timeline DIR` is `heads` run on each step's model with the same flags, block
// after block, with each block's step and tokens in front: the same probe and text for
// every step, and each step's tokenizer the timeline's.
func TestTimelineHeadsEqualsHeadsPerStep(t *testing.T) {
	flagSets := [][]string{
		{"--probes", "3"}, // the built-in sample: needs DIR/tokenizer.json
		{"--probes", "2", "--seed", "7", "--ids", "5,9,17,5,9,17,3,4"}, // a prompt of ids
		{"--probes", "2", "--probe-len", "5", "--text", "the cat sat on the mat", "--layer", "0"},
	}
	for name, dirOf := range timelines(t) {
		t.Run(name, func(t *testing.T) {
			dir := dirOf(t)
			tl, err := timeline.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, flags := range flagSets {
				t.Run(strings.Join(flags, " "), func(t *testing.T) {
					args := append([]string{"heads", "--timeline", dir, "--device", "cpu"}, flags...)
					out, stderr, code := inspect(t, args...)
					if code != 0 {
						t.Fatalf("exit %d: %s", code, stderr)
					}
					rows := readCSV(t, out)
					if got := strings.Join(rows[0], ","); got != "step,tokens,layer,head,induction,prev_token,duplicate_token,first_token,self,entropy" {
						t.Fatalf("header %q", got)
					}
					rows = rows[1:]
					for i, st := range tl.Steps {
						if want := fmt.Sprintf("step %d of %d: step %d", i+1, len(tl.Steps), st.Step); !strings.Contains(stderr, want) {
							t.Errorf("stderr lacks %q:\n%s", want, stderr)
						}
						single, stderr, code := inspect(t, append([]string{"heads", st.Model, "--device", "cpu"}, flags...)...)
						if code != 0 {
							t.Fatalf("heads on step %d: exit %d: %s", st.Step, code, stderr)
						}
						want := readCSV(t, single)[1:]
						if len(want) == 0 || len(rows) < len(want) {
							t.Fatalf("step %d: %d rows left in the timeline's table, heads gave %d", st.Step, len(rows), len(want))
						}
						for j, w := range want {
							r := rows[j]
							if r[0] != strconv.FormatInt(st.Step, 10) || r[1] != strconv.FormatInt(st.Tokens, 10) {
								t.Errorf("step %d row %d: step,tokens = %s,%s, want %d,%d", st.Step, j, r[0], r[1], st.Step, st.Tokens)
							}
							if got, w := strings.Join(r[2:], ","), strings.Join(w, ","); got != w {
								t.Errorf("step %d row %d:\n timeline %s\n heads    %s", st.Step, j, got, w)
							}
						}
						rows = rows[len(want):]
					}
					if len(rows) != 0 {
						t.Errorf("%d rows after the last step's block", len(rows))
					}
				})
			}
		})
	}
}

// The timeline written from copies: its steps' models differ, so a table that mixed up
// steps or probes would show it; --format table shows the metrics and the heads over the
// steps; json carries step and tokens; bad input is one line with the right exit code.
func TestTimelineFormatsAndErrors(t *testing.T) {
	dir := tinyTimeline(t)
	out, stderr, code := inspect(t, "heads", "--timeline", dir, "--probes", "3", "--device", "cpu", "--format", "table", "--sort", "prev_token")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"timeline tiny: 3 steps, step 0 to 250 (0 to 128k tokens)",
		"other scores on the built-in English sample", // DIR/tokenizer.json was found
		"prev_token by step: the heads that reach 0.4 at any step ('*') and the 5 best at the last step",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	lines := map[string][]string{}
	var heads []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		lines[f[0]] = f[1:]
		if strings.HasPrefix(f[0], "L") && len(f) == 4 {
			heads = append(heads, f[0])
		}
	}
	for label, want := range map[string]string{"step": "0 30 250", "tokens": "0 15.4k 128k", "train_loss": "4.000 3.000 2.000", "eval_loss": "- - -", "icl": "- -0.100 -0.200"} {
		if got := strings.Join(lines[label], " "); got != want {
			t.Errorf("row %s: %q, want %q", label, got, want)
		}
	}
	if len(heads) < 5 {
		t.Fatalf("%d head rows, want at least the 5 best:\n%s", len(heads), out)
	}
	// Step 30 is the one-layer model: its layer-1 cells are "-"; the rows are sorted by the
	// last step's score.
	prev := 2.0
	for _, h := range heads {
		cells := lines[h]
		if strings.HasPrefix(h, "L1") != (cells[1] == "-") {
			t.Errorf("%s at step 30: %q", h, cells[1])
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(cells[2], "*"), 64)
		if err != nil || v > prev {
			t.Errorf("%s's last score %q is not sorted (previous %g)", h, cells[2], prev)
		}
		prev = v
	}

	js := filepath.Join(t.TempDir(), "heads.json")
	if _, stderr, code := inspect(t, "heads", "--timeline", dir, "--probes", "2", "--device", "cpu", "--out", js); code != 0 {
		t.Fatalf("--out heads.json: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	if err := json.Unmarshal(b, &objs); err != nil {
		t.Fatal(err)
	}
	if len(objs) != 8+4+8 || objs[0]["step"] != 0.0 || objs[len(objs)-1]["tokens"] != 128000.0 || objs[len(objs)-1]["layer"] != 1.0 {
		t.Errorf("%d objects, first %v, last %v", len(objs), objs[0], objs[len(objs)-1])
	}

	broken := tinyTimeline(t)
	if err := os.Remove(filepath.Join(broken, "step-000030", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"--timeline", broken}, 1, "step 30's folder"},
		{[]string{"--timeline", filepath.Join(dir, "step-000000")}, 1, "has no timeline.json"},
		{[]string{"--timeline", dir, model("attn2l")}, 2, "give no MODEL with it"},
		{[]string{"--timeline", ""}, 2, "--timeline is empty"},
		{[]string{dir}, 2, "is a training timeline, not a model; score its steps with --timeline"},
		{[]string{"--timeline", dir, "--out", filepath.Join(dir, "step-000030", "config.json")}, 2, "would overwrite a file of step 30's model (config.json)"},
	} {
		_, stderr, code := inspect(t, append([]string{"heads", "--device", "cpu", "--probes", "2"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.says) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and one line saying %q", c.args, code, stderr, c.code, c.says)
		}
	}
}

// committedTimeline is the committed test timeline testdata/timeline/tiny (make
// fixtures); the test is skipped, with a message, when it is missing.
func committedTimeline(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testutil.Root(), "testdata", "timeline", "tiny")
	if !timeline.IsTimeline(dir) {
		testutil.Skip(t, "%s is missing: export/timeline.py writes it (make fixtures)", dir)
	}
	return dir
}
