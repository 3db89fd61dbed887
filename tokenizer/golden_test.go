package tokenizer

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

// Golden files: scripts/gen_tokenizer_golden.py, with Hugging Face's Python tokenizers.

const sharedTokenizerDir = "../../shared/fixtures/gpt2-tokenizer" // ../shared from the repo root

type goldenInput struct {
	Kind string `json:"kind"`
	Text string `json:"text"`
}

type goldenCase struct {
	IDs        []int64  `json:"ids"`
	Offsets    [][2]int `json:"offsets"`
	IDsSpecial []int64  `json:"ids_special"`
	Error      string   `json:"error"`
}

type goldenFile struct {
	Tokenizer string       `json:"tokenizer"`
	Where     string       `json:"where"`
	Path      string       `json:"path"`
	VocabSize int          `json:"vocab_size"`
	Cases     []goldenCase `json:"cases"`
}

var goldenNames = []string{"gpt2", "gpt2-plain", "bert-base-uncased", "all-minilm-l6-v2", "llama3-8b-instruct", "cohere", "labse"}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func goldenInputs(t testing.TB) []goldenInput {
	var doc struct {
		Inputs []goldenInput `json:"inputs"`
	}
	readJSON(t, "testdata/golden/inputs.json", &doc)
	return doc.Inputs
}

func golden(t testing.TB, name string) goldenFile {
	var g goldenFile
	readJSON(t, filepath.Join("testdata/golden", name+".json"), &g)
	return g
}

var moduleDirOnce = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/daulet/tokenizers").Output()
	return strings.TrimSpace(string(out)), err
})

// goldenPath is where a golden file's tokenizer.json lies; it skips the test where it is absent.
func goldenPath(t testing.TB, g goldenFile) string {
	t.Helper()
	var path string
	switch g.Where {
	case "shared":
		path = filepath.Join(sharedTokenizerDir, g.Path)
	case "module":
		dir, err := moduleDirOnce()
		if err != nil || dir == "" {
			testutil.Skip(t, "github.com/daulet/tokenizers is not in the Go module cache (run go mod download): %v", err)
		}
		path = filepath.Join(dir, g.Path)
	}
	if _, err := os.Stat(path); err != nil {
		testutil.Skip(t, "%s is absent (../shared/fixtures or the Go module cache): %v", path, err)
	}
	return path
}

var loaded sync.Map // path -> *Tokenizer, shared by tests and benchmarks

func loadGolden(t testing.TB, name string) (*Tokenizer, goldenFile) {
	t.Helper()
	g := golden(t, name)
	path := goldenPath(t, g)
	if tk, ok := loaded.Load(path); ok {
		return tk.(*Tokenizer), g
	}
	tk, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	loaded.Store(path, tk)
	return tk, g
}

func TestGolden(t *testing.T) {
	inputs := goldenInputs(t)
	if len(inputs) < 100 {
		t.Fatalf("only %d golden inputs", len(inputs))
	}
	for _, name := range goldenNames {
		t.Run(name, func(t *testing.T) {
			tk, g := loadGolden(t, name)
			if len(g.Cases) != len(inputs) {
				t.Fatalf("%d cases for %d inputs: regenerate with scripts/gen_tokenizer_golden.py", len(g.Cases), len(inputs))
			}
			if got := tk.VocabSize(); got != g.VocabSize {
				t.Errorf("VocabSize() = %d, Python says %d", got, g.VocabSize)
			}
			checked := 0
			for i, c := range g.Cases {
				text := inputs[i].Text
				ids, offsets, err := tk.Encode(text, false)
				if err != nil {
					t.Errorf("input %d %q: %v", i, short(text), err)
					continue
				}
				if !slices.Equal(ids, c.IDs) {
					t.Errorf("input %d %q without special tokens:\n got %v\nwant %v", i, short(text), ids, c.IDs)
				}
				if !slices.Equal(offsets, c.Offsets) {
					t.Errorf("input %d %q offsets:\n got %v\nwant %v", i, short(text), offsets, c.Offsets)
				}
				ids, _, err = tk.Encode(text, true)
				if err != nil {
					t.Errorf("input %d %q: %v", i, short(text), err)
					continue
				}
				if !slices.Equal(ids, c.IDsSpecial) {
					t.Errorf("input %d %q with special tokens:\n got %v\nwant %v", i, short(text), ids, c.IDsSpecial)
				}
				if c.Error == "" {
					checked++
				}
			}
			t.Logf("%s: %d inputs, %d of them encoded by Python without error, x2 (with and without special tokens)", name, len(g.Cases), checked)
		})
	}
}

// The built-in GPT-2 encoding (tiktoken r50k_base through the binding) gives the ids of GPT-2's
// tokenizer.json on every golden input.
func TestGPT2BuiltinMatchesTokenizerJSON(t *testing.T) {
	tk, err := GPT2()
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	if got := tk.VocabSize(); got != GPT2VocabSize {
		t.Errorf("VocabSize() = %d, want %d", got, GPT2VocabSize)
	}
	inputs := goldenInputs(t)
	g := golden(t, "gpt2-plain") // ids straight from the golden file: no ../shared needed
	for i, c := range g.Cases {
		text := inputs[i].Text
		for _, special := range []bool{false, true} {
			ids, offsets, err := tk.Encode(text, special)
			if err != nil {
				t.Fatalf("input %d: %v", i, err)
			}
			want := c.IDs
			if special {
				want = c.IDsSpecial
			}
			if !slices.Equal(ids, want) {
				t.Errorf("input %d %q (special %v):\n got %v\nwant %v", i, short(text), special, ids, want)
			}
			// Offsets tile the text.
			pos := 0
			for _, o := range offsets {
				if o[0] != pos || o[1] < o[0] {
					t.Fatalf("input %d: offsets %v do not tile the text", i, offsets)
				}
				pos = o[1]
			}
			if pos != len(text) {
				t.Errorf("input %d: offsets end at %d of %d bytes", i, pos, len(text))
			}
		}
	}
}

// vocab.json + merges.txt (with the tokenizer_config.json beside them) make the same tokenizer
// as the tokenizer.json in the same folder.
func TestVocabMergesMatchesTokenizerJSON(t *testing.T) {
	vocabPath := filepath.Join(sharedTokenizerDir, "vocab.json")
	if _, err := os.Stat(vocabPath); err != nil {
		testutil.Skip(t, "../shared/fixtures/gpt2-tokenizer is absent: %v", err)
	}
	tk, err := LoadVocabMerges(vocabPath, filepath.Join(sharedTokenizerDir, "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	inputs := goldenInputs(t)
	g := golden(t, "gpt2")
	if got := tk.VocabSize(); got != g.VocabSize {
		t.Errorf("VocabSize() = %d, want %d", got, g.VocabSize)
	}
	for i, c := range g.Cases {
		ids, offsets, err := tk.Encode(inputs[i].Text, false)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, c.IDs) || !slices.Equal(offsets, c.Offsets) {
			t.Errorf("input %d %q:\n got %v %v\nwant %v %v", i, short(inputs[i].Text), ids, offsets, c.IDs, c.Offsets)
		}
	}
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
