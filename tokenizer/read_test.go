package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attnscope/attnscope/internal/testutil"
)

// Tokenizer files that are not regular files (/dev/zero, a FIFO) or are larger than
// MaxFileSize are refused with one sentence before they are read. Before, Load read them with
// os.ReadFile: /dev/zero grew memory without bound, a FIFO without a writer blocked forever,
// and a 513 MiB file was read whole.
func TestTokenizerFilesBounded(t *testing.T) {
	demo, err := os.ReadFile(filepath.Join("..", "models", "demo", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	fifo := func(t *testing.T, path string) {
		t.Helper()
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			testutil.Skip(t, "cannot make a FIFO: %v", err)
		}
	}
	huge := func(t *testing.T, path string) {
		t.Helper()
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(MaxFileSize + 1); err != nil { // sparse: no disk space used
			testutil.Skip(t, "cannot make a sparse file: %v", err)
		}
	}
	write := func(t *testing.T, path string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) func() error // returns the call under test
		want  error
		bad   string // the file the sentence names, relative to dir ("" for an absolute one)
	}{
		{"Load /dev/zero", func(t *testing.T, dir string) func() error {
			return func() error { _, err := Load("/dev/zero"); return err }
		}, ErrNotRegular, "/dev/zero"},
		{"Find with the flag at /dev/zero", func(t *testing.T, dir string) func() error {
			return func() error { _, err := Find(filepath.Join(dir, "model.onnx"), "/dev/zero", 0); return err }
		}, ErrNotRegular, "/dev/zero"},
		{"Load a FIFO", func(t *testing.T, dir string) func() error {
			fifo(t, filepath.Join(dir, "tokenizer.json"))
			return func() error { _, err := Load(filepath.Join(dir, "tokenizer.json")); return err }
		}, ErrNotRegular, "tokenizer.json"},
		{"Find a FIFO beside the model", func(t *testing.T, dir string) func() error {
			fifo(t, filepath.Join(dir, "tokenizer.json"))
			return func() error { _, err := Find(filepath.Join(dir, "model.onnx"), "", 0); return err }
		}, ErrNotRegular, "tokenizer.json"},
		{"Load a file past the cap", func(t *testing.T, dir string) func() error {
			huge(t, filepath.Join(dir, "tokenizer.json"))
			return func() error { _, err := Load(filepath.Join(dir, "tokenizer.json")); return err }
		}, ErrTooLarge, "tokenizer.json"},
		{"tokenizer_config.json is a FIFO", func(t *testing.T, dir string) func() error {
			write(t, filepath.Join(dir, "tokenizer.json"), demo)
			fifo(t, filepath.Join(dir, "tokenizer_config.json"))
			return func() error { _, err := Load(filepath.Join(dir, "tokenizer.json")); return err }
		}, ErrNotRegular, "tokenizer_config.json"},
		{"tokenizer_config.json past the cap", func(t *testing.T, dir string) func() error {
			write(t, filepath.Join(dir, "tokenizer.json"), demo)
			huge(t, filepath.Join(dir, "tokenizer_config.json"))
			return func() error { _, err := Find(filepath.Join(dir, "model.onnx"), "", 0); return err }
		}, ErrTooLarge, "tokenizer_config.json"},
		{"vocab.json is a FIFO", func(t *testing.T, dir string) func() error {
			fifo(t, filepath.Join(dir, "vocab.json"))
			write(t, filepath.Join(dir, "merges.txt"), []byte("#version: 0.2\n"))
			return func() error { _, err := Find(filepath.Join(dir, "model.onnx"), "", 0); return err }
		}, ErrNotRegular, "vocab.json"},
		{"merges.txt past the cap", func(t *testing.T, dir string) func() error {
			write(t, filepath.Join(dir, "vocab.json"), []byte(`{"a": 0}`))
			huge(t, filepath.Join(dir, "merges.txt"))
			return func() error {
				_, err := LoadVocabMerges(filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt"))
				return err
			}
		}, ErrTooLarge, "merges.txt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			call := c.setup(t, dir)
			done := make(chan error, 1)
			go func() { done <- call() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("still reading after 20 s")
			}
			var fe *FileError
			if !errors.Is(err, c.want) || !errors.As(err, &fe) {
				t.Fatalf("error %v, want a *FileError wrapping %v", err, c.want)
			}
			name := c.bad
			if !filepath.IsAbs(name) {
				name = filepath.Join(dir, name)
			}
			msg := err.Error()
			if fe.Path != name || !strings.Contains(msg, name) || strings.Contains(msg, "\n") || strings.Contains(msg, "--") {
				t.Errorf("error %q (path %s): want one sentence naming %s and no flag", msg, fe.Path, name)
			}
		})
	}
}

// The package's errors are typed, and each message is one sentence with the facts, naming no
// flag and no set-up step: the command line adds its own advice. Before, they told the user
// to pass --tokenizer PATH or --ids, or to run make setup.
func TestErrorsNameNoFlag(t *testing.T) {
	demo := filepath.Join("..", "models", "demo")
	notFound := func() error { _, err := Find(filepath.Join(t.TempDir(), "model.onnx"), "", 1000); return err }
	vocab := func() error { return CheckVocab([]int64{1, 999}, nil, 512) }
	config := func(cfg string) func() error {
		return func() error {
			dir := t.TempDir()
			data, err := os.ReadFile(filepath.Join(demo, "tokenizer.json"))
			if err != nil {
				return err
			}
			os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644)
			os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644)
			tk, err := Load(dir)
			if err != nil {
				return err
			}
			defer tk.Close()
			_, _, err = tk.EncodeDefault("Hello")
			return err
		}
	}
	cases := []struct {
		name   string
		call   func() error
		target any
		want   string
	}{
		{"no tokenizer", notFound, new(*NotFoundError), "no tokenizer found beside "},
		{"id outside the vocabulary", vocab, new(*VocabError), "token '#999' (id 999, position 1) is outside the model's vocabulary of 512 ids"},
		{"bos_token not named", config(`{"add_bos_token": true}`), new(*ConfigTokenError), "asks for a bos_token but does not name one"},
		{"bos_token unknown", config(`{"add_bos_token": true, "bos_token": "<s>"}`), new(*ConfigTokenError), `names bos_token "<s>", which the tokenizer does not know`},
		{"not a regular file", func() error { _, err := Load("/dev/null"); return err }, new(*FileError), "/dev/null is not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if err == nil || !errors.As(err, c.target) {
				t.Fatalf("error %v (%T), want %T", err, err, c.target)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || strings.Contains(msg, "--") || strings.Contains(msg, "make setup") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one sentence containing %q and no flag", msg, c.want)
			}
		})
	}
}
