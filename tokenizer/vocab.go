package tokenizer

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// vocab maps ids to the strings and bytes they stand for, for labels and offsets. It reads
// only what display needs from tokenizer.json; encoding is the library's job.
type vocab struct {
	tokens    map[int64]string // id -> token as written in the vocabulary ("Ġthe", "##ing")
	ids       map[string]int64 // the reverse
	raw       map[int64][]byte // id -> bytes of text, where they differ from tokens[id]
	special   map[int64]bool
	added     map[int64]bool
	byteLevel bool // model tokens are GPT-2 byte-level strings
	maxID     int64
}

func newVocab() *vocab {
	return &vocab{
		tokens:  map[int64]string{},
		ids:     map[string]int64{},
		raw:     map[int64][]byte{},
		special: map[int64]bool{},
		added:   map[int64]bool{},
		maxID:   -1,
	}
}

func (v *vocab) size() int { return int(v.maxID + 1) }

func (v *vocab) set(id int64, tok string) {
	v.tokens[id] = tok
	if _, dup := v.ids[tok]; !dup || v.added[id] {
		v.ids[tok] = id
	}
	if id > v.maxID {
		v.maxID = id
	}
}

// bytes returns the text bytes of id; nil when unknown.
func (v *vocab) bytes(id int64) []byte {
	if b, ok := v.raw[id]; ok {
		return b
	}
	if tok, ok := v.tokens[id]; ok {
		return []byte(tok)
	}
	return nil
}

// tokenizerJSON is the part of a tokenizer.json that labels need.
type tokenizerJSON struct {
	AddedTokens []struct {
		ID      int64  `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        struct {
		Type         string          `json:"type"`
		Vocab        json.RawMessage `json:"vocab"`
		ByteFallback bool            `json:"byte_fallback"`
	} `json:"model"`
}

// component is a normalizer, pre-tokenizer or decoder, possibly a Sequence of them.
type component struct {
	Type          string          `json:"type"`
	Pretokenizers []component     `json:"pretokenizers"`
	Decoders      []component     `json:"decoders"`
	Pattern       json.RawMessage `json:"pattern"`
	Content       string          `json:"content"`
	Replacement   string          `json:"replacement"`
}

func (c component) walk(f func(component)) {
	f(c)
	for _, s := range c.Pretokenizers {
		s.walk(f)
	}
	for _, s := range c.Decoders {
		s.walk(f)
	}
}

func parseComponent(raw json.RawMessage) component {
	var c component
	if len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		_ = json.Unmarshal(raw, &c) // unknown shapes only lose label niceties, never ids
	}
	return c
}

// parseVocab reads the vocabulary, added tokens and the byte-level / metaspace / byte-fallback
// conventions that decide how a token string maps to text.
func parseVocab(data []byte) (*vocab, error) {
	var tj tokenizerJSON
	if err := json.Unmarshal(data, &tj); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	v := newVocab()

	var byteLevel, byteFallback bool
	metaspace := ""
	for _, raw := range []json.RawMessage{tj.PreTokenizer, tj.Decoder} {
		parseComponent(raw).walk(func(c component) {
			switch c.Type {
			case "ByteLevel":
				byteLevel = true
			case "Metaspace":
				metaspace = c.Replacement
				if metaspace == "" {
					metaspace = "▁"
				}
			case "ByteFallback":
				byteFallback = true
			case "Replace":
				// Llama-2-style decoders: Replace("▁", " ").
				var p struct{ String string }
				if json.Unmarshal(c.Pattern, &p) == nil && p.String == "▁" && c.Content == " " {
					metaspace = "▁"
				}
			}
		})
	}
	byteFallback = byteFallback || tj.Model.ByteFallback
	v.byteLevel = byteLevel

	vraw := bytes.TrimSpace(tj.Model.Vocab)
	switch {
	case len(vraw) > 0 && vraw[0] == '{': // BPE, WordPiece, WordLevel: token -> id
		var m map[string]int64
		if err := json.Unmarshal(vraw, &m); err != nil {
			return nil, fmt.Errorf("model.vocab: %v", err)
		}
		for tok, id := range m {
			v.set(id, tok)
		}
	case len(vraw) > 0 && vraw[0] == '[': // Unigram: [[piece, score], ...], id = index
		var list [][2]json.RawMessage
		if err := json.Unmarshal(vraw, &list); err != nil {
			return nil, fmt.Errorf("model.vocab: %v", err)
		}
		for id, e := range list {
			var tok string
			if err := json.Unmarshal(e[0], &tok); err != nil {
				return nil, fmt.Errorf("model.vocab[%d]: %v", id, err)
			}
			v.set(int64(id), tok)
		}
	default:
		return nil, fmt.Errorf("it has no model.vocab")
	}

	for id, tok := range v.tokens {
		if byteLevel {
			if b, ok := byteLevelDecode(tok); ok {
				v.raw[id] = b
			}
			continue
		}
		if byteFallback && len(tok) == 6 && strings.HasPrefix(tok, "<0x") && tok[5] == '>' {
			if n, err := strconv.ParseUint(tok[3:5], 16, 8); err == nil {
				v.raw[id] = []byte{byte(n)}
				continue
			}
		}
		if metaspace != "" && strings.Contains(tok, metaspace) {
			v.raw[id] = []byte(strings.ReplaceAll(tok, metaspace, " "))
		}
	}
	// Added tokens are plain text, never byte-level strings.
	for _, a := range tj.AddedTokens {
		v.added[a.ID] = true
		v.set(a.ID, a.Content)
		v.ids[a.Content] = a.ID
		delete(v.raw, a.ID)
		if a.Special {
			v.special[a.ID] = true
		}
	}
	return v, nil
}

// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68
// bytes are shifted to U+0100 and up, so every byte is a visible character.
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := make(map[rune]byte, 256)
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			b2r[b] = rune(b)
		} else {
			b2r[b] = 256 + n
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()

// byteLevelDecode maps a byte-level token string ("Ġthe") back to its bytes (" the").
func byteLevelDecode(tok string) ([]byte, bool) {
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := runeToByte[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}

// parseTiktoken reads a .tiktoken file: one "base64(bytes) rank" per line.
func parseTiktoken(data []byte, specials map[int64]string) (*vocab, error) {
	v := newVocab()
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		tok, rank, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("line %d: want 'base64 rank'", n+1)
		}
		b, err := base64.StdEncoding.DecodeString(tok)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n+1, err)
		}
		id, err := strconv.ParseInt(rank, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n+1, err)
		}
		// Tokens are shown as GPT-2 byte-level strings, as in GPT-2's tokenizer.json.
		var sb strings.Builder
		for _, c := range b {
			sb.WriteRune(byteToRune[c])
		}
		v.set(id, sb.String())
		v.raw[id] = b
	}
	v.byteLevel = true
	for id, s := range specials {
		v.added[id] = true
		v.special[id] = true
		v.set(id, s)
		v.ids[s] = id
		delete(v.raw, id)
	}
	return v, nil
}
