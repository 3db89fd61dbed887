package tokenizer

import (
	"encoding/binary"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncodeLabel feeds arbitrary bytes, invalid UTF-8 and NUL included, to Encode, Decode and
// Label of the built-in GPT-2 encoding (tiktoken path), BERT (WordPiece, normalizer) and
// Llama 3 (byte-level BPE from tokenizer.json): no panic, no crash inside the Rust library,
// offsets inside the text, printable labels, byte-level round trips.
//
//	go test ./tokenizer -run '^$' -fuzz FuzzEncodeLabel -fuzztime 2m
func FuzzEncodeLabel(f *testing.F) {
	for _, s := range []string{"", "Hello world", " the\n\n\t", "<|endoftext|>x", "[CLS] [SEP]",
		"\xe2\x80", "a\x00b", "\xff\xfe\xfd", "日本語😀👨‍👩‍👧", "e\u0301\u0302", "\r\n\r\n", strings.Repeat("a ", 300)} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	gpt2, err := GPT2()
	if err != nil {
		f.Fatal(err)
	}
	tks := []*Tokenizer{gpt2}
	for _, name := range []string{"bert-base-uncased", "llama3-8b-instruct"} {
		g := golden(f, name)
		dir, err := moduleDirOnce()
		if err != nil {
			continue
		}
		if tk, err := Load(dir + "/" + g.Path); err == nil {
			tks = append(tks, tk)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, addSpecial bool) {
		text := string(data)
		bad := strings.IndexByte(text, 0) >= 0 || !utf8.ValidString(text)
		for _, tk := range tks {
			ids, offsets, err := tk.Encode(text, addSpecial)
			if bad {
				if err == nil {
					t.Fatalf("%s: Encode(%q) took text with NUL or invalid UTF-8", tk.Source(), text)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("error is not one line: %q", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: Encode(%q): %v", tk.Source(), text, err)
			}
			if len(offsets) != len(ids) {
				t.Fatalf("%d offsets for %d ids", len(offsets), len(ids))
			}
			for _, o := range offsets {
				if o[0] < 0 || o[0] > o[1] || o[1] > len(text) {
					t.Fatalf("%s: offset %v outside %d bytes of %q", tk.Source(), o, len(text), text)
				}
			}
			for _, id := range ids {
				checkLabel(t, tk.Label(id))
			}
			dec := tk.Decode(ids)
			if tk.vocab.byteLevel && !addSpecial && dec != text {
				t.Fatalf("%s: Decode(Encode(%q)) = %q", tk.Source(), text, dec)
			}
		}
		// Any id, known or not.
		if len(data) >= 8 {
			id := int64(binary.LittleEndian.Uint64(data))
			for _, tk := range tks {
				checkLabel(t, tk.Label(id))
				_ = tk.Decode([]int64{id, id % 200000})
			}
		}
		checkLabel(t, RenderBytes(data))
	})
}
