package tui

import (
	"strings"
	"unicode"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
)

// promptLabel starts the editor's line; idsLabel when the prompt is a list of token ids
// (Config.RerunIDs).
const (
	promptLabel = "prompt> "
	idsLabel    = "ids> "
	// An encoder–decoder's source and target (Config.RerunPair, RerunPairIDs).
	sourceLabel    = "source> "
	targetLabel    = "target> "
	sourceIDsLabel = "source ids> "
	targetIDsLabel = "target ids> "
)

// maxPromptRunes bounds the prompt being edited (far more than any model's positions):
// insertions past it are cut, and the editor says so.
const maxPromptRunes = 1 << 20

// editor edits one prompt on one line of the screen. The text is two stacks around the
// cursor, so typing, deleting and moving by one cost the same at any length, and a paste
// is one insertion; drawing looks only at the runes on screen. (bubbles' textinput
// measures the whole text on every key: typing 100 KB took minutes.) Newlines and tabs
// are kept in the text and drawn as ↵ and →.
type editor struct {
	before []rune // the text before the cursor
	after  []rune // the text after the cursor, reversed: the rune under the cursor is last
	off    int    // index of the first rune on screen
	width  int    // cells for the text, the cursor's included (≥ 1)
	label  string // starts the line ("": promptLabel)
}

// lead is the label that starts the editor's line.
func (e *editor) lead() string {
	if e.label == "" {
		return promptLabel
	}
	return e.label
}

func (e *editor) pos() int { return len(e.before) }
func (e *editor) len() int { return len(e.before) + len(e.after) }

// at is the rune at index i of the text.
func (e *editor) at(i int) rune {
	if i < len(e.before) {
		return e.before[i]
	}
	return e.after[len(e.after)-1-(i-len(e.before))]
}

// value is the whole text.
func (e *editor) value() string {
	var b strings.Builder
	b.Grow(e.len())
	b.WriteString(string(e.before))
	for i := len(e.after) - 1; i >= 0; i-- {
		b.WriteRune(e.after[i])
	}
	return b.String()
}

// setValue replaces the text (cut at maxPromptRunes) and puts the cursor at its end.
func (e *editor) setValue(s string) {
	e.before, e.after, e.off = e.before[:0], e.after[:0], 0
	e.insert(s)
}

// setWidth sets the cells the text has on screen.
func (e *editor) setWidth(w int) {
	e.width = max(w, 1)
	e.scroll()
}

// insert puts s at the cursor, with "\r\n" and "\r" as newlines and other control
// characters dropped; false when it was cut at maxPromptRunes.
func (e *editor) insert(s string) bool {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	whole := true
	for _, r := range s {
		if r == '\r' {
			r = '\n'
		}
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			continue
		}
		if e.len() >= maxPromptRunes {
			whole = false
			break
		}
		e.before = append(e.before, r)
	}
	e.scroll()
	return whole
}

// key applies an editing key; false when typed text was cut at maxPromptRunes.
func (e *editor) key(msg tea.KeyPressMsg) bool {
	switch msg.String() {
	case "left", "ctrl+b":
		e.moveLeft(1)
	case "right", "ctrl+f":
		e.moveRight(1)
	case "home", "ctrl+a":
		e.moveLeft(len(e.before))
	case "end", "ctrl+e":
		e.moveRight(len(e.after))
	case "ctrl+left", "alt+left", "alt+b":
		e.moveLeft(e.pos() - e.wordStart())
	case "ctrl+right", "alt+right", "alt+f":
		e.moveRight(e.wordEnd() - e.pos())
	case "backspace", "ctrl+h":
		if len(e.before) > 0 {
			e.before = e.before[:len(e.before)-1]
		}
	case "delete", "ctrl+d":
		if len(e.after) > 0 {
			e.after = e.after[:len(e.after)-1]
		}
	case "ctrl+u":
		e.before = e.before[:0]
	case "ctrl+k":
		e.after = e.after[:0]
	case "ctrl+w", "alt+backspace":
		e.before = e.before[:e.wordStart()]
	default:
		if msg.Text != "" {
			return e.insert(msg.Text)
		}
	}
	e.scroll()
	return true
}

func (e *editor) moveLeft(n int) {
	for ; n > 0 && len(e.before) > 0; n-- {
		e.after = append(e.after, e.before[len(e.before)-1])
		e.before = e.before[:len(e.before)-1]
	}
}

func (e *editor) moveRight(n int) {
	for ; n > 0 && len(e.after) > 0; n-- {
		e.before = append(e.before, e.after[len(e.after)-1])
		e.after = e.after[:len(e.after)-1]
	}
}

// wordStart is the index where the word before the cursor starts (spaces before the
// cursor skipped first).
func (e *editor) wordStart() int {
	i := len(e.before)
	for i > 0 && unicode.IsSpace(e.before[i-1]) {
		i--
	}
	for i > 0 && !unicode.IsSpace(e.before[i-1]) {
		i--
	}
	return i
}

// wordEnd is the index where the word after the cursor ends.
func (e *editor) wordEnd() int {
	i, n := e.pos(), e.len()
	for i < n && unicode.IsSpace(e.at(i)) {
		i++
	}
	for i < n && !unicode.IsSpace(e.at(i)) {
		i++
	}
	return i
}

// scroll moves the first rune on screen so that the cursor is on screen, looking at no
// more runes than fit.
func (e *editor) scroll() {
	pos := e.pos()
	e.off = clamp(e.off, 0, pos)
	// The cursor's cell and the runes from off up to it must fit in width.
	w, i := 1, pos
	if pos < e.len() {
		w = cellWidth(e.at(pos))
	}
	for i > e.off && i > pos-4*e.width {
		cw := cellWidth(e.at(i - 1))
		if w+cw > e.width {
			break
		}
		w += cw
		i--
	}
	if i > e.off {
		e.off = i
	}
}

// view draws the editor's line: the label, then the text with the cursor cell in reverse
// video, padded to width cells (fewer where marks combine with their neighbours).
func (e *editor) view() string {
	var b strings.Builder
	b.WriteString(e.lead())
	w, n, i := 0, e.len(), e.off
	for ; i < n && i < e.pos(); i++ {
		cw := cellWidth(e.at(i))
		if w+cw > e.width-1 {
			break
		}
		b.WriteString(glyph(e.at(i)))
		w += cw
	}
	cursor := " "
	if e.pos() < n {
		cursor = glyph(e.at(e.pos()))
	}
	if cellWidth([]rune(cursor)[0]) > e.width-w {
		cursor = " "
	}
	b.WriteString(sgrReverse + cursor + sgrReset)
	w += cellWidth([]rune(cursor)[0])
	for i = e.pos() + 1; i < n; i++ {
		cw := cellWidth(e.at(i))
		if w+cw > e.width {
			break
		}
		b.WriteString(glyph(e.at(i)))
		w += cw
	}
	b.WriteString(strings.Repeat(" ", max(e.width-w, 0)))
	return b.String()
}

// glyph is how the editor draws r: newline ↵, tab →.
func glyph(r rune) string {
	switch r {
	case '\n':
		return "↵"
	case '\t':
		return "→"
	}
	return string(r)
}

// cellWidth is the cells glyph(r) takes (at least 1: a mark that would combine with its
// neighbour is counted as a cell of its own, which only ever leaves room to spare).
func cellWidth(r rune) int {
	if r < 0x300 {
		return 1
	}
	return max(ansi.StringWidth(glyph(r)), 1)
}
