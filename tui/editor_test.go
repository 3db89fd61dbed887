package tui

import (
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/heatmap"
)

// Each editing key does what its name says, at the cursor.
func TestEditorKeys(t *testing.T) {
	cases := []struct {
		start string
		keys  []string
		want  string
		pos   int
	}{
		{"", []string{"a", "b", "c"}, "abc", 3},
		{"abc", []string{"left", "x"}, "abxc", 3},
		{"abc", []string{"home", "x"}, "xabc", 1},
		{"abc", []string{"ctrl+a", "right", "end", "y"}, "abcy", 4},
		{"abc", []string{"backspace", "backspace", "backspace", "backspace"}, "", 0},
		{"abc", []string{"home", "delete", "delete"}, "c", 0},
		{"abc", []string{"left", "ctrl+u"}, "c", 0},
		{"abc", []string{"left", "left", "ctrl+k"}, "a", 1},
		{"one two  three", []string{"ctrl+w"}, "one two  ", 9},
		{"one two  three", []string{"alt+backspace", "alt+backspace"}, "one ", 4},
		{"one two three", []string{"alt+left", "alt+left", "X"}, "one Xtwo three", 5},
		{"one two three", []string{"home", "alt+right", "X"}, "oneX two three", 4},
		{"one two three", []string{"home", "ctrl+right", "ctrl+right", "X"}, "one twoX three", 8},
		{"日本", []string{"left", "語"}, "日語本", 2},
		{"line\nnext", []string{"home", "space"}, " line\nnext", 1},
	}
	for _, c := range cases {
		e := editor{width: 20}
		e.setValue(c.start)
		for _, k := range c.keys {
			e.key(keyMsg(k))
		}
		if e.value() != c.want || e.pos() != c.pos {
			t.Errorf("%q then %v: %q with the cursor at %d, want %q at %d", c.start, c.keys, e.value(), e.pos(), c.want, c.pos)
		}
	}
}

// Pasted text keeps its newlines ("\r\n" and "\r" become "\n") and tabs, drops other
// control characters, and is cut at maxPromptRunes with a false answer.
func TestEditorInsert(t *testing.T) {
	e := editor{width: 10}
	if !e.insert("a\r\nb\rc\td\x1b[31me\x00") || e.value() != "a\nb\nc\td[31me" {
		t.Fatalf("value %q", e.value())
	}
	e.setValue(strings.Repeat("x", maxPromptRunes-1))
	if e.insert("yz") || e.len() != maxPromptRunes || !strings.HasSuffix(e.value(), "xy") {
		t.Fatalf("inserting past the bound: %d runes", e.len())
	}
}

// The editor's line is never wider than its width, and the cursor is always on it, with
// wide characters, newlines and tabs, wherever the cursor goes in a long text.
func TestEditorView(t *testing.T) {
	texts := []string{
		"",
		"short",
		strings.Repeat("the quick brown fox ", 50),
		strings.Repeat("日本語のテキスト", 40),
		strings.Repeat("tab\there\nnew line ", 30),
		strings.Repeat("e\u0301", 100), // e and a combining accent
	}
	for _, text := range texts {
		for _, w := range []int{1, 2, 3, 10, 79} {
			e := editor{}
			e.setWidth(w)
			e.setValue(text)
			for i, k := range []string{"", "home", "right", "right", "alt+right", "end", "left", "alt+left", "alt+left", "home", "x", "end"} {
				if k != "" {
					e.key(keyMsg(k))
				}
				v := e.view()
				if got := ansi.StringWidth(v); got > len(promptLabel)+w {
					t.Fatalf("width %d, step %d (%s): the line is %d cells: %q", w, i, k, got, v)
				}
				if !strings.Contains(v, sgrReverse) {
					t.Fatalf("width %d, step %d (%s): no cursor on %q", w, i, k, v)
				}
				var under string
				if e.pos() < e.len() {
					under = glyph(e.at(e.pos()))
				}
				if cellWidth(firstRune(under)) <= w && under != "" && !strings.Contains(v, sgrReverse+under+sgrReset) {
					t.Fatalf("width %d, step %d (%s): the cursor is not on %q: %q", w, i, k, under, v)
				}
			}
		}
	}
}

func firstRune(s string) rune {
	for _, r := range s {
		return r
	}
	return ' '
}

// Editing is linear in the text's length: 100 KB pasted (one message) or typed key by
// key (a terminal without bracketed paste), each message followed by a frame as Bubble
// Tea draws one, takes well under a second, where bubbles' textinput took minutes for the
// keys (it measured the whole text on every key: 20 KB took 12 s, 100 KB ~5 min) and the
// browser redrew the whole screen for each. No wall-clock bound (the machine may be busy):
// the test compares the time per key late in the typing (a 90–100 KB prompt) with the time
// per key early on (0–10 KB), measured in the same run; linear work keeps them alike,
// work that grows with the text makes the late keys ≥ 10× slower. BenchmarkPrompt100KB
// gives the numbers.
func TestLongPromptIsLinear(t *testing.T) {
	text := strings.Repeat("the quick brown fox jumps over the lazy dog ", 100_000/44+1)[:100_000]
	m := newModel(heatmap.ANSI256, fakeRun(12, 12, 256))
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	m.Update(press("e"))
	m.Update(keyMsg("ctrl+u"))
	start := time.Now()
	m.Update(tea.PasteMsg{Content: text})
	m.View()
	pasted := time.Since(start)
	if m.editor.value() != text {
		t.Fatal("the paste did not arrive whole")
	}
	m.Update(keyMsg("ctrl+u"))
	start = time.Now()
	tenth := len(text) / 10
	var early, late time.Duration
	for i, r := range text {
		if i == tenth {
			early = time.Since(start)
		}
		if i == len(text)-tenth {
			late = time.Now().Sub(start)
		}
		m.Update(tea.KeyPressMsg{Code: r, Text: string(r)})
		m.View()
	}
	typed := time.Since(start)
	late = typed - late
	if m.editor.value() != text {
		t.Fatal("the typed text did not arrive whole")
	}
	// Moving and editing in the long prompt stays cheap.
	start = time.Now()
	for range 1000 {
		m.Update(keyMsg("left"))
		m.View()
	}
	m.Update(keyMsg("home"))
	m.Update(press("X"))
	m.Update(keyMsg("end"))
	m.Update(keyMsg("backspace"))
	moved := time.Since(start)
	if v := m.editor.value(); v != "X"+text[:len(text)-1] {
		t.Fatalf("after editing: %q…", v[:20])
	}
	checkFrame(t, m.render(), 200, 60, "editing a long prompt")
	t.Logf("100 KB: paste %s, typed key by key %s (first 10 KB %s, last 10 KB %s), 1000 cursor moves %s", pasted, typed, early, late, moved)
	if late > 4*early+50*time.Millisecond {
		t.Fatalf("typing slows down as the prompt grows: the last 10 KB took %s, the first 10 KB %s", late, early)
	}
	// The long prompt runs whole.
	_, cmd := m.Update(press("enter"))
	if cmd == nil || m.pending != "X"+text[:len(text)-1] {
		t.Fatal("enter did not run the long prompt")
	}
}

// BenchmarkPrompt100KB: the prompt editor at 200×60 over a 12×12 grid in 256 colours:
// 100 KB pasted as one message, and one key typed at the end of a 100 KB prompt (typing
// 100 KB key by key costs 100,000 of those), each followed by a frame as Bubble Tea draws
// one after every message.
func BenchmarkPrompt100KB(b *testing.B) {
	text := strings.Repeat("the quick brown fox jumps over the lazy dog ", 100_000/44+1)[:100_000]
	m := newModel(heatmap.ANSI256, fakeRun(12, 12, 256))
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	m.Update(press("e"))
	b.Run("paste", func(b *testing.B) {
		for b.Loop() {
			m.Update(keyMsg("ctrl+u"))
			m.Update(tea.PasteMsg{Content: text})
			m.View()
		}
	})
	b.Run("key", func(b *testing.B) {
		m.Update(keyMsg("ctrl+u"))
		m.Update(tea.PasteMsg{Content: text})
		for i := 0; b.Loop(); i++ {
			if i%2 == 0 {
				m.Update(press("x"))
			} else {
				m.Update(keyMsg("backspace"))
			}
			m.View()
		}
	})
}

// A paste cut at maxPromptRunes says so on screen, and the screen Update caches is redrawn
// with the notice: before, the paste returned without settling, so the cache was stale and
// every key typed afterwards drew a whole frame instead of copying the cached one.
func TestCutPasteShowsItsNotice(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 2, 8))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 30})
	m.Update(press("e"))
	m.Update(tea.PasteMsg{Content: strings.Repeat("x", maxPromptRunes+10)})
	if !m.topOK || m.topFor != (topKey{m.state, m.gen}) {
		t.Fatal("the screen cache is stale after the paste")
	}
	if !strings.Contains(m.top, "the prompt is cut at") {
		t.Fatalf("the cached screen has no notice of the cut:\n%s", m.top)
	}
	if screen := m.View().Content; !strings.Contains(screen, "the prompt is cut at") {
		t.Fatalf("no notice of the cut on screen:\n%s", screen)
	}
}
