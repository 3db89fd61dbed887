package main

import (
	"encoding/csv"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/analysis"
)

// selRows parses a CSV with a header; it fails the test on a malformed one.
func selRows(t *testing.T, out string) (header []string, rows [][]string) {
	t.Helper()
	all, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(all) == 0 {
		t.Fatalf("not a CSV with a header (%v): %.200q", err, out)
	}
	return all[0], all[1:]
}

// sameRows compares two CSV row lists: text columns exactly, numeric columns from index
// first on within tol (a graph that exposes fewer tensors may be fused differently by
// onnxruntime's optimiser).
func sameRows(t *testing.T, got, want [][]string, first int, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range got {
		for j := range want[i] {
			if j < first {
				if got[i][j] != want[i][j] {
					t.Fatalf("row %d column %d: %q, want %q (row %q)", i, j, got[i][j], want[i][j], want[i])
				}
				continue
			}
			a, errA := strconv.ParseFloat(got[i][j], 64)
			b, errB := strconv.ParseFloat(want[i][j], 64)
			if errA != nil || errB != nil || !(math.Abs(a-b) <= tol || math.IsNaN(a) && math.IsNaN(b)) {
				t.Fatalf("row %d column %d: %q, want %q", i, j, got[i][j], want[i][j])
			}
		}
	}
}

// dump and heads with --layer (only those layers exposed) and --head (a filter on the rows)
// print exactly the rows of the full run that have those layers and heads, on a decoder,
// an encoder–decoder (encoder, decoder and cross-attention layers) and a float16 model.
func TestSelectionRowsEqualFullRun(t *testing.T) {
	ids := "3,1,4,1,5,9,2,6,5,3"
	probe := []string{"--probes", "2", "--probe-len", "8"}
	for _, name := range []string{"attn2l", "gpt2tiny", "encdec", "fp16"} {
		n, H := 2, 4 // layers, heads
		if name == "encdec" {
			n, H = 5, 2
		}
		full := map[string][][]string{}
		for _, cmd := range []string{"dump", "heads"} {
			args := []string{cmd, model(name), "--ids", ids}
			if cmd == "heads" {
				args = append(args, probe...)
			}
			out, stderr, code := inspect(t, args...)
			if code != 0 {
				t.Fatalf("%s %s: exit %d: %s", cmd, name, code, stderr)
			}
			_, full[cmd] = selRows(t, out)
		}
		for _, c := range []struct {
			layer, head   string // "" leaves the flag out
			layers, heads []int
		}{
			{"1", "", []int{1}, nil},
			{"0", "1", []int{0}, []int{1}},
			{"0-1", "0," + strconv.Itoa(H-1), []int{0, 1}, []int{0, H - 1}},
			{strconv.Itoa(n - 1), "1-" + strconv.Itoa(H-1), []int{n - 1}, seqInts(1, H-1)},
			{"", "1", nil, []int{1}},
		} {
			for _, cmd := range []string{"dump", "heads"} {
				t.Run(name+"/"+cmd+"/layer="+c.layer+",head="+c.head, func(t *testing.T) {
					args := []string{cmd, model(name), "--ids", ids}
					if cmd == "heads" {
						args = append(args, probe...)
					}
					if c.layer != "" {
						args = append(args, "--layer", c.layer)
					}
					if c.head != "" {
						args = append(args, "--head", c.head)
					}
					out, stderr, code := inspect(t, args...)
					if code != 0 {
						t.Fatalf("exit %d: %s", code, stderr)
					}
					_, got := selRows(t, out)
					var want [][]string
					for _, r := range full[cmd] {
						l, _ := strconv.Atoi(r[0])
						h, _ := strconv.Atoi(r[1])
						if (c.layers == nil || slices.Contains(c.layers, l)) && (c.heads == nil || slices.Contains(c.heads, h)) {
							want = append(want, r)
						}
					}
					if len(want) == 0 {
						t.Fatal("the case selects no rows of the full run")
					}
					first, tol := 6, 1e-6 // dump: layer,head,query,key,query_token,key_token | weight
					if cmd == "heads" {
						first, tol = 2, 1e-5
					}
					if name == "fp16" {
						tol = 2e-3
					}
					sameRows(t, got, want, first, tol)
				})
			}
		}
	}
}

// Bad selections and memory sizes get one sentence and exit 2, before the model runs.
func TestSelectionBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--layer", "3-1"}, "--layer 3-1 is a backwards range; write it low to high: 1-3"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--layer", "x"}, `--layer takes numbers from 0 and ranges such as 0,3-5; "x" is neither`},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--layer", "2"}, "--layer 2 does not exist; the model has 2 layers (0-1)"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--layer", "0-5"}, "--layer 2 does not exist; the model has 2 layers (0-1)"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--layer", ""}, "--layer is empty"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--head", "4"}, "--head 4 does not exist; layer 0 has 4 heads (0-3)"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--layer", "1", "--head", "1,,2"}, `--head "1,,2" has an empty entry`},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--head", "-1"}, "--head -1 is not a head; heads are numbered from 0 (leave --head out for all)"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--head", "0,-2"}, "--head -2 is not a head"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--layer", "0-1", "--head", "0", "--png", "x.png"}, "--png draws one head when --layer and --head each name one"},
		{[]string{"heads", model("attn2l"), "--layer", "1-x"}, `--layer takes numbers from 0 and ranges such as 0,3-5; "1-x" is neither`},
		{[]string{"heads", model("attn2l"), "--layer", "7"}, "--layer 7 does not exist; the model has 2 layers (0-1)"},
		{[]string{"heads", model("attn2l"), "--probes", "1", "--probe-len", "4", "--head", "9"}, "--head 9 does not exist; layer 0 has 4 heads (0-3)"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--max-memory", "lots"}, `--max-memory takes a size such as 8GiB, 500MB or 2G; "lots" is not one`},
		{[]string{"tokens", model("attn2l"), "--ids", "1,2", "--max-memory", "0"}, "--max-memory 0 is not a size attnscope can use"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--max-memory", "99999999TiB"}, "--max-memory 99999999TiB is too large"},
		// Not even the least probe fits: no --probe-len is offered (before: "at most 2",
		// the one given).
		{[]string{"heads", model("gpt2tiny"), "--max-memory", "1KiB", "--probe-len", "2"}, "not even layer 0 alone fits, and no smaller --probe-len fits (the least is 2), so raise --max-memory"},
		{[]string{"heads", model("gpt2tiny"), "--max-memory", "1KiB", "--probe-len", "20", "--layer", "0"}, "more than --max-memory 1KiB; no smaller --probe-len fits (the least is 2), so raise --max-memory"},
		{[]string{"heads", model("gpt2tiny"), "--max-memory", "20KiB", "--probe-len", "30"}, "use a smaller --probe-len (at most 8), or raise --max-memory"},
	} {
		t.Run(strings.Join(c.args[2:], " "), func(t *testing.T) {
			out, stderr, code := inspect(t, c.args...)
			if code != 2 || out != "" || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, stdout %.80q, stderr %q; want exit 2 and one line with %q", code, out, stderr, c.want)
			}
		})
	}
}

// A run whose outputs exceed --max-memory is refused in one sentence that says which
// layers would fit: on a real model through the CLI (sizes known from the session before
// any run), and for the cases of the wording.
func TestMaxMemoryRefusal(t *testing.T) {
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = strconv.Itoa(i + 1)
	}
	for _, c := range []struct {
		flags []string
		want  string // "" when the run must go ahead
	}{
		// attn2l: 4 heads × 30² × 4 bytes = 14,400 bytes per layer; logits 30 × 64 × 4 = 7,680.
		{[]string{"--max-memory", "25KB"}, "inspect: the 2 layers at 30 tokens need 28.1 KiB of attention outputs (35.6 KiB with the logits), more than --max-memory 25KB; --layer 0 would fit, or give a shorter prompt (at most 24 tokens fit)\n"},
		{[]string{"--max-memory", "1KB"}, "inspect: the 2 layers at 30 tokens need 28.1 KiB of attention outputs (35.6 KiB with the logits), more than --max-memory 1KB; not even layer 0 alone fits at this length: give a shorter prompt (at most 2 tokens fit), or raise --max-memory\n"},
		{[]string{"--layer", "1", "--max-memory", "12KiB"}, "inspect: layer 1 at 30 tokens needs 14.1 KiB of attention outputs (21.6 KiB with the logits), more than --max-memory 12KiB; give a shorter prompt (at most 20 tokens fit), or raise --max-memory\n"},
		{[]string{"--layer", "1", "--max-memory", "25KB"}, ""}, // the suggestion of the first case, taken
		{[]string{"--max-memory", "36KiB"}, ""},
	} {
		t.Run(strings.Join(c.flags, " "), func(t *testing.T) {
			out, stderr, code := inspect(t, append([]string{"dump", model("attn2l"), "--ids", strings.Join(ids, ",")}, c.flags...)...)
			switch {
			case c.want == "" && (code != 0 || !strings.HasPrefix(out, "layer,head,")):
				t.Errorf("exit %d, stderr %q; want the dump", code, stderr)
			case c.want != "" && (code != 2 || out != "" || stderr != c.want):
				t.Errorf("exit %d, stderr\n%q\nwant exit 2 and\n%q", code, stderr, c.want)
			}
		})
	}

	// A model fed one token at a time is checked too, from the sizes its first step told
	// at open (before, any --max-memory let it run).
	if _, stderr, code := inspect(t, "dump", model("fp16step"), "--ids", strings.Join(ids, ","), "--max-memory", "1"); code != 2 || !strings.HasPrefix(stderr, "inspect: the 2 layers at 30 tokens need 28.1 KiB of attention outputs") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("a step model: exit %d, stderr %q", code, stderr)
	}
	if out, stderr, code := inspect(t, "dump", model("fp16step"), "--ids", strings.Join(ids, ","), "--max-memory", "1MiB"); code != 0 || !strings.HasPrefix(out, "layer,head,") {
		t.Errorf("a step model within the limit: exit %d, stderr %q", code, stderr)
	}

	// A command without --layer is told only of fewer tokens.
	_, stderr, code := inspect(t, "tokens", model("attn2l"), "--ids", strings.Join(ids, ","), "--max-memory", "25KB")
	if want := "inspect: the 2 layers at 30 tokens need 28.1 KiB of attention outputs (35.6 KiB with the logits), more than --max-memory 25KB; give a shorter prompt (at most 24 tokens fit), or raise --max-memory\n"; code != 2 || stderr != want {
		t.Errorf("tokens: exit %d, stderr\n%q\nwant\n%q", code, stderr, want)
	}

	gib := int64(1) << 30
	perLayer := 2 * gib // 30 layers × 2 GiB = 60 GiB at 4,096 tokens
	for _, c := range []struct {
		name   string
		le     analysis.LimitError
		budget string
		want   string
	}{
		{"the issue's example", analysis.LimitError{What: "prompt", Tokens: 4096, Bytes: 30*perLayer + 786<<20, Budget: 12 * gib, MaxTokens: 1828, Layers: seqInts(0, 30), Attention: 30 * perLayer, Fit: seqInts(0, 5)},
			"--max-memory 12GiB",
			"the 30 layers at 4,096 tokens need 60.0 GiB of attention outputs (60.8 GiB with the logits), more than --max-memory 12GiB; --layer 0-4 would fit, or give a shorter prompt (at most 1,828 tokens fit)"},
		{"a selection that is not the first layers", analysis.LimitError{What: "prompt", Tokens: 4096, Bytes: 3 * perLayer, Budget: 5 * gib, MaxTokens: 3000, Layers: []int{3, 7, 8}, Attention: 3 * perLayer, Fit: []int{3, 7}},
			"--max-memory 5GiB",
			"the 3 layers 3,7-8 at 4,096 tokens need 6.0 GiB of attention outputs, more than --max-memory 5GiB; --layer 3,7 would fit, or give a shorter prompt (at most 3,000 tokens fit)"},
		{"an encoder–decoder's target", analysis.LimitError{What: "target", Tokens: 2048, Bytes: 2 * perLayer, Budget: gib, MaxTokens: 1024, Layers: []int{0, 1}, Attention: 2 * perLayer},
			"--max-memory 1GiB",
			"the 2 layers at a target of 2,048 tokens need 4.0 GiB of attention outputs, more than --max-memory 1GiB; not even layer 0 alone fits at this length: give a shorter target (at most 1,024 tokens fit), or raise --max-memory"},
		{"a command without --layer", analysis.LimitError{What: "prompt", Tokens: 4096, Bytes: 30*perLayer + 786<<20, Budget: 12 * gib, MaxTokens: 1828, Layers: seqInts(0, 30), Attention: 30 * perLayer, Fit: seqInts(0, 5)},
			"--max-memory 12GiB",
			"the 30 layers at 4,096 tokens need 60.0 GiB of attention outputs (60.8 GiB with the logits), more than --max-memory 12GiB; give a shorter prompt (at most 1,828 tokens fit), or raise --max-memory"},
		{"sizes per layer unknown", analysis.LimitError{What: "prompt", Tokens: 9000, Bytes: 40 * gib, Budget: 6 * gib, MaxTokens: 3500},
			"--max-memory's default of 6.0 GiB (a quarter of this machine's memory)",
			"a prompt of 9,000 tokens needs 40.0 GiB of outputs (attention and logits), more than --max-memory's default of 6.0 GiB (a quarter of this machine's memory); give a shorter prompt (at most 3,500 tokens fit)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := memoryRefusal(&c.le, c.budget, shorter(c.le.What, c.le.MaxTokens), !strings.Contains(c.name, "without --layer"))
			if _, usage := err.(usageError); !usage || err.Error() != c.want {
				t.Errorf("got (usage error %v)\n%q\nwant\n%q", usage, err, c.want)
			}
		})
	}
}

func seqInts(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// A head of a layer left out of --layer can be ablated even where neither the graph nor
// the selected layers' outputs tell its layer's head count (tlstyle: heads known only at
// run time, no mean ablation to expose z): the count comes from the weights, and the
// selected layer's rows equal a full ablated run's and differ from an unablated one's.
// (Before: "the head count of layer 0 is not known before a run", exit 2.)
func TestAblateUnselectedLayer(t *testing.T) {
	layerRows := func(out string, layer string) string {
		var b strings.Builder
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, layer+",") {
				b.WriteString(line + "\n")
			}
		}
		return b.String()
	}
	for _, c := range []struct {
		cmd  []string
		rows string // the layer whose rows are compared
	}{
		{[]string{"dump", model("tlstyle"), "--ids", "5,6,7,8"}, "1"},
		{[]string{"heads", model("tlstyle"), "--probe-len", "4", "--probes", "2", "--ids", "5,6,7,8"}, "1"},
	} {
		t.Run(c.cmd[0], func(t *testing.T) {
			run := func(extra ...string) string {
				out, stderr, code := inspect(t, append(slices.Clone(c.cmd), extra...)...)
				if code != 0 {
					t.Fatalf("%v: exit %d, stderr %q", extra, code, stderr)
				}
				return layerRows(out, c.rows)
			}
			sel := run("--ablate", "L0H1", "--layer", "1")
			full := run("--ablate", "L0H1")
			plain := run("--layer", "1")
			if sel == "" || sel != full {
				t.Errorf("layer 1 with L0H1 ablated and --layer 1:\n%s\nwant the full ablated run's:\n%s", sel, full)
			}
			if sel == plain {
				t.Error("the ablation of the unselected layer changed nothing")
			}
		})
	}
	_, stderr, code := inspect(t, "dump", model("tlstyle"), "--ids", "5,6,7", "--ablate", "L0H9", "--layer", "1")
	if code != 2 || !strings.Contains(stderr, `cannot ablate "L0H9": layer 0 has 4 heads (H0–H3)`) {
		t.Errorf("a head past the traced count: exit %d, stderr %q", code, stderr)
	}
}
