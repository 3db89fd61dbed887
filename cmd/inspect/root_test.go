package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/tui"
)

// The browser reads --text-file once: from a FIFO, which can be read only once, it opens
// with the text as its prompt. (It read the file three times; the second read blocked for
// ever, before the UI started, so q did nothing.)
func TestBrowseReadsTextFileOnce(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(testutil.Root(), model("attn2l")))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "model.onnx"), src, 0o644)
	tok := `{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
 "normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,
 "model":{"type":"WordLevel","vocab":{"[UNK]":0,"the":1,"cat":2,"sat":3,"on":4,"mat":5},"unk_token":"[UNK]"}}`
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(tok), 0o644)
	fifo := filepath.Join(dir, "prompt.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		testutil.Skip(t, "no FIFOs here: %v", err)
	}
	const text = "the cat sat on the mat"
	go func() { // one writer, once
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.WriteString(text)
			w.Close()
		}
	}()
	var f runFlags
	cmd := &cobra.Command{}
	f.register(cmd)
	args := []string{"--text-file", fifo, "--device", "cpu"}
	if os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH") == "" {
		args = append(args, "--ort-lib", filepath.Join(testutil.Root(), "lib", "libonnxruntime.so"))
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		prompt string
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		cfg, l, err := f.browseConfig(heatmap.NoColor, filepath.Join(dir, "model.onnx"))
		if err != nil {
			done <- answer{err: err}
			return
		}
		l.close()
		done <- answer{prompt: cfg.Initial.Prompt}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			t.Fatal(a.err)
		}
		if a.prompt != text {
			t.Fatalf("the browser's prompt is %q, want %q", a.prompt, text)
		}
	case <-time.After(30 * time.Second):
		// Unblock the second read so the test binary can end.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatal("the browser blocked reading the --text-file FIFO again")
	}
}

// The browser refuses an empty --text, --ids or --text-file as the commands do (exit 2, a
// sentence naming the flag); it ran the default prompt for --text ” and named no flag for
// --ids ”.
func TestBrowseEmptyPromptFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--text", ""}, "--text is empty"},
		{[]string{"--ids", ""}, "--ids is empty"},
		{[]string{"--text-file", ""}, "--text-file is empty"},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			var f runFlags
			cmd := &cobra.Command{}
			f.register(cmd)
			args := append(c.args, "--device", "cpu")
			if os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH") == "" {
				args = append(args, "--ort-lib", filepath.Join(testutil.Root(), "lib", "libonnxruntime.so"))
			}
			if err := cmd.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			_, l, err := f.browseConfig(heatmap.NoColor, filepath.Join(testutil.Root(), model("attn2l")))
			if l != nil {
				l.close()
			}
			var ue usageError
			if !errors.As(advise(err), &ue) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want a usage error saying %q", err, c.want)
			}
		})
	}
}

// The browser's x key reaches the session: Ablate re-runs the prompt's ids with the heads
// off (on top of --ablate's), and a model whose attention cannot be masked gets no Ablate
// and a sentence instead.
func TestBrowseAblate(t *testing.T) {
	cfg, _ := openBrowser(t, modelFile("attn2l"), "--ids", "1,2,3,4,1,2,3,4")
	if cfg.Ablate == nil {
		t.Fatalf("no Ablate: %s", cfg.AblateWhy)
	}
	off := []ablate.Head{{Layer: 0, Head: 1}}
	run, err := cfg.Ablate(context.Background(), cfg.Initial.Prompt, off)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(run.Result.Tokens, cfg.Initial.Result.Tokens) {
		t.Fatalf("the ablated run has tokens %v, the clean one %v", run.Result.Tokens, cfg.Initial.Result.Tokens)
	}
	if d := testutil.MaxAbsDiff(run.Result.Logits, cfg.Initial.Result.Logits); d < 1e-4 {
		t.Errorf("switching L0H1 off changed the logits by %.3g", d)
	}
	again, err := cfg.Ablate(context.Background(), cfg.Initial.Prompt, []ablate.Head{{Layer: 1, Head: 3}})
	if err != nil {
		t.Fatal(err)
	}
	// With --ablate L0H1 the baseline has it off, and x adds to it.
	base, _ := openBrowser(t, modelFile("attn2l"), "--ids", "1,2,3,4,1,2,3,4", "--ablate", "L0H1")
	if d := testutil.MaxAbsDiff(base.Initial.Result.Logits, run.Result.Logits); d > 1e-6 {
		t.Errorf("--ablate L0H1's first run differs from x on L0H1 by %.3g", d)
	}
	both, err := base.Ablate(context.Background(), base.Initial.Prompt, []ablate.Head{{Layer: 1, Head: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.MaxAbsDiff(both.Result.Logits, again.Result.Logits); d < 1e-4 {
		t.Errorf("x on L1H3 over --ablate L0H1 equals L1H3 alone (%.3g): the baseline was dropped", d)
	}
	gqa, _ := openBrowser(t, modelFile("gqa"), "--ids", "1,2,3")
	if gqa.Ablate != nil || !strings.Contains(gqa.AblateWhy, "fused GQA") {
		t.Errorf("gqa: Ablate %v, AblateWhy %q; want none and the fused form named", gqa.Ablate != nil, gqa.AblateWhy)
	}
}

// Given --ids, the browser re-runs edited ids as ids (RerunIDs), keeping their count: as
// text, "1,2,3" became other tokens.
func TestBrowseRerunIDs(t *testing.T) {
	cfg, _ := openBrowser(t, modelFile("attn2l"), "--ids", "1,2,3,4,1,2,3,4")
	if cfg.RerunIDs == nil {
		t.Fatal("--ids gives no RerunIDs")
	}
	ids, err := tui.ParseIDs(cfg.Initial.Prompt)
	if err != nil {
		t.Fatal(err)
	}
	run, err := cfg.RerunIDs(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(run.Result.Tokens, cfg.Initial.Result.Tokens) || run.Prompt != "1,2,3,4,1,2,3,4" {
		t.Fatalf("re-run of the same ids: tokens %v prompt %q, want %v", run.Result.Tokens, run.Prompt, cfg.Initial.Result.Tokens)
	}
	// The ablation of a re-run prompt reaches the session (its prompt is the one run last).
	if cfg.Ablate != nil {
		if _, err := cfg.Ablate(context.Background(), run.Prompt, []ablate.Head{{Layer: 0, Head: 1}}); err != nil {
			t.Fatalf("ablating the re-run ids: %v", err)
		}
	}
	if _, err := cfg.RerunIDs(context.Background(), []int64{1 << 40}); err == nil {
		t.Fatal("an id past the vocabulary ran")
	}
}

// The model's display name: config.json's "model", "_name_or_path" or "name" beside it,
// else the folder of a model.onnx, else the file name.
func TestDisplayName(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "gpt2-small", "model.onnx")
	os.MkdirAll(filepath.Dir(m), 0o755)
	if got := displayName(m); got != "gpt2-small" {
		t.Fatalf("no config.json: %q", got)
	}
	if got := displayName(filepath.Join(dir, "gpt2-small", "other.onnx")); got != "other.onnx" {
		t.Fatalf("a named file: %q", got)
	}
	for _, c := range []struct{ json, want string }{
		{`{"_name_or_path": "openai/gpt2", "name": "x"}`, "openai/gpt2"},
		{`{"model": "Pythia-70m", "_name_or_path": "y"}`, "Pythia-70m"},
		{`{"name": "tiny\u001b[31m"}`, "tiny[31m"},
		{`{"name": 3}`, "gpt2-small"},
		{`not json`, "gpt2-small"},
	} {
		os.WriteFile(filepath.Join(filepath.Dir(m), "config.json"), []byte(c.json), 0o644)
		if got := displayName(m); got != c.want {
			t.Errorf("config %s: %q, want %q", c.json, got, c.want)
		}
	}
}

// An encoder–decoder's browser edits the target beside the source: with --ids and
// --target-ids (the encdec test model has no tokenizer) RerunPairIDs runs a new source
// and target, whose target later runs (ablations) keep; a target the model cannot take
// fails and leaves the last target in place. A one-sequence model has no RerunPair.
func TestBrowseRerunPairIDs(t *testing.T) {
	cfg, _ := openBrowser(t, modelFile("encdec"), "--ids", "1,2", "--target-ids", "3,4,5,6,7")
	if cfg.RerunPairIDs == nil || cfg.RerunPair != nil {
		t.Fatal("an ids-only encoder–decoder gives no RerunPairIDs")
	}
	if cfg.Initial.Prompt != "1,2" || cfg.Initial.Target != "3,4,5,6,7" {
		t.Fatalf("first run: source %q, target %q", cfg.Initial.Prompt, cfg.Initial.Target)
	}
	run, err := cfg.RerunPairIDs(context.Background(), []int64{8, 9, 10}, []int64{11, 12})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(run.Result.Source, []int64{8, 9, 10}) || !slices.Equal(run.Result.Tokens, []int64{11, 12}) {
		t.Fatalf("re-run: source %v, target %v", run.Result.Source, run.Result.Tokens)
	}
	if run.Prompt != "8,9,10" || run.Target != "11,12" || len(run.SourceLabels) != 3 || len(run.Labels) != 2 {
		t.Fatalf("re-run: prompt %q, target %q, labels %v / %v", run.Prompt, run.Target, run.SourceLabels, run.Labels)
	}
	if _, err := cfg.RerunPairIDs(context.Background(), []int64{1}, []int64{1 << 40}); err == nil || !strings.Contains(err.Error(), "target") {
		t.Fatalf("a target id past the vocabulary: %v", err)
	}
	if cfg.Ablate == nil {
		t.Logf("no ablation: %s", cfg.AblateWhy)
	} else {
		abl, err := cfg.Ablate(context.Background(), run.Prompt, []ablate.Head{{Layer: 0, Head: 1}})
		if err != nil {
			t.Fatalf("ablating the re-run pair: %v", err)
		}
		if !slices.Equal(abl.Result.Tokens, []int64{11, 12}) {
			t.Fatalf("the ablation ran target %v, want the re-run's 11,12", abl.Result.Tokens)
		}
	}

	one, _ := openBrowser(t, modelFile("attn2l"), "--ids", "1,2,3")
	if one.RerunPair != nil || one.RerunPairIDs != nil || one.Initial.Target != "" {
		t.Fatal("a one-sequence model edits a target")
	}
}

// modelFile is the absolute path of a committed test model.
func modelFile(name string) string { return filepath.Join(testutil.Root(), model(name)) }

// browserFlags parses the browser's flags from args, with --device cpu and the set-up's
// onnxruntime when ONNXRUNTIME_SHARED_LIBRARY_PATH is not set.
func browserFlags(t *testing.T, args ...string) *runFlags {
	t.Helper()
	var f runFlags
	cmd := &cobra.Command{}
	f.register(cmd)
	args = append(args, "--device", "cpu")
	if os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH") == "" {
		args = append(args, "--ort-lib", filepath.Join(testutil.Root(), "lib", "libonnxruntime.so"))
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return &f
}

// openBrowser runs what the browser does before it starts (flags args, the model at path,
// a CPU session, the first run) and returns its configuration; the model is closed when
// the test ends.
func openBrowser(t *testing.T, path string, args ...string) (tui.Config, *loaded) {
	t.Helper()
	f := browserFlags(t, args...)
	cfg, l, err := f.browseConfig(heatmap.NoColor, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return cfg, l
}
