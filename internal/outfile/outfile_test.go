package outfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// inputs makes a model folder like a user's: model.onnx, its external data and its
// tokenizer, each with known contents, and returns the folder.
func inputs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"model.onnx":      "the model",
		"model.onnx.data": "the weights",
		"tokenizer.json":  "the tokenizer",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// unchanged fails the test when a file of inputs' folder lost its contents.
func unchanged(t *testing.T, dir string) {
	t.Helper()
	for name, body := range map[string]string{
		"model.onnx":      "the model",
		"model.onnx.data": "the weights",
		"tokenizer.json":  "the tokenizer",
	} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != body {
			t.Errorf("%s now holds %q (%v), want %q", name, b, err, body)
		}
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v (%v), want a regular file 0644", name, st.Mode(), err)
		}
	}
}

// noTemp fails when a temporary file was left in dir.
func noTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func protectAll(dir string) []string {
	return []string{
		filepath.Join(dir, "model.onnx"),
		filepath.Join(dir, "model.onnx.data"),
		filepath.Join(dir, "tokenizer.json"),
	}
}

// Every spelling of a file the run reads is refused with a *ProtectedError, and the file
// keeps its bytes and mode.
func TestCreateRefusesInputs(t *testing.T) {
	cases := []struct {
		name string
		// path makes the output path inside dir (and whatever links it needs).
		path func(t *testing.T, dir string) string
	}{
		{"model", func(t *testing.T, dir string) string { return filepath.Join(dir, "model.onnx") }},
		{"external data", func(t *testing.T, dir string) string { return filepath.Join(dir, "model.onnx.data") }},
		{"tokenizer", func(t *testing.T, dir string) string { return filepath.Join(dir, "tokenizer.json") }},
		{"dir/../dir spelling", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "..", filepath.Base(dir), "model.onnx")
		}},
		{"dot spelling", func(t *testing.T, dir string) string { return dir + "/./model.onnx" }},
		{"symlink to the model", func(t *testing.T, dir string) string {
			link := filepath.Join(t.TempDir(), "link.onnx")
			must(t, os.Symlink(filepath.Join(dir, "model.onnx"), link))
			return link
		}},
		{"relative symlink to the weights", func(t *testing.T, dir string) string {
			link := filepath.Join(dir, "w.csv")
			must(t, os.Symlink("model.onnx.data", link))
			return link
		}},
		{"symlink to a symlink to the tokenizer", func(t *testing.T, dir string) string {
			other := t.TempDir()
			must(t, os.Symlink(filepath.Join(dir, "tokenizer.json"), filepath.Join(other, "a")))
			must(t, os.Symlink(filepath.Join(other, "a"), filepath.Join(other, "b")))
			return filepath.Join(other, "b")
		}},
		{"through a symlinked folder", func(t *testing.T, dir string) string {
			link := filepath.Join(t.TempDir(), "models")
			must(t, os.Symlink(dir, link))
			return filepath.Join(link, "model.onnx")
		}},
		{"hard link", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "copy.csv")
			must(t, os.Link(filepath.Join(dir, "model.onnx"), p))
			return p
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := inputs(t)
			path := c.path(t, dir)
			f, err := Create(path, protectAll(dir)...)
			var pe *ProtectedError
			if !errors.As(err, &pe) {
				if f != nil {
					f.Abort()
				}
				t.Fatalf("Create(%s) = %v, want a *ProtectedError", path, err)
			}
			if pe.Path != path || strings.Count(err.Error(), ". ") > 0 || !strings.HasSuffix(err.Error(), "choose another output file") {
				t.Errorf("error %q (path %q)", err, pe.Path)
			}
			unchanged(t, dir)
			noTemp(t, dir)
		})
	}
}

// An output beside the inputs, with other names, is written.
func TestCreateBesideInputs(t *testing.T) {
	dir := inputs(t)
	p := filepath.Join(dir, "attn.csv")
	f, err := Create(p, protectAll(dir)...)
	must(t, err)
	io.WriteString(f, "layer,head\n")
	must(t, f.Commit())
	if b, _ := os.ReadFile(p); string(b) != "layer,head\n" {
		t.Errorf("wrote %q", b)
	}
	unchanged(t, dir)
	noTemp(t, dir)
}

// The kinds of target: what each becomes, its mode, where the data went.
func TestCreateTargets(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	cases := []struct {
		name string
		// setup makes the target in dir and returns the path to give Create.
		setup func(t *testing.T, dir string) string
		// check inspects dir after the commit of "data\n".
		check func(t *testing.T, dir, path string)
	}{
		{"new file gets 0666 less the umask", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "new.csv")
		}, func(t *testing.T, dir, path string) {
			wantFile(t, path, "data\n", 0o644)
		}},
		{"existing 0600 file keeps its mode", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "private.csv")
			must(t, os.WriteFile(p, []byte("old contents, longer than the new\n"), 0o600))
			must(t, os.Chmod(p, 0o600))
			return p
		}, func(t *testing.T, dir, path string) {
			wantFile(t, path, "data\n", 0o600)
		}},
		{"existing 0755 file keeps its mode", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.csv")
			must(t, os.WriteFile(p, []byte("old"), 0o755))
			must(t, os.Chmod(p, 0o755))
			return p
		}, func(t *testing.T, dir, path string) {
			wantFile(t, path, "data\n", 0o755)
		}},
		{"symlink to a regular file is written through", func(t *testing.T, dir string) string {
			other := filepath.Join(dir, "elsewhere")
			must(t, os.Mkdir(other, 0o755))
			must(t, os.WriteFile(filepath.Join(other, "real.csv"), []byte("old"), 0o640))
			must(t, os.Chmod(filepath.Join(other, "real.csv"), 0o640))
			link := filepath.Join(dir, "link.csv")
			must(t, os.Symlink(filepath.Join("elsewhere", "real.csv"), link))
			return link
		}, func(t *testing.T, dir, path string) {
			st, err := os.Lstat(path)
			if err != nil || st.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the link is now %v (%v), want it still a symlink", st.Mode(), err)
			}
			wantFile(t, filepath.Join(dir, "elsewhere", "real.csv"), "data\n", 0o640)
			noTemp(t, filepath.Join(dir, "elsewhere"))
		}},
		{"dangling symlink creates its target", func(t *testing.T, dir string) string {
			link := filepath.Join(dir, "dangling.csv")
			must(t, os.Symlink("made.csv", link))
			return link
		}, func(t *testing.T, dir, path string) {
			st, err := os.Lstat(path)
			if err != nil || st.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the link is now %v (%v)", st.Mode(), err)
			}
			wantFile(t, filepath.Join(dir, "made.csv"), "data\n", 0o644)
		}},
		{"/dev/null is written in place", func(t *testing.T, dir string) string {
			return "/dev/null"
		}, func(t *testing.T, dir, path string) {
			st, err := os.Lstat("/dev/null")
			if err != nil || st.Mode()&os.ModeCharDevice == 0 {
				t.Errorf("/dev/null is now %v (%v)", st.Mode(), err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := c.setup(t, dir)
			f, err := Create(path)
			must(t, err)
			if path == "/dev/null" && f.temp != "" {
				f.Abort() // never rename over a device, even when this test fails
				t.Fatalf("/dev/null would be replaced by %s", f.temp)
			}
			io.WriteString(f, "data\n")
			must(t, f.Commit())
			c.check(t, dir, path)
			noTemp(t, dir)
		})
	}
}

// A FIFO is written in place while a reader reads it, and stays a FIFO.
func TestCreateFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	must(t, syscall.Mkfifo(fifo, 0o600))
	got := make(chan string, 1)
	go func() {
		r, err := os.Open(fifo) // blocks until Create opens the other end
		if err != nil {
			got <- "open: " + err.Error()
			return
		}
		defer r.Close()
		b, _ := io.ReadAll(r)
		got <- string(b)
	}()
	f, err := Create(fifo)
	must(t, err)
	if f.temp != "" {
		f.Abort()
		t.Fatalf("the FIFO would be replaced by %s", f.temp)
	}
	io.WriteString(f, "through the pipe\n")
	must(t, f.Commit())
	select {
	case s := <-got:
		if s != "through the pipe\n" {
			t.Errorf("reader got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader got nothing")
	}
	st, err := os.Lstat(fifo)
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO is now %v (%v)", st.Mode(), err)
	}
	noTemp(t, dir)
}

// /dev/fd/N writes to the process's own descriptor (as /dev/stdout does to stdout).
func TestCreateOwnDescriptor(t *testing.T) {
	r, w, err := os.Pipe()
	must(t, err)
	defer r.Close()
	f, err := Create(fmt.Sprintf("/dev/fd/%d", w.Fd()))
	must(t, err)
	io.WriteString(f, "to the pipe\n")
	must(t, f.Commit())
	w.Close() // Create wrote through its own copy of the descriptor; this is the last one
	b, _ := io.ReadAll(r)
	if string(b) != "to the pipe\n" {
		t.Errorf("read %q", b)
	}
}

// A file written to an existing target reaches it only at Commit; Abort leaves the old
// contents and no temporary file; the temporary file sits in the target's own folder.
func TestCreateAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.csv")
	must(t, os.WriteFile(p, []byte("old"), 0o644))
	f, err := Create(p)
	must(t, err)
	io.WriteString(f, strings.Repeat("x", 1<<17)) // past the buffer: bytes reach the temporary file
	if filepath.Dir(f.temp) != dir {
		t.Errorf("temporary file %s is not in %s", f.temp, dir)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("the target changed before Commit")
	}
	f.Abort()
	f.Abort()
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("the target changed after Abort")
	}
	noTemp(t, dir)
	if err := f.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

// Folders, missing folders and unwritable folders get one sentence and change nothing.
func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, path, want string
	}{
		{"folder", dir, "is a folder"},
		{"trailing slash", filepath.Join(dir, "new") + "/", "is a folder"},
		{"missing folder", filepath.Join(dir, "nope", "out.csv"), "does not exist"},
		{"empty", "", "no output file name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Create(c.path)
			if err == nil {
				f.Abort()
				t.Fatalf("Create(%q) succeeded", c.path)
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, c.want)
			}
		})
	}
}

// CreateNew never overwrites: name, then name-2, name-3…; a failed write leaves nothing.
func TestCreateNew(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "shot.png"), []byte("keep me"), 0o600))
	write := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	for i, want := range []string{"shot-2.png", "shot-3.png"} {
		p, err := CreateNew(dir, "shot.png", write(fmt.Sprint(i)))
		must(t, err)
		if p != filepath.Join(dir, want) {
			t.Errorf("wrote %s, want %s", p, want)
		}
		wantFile(t, p, fmt.Sprint(i), 0o644)
	}
	wantFile(t, filepath.Join(dir, "shot.png"), "keep me", 0o600)
	p, err := CreateNew(dir, "fresh.png", write("new"))
	must(t, err)
	wantFile(t, p, "new", 0o644)
	if _, err := CreateNew(dir, "broken.png", func(w io.Writer) error {
		io.WriteString(w, "half")
		return errors.New("encoding failed")
	}); err == nil || err.Error() != "encoding failed" {
		t.Errorf("error %v, want the writer's", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "broken.png")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed write left broken.png (%v)", err)
	}
	noTemp(t, dir)
}

// Concurrent CreateNew calls with one name all get files of their own.
func TestCreateNewConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 20
	paths := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := CreateNew(dir, "a.png", func(w io.Writer) error { _, err := fmt.Fprint(w, i); return err })
			if err != nil {
				t.Error(err)
			}
			paths[i] = p
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, p := range paths {
		if seen[p] {
			t.Errorf("%s written twice", p)
		}
		seen[p] = true
		if b, _ := os.ReadFile(p); string(b) != fmt.Sprint(i) {
			t.Errorf("%s holds %q, want %d", p, b, i)
		}
	}
	noTemp(t, dir)
}

// An interrupted write removes its temporary file, leaves the target as it was and ends
// with status 130 (SIGINT) or 143 (SIGTERM). The test runs itself as the interrupted
// process.
func TestCleanupOnSignal(t *testing.T) {
	if target := os.Getenv("OUTFILE_SIGNAL_TARGET"); target != "" {
		CleanupOnSignal()
		f, err := Create(target)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
		io.WriteString(f, strings.Repeat("partial\n", 1<<15))
		f.w.Flush()
		fmt.Println(f.temp)
		time.Sleep(time.Minute) // the parent signals meanwhile
		os.Exit(4)
	}
	for _, c := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(c.sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "out.csv")
			must(t, os.WriteFile(target, []byte("old"), 0o644))
			cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupOnSignal$")
			cmd.Env = append(os.Environ(), "OUTFILE_SIGNAL_TARGET="+target)
			out, err := cmd.StdoutPipe()
			must(t, err)
			must(t, cmd.Start())
			line, err := bufio.NewReader(out).ReadString('\n')
			temp := strings.TrimSpace(line)
			if err != nil || !strings.Contains(temp, ".tmp-") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child said %q (%v)", line, err)
			}
			if _, err := os.Stat(temp); err != nil {
				t.Errorf("the temporary file is not there before the signal: %v", err)
			}
			must(t, cmd.Process.Signal(c.sig))
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != c.code {
				t.Errorf("child ended with %v, want status %d", err, c.code)
			}
			if _, err := os.Stat(temp); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temporary file %s is still there (%v)", temp, err)
			}
			wantFile(t, target, "old", 0o644)
			noTemp(t, dir)
		})
	}
}

func wantFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want a regular file %v", path, st.Mode(), mode)
	}
	if b, _ := os.ReadFile(path); string(b) != body {
		t.Errorf("%s holds %q, want %q", path, b, body)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
