package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attnscope/attnscope/internal/npy"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
)

// digests is the sha256 of every file under dir (symlinks by their target path), so that
// a test can prove nothing there changed.
func digests(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, _ := os.Lstat(p)
		if st.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			out[p] = "link " + target
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		out[p] = fmt.Sprintf("%s %v", hex.EncodeToString(sum[:]), st.Mode())
		return nil
	})
	return out
}

// userFolder makes a folder like a user's: attn2l's model.onnx beside a word-level
// tokenizer.json (modelWithTokenizer).
func userFolder(t *testing.T) string {
	return filepath.Dir(modelWithTokenizer(t))
}

// extDataFolder copies a shared model whose weights live in model.onnx.data.
func extDataFolder(t *testing.T) string {
	src := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-llama-fp16-mha-extdata")
	dir := t.TempDir()
	for _, name := range []string{"model.onnx", "model.onnx.data"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// No output flag can replace the model, its external data or its tokenizer, however the
// path is spelled: each is refused with exit 2 and one sentence, and every file in the
// model's folder keeps its sha256 and mode. (Before, each of these exited 0 and replaced
// the file with a CSV, a PNG or a model of mode 0600.)
func TestOutputNeverReplacesInputs(t *testing.T) {
	cases := []struct {
		name string
		ext  bool // the model with external data
		// args builds the command line from the model's folder (and may make links).
		args func(t *testing.T, dir string) []string
		want string
	}{
		{"dump --out MODEL", false, func(t *testing.T, d string) []string {
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2,3", "--out", filepath.Join(d, "model.onnx")}
		}, "would overwrite the model itself"},
		{"dump --out dir/../dir/model.onnx", false, func(t *testing.T, d string) []string {
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2,3", "--out", d + "/../" + filepath.Base(d) + "/model.onnx"}
		}, "would overwrite the model itself"},
		{"dump --out symlink to the model", false, func(t *testing.T, d string) []string {
			link := filepath.Join(t.TempDir(), "out.csv")
			os.Symlink(filepath.Join(d, "model.onnx"), link)
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2,3", "--out", link}
		}, "would overwrite the model itself"},
		{"dump --out hard link to the model", false, func(t *testing.T, d string) []string {
			link := filepath.Join(d, "copy.onnx")
			if err := os.Link(filepath.Join(d, "model.onnx"), link); err != nil {
				t.Fatal(err)
			}
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2,3", "--out", link}
		}, "would overwrite the model itself"},
		{"dump --png MODEL", false, func(t *testing.T, d string) []string {
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2,3", "--png", filepath.Join(d, "model.onnx")}
		}, "--png"},
		{"dump --out tokenizer", false, func(t *testing.T, d string) []string {
			return []string{"dump", filepath.Join(d, "model.onnx"), "--text", "the cat sat", "--out", filepath.Join(d, "tokenizer.json")}
		}, "would overwrite the tokenizer"},
		{"dump --out the --tokenizer in use", false, func(t *testing.T, d string) []string {
			other := filepath.Join(t.TempDir(), "tok.json")
			b, _ := os.ReadFile(filepath.Join(d, "tokenizer.json"))
			os.WriteFile(other, b, 0o644)
			os.Symlink(other, filepath.Join(d, "tok-link.json"))
			return []string{"dump", filepath.Join(d, "model.onnx"), "--text", "the cat", "--tokenizer", other, "--out", filepath.Join(d, "tok-link.json")}
		}, "would overwrite the tokenizer"},
		{"dump --out the --text-file", false, func(t *testing.T, d string) []string {
			p := filepath.Join(d, "prompt.txt")
			os.WriteFile(p, []byte("the cat sat"), 0o644)
			return []string{"dump", filepath.Join(d, "model.onnx"), "--text-file", p, "--out", p}
		}, "would overwrite the --text-file being read"},
		{"heads --out the corpus", false, func(t *testing.T, d string) []string {
			p := filepath.Join(d, "corpus.txt")
			os.WriteFile(p, []byte(strings.Repeat("the cat sat on the mat ", 50)), 0o644)
			return []string{"heads", filepath.Join(d, "model.onnx"), "--text-file", p, "--window", "8", "--out", p}
		}, "would overwrite the --text-file being read"},
		{"heads --out MODEL", false, func(t *testing.T, d string) []string {
			return []string{"heads", filepath.Join(d, "model.onnx"), "--out", filepath.Join(d, "model.onnx")}
		}, "would overwrite the model itself"},
		{"tokens --out MODEL", false, func(t *testing.T, d string) []string {
			return []string{"tokens", filepath.Join(d, "model.onnx"), "--ids", "1,2", "--out", filepath.Join(d, ".", "model.onnx")}
		}, "would overwrite the model itself"},
		{"graph --save MODEL", false, func(t *testing.T, d string) []string {
			return []string{"graph", filepath.Join(d, "model.onnx"), "--save", filepath.Join(d, "model.onnx")}
		}, "would overwrite the model itself"},
		{"dump --out the config of a --tokenizer folder", false, func(t *testing.T, d string) []string {
			toks := filepath.Join(d, "toks")
			os.Mkdir(toks, 0o755)
			b, _ := os.ReadFile(filepath.Join(d, "tokenizer.json"))
			os.WriteFile(filepath.Join(toks, "tokenizer.json"), b, 0o644)
			os.WriteFile(filepath.Join(toks, "tokenizer_config.json"), []byte("{}"), 0o644)
			return []string{"dump", filepath.Join(d, "model.onnx"), "--text", "the cat", "--tokenizer", toks, "--out", filepath.Join(toks, "tokenizer_config.json")}
		}, "would overwrite the tokenizer"},
		{"dump --png and --out the same new file through a linked folder", false, func(t *testing.T, d string) []string {
			os.Symlink(".", filepath.Join(d, "alias"))
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2,3", "--png", filepath.Join(d, "out.png"), "--out", filepath.Join(d, "alias", "out.png")}
		}, "--png and --out name the same file"},
		{"dump --png and --out an existing picture through a link", false, func(t *testing.T, d string) []string {
			os.WriteFile(filepath.Join(d, "old.png"), []byte("a picture"), 0o644)
			os.Symlink("old.png", filepath.Join(d, "link.png"))
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2,3", "--png", filepath.Join(d, "old.png"), "--out", filepath.Join(d, "link.png")}
		}, "would overwrite the --png picture"},
		{"graph --save tokenizer", false, func(t *testing.T, d string) []string {
			return []string{"graph", filepath.Join(d, "model.onnx"), "--save", filepath.Join(d, "tokenizer.json")}
		}, "would overwrite the tokenizer"},
		{"graph --save external data", true, func(t *testing.T, d string) []string {
			return []string{"graph", filepath.Join(d, "model.onnx"), "--save", filepath.Join(d, "model.onnx.data")}
		}, "would overwrite the model's external-data file"},
		{"dump --out external data", true, func(t *testing.T, d string) []string {
			return []string{"dump", filepath.Join(d, "model.onnx"), "--ids", "1,2", "--out", filepath.Join(d, "model.onnx.data")}
		}, "would overwrite the model's external-data file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var dir string
			if c.ext {
				dir = extDataFolder(t)
			} else {
				dir = userFolder(t)
			}
			args := c.args(t, dir)
			before := digests(t, dir)
			_, stderr, code := inspect(t, args...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line containing %q", code, stderr, c.want)
			}
			after := digests(t, dir)
			for p, d := range before {
				if after[p] != d {
					t.Errorf("%s changed: %s → %s", filepath.Base(p), d, after[p])
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("%s appeared", filepath.Base(p))
				}
			}
		})
	}
}

// What --out makes of each kind of target: a new file 0644 under umask 022, an existing
// file keeps its mode (0600), a symlink stays a symlink and its target gets the data, a
// FIFO stays a FIFO and its reader gets the data. (Before: 0600, 0600, the link replaced
// by a regular file, the FIFO replaced by a regular file and its reader left waiting.)
func TestOutputTargets(t *testing.T) {
	old := syscall.Umask(0o022) // the child inherits it
	defer syscall.Umask(old)
	want, stderr, code := inspect(t, "dump", model("attn1l"), "--ids", "1,2,3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) (out string, check func(t *testing.T))
	}{
		{"new file", func(t *testing.T, dir string) (string, func(*testing.T)) {
			p := filepath.Join(dir, "new.csv")
			return p, func(t *testing.T) { wantRegular(t, p, want, 0o644) }
		}},
		{"existing 0600 file", func(t *testing.T, dir string) (string, func(*testing.T)) {
			p := filepath.Join(dir, "private.csv")
			os.WriteFile(p, []byte("old\n"), 0o600)
			os.Chmod(p, 0o600)
			return p, func(t *testing.T) { wantRegular(t, p, want, 0o600) }
		}},
		{"symlink to a file", func(t *testing.T, dir string) (string, func(*testing.T)) {
			real := filepath.Join(dir, "real.csv")
			os.WriteFile(real, []byte("old\n"), 0o644)
			link := filepath.Join(dir, "link.csv")
			os.Symlink("real.csv", link)
			return link, func(t *testing.T) {
				if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
					t.Errorf("the link is now %v (%v)", st.Mode(), err)
				}
				wantRegular(t, real, want, 0o644)
			}
		}},
		{"FIFO", func(t *testing.T, dir string) (string, func(*testing.T)) {
			fifo := filepath.Join(dir, "pipe")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			got := make(chan string, 1)
			go func() {
				r, err := os.Open(fifo)
				if err != nil {
					got <- err.Error()
					return
				}
				defer r.Close()
				b, _ := io.ReadAll(r)
				got <- string(b)
			}()
			return fifo, func(t *testing.T) {
				select {
				case s := <-got:
					if s != want {
						t.Errorf("the reader got %d bytes, want %d", len(s), len(want))
					}
				case <-time.After(30 * time.Second):
					t.Error("the FIFO's reader got nothing")
				}
				if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
					t.Errorf("the FIFO is now %v (%v)", st.Mode(), err)
				}
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			out, check := c.setup(t, dir)
			stdout, stderr, code := inspect(t, "dump", model("attn1l"), "--ids", "1,2,3", "--out", out)
			if code != 0 || stdout != "" || stderr != "" {
				t.Fatalf("exit %d, stdout %d bytes, stderr %q", code, len(stdout), stderr)
			}
			check(t)
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.Contains(e.Name(), ".tmp") {
					t.Errorf("temporary file %s left", e.Name())
				}
			}
		})
	}
}

func wantRegular(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != mode {
		t.Errorf("%s: %v (%v), want a regular file %v", p, st.Mode(), err, mode)
	}
	if b, _ := os.ReadFile(p); string(b) != body {
		t.Errorf("%s: %d bytes, want %d", p, len(b), len(body))
	}
}

// --out /dev/stdout writes to stdout (the process's own descriptor), and a reader that
// goes away ends it quietly.
func TestOutputDevStdout(t *testing.T) {
	want, _, _ := inspect(t, "dump", model("attn1l"), "--ids", "1,2,3")
	got, stderr, code := inspect(t, "dump", model("attn1l"), "--ids", "1,2,3", "--out", "/dev/stdout")
	if code != 0 || got != want || stderr != "" {
		t.Errorf("exit %d, %d bytes (want %d), stderr %q", code, len(got), len(want), stderr)
	}
	if st, err := os.Lstat("/dev/stdout"); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("/dev/stdout is now %v (%v)", st.Mode(), err)
	}
	script := fmt.Sprintf("set -o pipefail; %q dump %q --ids %s --out /dev/stdout | head -2", binary, model("gpt2tiny"), idsFlag(make([]int64, 60)))
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = testutil.Root()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil || errb.Len() != 0 {
		t.Errorf("pipeline: %v, stderr %q", err, errb.String())
	}
}

// Interrupting a command that writes --out removes its temporary file, leaves the old
// output as it was and ends with status 130. heads waits on a FIFO corpus with its output
// already open, so the signal comes mid-write.
func TestInterruptRemovesTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	m := modelWithTokenizer(t)
	fifo := filepath.Join(dir, "corpus")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "heads.csv")
	os.WriteFile(out, []byte("old\n"), 0o644)
	cmd := exec.Command(binary, "heads", m, "--text-file", fifo, "--window", "8", "--out", out)
	cmd.Env = append(os.Environ(), "ONNXRUNTIME_SHARED_LIBRARY_PATH="+filepath.Join(testutil.Root(), "lib", "libonnxruntime.so"))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	temp := ""
	for deadline := time.Now().Add(60 * time.Second); temp == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".heads.csv.tmp") {
				temp = filepath.Join(dir, e.Name())
			}
		}
	}
	if temp == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no temporary file appeared while heads waited on its corpus (stderr %q)", errb.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("ended with %v, want status 130", err)
	}
	if _, err := os.Stat(temp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file still there (%v)", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "old\n" {
		t.Errorf("the old output now holds %q", b)
	}
}

// Every wrong call exits 2 with one sentence on stderr.
func TestWrongCalls(t *testing.T) {
	m := model("attn2l")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"negative layer", []string{"dump", m, "--ids", "1,2", "--layer", "-5"}, "--layer -5 is not a layer"},
		{"negative head", []string{"dump", m, "--ids", "1,2", "--head", "-3"}, "--head -3 is not a head"},
		{"-1 layer is not all", []string{"dump", m, "--ids", "1,2", "--layer", "-1"}, "--layer -1 is not a layer"},
		{"negative layer with --png", []string{"dump", m, "--ids", "1,2", "--png", "x.png", "--layer", "-1", "--head", "0"}, "--layer -1 is not a layer"},
		{"empty id entry", []string{"dump", m, "--ids", "5,,17"}, `--ids has an empty entry at position 1 of "5,,17"`},
		{"trailing comma", []string{"dump", m, "--ids", "5,17,"}, "--ids has an empty entry at position 2"},
		{"empty ids", []string{"dump", m, "--ids", ""}, "--ids is empty"},
		{"blank ids", []string{"tokens", m, "--ids", " "}, "--ids is empty"},
		{"empty target ids", []string{"dump", m, "--ids", "1", "--target-ids", ""}, "--target and --target-ids are for encoder–decoder models"},
		{"empty text", []string{"dump", m, "--text", ""}, "--text is empty"},
		{"empty text file", []string{"dump", m, "--text-file", ""}, "--text-file is empty"},
		{"ids outside the vocabulary", []string{"dump", m, "--ids", "1,64"}, "--ids: token id 64 at position 1 is outside the model's vocabulary of 64 ids"},
		{"too many ids", []string{"heads", m, "--ids", idsFlag(make([]int64, 33))}, "--ids: the prompt has 33 tokens but the model's position table holds 32"},
		{"mistyped dump", []string{"dupm", m}, "unknown command \"dupm\"; did you mean `inspect dump`?"},
		{"mistyped heads", []string{"haeds", "x"}, "did you mean `inspect heads`?"},
		{"mistyped tokens", []string{"tokns"}, "did you mean `inspect tokens`?"},
		{"root has no --out", []string{"--out", "x.csv"}, "unknown flag: --out"},
		{"root has no --format", []string{m, "--format", "csv"}, "unknown flag: --format"},
		{"too many probes", []string{"heads", m, "--probes", "1000000"}, "--probes 1000000 × 32 tokens per sequence is 32000000 probe tokens, more than the limit of 4194304"},
		{"png and out the same file", []string{"dump", m, "--ids", "1", "--png", "x.png", "--out", "./x.png"}, "--png and --out name the same file"},
		{"out is a folder", []string{"dump", m, "--ids", "1", "--out", os.TempDir()}, "is a folder"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := inspect(t, c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || stdout != "" {
				t.Errorf("exit %d, stdout %d bytes, stderr %q; want exit 2 and one line containing %q", code, len(stdout), stderr, c.want)
			}
		})
	}
	// A model path that looks like a command name is still a model.
	dir := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(testutil.Root(), m))
	os.WriteFile(filepath.Join(dir, "dupm"), b, 0o644)
	cmd := exec.Command(binary, "dupm")
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	if strings.Contains(string(out), "did you mean") {
		t.Errorf("an existing file named dupm: %q", out)
	}
}

// The root command lists only the flags it uses; each table command lists --out and
// --format.
func TestHelpFlags(t *testing.T) {
	out, _, _ := inspect(t, "--help")
	for _, f := range []string{"--out", "--format"} {
		if strings.Contains(out, f) {
			t.Errorf("inspect --help advertises %s", f)
		}
	}
	for _, c := range []string{"dump", "heads", "tokens"} {
		out, _, _ := inspect(t, c, "--help")
		if !strings.Contains(out, "--out") || !strings.Contains(out, "--format") {
			t.Errorf("inspect %s --help lacks --out or --format", c)
		}
	}
}

// --version names attnscope's version, the commit and onnxruntime's version, or says the
// library was not found.
func TestVersion(t *testing.T) {
	out, stderr, code := inspect(t, "--version")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"attnscope ", "\ncommit: ", "\nonnxruntime: 1.24.1 ("} {
		if !strings.Contains(out, want) {
			t.Errorf("--version lacks %q:\n%s", want, out)
		}
	}
	out, _, code = inspect(t, "--version", "--ort-lib", "/nonexistent/libonnxruntime.so")
	if code != 0 || !strings.Contains(out, "onnxruntime: not found") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// A prompt file that never ends (/dev/zero), is random bytes or is huge is read up to a
// cap: the command ends within seconds, with bounded memory, and one sentence saying the
// limit. (Before, /dev/zero grew memory until the machine ran out.)
func TestTextFileBounded(t *testing.T) {
	m := modelWithTokenizer(t)
	big := filepath.Join(t.TempDir(), "big.txt")
	os.WriteFile(big, []byte(strings.Repeat("the cat sat on the mat\n", 1<<20)), 0o644) // 23 MiB
	long := filepath.Join(t.TempDir(), "long.txt")
	os.WriteFile(long, []byte(strings.Repeat("the cat ", 20)), 0o644)
	cases := []struct {
		file string
		code int
		want string
	}{
		{"/dev/zero", 1, "NUL byte"},
		{"/dev/urandom", 1, "tokenizing the prompt"},
		{big, 2, "big.txt has more than"},
		{long, 2, "the prompt has 40 tokens but the model's position table holds 32; shorten it, or score a long text with inspect heads --window 32"},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// A 2 GB address-space limit turns a reader that grows without bound into a
			// quick failure instead of a machine out of memory.
			cmd := exec.CommandContext(ctx, "bash", "-c", `ulimit -v 2000000; exec "$@"`, "bash", binary, "dump", m, "--text-file", c.file)
			cmd.Env = append(os.Environ(), "ONNXRUNTIME_SHARED_LIBRARY_PATH="+filepath.Join(testutil.Root(), "lib", "libonnxruntime.so"))
			var errb bytes.Buffer
			cmd.Stderr = &errb
			start := time.Now()
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			stderr := errb.String()
			if code != c.code || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d after %v, stderr %.300q; want exit %d and one line containing %q", code, time.Since(start), stderr, c.code, c.want)
			}
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 600<<10 {
				t.Errorf("peak memory %d MiB", ru.Maxrss>>10)
			}
		})
	}
	// A FIFO is read once, to its end.
	fifo := filepath.Join(t.TempDir(), "prompt")
	syscall.Mkfifo(fifo, 0o600)
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			io.WriteString(w, "the cat sat on the mat")
			w.Close()
		}
	}()
	out, stderr, code := inspect(t, "tokens", m, "--text-file", fifo)
	if rows := readCSV(t, out); code != 0 || len(rows) != 7 || rows[6][2] != "mat" {
		t.Errorf("exit %d, stderr %q:\n%s", code, stderr, out)
	}
}

// heads leaves the diagonal scores of an encoder–decoder's cross-attention layers empty
// (NaN in the CSV, "-" in the table), as the browser does; the layers' kinds come from
// `inspect graph`.
func TestHeadsCrossAttention(t *testing.T) {
	m := model("encdec")
	g, stderr, code := inspect(t, "graph", m)
	if code != 0 {
		t.Fatalf("graph: exit %d, %s", code, stderr)
	}
	cross := map[int]bool{}
	for _, line := range strings.Split(g, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && strings.HasPrefix(f[0], "L") && f[5] == "cross" {
			l, _ := strconv.Atoi(f[0][1:])
			cross[l] = true
		}
	}
	if len(cross) == 0 {
		t.Fatalf("graph shows no cross-attention layer:\n%s", g)
	}
	out, stderr, code := inspect(t, "heads", m)
	if code != 0 {
		t.Fatalf("heads: exit %d, %s", code, stderr)
	}
	rows := readCSV(t, out)
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for _, r := range rows[1:] {
		l, _ := strconv.Atoi(r[0])
		for _, name := range []string{"induction", "prev_token", "duplicate_token", "self", "first_token", "entropy"} {
			v, err := strconv.ParseFloat(r[col[name]], 64)
			diagonal := name != "first_token" && name != "entropy"
			if err != nil || math.IsNaN(v) != (cross[l] && diagonal) {
				t.Errorf("L%sH%s %s = %q; want NaN exactly for the diagonal scores of cross-attention layers %v", r[0], r[1], name, r[col[name]], cross)
			}
		}
	}
	table, _, _ := inspect(t, "heads", m, "--format", "table")
	for l := range cross {
		for _, line := range strings.Split(table, "\n") {
			if f := strings.Fields(line); len(f) > 6 && strings.HasPrefix(f[0], fmt.Sprintf("L%dH", l)) {
				if f[1] != "-" || f[2] != "-" || f[3] != "-" || f[5] != "-" {
					t.Errorf("table row %q: want - for induction, prev_token, duplicate_token, self", line)
				}
			}
		}
	}
}

// A prompt whose attention would not fit in memory (a model without a position table
// takes any length) is refused before it runs, saying how many tokens fit. (Before, 30000
// ids on this model died with Go's "fatal error: out of memory".)
func TestPromptPastMemoryRefused(t *testing.T) {
	m := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-llama-fp16-mha-extdata", "model.onnx")
	ids := strings.TrimSuffix(strings.Repeat("5,", 60000), ",") // 36 GB of outputs
	_, stderr, code := inspect(t, "dump", m, "--ids", ids)
	if code != 2 || !strings.Contains(stderr, "the 2 layers at 60,000 tokens need 26.8 GiB of attention outputs") || !strings.Contains(stderr, "give a shorter prompt (at most ") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("exit %d, stderr %.300q", code, stderr)
	}
}

// copyTree copies the regular files under src (one level of subfolders deep is enough for
// the fixtures) into a fresh folder and returns it.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	return dst
}

// No output replaces a file the run reads besides the model and its tokenizer: an --input
// array, the folder's config.json and tokenizer files (one level up in the Hub's layout),
// or another .onnx model beside the one that runs (a split encoder–decoder's encoder and
// decoders, whether they run or not). Each is refused with exit 2 in one sentence and the
// folder is unchanged. (Before, each exited 0 and replaced the file.)
func TestOutputNeverReplacesRunFiles(t *testing.T) {
	root := testutil.Root()
	split := func(t *testing.T) string {
		return copyTree(t, filepath.Join(root, "testdata", "models", "split-encdec"))
	}
	hub := func(t *testing.T) string { return copyTree(t, filepath.Join(root, "testdata", "hub", "tiny")) }
	gpt2 := func(t *testing.T) string {
		d := copyTree(t, filepath.Join(root, "testdata", "models", "gpt2tiny"))
		f, err := os.Create(filepath.Join(d, "m2.npy"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := npy.Write(f, &npy.Array{Shape: []int{1, 5}, Data: []int64{1, 0, 1, 1, 1}}); err != nil {
			t.Fatal(err)
		}
		return d
	}
	splitArgs := func(d string, extra ...string) []string {
		return append([]string{"dump", d, "--ids", "3,4", "--target-ids", "5,6"}, extra...)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T) string
		args  func(d string) []string
		want  string
	}{
		{"--input array", gpt2, func(d string) []string {
			return []string{"dump", d, "--ids", "5,6,7,8,9", "--input", "attention_mask=" + filepath.Join(d, "m2.npy"), "--out", filepath.Join(d, "m2.npy")}
		}, "would overwrite the --input attention_mask array being read"},
		{"--input array, heads", gpt2, func(d string) []string {
			return []string{"heads", d, "--input", "attention_mask=" + filepath.Join(d, "m2.npy"), "--out", filepath.Join(d, "m2.npy")}
		}, "would overwrite the --input attention_mask array being read"},
		{"split: the running decoder", split, func(d string) []string {
			return splitArgs(d, "--out", filepath.Join(d, "decoder_model_merged.onnx"))
		}, "would overwrite the model itself"},
		{"split: the encoder", split, func(d string) []string {
			return splitArgs(d, "--out", filepath.Join(d, "encoder_model.onnx"))
		}, "would overwrite the model itself"},
		{"split: a sibling decoder", split, func(d string) []string {
			return splitArgs(d, "--out", filepath.Join(d, "decoder_model.onnx"))
		}, "would overwrite a model file beside the model (decoder_model.onnx)"},
		{"split: config.json", split, func(d string) []string {
			return splitArgs(d, "--out", filepath.Join(d, "config.json"))
		}, "would overwrite the model folder's config.json"},
		{"hub: config.json above onnx/", hub, func(d string) []string {
			return []string{"dump", d, "--ids", "1,2,3", "--out", filepath.Join(d, "config.json")}
		}, "would overwrite the model folder's config.json"},
		{"hub: tokenizer_config.json above onnx/", hub, func(d string) []string {
			return []string{"graph", d, "--save", filepath.Join(d, "tokenizer_config.json")}
		}, "would overwrite the tokenizer"},
		{"hub: tokenizer.json above onnx/", hub, func(d string) []string {
			return []string{"tokens", d, "--ids", "1,2,3", "--out", filepath.Join(d, "tokenizer.json")}
		}, "would overwrite the tokenizer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := c.setup(t)
			before := digests(t, dir)
			_, stderr, code := inspect(t, c.args(dir)...)
			last := stderr[strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n")+1:] // after a folder notice
			if code != 2 || !strings.Contains(last, c.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and a last line containing %q", code, stderr, c.want)
			}
			if after := digests(t, dir); !maps.Equal(before, after) {
				t.Errorf("the folder changed")
			}
		})
	}
	// circuits' --vocab-from (through modelInputs' extra inputs) is protected the same way.
	m, err := onnxgraph.Load(filepath.Join(root, model("attn1l")))
	if err != nil {
		t.Fatal(err)
	}
	vocab := filepath.Join(t.TempDir(), "vocab.onnx")
	os.WriteFile(vocab, []byte("x"), 0o644)
	_, err = openOutput("--out", vocab, modelInputs(m, "", input{"the --vocab-from file being read", vocab}))
	if err == nil || !strings.Contains(err.Error(), "would overwrite the --vocab-from file being read") {
		t.Errorf("extra input: %v", err)
	}
}
