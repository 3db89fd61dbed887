package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Marks used in labels for characters that would otherwise be invisible or break a line.
const (
	SpaceMark   = "␣" // U+2423 OPEN BOX
	NewlineMark = "↵" // U+21B5
	TabMark     = "⇥" // U+21E5
	CRMark      = "␍" // U+240D SYMBOL FOR CARRIAGE RETURN
	EmptyMark   = "∅" // a token that stands for no text
)

// Label returns a short, printable name of token id for axis labels: the text the token stands
// for (" the", not "Ġthe"), with spaces shown as ␣, newlines as ↵, tabs as ⇥ and carriage
// returns as ␍; bytes that are only part of a UTF-8 character as hex (<e2 80>); other
// invisible characters (controls, zero-width and format characters, unusual spaces) as their
// code point (<U+200D>). Special tokens keep their name ("<|endoftext|>", "[CLS]"); an id the
// tokenizer does not know is "<id:N>". A label is always valid UTF-8 without control characters.
func (t *Tokenizer) Label(id int64) string {
	if _, ok := t.vocab.tokens[id]; !ok {
		return fmt.Sprintf("<id:%d>", id)
	}
	return RenderBytes(t.vocab.bytes(id))
}

// Labels returns Label of every id.
func (t *Tokenizer) Labels(ids []int64) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = t.Label(id)
	}
	return out
}

// RenderBytes is Label's rendering of a token's bytes (exported for tests and for labelling
// spans of text the same way).
func RenderBytes(b []byte) string {
	if len(b) == 0 {
		return EmptyMark
	}
	var sb strings.Builder
	first := true
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			// A run of bytes that are not whole characters: <e2 80>.
			sb.WriteByte('<')
			for i := 0; len(b) > 0; i++ {
				r, size = utf8.DecodeRune(b)
				if !(r == utf8.RuneError && size <= 1) {
					break
				}
				if i > 0 {
					sb.WriteByte(' ')
				}
				fmt.Fprintf(&sb, "%02x", b[0])
				b = b[1:]
			}
			sb.WriteByte('>')
			first = false
			continue
		}
		b = b[size:]
		switch {
		case r == ' ':
			sb.WriteString(SpaceMark)
		case r == '\n':
			sb.WriteString(NewlineMark)
		case r == '\t':
			sb.WriteString(TabMark)
		case r == '\r':
			sb.WriteString(CRMark)
		case invisible(r):
			fmt.Fprintf(&sb, "<U+%04X>", r)
		case first && (unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r)):
			// A combining mark with nothing to combine with would land on the label's border.
			sb.WriteString("◌")
			sb.WriteRune(r)
		default:
			sb.WriteRune(r)
		}
		first = false
	}
	return sb.String()
}

// invisible reports characters that print as nothing, as blank space that is not a plain
// space, or that move the cursor: controls, format characters (zero-width joiners, bidi
// overrides, BOM), line and paragraph separators, spaces other than U+0020, private use,
// surrogates and unassigned code points.
func invisible(r rune) bool {
	switch {
	case unicode.IsControl(r): // C0, DEL, C1
		return true
	case unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co, unicode.Cs):
		return true
	case unicode.Is(unicode.Zs, r) && r != ' ':
		return true
	case r == utf8.RuneError:
		return false // a real U+FFFD in the text: shown as it is
	case !unicode.IsGraphic(r) && !unicode.Is(unicode.Mn, r):
		return true // unassigned
	}
	return false
}
