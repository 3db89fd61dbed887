// Command adversarial runs the inspect binary the way a hostile or careless user would and
// counts what happened: malformed and mutated models, bad ids, endless and huge inputs,
// outputs pointed at the model or at special files, concurrent writers, interrupts, and
// key storms with resizes in the browser (in tmux). Every attempt is classified as
//
//	clean   — exit 1 or 2 with one line on stderr (a sentence), or exit 0 with its data;
//	panic   — a Go panic, fatal error, signal or stack trace on stderr;
//	hang    — still running at the time limit;
//	loss    — a protected file (model, external data, tokenizer, special file) changed;
//	noisy   — exit 1 or 2 with nothing on stderr, or more than three lines (not a crash,
//	          but not the one sentence the project promises).
//
// Every attempt runs under `prlimit --as` (-mem, 8 GiB by default), so runaway memory ends
// as Go's "fatal error: out of memory" (counted as a panic) instead of starving the machine.
//
// It prints a Markdown table per category and the peak resident memory seen, and exits 1
// when any attempt panicked, hung or lost data. Usage (from the repository root):
//
//	go run ./scripts/adversarial -bin bin/inspect [-seed 1] [-mutants 40] [-storm 20s]
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

type outcome string

const (
	clean   outcome = "clean"
	panicky outcome = "panic"
	hang    outcome = "hang"
	loss    outcome = "loss"
	noisy   outcome = "noisy"
)

// attempt is one command with the files it must leave alone.
type attempt struct {
	category string
	name     string
	args     []string
	stdin    string
	timeout  time.Duration
	// protect are files whose bytes (and kind: regular file, device, FIFO) must not change.
	protect []string
	// before runs first (makes a FIFO, starts a reader); after checks more (nil: nothing).
	before func() error
	after  func() error
	// env is added to the environment.
	env []string
	// interrupt, when set, sends SIGINT after this long.
	interrupt time.Duration
}

type record struct {
	a       attempt
	out     outcome
	code    int
	stderr  string
	maxRSS  int64 // KiB
	elapsed time.Duration
}

var (
	bin     = flag.String("bin", "bin/inspect", "the inspect binary")
	seed    = flag.Uint64("seed", 1, "seed of the mutations")
	mutants = flag.Int("mutants", 40, "mutated copies per model")
	storm   = flag.Duration("storm", 20*time.Second, "length of each browser key storm")
	verbose = flag.Bool("v", false, "print every attempt")
	memCap  = flag.Int64("mem", 8<<30, "address-space limit of each attempt, in bytes (prlimit --as)")
)

func main() {
	flag.Parse()
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fatal(err)
	}
	*bin = abs
	work, err := os.MkdirTemp("", "attnscope-adversarial-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(work)
	rng := rand.New(rand.NewPCG(*seed, 7))

	var attempts []attempt
	attempts = append(attempts, malformedModels(work, rng)...)
	attempts = append(attempts, badInputs(work)...)
	attempts = append(attempts, badOutputs(work)...)
	var records []record
	for _, a := range attempts {
		r := runAttempt(a)
		if *verbose || (r.out != clean) {
			fmt.Fprintf(os.Stderr, "%-6s %-10s %-40s exit %d  %s\n", r.out, a.category, a.name, r.code, firstLines(r.stderr, 3))
		}
		records = append(records, r)
	}
	records = append(records, concurrency(work)...)
	records = append(records, keyStorms(work, rng)...)
	report(records)
	for _, r := range records {
		if r.out == panicky || r.out == hang || r.out == loss {
			os.Exit(1)
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "adversarial:", err)
	os.Exit(2)
}

// root is the repository root (the working directory).
func root(rel string) string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, rel)
}

// copyModel copies a committed model folder into work and returns the copy's folder.
func copyModel(work, name string) string {
	src := root(filepath.Join("testdata", "models", name))
	dst := filepath.Join(work, "models", name)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			fatal(err)
		}
	}
	return dst
}

// malformedModels are truncations, byte flips and odd files given as the model.
func malformedModels(work string, rng *rand.Rand) []attempt {
	dir := filepath.Join(work, "malformed")
	os.MkdirAll(dir, 0o755)
	var out []attempt
	add := func(name, path string, extra ...string) {
		for _, cmd := range [][]string{{"graph", path}, append([]string{"dump", path, "--ids", "1,2,3"}, extra...)} {
			out = append(out, attempt{category: "models", name: name + " · " + cmd[0], args: cmd, timeout: 60 * time.Second})
		}
	}
	for _, name := range []string{"attn2l", "gpt2tiny", "encdec", "merged", "gqa", "fp16", "bert"} {
		data, err := os.ReadFile(root(filepath.Join("testdata", "models", name, "model.onnx")))
		if err != nil {
			fatal(err)
		}
		for i := 0; i < *mutants; i++ {
			m := append([]byte(nil), data...)
			kind := "flip"
			switch i % 4 {
			case 0: // truncate
				kind = "truncate"
				m = m[:rng.IntN(len(m))]
			case 1, 2: // flip bytes in the first 8 KiB (structure, not weights)
				for k := 0; k < 1+rng.IntN(8); k++ {
					p := rng.IntN(min(len(m), 8192))
					m[p] ^= byte(1 + rng.IntN(255))
				}
			case 3: // flip anywhere
				for k := 0; k < 1+rng.IntN(32); k++ {
					m[rng.IntN(len(m))] ^= byte(1 + rng.IntN(255))
				}
			}
			p := filepath.Join(dir, fmt.Sprintf("%s-%s-%02d.onnx", name, kind, i))
			if err := os.WriteFile(p, m, 0o644); err != nil {
				fatal(err)
			}
			add(filepath.Base(p), p)
		}
	}
	odd := map[string][]byte{
		"empty.onnx":    nil,
		"text.onnx":     []byte("this is not a model\n"),
		"random.onnx":   randomBytes(rng, 4096),
		"json.onnx":     []byte(`{"graph": {"node": []}}`),
		"zeros.onnx":    make([]byte, 1<<20),
		"onlymagic.bin": {0x08, 0x07, 0x12, 0x00},
	}
	for name, data := range odd {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		add(name, p)
	}
	os.MkdirAll(filepath.Join(dir, "a-folder"), 0o755)
	add("a folder with no model.onnx", filepath.Join(dir, "a-folder"))
	os.Symlink("loop-b", filepath.Join(dir, "loop-a"))
	os.Symlink("loop-a", filepath.Join(dir, "loop-b"))
	add("symlink loop", filepath.Join(dir, "loop-a"))
	add("missing file", filepath.Join(dir, "does-not-exist.onnx"))
	add("/dev/zero as the model", "/dev/zero")
	add("/dev/null as the model", "/dev/null")
	unreadable := filepath.Join(dir, "unreadable.onnx")
	os.WriteFile(unreadable, []byte("x"), 0o000)
	add("unreadable file", unreadable)
	// An external-data model without its data file.
	if src := sharedFixture("genai-tiny-llama-fp16-mha-extdata/model.onnx"); src != "" {
		d := filepath.Join(dir, "nodata")
		os.MkdirAll(d, 0o755)
		b, _ := os.ReadFile(src)
		os.WriteFile(filepath.Join(d, "model.onnx"), b, 0o644)
		add("external data missing", filepath.Join(d, "model.onnx"))
	}
	return out
}

func sharedFixture(rel string) string {
	p := root(filepath.Join("..", "shared", "fixtures", rel))
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

// badInputs are wrong calls and inputs that never end or are far too big.
func badInputs(work string) []attempt {
	model := copyModel(work, "attn2l")
	gpt2 := copyModel(work, "gpt2tiny")
	demoTok := root("models/demo/tokenizer.json")
	enc := copyModel(work, "encdec")
	m := filepath.Join(model, "model.onnx")
	big := filepath.Join(work, "big.txt")
	f, _ := os.Create(big)
	line := strings.Repeat("the quick brown fox jumps over the lazy dog ", 20) + "\n"
	for i := 0; i < (64<<20)/len(line); i++ {
		f.WriteString(line)
	}
	f.Close()
	badJSON := filepath.Join(work, "bad-tokenizer.json")
	os.WriteFile(badJSON, []byte(`{"model": {"type": "BPE", "vocab": {`), 0o644)
	protect := []string{m}
	var out []attempt
	add := func(name string, args ...string) {
		out = append(out, attempt{category: "inputs", name: name, args: args, timeout: 120 * time.Second, protect: protect})
	}
	for _, ids := range []string{"", ",", "5,,17", "-1", "1e3", "0x10", "99999999999", "1,2,99999", "18446744073709551616", strings.Repeat("1,", 30000) + "1"} {
		add("--ids "+shorten(ids), "dump", m, "--ids", ids)
	}
	add("--text and --ids", "dump", m, "--text", "a", "--ids", "1")
	add("no prompt", "dump", m)
	add("--layer -5", "dump", m, "--ids", "1,2", "--layer", "-5")
	add("--head -3", "dump", m, "--ids", "1,2", "--head", "-3")
	add("--layer 99", "dump", m, "--ids", "1,2", "--layer", "99")
	add("--head 99", "dump", m, "--ids", "1,2", "--head", "99")
	add("--format xml", "dump", m, "--ids", "1,2", "--format", "xml")
	add("--device tpu", "dump", m, "--ids", "1,2", "--device", "tpu")
	add("--device cuda on a CPU machine", "dump", m, "--ids", "1,2", "--device", "cuda")
	add("--ort-lib /dev/null", "dump", m, "--ids", "1,2", "--ort-lib", "/dev/null")
	add("--ort-lib missing", "dump", m, "--ids", "1,2", "--ort-lib", "/nonexistent/libonnxruntime.so")
	add("--text-file /dev/zero", "dump", m, "--tokenizer", demoTok, "--text-file", "/dev/zero")
	add("--text-file /dev/urandom", "dump", m, "--tokenizer", demoTok, "--text-file", "/dev/urandom")
	add("--text-file 64 MiB", "dump", m, "--tokenizer", demoTok, "--text-file", big)
	add("--text-file missing", "dump", m, "--tokenizer", demoTok, "--text-file", "/nonexistent")
	add("--text-file a folder", "dump", m, "--tokenizer", demoTok, "--text-file", work)
	add("--tokenizer /dev/zero", "dump", m, "--tokenizer", "/dev/zero", "--text", "hello")
	add("--tokenizer truncated JSON", "dump", m, "--tokenizer", badJSON, "--text", "hello")
	add("--tokenizer the model", "dump", m, "--tokenizer", m, "--text", "hello")
	add("--text with NUL", "dump", m, "--tokenizer", demoTok, "--text", "a\x01b")
	add("--text past the positions", "dump", filepath.Join(gpt2, "model.onnx"), "--ids", strings.Repeat("1,", 5000)+"1")
	add("heads --probes 1000000", "heads", m, "--probes", "1000000")
	add("heads --probe-len 100000000", "heads", m, "--probe-len", "100000000")
	add("heads --probes -1", "heads", m, "--probes", "-1")
	add("heads --window 1 on a big corpus", "heads", m, "--tokenizer", demoTok, "--text-file", big, "--window", "1")
	add("heads --target on a one-sequence model", "heads", m, "--target", "x")
	add("tokens --top-k 0", "tokens", m, "--ids", "1,2", "--top-k", "0")
	add("tokens --top-k 1000000000", "tokens", m, "--ids", "1,2", "--top-k", "1000000000", "--format", "table")
	add("encdec --target-ids long", "dump", filepath.Join(enc, "model.onnx"), "--ids", "1,2", "--target-ids", strings.Repeat("3,", 500)+"3")
	add("encdec --target-ids bad", "dump", filepath.Join(enc, "model.onnx"), "--ids", "1,2", "--target-ids", "a,b")
	add("mistyped command", "dupm", m)
	add("unknown flag", "dump", m, "--idz", "1")
	add("too many models", m, m)
	add("graph with no model", "graph")
	add("doctor with a bad library", "doctor", "--ort-lib", "/dev/null")
	return out
}

// unixMkdev is the device number of major:minor (Linux's encoding).
func unixMkdev(major, minor uint32) uint64 {
	return uint64(major&0xfff)<<8 | uint64(minor&0xff) | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

func shorten(s string) string {
	if len(s) > 24 {
		return fmt.Sprintf("%s… (%d bytes)", s[:20], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// badOutputs point --out, --png and --save at what must never be overwritten, and at
// special files.
func badOutputs(work string) []attempt {
	var out []attempt
	dir := copyModel(work, "attn2l")
	m := filepath.Join(dir, "model.onnx")
	tok := filepath.Join(dir, "tokenizer.json")
	data, _ := os.ReadFile(root("models/demo/tokenizer.json"))
	os.WriteFile(tok, data, 0o644)
	link := filepath.Join(work, "link-to-model.onnx")
	os.Symlink(m, link)
	hard := filepath.Join(work, "hardlink.onnx")
	os.Link(m, hard)
	spelled := filepath.Join(dir, "..", filepath.Base(dir), "model.onnx")
	ext := ""
	extModel := ""
	if src := sharedFixture("genai-tiny-llama-fp16-mha-extdata"); src != "" {
		d := filepath.Join(work, "extdata")
		os.MkdirAll(d, 0o755)
		for _, f := range []string{"model.onnx", "model.onnx.data"} {
			b, _ := os.ReadFile(filepath.Join(src, f))
			os.WriteFile(filepath.Join(d, f), b, 0o644)
		}
		extModel, ext = filepath.Join(d, "model.onnx"), filepath.Join(d, "model.onnx.data")
	}
	// A private null device: an old binary run as root replaced /dev/null itself with a
	// regular file, which breaks the whole machine (tmux among others).
	devNull := filepath.Join(work, "null")
	if err := syscall.Mknod(devNull, syscall.S_IFCHR|0o666, int(unixMkdev(1, 3))); err != nil {
		devNull = "" // not root: /dev/null is safe from us, and so not a test either
	}
	protect := []string{m, tok}
	if devNull != "" {
		protect = append(protect, devNull)
	}
	if ext != "" {
		protect = append(protect, extModel, ext)
	}
	targets := map[string]string{
		"the model": m, "a symlink to the model": link, "a hard link to the model": hard,
		"dir/../dir/model.onnx": spelled, "the tokenizer": tok,
	}
	var names []string
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t := targets[name]
		for _, cmd := range [][]string{
			{"dump", m, "--ids", "1,2,3", "--out", t},
			{"dump", m, "--ids", "1,2,3", "--png", t},
			{"dump", m, "--ids", "1,2,3", "--layer", "0", "--head", "0", "--png", t},
			{"heads", m, "--out", t},
			{"tokens", m, "--ids", "1,2,3", "--out", t},
			{"graph", m, "--save", t},
		} {
			out = append(out, attempt{category: "outputs", name: cmd[0] + " " + cmd[len(cmd)-2] + " at " + name, args: cmd, timeout: 60 * time.Second, protect: protect})
		}
	}
	if ext != "" {
		for _, cmd := range [][]string{
			{"graph", extModel, "--save", ext},
			{"dump", extModel, "--ids", "1,2,3", "--out", ext},
		} {
			out = append(out, attempt{category: "outputs", name: cmd[0] + " onto the external-data file", args: cmd, timeout: 60 * time.Second, protect: protect})
		}
	}
	// Special files: written to directly, never replaced by a regular file.
	if devNull != "" {
		out = append(out, attempt{category: "outputs", name: "dump --out a null device", args: []string{"dump", m, "--ids", "1,2,3", "--out", devNull}, timeout: 60 * time.Second, protect: protect})
	}
	fifo := filepath.Join(work, "out.fifo")
	var got bytes.Buffer
	var wg sync.WaitGroup
	out = append(out, attempt{
		category: "outputs", name: "dump --out a FIFO with a reader", args: []string{"dump", m, "--ids", "1,2,3", "--out", fifo}, timeout: 60 * time.Second, protect: protect,
		before: func() error {
			if err := syscall.Mkfifo(fifo, 0o644); err != nil {
				return err
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := os.Open(fifo)
				if err == nil {
					io.Copy(&got, f)
					f.Close()
				}
			}()
			return nil
		},
		after: func() error {
			// A FIFO replaced by a regular file leaves its reader waiting for a writer forever.
			read := make(chan struct{})
			go func() { wg.Wait(); close(read) }()
			select {
			case <-read:
			case <-time.After(5 * time.Second):
			}
			st, err := os.Lstat(fifo)
			if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
				return fmt.Errorf("the FIFO was replaced")
			}
			select {
			case <-read:
			default:
				return fmt.Errorf("the FIFO's reader got nothing")
			}
			if !strings.HasPrefix(got.String(), "layer,head,query,key") {
				return fmt.Errorf("the FIFO's reader got %q", firstLines(got.String(), 1))
			}
			return nil
		},
	})
	out = append(out, attempt{category: "outputs", name: "dump --out a folder", args: []string{"dump", m, "--ids", "1,2,3", "--out", work}, timeout: 60 * time.Second, protect: protect})
	out = append(out, attempt{category: "outputs", name: "dump --out in a missing folder", args: []string{"dump", m, "--ids", "1,2,3", "--out", filepath.Join(work, "no", "such", "x.csv")}, timeout: 60 * time.Second, protect: protect})
	ro := filepath.Join(work, "readonly")
	os.MkdirAll(ro, 0o555)
	out = append(out, attempt{category: "outputs", name: "dump --out in a read-only folder", args: []string{"dump", m, "--ids", "1,2,3", "--out", filepath.Join(ro, "x.csv")}, timeout: 60 * time.Second, protect: protect})
	// An interrupted write leaves no temporary file and the old output in place.
	prev := filepath.Join(work, "previous.csv")
	os.WriteFile(prev, []byte("keep me\n"), 0o644)
	bigIDs := strings.TrimSuffix(strings.Repeat("5,17,", 60), ",")
	out = append(out, attempt{
		category: "outputs", name: "SIGINT during dump --out", args: []string{"dump", m, "--ids", bigIDs, "--out", prev}, timeout: 60 * time.Second,
		protect: protect, interrupt: 150 * time.Millisecond,
		after: func() error {
			entries, _ := os.ReadDir(work)
			for _, e := range entries {
				if strings.Contains(e.Name(), ".tmp") {
					return fmt.Errorf("temporary file %s left behind", e.Name())
				}
			}
			b, _ := os.ReadFile(prev)
			if string(b) != "keep me\n" && !strings.HasPrefix(string(b), "layer,head") {
				return fmt.Errorf("the previous output holds %q", firstLines(string(b), 1))
			}
			return nil
		},
	})
	return out
}

// concurrency runs writers of one output at once: the file must end as one whole output.
func concurrency(work string) []record {
	dir := copyModel(work, "gpt2tiny")
	m := filepath.Join(dir, "model.onnx")
	target := filepath.Join(work, "shared.csv")
	var recs []record
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ids := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("%d,", i+1), 20+i), ",")
			r := runAttempt(attempt{category: "concurrency", name: fmt.Sprintf("writer %d", i), args: []string{"dump", m, "--ids", ids, "--out", target}, timeout: 120 * time.Second, protect: []string{m}})
			mu.Lock()
			recs = append(recs, r)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	// The file must be exactly one writer's CSV: a header, then rows of one prompt length.
	b, err := os.ReadFile(target)
	whole := record{a: attempt{category: "concurrency", name: "the shared output is one whole CSV"}, out: clean}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if err != nil || len(lines) < 2 || lines[0] != "layer,head,query,key,query_token,key_token,weight,query_id,key_id" {
		whole.out, whole.stderr = loss, "the shared output is not a whole CSV"
	} else {
		n := len(lines) - 1
		ok := false
		for i := 0; i < 6; i++ {
			T := 20 + i
			ok = ok || n == 2*4*T*T // gpt2tiny: 2 layers × 4 heads
		}
		if !ok {
			whole.out, whole.stderr = loss, fmt.Sprintf("the shared output has %d rows, no writer's count", n)
		}
	}
	entries, _ := os.ReadDir(work)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			whole.out, whole.stderr = loss, "temporary file left: "+e.Name()
		}
	}
	return append(recs, whole)
}

// keyStorms drives the browser in tmux with random keys and resizes, then quits with q.
func keyStorms(work string, rng *rand.Rand) []record {
	if _, err := exec.LookPath("tmux"); err != nil {
		return []record{{a: attempt{category: "browser", name: "tmux missing"}, out: noisy, stderr: "tmux is not installed"}}
	}
	enc := copyModel(work, "encdec")
	merged := copyModel(work, "merged")
	cases := []struct {
		name string
		args []string
	}{
		{"demo", nil},
		{"encdec, source 2 × target 5", []string{filepath.Join(enc, "model.onnx"), "--ids", "1,2", "--target-ids", "3,4,5,6,7"}},
		{"encdec, source 7 × target 1", []string{filepath.Join(enc, "model.onnx"), "--ids", "1,2,3,4,5,6,7", "--target-ids", "3"}},
		{"merged decoder, 1 token", []string{filepath.Join(merged, "model.onnx"), "--ids", "5"}},
		{"demo, quit during the probe", []string{"--quit-early"}},
		// The step bar: steps opened, cached, closed and scored in the background while
		// the keys scrub through them.
		{"training timeline", []string{root(filepath.Join("testdata", "timeline", "tiny"))}},
	}
	keys := []string{"Up", "Down", "Left", "Right", "Enter", "Escape", "Tab", "BSpace", "PageUp", "PageDown", "Home", "End",
		"g", "G", "[", "]", "m", "z", "+", "-", "s", "r", "o", "n", "?", "j", "k", "h", "l", " ",
		"<", ">", "{", "}", "<", ">", "x", "c"}
	var recs []record
	for _, c := range cases {
		start := time.Now()
		sock := fmt.Sprintf("adv-%d-%d", os.Getpid(), len(recs))
		tm := func(args ...string) error {
			return exec.Command("tmux", append([]string{"-L", sock}, args...)...).Run()
		}
		exitFile := filepath.Join(work, "storm-exit")
		errFile := filepath.Join(work, "storm-stderr")
		os.Remove(exitFile)
		quitEarly := len(c.args) == 1 && c.args[0] == "--quit-early"
		args := c.args
		if quitEarly {
			args = nil
		}
		cmdline := fmt.Sprintf("cd %s && env TERM=xterm-256color %s %s 2>%s; echo $? > %s; sleep 600", shellQuote(work), shellQuote(*bin), shellJoin(args), shellQuote(errFile), shellQuote(exitFile))
		if err := tm("new-session", "-d", "-s", "storm", "-x", "120", "-y", "40", cmdline); err != nil {
			r := record{a: attempt{category: "browser", name: c.name}, out: noisy, stderr: "tmux: " + err.Error()}
			fmt.Fprintf(os.Stderr, "%-6s browser    %-40s %s\n", r.out, c.name, r.stderr)
			recs = append(recs, r)
			continue
		}
		time.Sleep(1500 * time.Millisecond)
		sent := 0
		deadline := time.Now().Add(*storm)
		if quitEarly {
			deadline = time.Now()
		}
		for time.Now().Before(deadline) {
			if _, err := os.Stat(exitFile); err == nil {
				break // it ended by itself: classified below
			}
			switch r := rng.IntN(20); {
			case r == 0:
				w, h := 1+rng.IntN(200), 1+rng.IntN(70)
				tm("resize-window", "-t", "storm", "-x", fmt.Sprint(w), "-y", fmt.Sprint(h))
			case r == 1: // edit the prompt: e, some text, enter or escape
				tm("send-keys", "-t", "storm", "e")
				tm("send-keys", "-t", "storm", "-l", "the cat sat on the mat q ")
				if rng.IntN(2) == 0 {
					tm("send-keys", "-t", "storm", "Enter")
				} else {
					tm("send-keys", "-t", "storm", "Escape")
				}
			default:
				if key := keys[rng.IntN(len(keys))]; len(key) == 1 {
					tm("send-keys", "-t", "storm", "-l", key) // literal: tmux reads { and } as syntax
				} else {
					tm("send-keys", "-t", "storm", key)
				}
			}
			sent++
			time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		}
		// Close any prompt editor or help, then quit.
		tm("resize-window", "-t", "storm", "-x", "120", "-y", "40")
		tm("send-keys", "-t", "storm", "Escape")
		time.Sleep(200 * time.Millisecond)
		tm("send-keys", "-t", "storm", "q")
		r := record{a: attempt{category: "browser", name: fmt.Sprintf("%s (%d keys)", c.name, sent)}, out: clean}
		quitBy := time.Now().Add(30 * time.Second)
		for {
			if b, err := os.ReadFile(exitFile); err == nil && len(b) > 0 {
				fmt.Sscan(string(b), &r.code)
				break
			}
			if time.Now().After(quitBy) {
				r.out = hang
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		stderr, _ := os.ReadFile(errFile)
		r.stderr = string(stderr)
		if r.out == clean && (isPanic(r.stderr) || r.code != 0) {
			r.out = panicky
		}
		r.elapsed = time.Since(start)
		if r.out != clean {
			fmt.Fprintf(os.Stderr, "%-6s browser    %-40s exit %d  %s\n", r.out, r.a.name, r.code, firstLines(r.stderr, 5))
		}
		tm("kill-server")
		recs = append(recs, r)
	}
	return recs
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func shellJoin(args []string) string {
	var q []string
	for _, a := range args {
		q = append(q, shellQuote(a))
	}
	return strings.Join(q, " ")
}

// snapshot describes a protected file: its kind and, for a regular file, its hash.
func snapshot(path string) string {
	st, err := os.Lstat(path)
	if err != nil {
		return "missing"
	}
	if !st.Mode().IsRegular() {
		return st.Mode().Type().String()
	}
	f, err := os.Open(path)
	if err != nil {
		return "unreadable"
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func runAttempt(a attempt) record {
	before := map[string]string{}
	saved := map[string][]byte{}
	for _, p := range a.protect {
		before[p] = snapshot(p)
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() {
			saved[p], _ = os.ReadFile(p)
		}
	}
	r := record{a: a}
	if a.before != nil {
		if err := a.before(); err != nil {
			r.out, r.stderr = noisy, "setting up: "+err.Error()
			return r
		}
	}
	cmd := exec.Command(*bin, a.args...)
	if p, err := exec.LookPath("prlimit"); err == nil {
		cmd = exec.Command(p, append([]string{fmt.Sprintf("--as=%d", *memCap), "--", *bin}, a.args...)...)
	}
	cmd.Env = append(os.Environ(), a.env...)
	cmd.Stdin = strings.NewReader(a.stdin)
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.out, r.stderr = noisy, err.Error()
		return r
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var timer <-chan time.Time
	if a.interrupt > 0 {
		timer = time.After(a.interrupt)
	}
	limit := time.After(a.timeout)
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-timer:
			cmd.Process.Signal(os.Interrupt)
			timer = nil
		case <-limit:
			cmd.Process.Kill()
			<-done
			r.out = hang
			break wait
		}
	}
	r.elapsed = time.Since(start)
	r.stderr = stderr.String()
	if ps := cmd.ProcessState; ps != nil {
		r.code = ps.ExitCode()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			r.maxRSS = ru.Maxrss
		}
	}
	if r.out != hang {
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		switch {
		case isPanic(r.stderr) || (ws.Signaled() && a.interrupt == 0):
			r.out = panicky
		case err == nil && r.code == 0:
			r.out = clean
		case a.interrupt > 0 && (ws.Signaled() || r.code == 130 || r.code == 1):
			r.out = clean
		case (r.code == 1 || r.code == 2) && strings.Count(strings.TrimSpace(r.stderr), "\n") < 3 && strings.TrimSpace(r.stderr) != "":
			r.out = clean
		default:
			r.out = noisy
		}
	}
	for _, p := range a.protect {
		if after := snapshot(p); after != before[p] {
			r.out = loss
			r.stderr = fmt.Sprintf("%s changed (%s → %s); %s", p, short(before[p]), short(after), r.stderr)
			if data, ok := saved[p]; ok { // put it back, so later attempts meet the real file
				os.Remove(p)
				os.WriteFile(p, data, 0o644)
			}
		}
	}
	if a.after != nil && r.out != hang {
		if err := a.after(); err != nil {
			r.out = loss
			r.stderr = err.Error() + "; " + r.stderr
		}
	}
	return r
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func isPanic(stderr string) bool {
	for _, sign := range []string{"panic:", "goroutine ", "fatal error:", "SIGSEGV", "runtime error", "[signal "} {
		if strings.Contains(stderr, sign) {
			return true
		}
	}
	return false
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("… (%d lines)", len(lines)))
	}
	return strings.Join(lines, " ⏎ ")
}

func report(records []record) {
	type row struct {
		attempts                                  int
		clean, panics, hangs, losses, noisyErrors int
		maxRSS                                    int64
	}
	rows := map[string]*row{}
	var order []string
	for _, r := range records {
		c := r.a.category
		if rows[c] == nil {
			rows[c] = &row{}
			order = append(order, c)
		}
		w := rows[c]
		w.attempts++
		w.maxRSS = max(w.maxRSS, r.maxRSS)
		switch r.out {
		case clean:
			w.clean++
		case panicky:
			w.panics++
		case hang:
			w.hangs++
		case loss:
			w.losses++
		case noisy:
			w.noisyErrors++
		}
	}
	fmt.Println("| category | attempts | clean (one sentence or success) | other errors | panics | hangs | data loss | peak RSS |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	var total row
	for _, c := range order {
		w := rows[c]
		fmt.Printf("| %s | %d | %d | %d | %d | %d | %d | %s |\n", c, w.attempts, w.clean, w.noisyErrors, w.panics, w.hangs, w.losses, mib(w.maxRSS))
		total.attempts += w.attempts
		total.clean += w.clean
		total.noisyErrors += w.noisyErrors
		total.panics += w.panics
		total.hangs += w.hangs
		total.losses += w.losses
		total.maxRSS = max(total.maxRSS, w.maxRSS)
	}
	fmt.Printf("| **all** | %d | %d | %d | %d | %d | %d | %s |\n", total.attempts, total.clean, total.noisyErrors, total.panics, total.hangs, total.losses, mib(total.maxRSS))
}

func mib(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%d MiB", kib/1024)
}
