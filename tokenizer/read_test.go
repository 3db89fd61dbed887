package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
			t.Skipf("cannot make a FIFO: %v", err)
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
			t.Skipf("cannot make a sparse file: %v", err)
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
