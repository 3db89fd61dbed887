package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/internal/testutil"
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
