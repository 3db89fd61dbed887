package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/session"
)

// binary is the inspect command built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "inspect-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "inspect")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building inspect:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// inspect runs the binary from the repository root and returns stdout, stderr, exit code.
func inspect(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = testutil.Root()
	if os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH") == "" {
		cmd.Env = append(os.Environ(), "ONNXRUNTIME_SHARED_LIBRARY_PATH="+filepath.Join(testutil.Root(), "lib", "libonnxruntime.so"))
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func model(name string) string { return filepath.Join("testdata", "models", name, "model.onnx") }

func idsFlag(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, ",")
}

// inspect dump prints PyTorch's attention: every weight of every head, in the CSV of the
// contract, for every committed model.
func TestDumpMatchesPyTorch(t *testing.T) {
	for _, dir := range testutil.Models(t) {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			ref := testutil.ReadReference(t, dir)
			runs := ref.PlainRuns() // a run after a prefix needs past state dump cannot give
			run := runs[len(runs)-1]
			outFile := filepath.Join(t.TempDir(), "attn.csv")
			args := []string{"dump", model(name), "--ids", idsFlag(run.IDs), "--out", outFile, "--device", "cpu"}
			if run.DecoderIDs != nil { // an encoder–decoder: the prompt is the source
				args = append(args, "--target-ids", idsFlag(run.DecoderIDs))
			}
			_, stderr, code := inspect(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			f, err := os.Open(outFile)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rows, err := csv.NewReader(f).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(rows[0], ","); got != "layer,head,query,key,query_token,key_token,weight,query_id,key_id" {
				t.Fatalf("header %q", got)
			}
			// Each layer's map is [heads, query, key] as PyTorch gave it (square unless the
			// model is an encoder–decoder).
			want := 1
			for _, a := range run.Attention {
				want += len(a.Data)
			}
			if len(rows) != want {
				t.Fatalf("%d rows, want %d", len(rows), want)
			}
			worst := 0.0
			for _, r := range rows[1:] {
				l, _ := strconv.Atoi(r[0])
				h, _ := strconv.Atoi(r[1])
				q, _ := strconv.Atoi(r[2])
				k, _ := strconv.Atoi(r[3])
				w, err := strconv.ParseFloat(r[6], 32)
				if err != nil {
					t.Fatal(err)
				}
				a := run.Attention[l]
				Q, K := a.Shape[len(a.Shape)-2], a.Shape[len(a.Shape)-1]
				want := a.Data[(h*Q+q)*K+k]
				worst = math.Max(worst, testutil.Diff(w, float64(want)))
			}
			if tol := ref.AttentionTolerance(); worst > tol {
				t.Fatalf("max abs diff %g from PyTorch (tolerance %g)", worst, tol)
			}
		})
	}
}

// An encoder–decoder dumps each layer over its own axes, labelled with their tokens: the
// encoder's source × source, the decoder's target × target, cross-attention target ×
// source; without a target the prompt is both, with a notice.
func TestDumpEncoderDecoder(t *testing.T) {
	merged := testutil.MergedVespa(t)
	src, tgt := []int64{3, 14, 15, 92, 65}, []int64{2, 7, 1}
	out, stderr, code := inspect(t, "dump", merged, "--ids", idsFlag(src), "--target-ids", idsFlag(tgt))
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	rows := readCSV(t, out)[1:]
	if want := 5*5 + 3*3 + 3*5; len(rows) != want {
		t.Fatalf("%d rows, want %d", len(rows), want)
	}
	axes := [][2][]int64{{src, src}, {tgt, tgt}, {tgt, src}}
	for _, r := range rows {
		l, _ := strconv.Atoi(r[0])
		q, _ := strconv.Atoi(r[2])
		k, _ := strconv.Atoi(r[3])
		queries, keys := axes[l][0], axes[l][1]
		if q >= len(queries) || k >= len(keys) {
			t.Fatalf("row %v is outside layer %d's [%d,%d] map", r, l, len(queries), len(keys))
		}
		if r[4] != strconv.FormatInt(queries[q], 10) || r[5] != strconv.FormatInt(keys[k], 10) {
			t.Fatalf("row %v: tokens %q, %q, want %d, %d", r, r[4], r[5], queries[q], keys[k])
		}
	}
	// tokens has one row per target position.
	out, stderr, code = inspect(t, "tokens", merged, "--ids", idsFlag(src), "--target-ids", idsFlag(tgt))
	if rows := readCSV(t, out); code != 0 || len(rows) != 1+len(tgt) || rows[3][1] != "1" {
		t.Fatalf("tokens: exit %d, stderr %q:\n%s", code, stderr, out)
	}
	_, stderr, code = inspect(t, "dump", merged, "--ids", idsFlag(src))
	if code != 0 || !strings.Contains(stderr, "no --target was given; the prompt is used as both source and target") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"dump", model("attn1l"), "--ids", "1,2", "--target-ids", "3"}, "--target and --target-ids are for encoder–decoder models"},
		{[]string{"dump", merged, "--ids", "1,2", "--target-ids", "3", "--target", "x"}, "give at most one of --target or --target-ids"},
		{[]string{"dump", merged, "--ids", "1,2", "--target-ids", "3,y"}, `--target-ids takes comma-separated non-negative integers; "y" is not one`},
		{[]string{"heads", merged, "--target-ids", "3"}, "heads runs every sequence as both source and target"},
	}
	for _, c := range cases {
		_, stderr, code := inspect(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", c.args, code, stderr, c.want)
		}
	}
}

// A model's folder stands for the model.onnx inside it.
func TestModelFolder(t *testing.T) {
	out, stderr, code := inspect(t, "dump", filepath.Join("testdata", "models", "attn1l"), "--ids", "1,2,3")
	if code != 0 || len(readCSV(t, out)) < 2 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// Degenerate maps give one warning line; ordinary ones nothing.
func TestWarnDegenerate(t *testing.T) {
	one := [][]float32{{1}}
	same := [][]float32{{0.5, 0.5}, {0.5, 0.5}}
	cases := []struct {
		name string
		res  *result.Result
		want string
	}{
		{"ordinary", &result.Result{Tokens: []int64{1, 2}, Attn: [][][][]float32{{{{1, 0}, {0.3, 0.7}}}}}, ""},
		{"1x1", &result.Result{Tokens: []int64{1, 2}, Attn: [][][][]float32{{one, one}}}, "warning: every attention map is 1×1"},
		{"identical rows", &result.Result{Tokens: []int64{1, 2}, Attn: [][][][]float32{{same}}}, "warning: every attention map has all its rows identical"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			warnDegenerate(&b, c.res)
			got := b.String()
			if c.want == "" && got != "" || !strings.HasPrefix(got, c.want) || strings.Count(got, "\n") > 1 {
				t.Fatalf("wrote %q, want a line starting %q", got, c.want)
			}
		})
	}
}

// `inspect dump … | head -3` ends quietly: exit 0, nothing on stderr.
func TestDumpIntoClosedPipe(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "gpt2tiny")
	ref := testutil.ReadReference(t, dir)
	script := fmt.Sprintf("set -o pipefail; %q dump %q --ids %s | head -3", binary, model("gpt2tiny"), idsFlag(ref.Runs[1].IDs))
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = testutil.Root()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("pipeline failed: %v, stderr %q", err, errb.String())
	}
	if errb.Len() != 0 {
		t.Errorf("stderr %q, want nothing", errb.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 3 {
		t.Errorf("%d lines", n)
	}
}

// Every bad input gets one line on stderr that says what is wrong, and the contract's exit
// code: 2 for a wrong call, 1 for a failure.
func TestBadInput(t *testing.T) {
	tmp := t.TempDir()
	notONNX := filepath.Join(tmp, "notes.onnx")
	os.WriteFile(notONNX, []byte("hello\n"), 0o644)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"two models", []string{"dump", model("attn1l"), model("attn2l")}, 2, "dump takes one MODEL, or none for the built-in demo model"},
		{"unknown flag", []string{"dump", model("attn1l"), "--frobnicate"}, 2, "unknown flag"},
		{"no prompt", []string{"dump", model("attn1l")}, 2, "give exactly one of --text, --text-file or --ids"},
		{"bad ids", []string{"dump", model("attn1l"), "--ids", "1,x"}, 2, `"x" is not one`},
		{"bad device", []string{"dump", model("attn1l"), "--ids", "1", "--device", "tpu"}, 2, "--device must be auto, cpu or cuda"},
		{"missing model", []string{"dump", "nope.onnx", "--ids", "1"}, 1, "model file nope.onnx does not exist"},
		{"not onnx", []string{"dump", notONNX, "--ids", "1"}, 1, "not an ONNX model"},
		{"id past vocabulary", []string{"dump", model("attn1l"), "--ids", "1,64"}, 2, "token id 64 at position 1 is outside the model's vocabulary of 64 ids"},
		{"too long", []string{"dump", model("attn1l"), "--ids", idsFlag(make([]int64, 33))}, 2, "--ids: the prompt has 33 tokens but the model's position table holds 32"},
		{"cuda without cuda", []string{"dump", model("attn1l"), "--ids", "1", "--device", "cuda"}, 1, "CUDA is not available"},
		{"missing library", []string{"doctor", "--ort-lib", "/nonexistent/libonnxruntime.so"}, 1, "--ort-lib /nonexistent/libonnxruntime.so does not exist"},
		{"layer out of range", []string{"dump", model("attn1l"), "--ids", "1,2", "--layer", "3"}, 2, "--layer 3 does not exist"},
		{"save over the model", []string{"graph", model("attn1l"), "--save", model("attn1l")}, 2, "would overwrite the model itself"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "cuda without cuda" {
				if ok, _ := session.CUDAStatus(); ok {
					// legitimate skip: this machine has CUDA, so --device cuda works here
					t.Skip("skipping: this machine has CUDA")
				}
			}
			_, stderr, code := inspect(t, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, c.code, stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q, want it to contain %q", stderr, c.want)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 || strings.Contains(stderr, "goroutine") {
				t.Errorf("stderr is not one line: %q", stderr)
			}
		})
	}
}

func TestGraphAndSave(t *testing.T) {
	out, stderr, code := inspect(t, "graph", model("gpt2tiny"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"attention sites: 2", "attn.L0", "attn.L1", "vocabulary 128, positions 64"} {
		if !strings.Contains(out, want) {
			t.Errorf("graph output lacks %q:\n%s", want, out)
		}
	}
	saved := filepath.Join(t.TempDir(), "exposed.onnx")
	if _, stderr, code := inspect(t, "graph", model("gpt2tiny"), "--save", saved); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// The saved model is an ordinary ONNX file whose attention is already exposed.
	out, _, _ = inspect(t, "graph", saved)
	if !strings.Contains(out, "attention sites: 2") {
		t.Errorf("saved model:\n%s", out)
	}
}

// A model fused by onnxruntime's transformer optimizer: graph lists its
// com.microsoft.Attention nodes as sites rewritten into standard operators, and says how.
func TestGraphFusedModel(t *testing.T) {
	p := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-gpt2-msattn", "past.onnx")
	out, stderr, code := inspect(t, "graph", p)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"attention sites: 5", "decomposed com.microsoft.Attention", "GptAttention_4", "node rewritten into standard ops"} {
		if !strings.Contains(out, want) {
			t.Errorf("graph output lacks %q:\n%s", want, out)
		}
	}
}

// A model with external data can be saved beside it, not elsewhere (its references are
// relative to its folder).
func TestGraphSaveExternalData(t *testing.T) {
	p := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-llama-fp16-mha-extdata", "model.onnx")
	_, stderr, code := inspect(t, "graph", p, "--save", filepath.Join(t.TempDir(), "out.onnx"))
	if code != 2 || !strings.Contains(stderr, "keeps its weights in model.onnx.data") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestDoctor(t *testing.T) {
	out, stderr, code := inspect(t, "doctor")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"onnxruntime library:", "onnxruntime version: 1.24.1", "CPU: available", "CUDA:"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

// --text goes through the tokenizer.json beside the model, and the CSV carries its labels.
func TestDumpText(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(testutil.Root(), model("attn2l")))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "model.onnx"), src, 0o644)
	tok := `{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
 "normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,
 "model":{"type":"WordLevel","vocab":{"[UNK]":0,"the":1,"cat":2,"sat":3,"on":4,"mat":5,"\"quoted\"":6},"unk_token":"[UNK]"}}`
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(tok), 0o644)
	out, stderr, code := inspect(t, "dump", filepath.Join(dir, "model.onnx"), "--text", `the cat sat on the "quoted" mat`, "--layer", "1", "--head", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+7*7 {
		t.Fatalf("%d rows, want %d", len(rows), 1+7*7)
	}
	last := rows[len(rows)-1]
	if last[0] != "1" || last[1] != "2" || last[4] != "mat" || last[5] != "mat" {
		t.Errorf("last row %q", last)
	}
	if rows[1+5*7][4] != `"quoted"` {
		t.Errorf("a label with quotes reads back as %q", rows[1+5*7][4])
	}
}

// A tokenizer whose ids do not fit the model is refused before running, naming the token.
func TestTextOutsideVocabulary(t *testing.T) {
	tok := filepath.Join(testutil.Shared(t, "fixtures"), "gpt2-tokenizer", "tokenizer.json")
	_, stderr, code := inspect(t, "dump", model("gpt2tiny"), "--text", "Hello world", "--tokenizer", tok)
	if code != 1 || !strings.Contains(stderr, "outside the model's vocabulary of 128 ids") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// --png saves one head with --layer and --head, else the whole grid, as a PNG.
func TestDumpPNG(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
	}{
		{"head.png", []string{"--layer", "1", "--head", "2"}},
		{"grid.png", nil},
	} {
		out := filepath.Join(dir, c.name)
		args := append([]string{"dump", model("attn2l"), "--ids", "1,2,3,4,1,2,3,4", "--png", out}, c.args...)
		stdout, stderr, code := inspect(t, args...)
		if code != 0 || stdout != "" {
			t.Fatalf("%s: exit %d, stdout %d bytes, stderr %q", c.name, code, len(stdout), stderr)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(f); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		f.Close()
	}
	// --layer alone draws the grid of those layers; heads are one head or none.
	if _, stderr, code := inspect(t, "dump", model("attn2l"), "--ids", "1,2", "--png", filepath.Join(dir, "x.png"), "--layer", "0"); code != 0 || !strings.Contains(stderr, "(grid, 1 layers × 4 heads)") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := inspect(t, "dump", model("attn2l"), "--ids", "1,2", "--png", filepath.Join(dir, "x.png"), "--layer", "0", "--head", "0-1"); code != 2 || !strings.Contains(stderr, "--layer and --head each name one") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
