package tui

import (
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"

	"github.com/attnscope/attnscope/heatmap"
)

// snapshot is everything a Model holds that could change, in comparable form: the state
// and the caches' contents.
type snapshot struct {
	st            state
	run, clean    *Run
	shownOff      string
	thumbs        int
	scores        int
	top, frame    string
	topFor        topKey
	topOK         bool
	gen           int
	before, after int
	off, width    int
	label, other  string
	order         int
	orderFor      topKey
}

func snap(m *Model) snapshot {
	s := snapshot{st: m.state, run: m.run, clean: m.clean, shownOff: m.shownOff, thumbs: len(m.thumbs), top: m.top, frame: m.frame, topFor: m.topFor, topOK: m.topOK, gen: m.gen,
		before: len(m.editor.before), after: len(m.editor.after), off: m.editor.off, width: m.editor.width, label: m.editor.label, other: m.other,
		order: len(m.order), orderFor: m.orderFor}
	for _, l := range m.textScores {
		for _, h := range l {
			if h != nil {
				s.scores++
			}
		}
	}
	return s
}

// View changes nothing: in every view, scrolled or not, drawing twice gives the same
// frame and leaves the state and the caches as they were. (Before, drawing the grid
// filled the thumbnail cache and moved the grid's and the head view's scroll offsets,
// and the score panel filled the score cache.)
func TestViewIsPure(t *testing.T) {
	cases := []struct {
		name string
		keys []string
	}{
		{"grid", nil},
		{"grid scrolled", []string{"G", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "right", "right", "right", "right", "right", "right", "right", "right", "right", "right", "right"}},
		{"head", []string{"enter"}},
		{"head scrolled", []string{"enter", "G", "]", "]", "]", "+", "+"}},
		{"head fit", []string{"enter", "z"}},
		{"tokens", []string{"tab", "tab", "G"}},
		{"tokens reversed", []string{"tab", "tab", "r"}},
		{"help", []string{"?"}},
		{"help scrolled", []string{"?", "down", "down", "down", "down"}},
		{"grid paged", []string{"pgdown"}},
		{"score table", []string{"h", "down", "down"}},
		{"score table sorted", []string{"h", "o", "o", "G"}},
		{"editing", []string{"e", "x"}},
		{"editing a one-sequence prompt after tab", []string{"e", "tab", "x"}},
		{"sorted by entropy", []string{"o", "o", "o", "o", "o"}},
		{"sorted by prev_token", []string{"o"}},
		{"heads off, grid", []string{"x", "right", "x"}},
		{"heads off, head", []string{"x", "enter"}},
		{"heads off, tokens", []string{"x", "tab", "tab", "left"}},
		{"heads off, a run in flight", []string{"x", "right", "x!"}},
	}
	for _, c := range cases {
		for _, size := range [][2]int{{60, 15}, {120, 40}, {300, 100}} {
			run := fakeRun(12, 12, 150)
			m := newModel(heatmap.ANSI256, run)
			m.cfg.Ablate = newAblator(run).ablate
			m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
			for _, k := range c.keys {
				if k, ok := strings.CutSuffix(k, "!"); ok && k != "" {
					m.Update(press(k)) // its run left in flight
					continue
				}
				send(m, press(k))
			}
			before := snap(m)
			first := m.View().Content
			second := m.View().Content
			if after := snap(m); after != before {
				t.Fatalf("%s at %v: View changed the model:\nbefore %+v\nafter  %+v", c.name, size, before, after)
			}
			if first != second {
				t.Fatalf("%s at %v: two draws of one state differ", c.name, size)
			}
		}
	}
}

// The state that View draws is settled by Update alone: after a change made behind
// Update's back (a test setting a field), View draws it correctly without storing
// anything, and the next Update settles it.
func TestViewDrawsUnsettledState(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(12, 12, 150))
	m.Update(tea.WindowSizeMsg{Width: 60, Height: 15})
	m.layer, m.head = 11, 11
	before := snap(m)
	frame := m.render()
	if snap(m) != before {
		t.Fatal("View changed the model")
	}
	m.Update(tea.WindowSizeMsg{Width: 60, Height: 15})
	if m.render() != frame {
		t.Fatal("the settled frame differs from the one drawn before settling")
	}
	if m.gridTop == 0 {
		t.Fatalf("Update did not scroll the grid down to L11: top %d", m.gridTop)
	}
}
