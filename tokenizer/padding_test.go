package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

// paddedGolden is testdata/padded/golden.json (testdata/padded/gen.py, Python tokenizers).
type paddedGolden struct {
	Padding    json.RawMessage `json:"padding"`
	Truncation json.RawMessage `json:"truncation"`
	Tokenizers map[string]struct {
		Where string `json:"where"`
		Path  string `json:"path"`
		Cases []struct {
			Text             string  `json:"text"`
			IDs              []int64 `json:"ids"`
			IDsSpecial       []int64 `json:"ids_special"`
			WithFileSettings []int64 `json:"with_file_settings"`
		} `json:"cases"`
	} `json:"tokenizers"`
}

// A tokenizer.json that pads and cuts at 128 (as sentence-transformers files do) encodes a
// text as Python's tokenizers does with padding and truncation turned off: a short text gets
// no [PAD] tokens, a long one is not cut. Before, Load handed the file to the library as it
// was: "Hello, world!" became [CLS] hello , world ! [SEP] and 122 pads, and 482 tokens were
// cut to 128.
func TestPaddingAndTruncationIgnored(t *testing.T) {
	var g paddedGolden
	readJSON(t, "testdata/padded/golden.json", &g)
	for name, src := range g.Tokenizers {
		t.Run(name, func(t *testing.T) {
			var path string
			switch src.Where {
			case "repo":
				path = filepath.Join("..", src.Path)
			case "module":
				dir, err := moduleDirOnce()
				if err != nil || dir == "" {
					testutil.Skip(t, "github.com/daulet/tokenizers is not in the Go module cache: %v", err)
				}
				path = filepath.Join(dir, src.Path)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				testutil.Skip(t, "%s: %v", path, err)
			}
			var doc map[string]json.RawMessage
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			doc["padding"], doc["truncation"] = g.Padding, g.Truncation
			padded, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "tokenizer.json")
			if err := os.WriteFile(file, padded, 0o644); err != nil {
				t.Fatal(err)
			}
			tk, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			defer tk.Close()
			long := false
			for _, c := range src.Cases {
				if len(c.WithFileSettings) != 128 {
					t.Fatalf("%q: Python gives %d ids with the file's settings, not 128: the file does not pad and cut", short(c.Text), len(c.WithFileSettings))
				}
				long = long || len(c.IDsSpecial) > 128
				for _, special := range []bool{false, true} {
					want := c.IDs
					if special {
						want = c.IDsSpecial
					}
					ids, offsets, err := tk.Encode(c.Text, special)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(ids, want) || len(offsets) != len(ids) {
						t.Errorf("%q (special tokens %v): %d ids %v…, Python without padding and truncation gives %d %v…", short(c.Text), special, len(ids), head(ids), len(want), head(want))
					}
				}
			}
			if !long {
				t.Error("no case is longer than the truncation length")
			}
		})
	}
}

func head(ids []int64) []int64 { return ids[:min(len(ids), 8)] }

// withoutPadding replaces the top-level padding and truncation values by null and keeps
// every other byte, nested fields of the same name included.
func TestWithoutPaddingKeepsTheRest(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"version":"1.0","truncation":{"max_length":128},"padding":{"strategy":{"Fixed":128}},"model":{"padding":1}}`,
			`{"version":"1.0","truncation":null,"padding":null,"model":{"padding":1}}`},
		{"{\n  \"padding\" :\t{ \"a\": [1, 2] } ,\n  \"x\": \"truncation\"\n}", "{\n  \"padding\" :\tnull ,\n  \"x\": \"truncation\"\n}"},
		{`{"padd\u0069ng": {"pad_id": 0}, "truncation": null}`, `{"padd\u0069ng": null, "truncation": null}`},
		{`{"model": {"vocab": {"a": 0}}}`, `{"model": {"vocab": {"a": 0}}}`},
		{`[1, 2]`, `[1, 2]`},
		{`{"padding": {`, `{"padding": {`},
		{``, ``},
	}
	for _, c := range cases {
		if got := string(withoutPadding([]byte(c.in))); got != c.want {
			t.Errorf("withoutPadding(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

// withoutPadding never breaks a document: valid JSON stays valid, and an object decodes to
// the same object with top-level padding and truncation set to null.
func FuzzWithoutPadding(f *testing.F) {
	f.Add([]byte(`{"version":"1.0","truncation":{"max_length":128},"padding":{"strategy":{"Fixed":128}},"model":{"padding":1}}`))
	f.Add([]byte(`{"padd\u0069ng": [1, {"a": "}"}], "x": "\"padding\""}`))
	f.Add([]byte(`[{"padding": 1}]`))
	f.Add([]byte(` { "truncation" : null } `))
	f.Fuzz(func(t *testing.T, in []byte) {
		out := withoutPadding(in)
		if json.Valid(in) != json.Valid(out) {
			t.Fatalf("validity changed: %q → %q", in, out)
		}
		var want map[string]any
		if json.Unmarshal(in, &want) != nil || want == nil {
			return
		}
		for _, k := range []string{"padding", "truncation"} {
			if _, ok := want[k]; ok {
				want[k] = nil
			}
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q → %q: %v", in, out, err)
		}
		a, _ := json.Marshal(want)
		b, _ := json.Marshal(got)
		if string(a) != string(b) {
			t.Fatalf("%q → %q: decodes to %s, want %s", in, out, b, a)
		}
	})
}
