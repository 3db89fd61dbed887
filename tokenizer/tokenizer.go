// Package tokenizer finds a model's tokenizer, encodes text through Hugging Face's Rust
// tokenizers (github.com/daulet/tokenizers, linked statically from build/tokenizers), and
// makes readable labels for tokens.
//
// Encoding is never reimplemented here: every tokenizer.json goes through the same Rust code
// that Python's `tokenizers` runs, so ids match what the model was trained with. This package
// only decides which tokenizer belongs to a model (Find), reads tokenizer_config.json's
// special-token settings (EncodeDefault), and turns ids into display labels (Label).
package tokenizer

/*
// libtokenizers.a is built from source by scripts/build-tokenizers.sh (run by `make setup`),
// which also writes a header named after the binding's version. Without them the build stops
// with one of these messages instead of a bare linker error. bindingVersion must follow go.mod
// (TestBindingVersion checks).
#cgo CFLAGS: -I${SRCDIR}/../build/tokenizers
#cgo LDFLAGS: -L${SRCDIR}/../build/tokenizers
#if defined(__has_include)
#if !__has_include("libtokenizers.a")
#error "build/tokenizers/libtokenizers.a is missing: run 'make setup' (or 'bash scripts/build-tokenizers.sh') first"
#elif !__has_include("libtokenizers-v1.22.1.h")
#error "build/tokenizers/libtokenizers.a was not built for github.com/daulet/tokenizers v1.22.1: run 'make setup' (or 'bash scripts/build-tokenizers.sh') again"
#endif
#endif
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	hf "github.com/daulet/tokenizers"
)

// bindingVersion is the version of github.com/daulet/tokenizers in go.mod, also named in the
// #error check above.
const bindingVersion = "v1.22.1"

// Tokenizer encodes text into a model's token ids and labels ids for display.
// Its methods may be called from several goroutines, except Close.
type Tokenizer struct {
	lib      *hf.Tokenizer
	vocab    *vocab
	source   string
	tiktoken bool // the library gives no offsets for tiktoken files: computed from token bytes
	config   *tokenizerConfig
}

// Load reads a Hugging Face tokenizer.json (or a folder that holds one); anything but a
// regular file of at most MaxFileSize bytes is refused with a *FileError. Its padding and
// truncation settings are never applied: a text encodes to its own tokens, however short or
// long. Special-token settings come from a tokenizer_config.json beside it, where there is one.
func Load(path string) (*Tokenizer, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "tokenizer.json")
	}
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	t, err := fromJSON(data, "tokenizer.json "+path)
	if err != nil {
		return nil, fmt.Errorf("%s is not a tokenizer.json that Hugging Face tokenizers can load: %v", path, err)
	}
	if cfg, err := readConfig(filepath.Dir(path)); err != nil {
		t.Close()
		return nil, err
	} else {
		t.config = cfg
	}
	return t, nil
}

// fromJSON loads a tokenizer.json held in memory, without its padding and truncation (see
// withoutPadding); source names it in Source().
func fromJSON(data []byte, source string) (*Tokenizer, error) {
	if len(data) == 0 {
		return nil, errors.New("the file is empty")
	}
	v, err := parseVocab(data)
	if err != nil {
		return nil, err
	}
	lib, err := hf.FromBytes(withoutPadding(data))
	if err != nil {
		return nil, err
	}
	return &Tokenizer{lib: lib, vocab: v, source: source}, nil
}

// Source says what was loaded, for status lines: "tokenizer.json /path/to/tokenizer.json".
func (t *Tokenizer) Source() string { return t.source }

// Close frees the Rust tokenizer. The Tokenizer must not be used afterwards.
func (t *Tokenizer) Close() {
	if t != nil && t.lib != nil {
		t.lib.Close()
		t.lib = nil
	}
}

// VocabSize is the number of tokens in the vocabulary, added tokens included (Python's
// get_vocab_size(with_added_tokens=True)). For the usual dense vocabularies, ids run from 0 to
// VocabSize()-1.
func (t *Tokenizer) VocabSize() int { return int(t.lib.VocabSize()) }

// checkText returns an error for text the library cannot take as it is: it receives C strings
// (a NUL byte would cut the text short) and replaces invalid UTF-8, which would shift offsets.
func checkText(text string) error {
	if i := strings.IndexByte(text, 0); i >= 0 {
		return fmt.Errorf("the text contains a NUL byte at byte %d, which the tokenizer cannot take; remove it", i)
	}
	if !utf8.ValidString(text) {
		i := 0
		for i < len(text) {
			r, size := utf8.DecodeRuneInString(text[i:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			i += size
		}
		return fmt.Errorf("the text is not valid UTF-8 (at byte %d); convert it to UTF-8 first", i)
	}
	return nil
}

// Encode turns text into token ids and, for each, the byte range [start, end) of text it came
// from (special tokens added around the text get [0, 0]). addSpecial adds the tokens that the
// tokenizer's post-processor puts around a text (BERT's [CLS] … [SEP], Llama's
// <|begin_of_text|>); special tokens written inside the text are recognised either way.
// Text with a NUL byte or invalid UTF-8 is refused with an error.
//
// An encoding error inside the library (a tokenizer.json without an [UNK] token meeting an
// unknown word) comes back from the binding as an empty result, so it is an empty result here.
func (t *Tokenizer) Encode(text string, addSpecial bool) (ids []int64, offsets [][2]int, err error) {
	if err := checkText(text); err != nil {
		return nil, nil, err
	}
	if text == "" && !addSpecial {
		return []int64{}, [][2]int{}, nil
	}
	if t.tiktoken {
		// The binding's tiktoken path only recognises special tokens written in the text when
		// asked to add special tokens (it never adds any itself); tokenizer.json files recognise
		// them always. Ask always, so both behave alike.
		raw, _ := t.lib.Encode(text, true)
		ids = make([]int64, len(raw))
		offsets = make([][2]int, len(raw))
		pos := 0
		for i, id := range raw {
			ids[i] = int64(id)
			n := len(t.vocab.bytes(int64(id)))
			end := min(pos+n, len(text))
			offsets[i] = [2]int{pos, end}
			pos = end
		}
		return ids, offsets, nil
	}
	enc := t.lib.EncodeWithOptions(text, addSpecial, hf.WithReturnOffsets())
	ids = make([]int64, len(enc.IDs))
	offsets = make([][2]int, len(enc.IDs))
	for i, id := range enc.IDs {
		ids[i] = int64(id)
		if i < len(enc.Offsets) {
			a, b := min(int(enc.Offsets[i][0]), len(text)), min(int(enc.Offsets[i][1]), len(text))
			offsets[i] = [2]int{a, max(a, b)}
		}
	}
	return ids, offsets, nil
}

// Decode turns ids back into text, special tokens included; ids the tokenizer does not know are
// skipped. Bytes that do not form whole UTF-8 characters become U+FFFD.
func (t *Tokenizer) Decode(ids []int64) string {
	if len(ids) == 0 {
		return ""
	}
	raw := make([]uint32, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id <= 0xFFFFFFFF {
			raw = append(raw, uint32(id))
		}
	}
	var s string
	if !t.tiktoken && len(raw) > 0 {
		s = t.lib.Decode(raw, false)
	}
	if s == "" && (t.tiktoken || t.vocab.byteLevel) {
		// tiktoken's decoder rejects partial characters, and the binding cannot return text
		// that holds a NUL byte: rebuild such text from the token bytes.
		var b []byte
		for _, id := range ids {
			b = append(b, t.vocab.bytes(id)...)
		}
		s = strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return s
}

// TokenBytes returns the bytes of text that token id stands for: a byte-level token's bytes,
// a byte-fallback token's byte, an added token's content, or the vocabulary string otherwise.
// Nil for an id the tokenizer does not know.
func (t *Tokenizer) TokenBytes(id int64) []byte { return t.vocab.bytes(id) }

// IsSpecial says whether id is a special token (an added token marked special).
func (t *Tokenizer) IsSpecial(id int64) bool { return t.vocab.special[id] }

// TokenID returns the id of a token written as it appears in the vocabulary ("Ġthe", "[CLS]",
// "<|endoftext|>"), and whether there is one.
func (t *Tokenizer) TokenID(token string) (int64, bool) {
	id, ok := t.vocab.ids[token]
	return id, ok
}
