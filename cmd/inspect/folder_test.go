package main

import (
	"bytes"
	"encoding/csv"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/npy"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/tableio"
)

// dumpRows parses dump's CSV into rows (header dropped, checked).
func dumpRows(t *testing.T, out string) [][]string {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 || !strings.HasPrefix(strings.Join(rows[0], ","), "layer,head,query,key,query_token,key_token,weight") {
		t.Fatalf("no dump header in %.200q", out)
	}
	return rows[1:]
}

// compareDump checks every weight of a dump against a reference run's attention.
func compareDump(t *testing.T, rows [][]string, run testutil.Run) {
	t.Helper()
	want := 0
	for _, a := range run.Attention {
		want += len(a.Data)
	}
	if len(rows) != want {
		t.Fatalf("%d rows, want %d", len(rows), want)
	}
	worst := 0.0
	for _, r := range rows {
		var v [4]int
		for i := range v {
			v[i], _ = strconv.Atoi(r[i])
		}
		w, err := strconv.ParseFloat(r[6], 32)
		if err != nil {
			t.Fatal(err)
		}
		a := run.Attention[v[0]]
		Q, K := a.Shape[len(a.Shape)-2], a.Shape[len(a.Shape)-1]
		worst = math.Max(worst, testutil.Diff(w, float64(a.Data[(v[1]*Q+v[2])*K+v[3]])))
	}
	if worst > 1e-5 {
		t.Fatalf("max abs diff %g from PyTorch", worst)
	}
}

// A Hub-layout folder (config.json and tokenizer.json above onnx/model.onnx) opens as the
// model inside it, with the tokenizer one level up, and gives PyTorch's attention.
func TestFolderHubLayout(t *testing.T) {
	dir := filepath.Join("testdata", "hub", "tiny")
	ref := testutil.ReadReference(t, filepath.Join(testutil.Root(), dir))
	run := ref.Runs[len(ref.Runs)-1]
	out, stderr, code := inspect(t, "dump", dir, "--ids", idsFlag(run.IDs), "--device", "cpu")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	compareDump(t, dumpRows(t, out), run)
	// Text goes through the tokenizer.json above onnx/.
	out, stderr, code = inspect(t, "dump", dir, "--text", "w5 w7 w9", "--device", "cpu")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	rows := dumpRows(t, out)
	if rows[1][4] != "w5" || rows[1][5] != "w7" {
		t.Errorf("row %v: the folder's tokenizer did not label the tokens", rows[1])
	}
	// config.json's max_position_embeddings is the limit (the graph's table has as many).
	_, stderr, code = inspect(t, "dump", dir, "--ids", idsFlag(make([]int64, 33)))
	if code != 2 || !strings.Contains(stderr, "the model's position table holds 32") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// optimum's split layout (encoder_model.onnx + decoder_model.onnx) runs as one
// encoder–decoder, says so, and dumps PyTorch's attention; heads and tokens run on it too.
func TestFolderSplitEncDec(t *testing.T) {
	dir := filepath.Join("testdata", "models", "split-encdec")
	ref := testutil.ReadReference(t, filepath.Join(testutil.Root(), dir))
	notices := map[string]string{
		"":                   "inspect: testdata/models/split-encdec (bart) holds several models; running encoder_model.onnx and decoder_model_merged.onnx as one encoder–decoder (the others: decoder_model.onnx; --file NAME picks one)\n",
		"decoder_model.onnx": "inspect: testdata/models/split-encdec (bart): running encoder_model.onnx and decoder_model.onnx as one encoder–decoder\n",
	}
	for file, want := range notices {
		for _, run := range ref.Runs {
			args := []string{"dump", dir, "--ids", idsFlag(run.IDs), "--target-ids", idsFlag(run.DecoderIDs), "--device", "cpu"}
			if file != "" {
				args = append(args, "--file", file)
			}
			out, stderr, code := inspect(t, args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if stderr != want {
				t.Errorf("stderr %q, want %q", stderr, want)
			}
			rows := dumpRows(t, out)
			compareDump(t, rows, run)
			// Cross-attention (layer 2) labels its keys with the source.
			for _, r := range rows {
				if r[0] == "2" && r[3] == "0" && r[5] != strconv.FormatInt(run.IDs[0], 10) {
					t.Fatalf("cross-attention row %v: key 0 is not the source's first token %d", r, run.IDs[0])
				}
			}
		}
	}
	// Naming the decoder file runs it alone (TestLoneDecoder): without its
	// encoder_hidden_states it cannot run, and says which input it needs.
	run := ref.Runs[0]
	_, stderr, code := inspect(t, "dump", filepath.Join(dir, "decoder_model.onnx"), "--ids", idsFlag(run.IDs))
	if code != 1 || !strings.Contains(stderr, "running "+filepath.Join(dir, "decoder_model.onnx")+" alone") || !strings.Contains(stderr, "encoder_hidden_states") || !strings.Contains(stderr, "--input NAME=FILE.npy") {
		t.Errorf("the decoder file alone without --input: exit %d, stderr %q", code, stderr)
	}
	for _, args := range [][]string{
		{"tokens", dir, "--ids", idsFlag(run.IDs), "--target-ids", idsFlag(run.DecoderIDs)},
		{"heads", dir, "--probe-len", "8", "--probes", "2"},
		{"graph", dir},
	} {
		out, stderr, code := inspect(t, args...)
		if code != 0 || out == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// A folder with several models runs the first by the documented order and says which,
// --file picks another, and a folder with no rule to choose is refused naming its files.
func TestFolderChoice(t *testing.T) {
	dir := t.TempDir()
	copyFile := func(from, to string) {
		b, err := os.ReadFile(filepath.Join(testutil.Root(), from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(model("attn1l"), filepath.Join(dir, "onnx", "model.onnx"))
	copyFile(model("attn2l"), filepath.Join(dir, "onnx", "model_fp16.onnx"))
	layers := func(out string) string {
		seen := map[string]bool{}
		for _, r := range dumpRows(t, out) {
			seen[r[0]] = true
		}
		return strconv.Itoa(len(seen))
	}
	out, stderr, code := inspect(t, "dump", dir, "--ids", "1,2,3")
	if code != 0 || layers(out) != "1" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if want := "holds several models; using onnx/model.onnx (the others: onnx/model_fp16.onnx; --file NAME picks one)"; !strings.Contains(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr %q, want one line with %q", stderr, want)
	}
	out, stderr, code = inspect(t, "dump", dir, "--file", "model_fp16.onnx", "--ids", "1,2,3")
	if code != 0 || layers(out) != "2" || stderr != "" {
		t.Fatalf("--file: exit %d, %s layers, stderr %q", code, layers(out), stderr)
	}
	_, stderr, code = inspect(t, "dump", dir, "--file", "model_q4.onnx", "--ids", "1,2,3")
	if code != 2 || !strings.Contains(stderr, "--file model_q4.onnx: "+dir+" holds no such file; its models are onnx/model.onnx, onnx/model_fp16.onnx") {
		t.Errorf("missing --file: exit %d, stderr %q", code, stderr)
	}
	other := t.TempDir()
	copyFile(model("attn1l"), filepath.Join(other, "first.onnx"))
	copyFile(model("attn2l"), filepath.Join(other, "second.onnx"))
	for _, cmd := range []string{"dump", "graph"} {
		_, stderr, code = inspect(t, cmd, other, "--ids", "1,2,3")
		if cmd == "graph" {
			_, stderr, code = inspect(t, cmd, other)
		}
		want := other + " holds several .onnx models (first.onnx, second.onnx) and none of the names attnscope chooses by"
		if code != 1 || !strings.Contains(stderr, want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%s: exit %d, stderr %q", cmd, code, stderr)
		}
	}
	_, stderr, code = inspect(t, "dump", other, "--file", "second.onnx", "--ids", "1,2,3")
	if code != 0 {
		t.Errorf("--file on an unordered folder: exit %d, stderr %q", code, stderr)
	}
}

// The subcommands that run a model use the built-in demo when no MODEL is given, saying
// so on stderr, with its prompt when none is given.
func TestSubcommandsUseDemo(t *testing.T) {
	for _, args := range [][]string{
		{"dump", "--ids", "1,2,3", "--layer", "0", "--head", "0"},
		{"tokens"},
		{"graph"},
		{"heads", "--probe-len", "8", "--probes", "2"},
		{"ablate", "--heads", "L0H0", "--ids", "1,2,3,4"},
	} {
		out, stderr, code := inspect(t, args...)
		if code != 0 || out == "" || !strings.Contains(stderr, "inspect: no MODEL given: using the built-in demo model") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// writeNpy writes an array to a fresh .npy file and returns its path.
func writeNpy(t *testing.T, name string, shape []int, data any) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := npy.Write(f, &npy.Array{Shape: shape, Data: data}); err != nil {
		t.Fatal(err)
	}
	return p
}

// --input feeds a model input from an .npy file: an attention_mask with a 0 hides that key
// from every query (the rows still sum to 1); a float input attnscope cannot build (a lone
// decoder's encoder_hidden_states) lets that model run, and other values move its
// cross-attention. Wrong names, types and shapes are refused in one sentence.
func TestInputFlag(t *testing.T) {
	mask := writeNpy(t, "mask.npy", []int{1, 5}, []int64{1, 0, 1, 1, 1})
	out, stderr, code := inspect(t, "dump", model("gpt2tiny"), "--ids", "5,6,7,8,9", "--input", "attention_mask="+mask)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	plain, _, _ := inspect(t, "dump", model("gpt2tiny"), "--ids", "5,6,7,8,9")
	sums := map[string]float64{}
	moved := false
	plainRows := dumpRows(t, plain)
	for i, r := range dumpRows(t, out) {
		w, _ := strconv.ParseFloat(r[6], 64)
		sums[r[0]+"/"+r[1]+"/"+r[2]] += w
		if q, _ := strconv.Atoi(r[2]); r[3] == "1" && q >= 2 && w > 1e-6 {
			t.Errorf("row %v: the masked key 1 gets weight", r)
		}
		if r[6] != plainRows[i][6] {
			moved = true
		}
	}
	for row, s := range sums {
		if math.Abs(s-1) > 1e-5 {
			t.Errorf("row %s sums to %g", row, s)
		}
	}
	if !moved {
		t.Error("the mask changed nothing")
	}
	// Ablation runs (batched otherwise) take the given mask too.
	if _, stderr, code := inspect(t, "ablate", model("gpt2tiny"), "--ids", "5,6,7,8,9", "--heads", "L0H0,L1H1", "--input", "attention_mask="+mask); code != 0 {
		t.Errorf("ablate with --input: exit %d, stderr %q", code, stderr)
	}

	// A decoder alone needs its encoder_hidden_states: a float input.
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(testutil.Root(), "testdata", "models", "split-encdec", "decoder_model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "decoder_model.onnx"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	hidden := make([]float32, 3*16)
	for i := range hidden {
		hidden[i] = float32(math.Sin(float64(i)))
	}
	flip := make([]float32, len(hidden))
	for i, v := range hidden {
		flip[i] = -2 * v
	}
	encMask := writeNpy(t, "m.npy", []int{1, 3}, []int64{1, 1, 1})
	cross := func(h []float32) []string {
		hp := writeNpy(t, "h.npy", []int{1, 3, 16}, h)
		out, stderr, code := inspect(t, "dump", dir, "--ids", "5,6,7,8", "--input", "encoder_hidden_states="+hp, "--input", "encoder_attention_mask="+encMask)
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		var w []string
		for _, r := range dumpRows(t, out) {
			if r[0] == "1" { // the first cross-attention: [target 4, source 3]
				w = append(w, r[6])
				if k, _ := strconv.Atoi(r[3]); k >= 3 {
					t.Fatalf("cross-attention row %v has a key past the 3 source positions", r)
				}
			}
		}
		return w
	}
	a, c := cross(hidden), cross(flip)
	if len(a) != 2*4*3 || strings.Join(a, ",") == strings.Join(c, ",") {
		t.Errorf("cross-attention %d weights; other hidden states changed nothing: %v", len(a), a[:min(4, len(a))])
	}
	_, stderr, code = inspect(t, "dump", dir, "--ids", "5,6")
	if code != 1 || !strings.Contains(stderr, "encoder_hidden_states") {
		t.Errorf("no --input: exit %d, stderr %q", code, stderr)
	}

	floatMask := writeNpy(t, "fmask.npy", []int{1, 5}, []float32{1, 1, 1, 1, 1})
	short := writeNpy(t, "short.npy", []int{1, 3}, []int64{1, 1, 1})
	cases := []struct {
		flag, want string
	}{
		{"attention_mask=" + short, "--input attention_mask: the array has shape [1, 3] but this run needs [1, 5] (axis 1 is sequence, which the prompt makes 5 long)"},
		{"attention_mask=" + floatMask, "--input attention_mask: the array is float but the model takes int64 [batch, sequence]"},
		{"input_features=" + floatMask, "--input input_features: the model has no such input (its inputs: input_ids, attention_mask, position_ids)"},
		{"attention_mask", "give NAME=FILE.npy"},
		{"attention_mask=/nonexistent.npy", "--input attention_mask=/nonexistent.npy: the file does not exist"},
		{"attention_mask=" + filepath.Join(testutil.Root(), "README.md"), "--input attention_mask="},
		// Positions past the model's table are refused before onnxruntime's Gather fails.
		{"position_ids=" + writeNpy(t, "pos.npy", []int{1, 5}, []int64{0, 1, 2, 3, 5000}), "--input position_ids: the array holds 5000 (at flat index 4), outside the model's 64 positions (0 to 63)"},
		{"position_ids=" + writeNpy(t, "neg.npy", []int{1, 5}, []int64{0, -1, 2, 3, 4}), "--input position_ids: the array holds -1 (at flat index 1), outside the model's 64 positions"},
	}
	for _, c := range cases {
		_, stderr, code := inspect(t, "dump", model("gpt2tiny"), "--ids", "5,6,7,8,9", "--input", c.flag)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("--input %s: exit %d, stderr %q; want exit 2 and %q", c.flag, code, stderr, c.want)
		}
	}

	// Runs that cannot use a prompt-sized array say why in one sentence: heads' probes
	// (named as the probe, not the prompt: before, "which the prompt makes 64 long" for a
	// 5-token prompt), and a model fed one token at a time (before, the array was silently
	// ignored and the dump equalled one without it).
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"heads", model("gpt2tiny"), "--ids", "5,6,7,8,9", "--input", "attention_mask=" + mask},
			"--input attention_mask: the array has shape [1, 5] but this run needs [1, 64] (axis 1 is sequence, which the probe makes 64 long); heads runs its induction probes with the given arrays too, so give arrays as long as the probe (64 tokens), or leave --input out"},
		{[]string{"dump", model("fp16step"), "--ids", "5,6,7,8,9", "--input", "attention_mask=" + mask},
			"--input attention_mask: the model takes one token at a time with past state, and attnscope builds each step's inputs itself"},
	} {
		_, stderr, code := inspect(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%s %s: exit %d, stderr %q; want exit 2 and %q", c.args[0], c.args[1], code, stderr, c.want)
		}
	}
	// Probes as long as the given array run with it.
	m64 := writeNpy(t, "m64.npy", []int{1, 64}, slices.Repeat([]int64{1}, 64))
	if out, stderr, code := inspect(t, "heads", model("gpt2tiny"), "--input", "attention_mask="+m64); code != 0 || !strings.HasPrefix(out, "layer,head,") {
		t.Errorf("heads with a probe-long mask: exit %d, stderr %q", code, stderr)
	}
}

// The README's `graph --save` example runs as written: the saved model's attn.L{n}
// outputs read in Python onnxruntime, with the shape it prints, and equal to dump's.
func TestReadmeGraphSave(t *testing.T) {
	py := testutil.Python(t, "numpy", "onnxruntime")
	b, err := os.ReadFile(filepath.Join(testutil.Root(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "### The rewritten model in Python")
	if !ok {
		t.Fatal("README.md has no section on graph --save in Python")
	}
	block := func(lang string) string {
		_, rest, ok := strings.Cut(section, "```"+lang+"\n")
		body, _, ok2 := strings.Cut(rest, "```")
		if !ok || !ok2 {
			t.Fatalf("no %s block in the section", lang)
		}
		return body
	}
	const readmePath = "/tmp/gpt2tiny-attn.onnx"
	saved := filepath.Join(t.TempDir(), "gpt2tiny-attn.onnx")
	args := strings.Fields(strings.ReplaceAll(block("sh"), readmePath, saved))
	if len(args) < 2 || args[0] != "bin/inspect" {
		t.Fatalf("the sh block is not one bin/inspect command: %q", args)
	}
	if _, stderr, code := inspect(t, args[1:]...); code != 0 {
		t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
	}
	script := strings.ReplaceAll(block("python"), readmePath, saved)
	// Also print layer 1, head 0 in full, to compare with dump.
	script += "\nprint(','.join(repr(float(x)) for x in attn[1][0, 0].reshape(-1)))\n"
	cmd := exec.Command(py, "-c", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's Python fails: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || lines[0] != "(1, 4, 5, 5)" || !strings.Contains(lines[1], "1.") {
		t.Fatalf("the README's Python printed %q", out)
	}
	dump, stderr, code := inspect(t, "dump", model("gpt2tiny"), "--ids", "5,17,23,5,17", "--layer", "1", "--head", "0")
	if code != 0 {
		t.Fatalf("dump: exit %d, stderr %q", code, stderr)
	}
	var want []float64
	for _, r := range dumpRows(t, dump) {
		w, _ := strconv.ParseFloat(r[6], 64)
		want = append(want, w)
	}
	var got []float64
	for _, s := range strings.Split(lines[2], ",") {
		v, _ := strconv.ParseFloat(s, 64)
		got = append(got, v)
	}
	if d := testutil.MaxAbsDiff(got, want); d > 1e-6 {
		t.Errorf("Python's attn.L1 head 0 differs from dump's by %g", d)
	}
}

// A decoder given as a file path (not its folder) runs alone on --input
// encoder_hidden_states: its cross-attention layers are labelled cross, in the CSV (keys
// are the given states' positions: no token, key_id -1) and in the npz's layer_kinds,
// while its self-attention keys are the prompt's tokens. The encoder mask it needs, when
// not given, is built as long as the given states (3 here, the prompt 4), not the prompt.
// The shared Vespa decoder (float mask, 7 states) labels its cross-attention the same way.
// (Before: the file was joined with its encoder, the cross layers were written as self
// with the prompt's tokens on their first keys, and a missing mask failed in onnxruntime.)
func TestLoneDecoder(t *testing.T) {
	hidden := func(s, d int) string {
		h := make([]float32, s*d)
		for i := range h {
			h[i] = float32(math.Sin(float64(i)))
		}
		return writeNpy(t, "h.npy", []int{1, s, d}, h)
	}
	split := filepath.Join("testdata", "models", "split-encdec", "decoder_model.onnx")
	cases := []struct {
		name    string
		model   string // relative to the shared fixtures when shared
		shared  bool
		ids     string
		inputs  []string
		sources int
		notice  string
	}{
		{"split decoder, no mask", split, false, "5,6,7,8", []string{"encoder_hidden_states=" + hidden(3, 16)}, 3,
			"inspect: running " + split + " alone, as a decoder fed encoder_hidden_states by --input (give its folder to run it with encoder_model.onnx as one encoder–decoder)\n"},
		{"split decoder, mask", split, false, "5,6", []string{"encoder_hidden_states=" + hidden(3, 16), "encoder_attention_mask=" + writeNpy(t, "m.npy", []int{1, 3}, []int64{1, 1, 1})}, 3, ""},
		{"vespa decoder, float mask", filepath.Join("vespa-random-enc-dec", "random_decoder.onnx"), true, "5,6,7",
			[]string{"encoder_hidden_states=" + hidden(7, 8), "encoder_attention_mask=" + writeNpy(t, "mf.npy", []int{1, 7}, make([]float32, 7))}, 7, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.shared {
				c.model = filepath.Join(testutil.Shared(t, "fixtures"), c.model)
			}
			args := []string{"dump", c.model, "--ids", c.ids}
			for _, in := range c.inputs {
				args = append(args, "--input", in)
			}
			out, stderr, code := inspect(t, args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if c.notice != "" && stderr != c.notice {
				t.Errorf("stderr %q, want %q", stderr, c.notice)
			}
			npzPath := filepath.Join(t.TempDir(), "a.npz")
			if _, stderr, code := inspect(t, append(args, "--out", npzPath)...); code != 0 {
				t.Fatalf("npz: exit %d, stderr %q", code, stderr)
			}
			b, err := os.ReadFile(npzPath)
			if err != nil {
				t.Fatal(err)
			}
			a, err := tableio.ReadAttentionNPZ(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]tableio.LayerKind{}
			nCross := 0
			for _, L := range a.Layers {
				kinds[strconv.Itoa(L.Layer)] = L.Kind
				if L.Kind == tableio.Cross {
					nCross++
					if k := len(L.Maps[0][0]); k != c.sources {
						t.Errorf("layer %d: %d keys, want the %d given states", L.Layer, k, c.sources)
					}
				}
			}
			if nCross == 0 {
				t.Fatalf("no layer is labelled cross: %v", kinds)
			}
			prompt := strings.Split(c.ids, ",")
			for _, r := range dumpRows(t, out) {
				k, _ := strconv.Atoi(r[3])
				switch kinds[r[0]] {
				case tableio.Cross:
					if r[5] != "" || r[8] != "-1" || k >= c.sources {
						t.Fatalf("cross-attention row %v: want key < %d, no key token and key_id -1", r, c.sources)
					}
				case tableio.Self:
					if k >= len(prompt) || r[8] != prompt[k] {
						t.Fatalf("self-attention row %v: key_id is not the prompt's token %d", r, k)
					}
				default:
					t.Fatalf("row %v: layer kind %q", r, kinds[r[0]])
				}
			}
		})
	}
}
