package tokenizer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

// benchText is the English text of the encoding benchmark: the first 100,000 bytes of
// WikiText-2's test split, cut at a line end. scripts/gen_tokenizer_golden.py --bench times
// Python's tokenizers on the same bytes.
func benchText(b *testing.B) string {
	data, err := os.ReadFile("../../shared/data/wikitext-2/test.txt")
	if err != nil {
		testutil.Skip(b, "../shared/data/wikitext-2 is absent: %v", err)
	}
	n := 100_000
	for n < len(data) && data[n-1] != '\n' {
		n++
	}
	return string(data[:min(n, len(data))])
}

// BenchmarkEncodeGPT2 encodes English text with GPT-2's byte-level BPE through the binding:
// from GPT-2's tokenizer.json, and with the built-in r50k_base (tiktoken) encoding.
//
//	go test ./tokenizer -run '^$' -bench EncodeGPT2 -benchtime 20x
func BenchmarkEncodeGPT2(b *testing.B) {
	text := benchText(b)
	b.Run("tokenizer.json", func(b *testing.B) {
		path := filepath.Join(sharedTokenizerDir, "alt-pykeio-ort", "tokenizer.json")
		if _, err := os.Stat(path); err != nil {
			testutil.Skip(b, "%s is absent", path)
		}
		tk, err := Load(path)
		if err != nil {
			b.Fatal(err)
		}
		defer tk.Close()
		benchEncode(b, tk, text)
	})
	b.Run("r50k_base", func(b *testing.B) {
		tk, err := GPT2()
		if err != nil {
			b.Fatal(err)
		}
		defer tk.Close()
		benchEncode(b, tk, text)
	})
}

func benchEncode(b *testing.B, tk *Tokenizer, text string) {
	b.SetBytes(int64(len(text)))
	tokens := 0
	b.ResetTimer()
	for b.Loop() {
		ids, _, err := tk.Encode(text, false)
		if err != nil {
			b.Fatal(err)
		}
		tokens += len(ids)
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}
