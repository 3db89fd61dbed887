package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tokenizer"
)

func TestWriteDemoWritesOnceAndRepairs(t *testing.T) {
	root := t.TempDir()
	p, err := WriteDemo(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "demo-"+DemoHash(), "model.onnx"); p != want {
		t.Fatalf("path %s, want %s", p, want)
	}
	for _, name := range demoFiles() {
		got, err := os.ReadFile(filepath.Join(filepath.Dir(p), name))
		want, _ := demo.ReadFile("demo/" + name)
		if err != nil || string(got) != string(want) {
			t.Fatalf("%s: not the embedded bytes (%v)", name, err)
		}
	}
	old := time.Unix(1, 0)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	if p2, err := WriteDemo(root); err != nil || p2 != p {
		t.Fatalf("second call: %s, %v", p2, err)
	}
	if st, _ := os.Stat(p); !st.ModTime().Equal(old) {
		t.Fatal("a complete cached copy was rewritten")
	}
	// A damaged copy is replaced: cut short, or tampered with at the same size (which the
	// old size check took for complete).
	want, _ := demo.ReadFile("demo/model.onnx")
	for name, damage := range map[string]func() error{
		"truncated": func() error { return os.Truncate(p, 10) },
		"same size, other bytes": func() error {
			tampered := append([]byte(nil), want...)
			tampered[len(tampered)/2] ^= 0xff
			return os.WriteFile(p, tampered, 0o644)
		},
		"replaced by a symbolic link": func() error {
			dir := filepath.Dir(p)
			elsewhere := filepath.Join(t.TempDir(), "planted")
			if err := os.Rename(dir, elsewhere); err != nil {
				return err
			}
			return os.Symlink(elsewhere, dir)
		},
	} {
		if err := damage(); err != nil {
			t.Fatal(err)
		}
		if _, err := WriteDemo(root); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: the damaged copy was not replaced (%v)", name, err)
		}
		if st, err := os.Lstat(filepath.Dir(p)); err != nil || !st.IsDir() {
			t.Fatalf("%s: the demo folder is not a real folder (%v)", name, err)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, ".demo-tmp-*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary folders left: %v", leftovers)
	}
}

// Concurrent callers each get a complete copy they can read at once, starting from no copy
// or from one tampered with: no caller removes a good copy that another has just put in
// place, and no temporary folder is left behind.
func TestWriteDemoConcurrent(t *testing.T) {
	want := map[string][]byte{}
	for _, name := range demoFiles() {
		want[name], _ = demo.ReadFile("demo/" + name)
	}
	for _, start := range []string{"empty", "tampered"} {
		t.Run(start, func(t *testing.T) {
			for round := 0; round < 20; round++ {
				root := t.TempDir()
				if start == "tampered" {
					p, err := WriteDemo(root)
					if err != nil {
						t.Fatal(err)
					}
					bad := append([]byte(nil), want["model.onnx"]...)
					bad[len(bad)/2] ^= 0xff
					if err := os.WriteFile(p, bad, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				const callers = 8
				errs := make(chan error, callers)
				for i := 0; i < callers; i++ {
					go func() {
						p, err := WriteDemo(root)
						if err != nil {
							errs <- err
							return
						}
						for name, data := range want {
							got, err := os.ReadFile(filepath.Join(filepath.Dir(p), name))
							if err != nil || !bytes.Equal(got, data) {
								errs <- fmt.Errorf("round %d: %s right after WriteDemo returned: not the embedded bytes (%v)", round, name, err)
								return
							}
						}
						errs <- nil
					}()
				}
				for i := 0; i < callers; i++ {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
				leftovers, _ := filepath.Glob(filepath.Join(root, ".demo-*"))
				if len(leftovers) != 0 {
					t.Fatalf("round %d: temporary folders left: %v", round, leftovers)
				}
			}
		})
	}
}

// Without a user cache folder (no XDG_CACHE_HOME, no HOME) DemoPath writes to a folder of
// this user's own in the temporary folder, <tmp>/attnscope-<uid> of mode 0700 (it used the
// shared <tmp>/attnscope, where another user could plant demo-<hash>), and refuses that
// folder once others may write to it.
func TestDemoPathWithoutCacheFolder(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "")
	p, err := DemoPath()
	if err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(tmp, fmt.Sprintf("attnscope-%d", os.Getuid()))
	if want := filepath.Join(private, "demo-"+DemoHash(), "model.onnx"); p != want {
		t.Fatalf("DemoPath %s, want %s", p, want)
	}
	if st, err := os.Lstat(private); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v, want a folder of mode 0700", private, err)
	}
	if err := os.Chmod(private, 0o777); err != nil {
		t.Fatal(err)
	}
	var unsafe *UnsafeDirError
	if _, err := DemoPath(); !errors.As(err, &unsafe) || unsafe.Path != private {
		t.Fatalf("DemoPath on a world-writable %s: %v, want an *UnsafeDirError for it", private, err)
	}
}

// PrivateDir makes a folder of mode 0700 and takes it again, but refuses one that others
// may write to, a symbolic link, a file, and (as root, who can hand a folder to another
// user) one that belongs to someone else: another user could have planted a model in it.
func TestPrivateDir(t *testing.T) {
	parent := t.TempDir()
	dir, err := PrivateDir(parent, "mine")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("new folder has mode %04o, want 0700", st.Mode().Perm())
	}
	if again, err := PrivateDir(parent, "mine"); err != nil || again != dir {
		t.Fatalf("second call: %s, %v", again, err)
	}
	cases := []struct {
		name, want string
		make       func(p string) error
	}{
		{"world-writable", "others may write to it", func(p string) error {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.Chmod(p, 0o777)
		}},
		{"group-writable", "others may write to it", func(p string) error {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.Chmod(p, 0o770)
		}},
		{"symbolic link", "not a folder", func(p string) error { return os.Symlink(parent, p) }},
		{"file", "not a folder", func(p string) error { return os.WriteFile(p, nil, 0o600) }},
		{"another user's", "belongs to user 1", func(p string) error {
			if os.Getuid() != 0 {
				return errNotRoot
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.Chown(p, 1, 1)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.make(filepath.Join(parent, c.name)); err == errNotRoot {
				// legitimate skip: only root can give a folder to another user
				t.Skip("skipping: only root can make a folder another user's")
			} else if err != nil {
				t.Fatal(err)
			}
			_, err := PrivateDir(parent, c.name)
			var unsafe *UnsafeDirError
			if !errors.As(err, &unsafe) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want an *UnsafeDirError saying %q", err, c.want)
			}
		})
	}
}

var errNotRoot = errors.New("not root")

func TestDemoSizeAndConfig(t *testing.T) {
	c := Demo()
	if c.NLayers != 2 || c.NHeads < 1 || c.DefaultPrompt == "" || c.VocabSize < 2 {
		t.Fatalf("config %+v", c)
	}
	total := 0
	for _, name := range demoFiles() {
		data, _ := demo.ReadFile("demo/" + name)
		total += len(data)
	}
	if total > 16<<20 {
		t.Fatalf("embedded demo is %d bytes, over 16 MB", total)
	}
}

func TestDemoLoadsWithItsTokenizer(t *testing.T) {
	p, err := WriteDemo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, att := testutil.FindAttention(t, p)
	c := Demo()
	if len(att.Sites) != 2 {
		t.Fatalf("%d attention sites, want 2", len(att.Sites))
	}
	for _, s := range att.Sites {
		if s.Heads != 0 && s.Heads != c.NHeads {
			t.Fatalf("layer %d: %d heads, want %d", s.Layer, s.Heads, c.NHeads)
		}
	}
	tok, err := tokenizer.Find(p, "", c.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	ids, _, err := tok.Encode(DemoPrompt(), false)
	if err != nil {
		t.Fatal(err)
	}
	ref := demoReference(t)
	want := ref.Runs[len(ref.Runs)-1].IDs
	if !slices.Equal(ids, want) {
		t.Fatalf("prompt ids %v, PyTorch ran %v", ids, want)
	}
}

// The demo's tokenizer.json encodes sample text in Go exactly as Python's tokenizers did
// when export/train.py wrote demo/tokenizer_golden.json.
func TestDemoTokenizerGolden(t *testing.T) {
	var golden struct {
		Cases []struct {
			Text string  `json:"text"`
			IDs  []int64 `json:"ids"`
		} `json:"cases"`
	}
	data, err := os.ReadFile(filepath.Join("demo", "tokenizer_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join("demo", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if len(golden.Cases) == 0 {
		t.Fatal("no golden cases")
	}
	for i, c := range golden.Cases {
		ids, _, err := tok.Encode(c.Text, false)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !slices.Equal(ids, c.IDs) {
			t.Fatalf("case %d (%q...): Go ids differ from Python's", i, head(c.Text))
		}
	}
}

// Through onnxruntime, the embedded model's attention equals PyTorch's on the default
// prompt, and the probe shows the induction head the card promises.
func TestDemoAttentionAndInductionHead(t *testing.T) {
	testutil.RequireORT(t)
	p, err := WriteDemo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxgraph.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Open(m, session.Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := Demo()
	for _, run := range demoReference(t).Runs {
		res, err := s.Run(run.IDs)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Attn) != 2 {
			t.Fatalf("%d layers of attention, want 2", len(res.Attn))
		}
		for l, want := range run.Attention {
			if res.Heads(l) != c.NHeads {
				t.Fatalf("layer %d: %d heads, want %d", l, res.Heads(l), c.NHeads)
			}
			if d := maxDiff(res.Attn[l], want.Data); d > 1e-5 {
				t.Fatalf("layer %d: attention differs from PyTorch by %g", l, d)
			}
		}
	}
	// Induction score (DESIGN.md) on 4 probes of 50 random ids repeated.
	n := min(50, c.NPositions/2)
	rng := rand.New(rand.NewSource(1))
	best := 0.0
	scores := make([]float64, c.NHeads)
	for probe := 0; probe < 4; probe++ {
		ids := make([]int64, 2*n)
		for i := 0; i < n; i++ {
			ids[i] = int64(rng.Intn(c.VocabSize))
			ids[i+n] = ids[i]
		}
		res, err := s.Run(ids)
		if err != nil {
			t.Fatal(err)
		}
		for h := 0; h < c.NHeads; h++ {
			for i := n; i < 2*n; i++ {
				scores[h] += float64(res.Attn[1][h][i][i-n+1]) / float64(4*n)
			}
		}
	}
	for _, v := range scores {
		best = math.Max(best, v)
	}
	// The card's score (PyTorch, 8 probes of seed 0) and this one (onnxruntime, 4 other
	// probes) measure the same head.
	card := 0.0
	for _, v := range demoScores(t).Induction[1] {
		card = math.Max(card, v)
	}
	t.Logf("best layer-1 induction score %.3f here, %.3f in config.json (%v)", best, card, scores)
	if testutil.Diff(best, card) > 0.05+0.15*card {
		t.Fatalf("best layer-1 induction score %.3f, but config.json says %.3f", best, card)
	}
}

type demoScoreSet struct {
	Induction [][]float64 `json:"induction"`
	PrevToken [][]float64 `json:"prev_token"`
}

func demoScores(t *testing.T) demoScoreSet {
	var c struct {
		Scores demoScoreSet `json:"scores"`
	}
	data, _ := demo.ReadFile("demo/config.json")
	if err := json.Unmarshal(data, &c); err != nil || len(c.Scores.Induction) != 2 {
		t.Fatalf("config.json scores: %v", err)
	}
	return c.Scores
}

func demoReference(t *testing.T) *testutil.Reference {
	ref := testutil.ReadReference(t, "demo")
	if len(ref.Runs) < 3 {
		t.Fatalf("demo/reference.json has %d runs; the last should be the default prompt", len(ref.Runs))
	}
	return ref
}

func maxDiff(attn [][][]float32, flat []float32) float64 {
	return testutil.MaxAbsDiff(testutil.Flatten(attn), flat)
}

func head(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}
