package tui

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/result"
)

// uniform is a q×k map whose rows spread evenly.
func uniform(q, k int) [][]float32 {
	a := make([][]float32, q)
	for i := range a {
		a[i] = make([]float32, k)
		for j := range a[i] {
			a[i][j] = 1 / float32(k)
		}
	}
	return a
}

// fakePairRun is an encoder–decoder run: 4 source tokens (S0…S3), 3 target tokens
// (T0…T2); layer 0 is the encoder's self-attention, 1 the decoder's, 2 cross-attention.
func fakePairRun() *Run {
	res := &result.Result{
		Tokens: []int64{10, 11, 12},
		Source: []int64{20, 21, 22, 23},
		Attn:   [][][][]float32{{uniform(4, 4)}, {uniform(3, 3)}, {uniform(3, 4)}},
		Sides: [][2]result.Side{
			{result.SourceSide, result.SourceSide},
			{result.TargetSide, result.TargetSide},
			{result.TargetSide, result.SourceSide},
		},
	}
	return &Run{Prompt: "S0 S1 S2 S3", Result: res, Labels: []string{"T0", "T1", "T2"}, SourceLabels: []string{"S0", "S1", "S2", "S3"}}
}

// Each layer's head view labels its rows with its queries' tokens and its columns with
// its keys': target down and source across in cross-attention.
func TestEncoderDecoderLabels(t *testing.T) {
	cases := []struct {
		layer      int
		rows, cols string // the labels' first letter down and across
		cross      bool
	}{
		{0, "S", "S", false},
		{1, "T", "T", false},
		{2, "T", "S", true},
	}
	for _, c := range cases {
		m := newModel(heatmap.NoColor, fakePairRun())
		m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
		for range c.layer {
			m.Update(press("down"))
		}
		m.Update(press("enter"))
		m.Update(press("g"))
		screen := ansi.Strip(m.render())
		lines := strings.Split(screen, "\n")
		var rowLabels []string
		for _, l := range lines {
			f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "▶"))
			if len(f) > 0 && len(f[0]) == 2 && (f[0][0] == 'S' || f[0][0] == 'T') && f[0][1] >= '0' && f[0][1] <= '9' {
				rowLabels = append(rowLabels, f[0])
			}
		}
		wantRows := 3
		if c.rows == "S" {
			wantRows = 4
		}
		if len(rowLabels) != wantRows {
			t.Fatalf("layer %d: row labels %v, want %d of %s…:\n%s", c.layer, rowLabels, wantRows, c.rows, screen)
		}
		for _, r := range rowLabels {
			if r[:1] != c.rows {
				t.Fatalf("layer %d: row label %s, want %s…", c.layer, r, c.rows)
			}
		}
		// The key axis is written down the columns, one character per row: its first
		// line holds each key label's first letter.
		if !strings.Contains(screen, strings.Repeat(c.cols+" ", 3)) {
			t.Fatalf("layer %d: no %s key labels across:\n%s", c.layer, c.cols, screen)
		}
		s := m.headScores(c.layer, 0)
		if c.cross != math.IsNaN(s.PrevToken) || c.cross != math.IsNaN(s.Self) {
			t.Fatalf("layer %d: prev_token %g, self %g", c.layer, s.PrevToken, s.Self)
		}
		// The token view draws the keys' sequence.
		m.Update(press("tab"))
		screen = ansi.Strip(m.render())
		if !strings.Contains(screen, c.cols+"1 ") || (c.cross && !strings.Contains(screen, "in the source")) {
			t.Fatalf("layer %d token view:\n%s", c.layer, screen)
		}
	}
	m := newModel(heatmap.NoColor, fakePairRun())
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	if screen := ansi.Strip(m.render()); !strings.Contains(screen, "4 source + 3 target tokens") {
		t.Fatalf("status line:\n%s", screen)
	}
}

// An encoder–decoder run fits every size in every view, on each kind of layer.
func TestEncoderDecoderSizes(t *testing.T) {
	for layer := 0; layer < 3; layer++ {
		for _, keys := range [][]string{nil, {"enter"}, {"enter", "z"}, {"tab", "tab"}, {"tab", "tab", "r"}} {
			m := newModel(heatmap.ANSI256, fakePairRun())
			m.layer = layer
			for _, k := range keys {
				m.Update(press(k))
			}
			for _, w := range []int{40, 79, 120} {
				for _, h := range []int{10, 24} {
					m.Update(tea.WindowSizeMsg{Width: w, Height: h})
					checkFrame(t, m.render(), w, h, strings.Join(keys, " "))
				}
			}
		}
	}
}

// An encoder–decoder whose source and target differ in length opens and moves without a
// panic: the cursors (set on the first frame from the target's length) are bounded again
// whenever the layer changes between encoder (S×S), decoder (T×T) and cross (T×S) maps.
// (`inspect ENCDEC --ids 1,2 --target-ids 3,4,5,6,7` panicked at the first frame.)
func TestEncoderDecoderUnequalLengths(t *testing.T) {
	sizes := []struct{ S, T int }{{2, 5}, {5, 2}, {1, 7}, {7, 1}, {1, 1}, {3, 40}}
	walks := [][]string{
		nil,
		{"enter", "G"},
		{"enter", "G", "]", "]", "esc", "down", "enter"},
		{"down", "enter", "G", "l", "l", "l", "l", "esc", "up", "enter"},
		{"down", "down", "tab", "G", "esc", "up", "up", "tab", "tab", "r", "G"},
		{"enter", "z", "G", "esc", "down", "down", "enter"},
		{"tab", "tab", "G", "esc", "down", "tab", "tab", "m", "esc", "down", "tab"},
	}
	for _, sz := range sizes {
		for _, walk := range walks {
			m := newModel(heatmap.ANSI256, pairRun(sz.S, sz.T))
			for _, w := range []struct{ w, h int }{{120, 40}, {60, 12}} {
				m.Update(tea.WindowSizeMsg{Width: w.w, Height: w.h})
				checkFrame(t, m.render(), w.w, w.h, fmt.Sprintf("S=%d T=%d first frame", sz.S, sz.T))
				for i, k := range walk {
					m.Update(press(k))
					what := fmt.Sprintf("S=%d T=%d after %v", sz.S, sz.T, walk[:i+1])
					checkFrame(t, m.render(), w.w, w.h, what)
					q, kk := m.mapSize()
					if m.query >= q || m.key >= kk {
						t.Fatalf("%s: cursor (%d, %d) outside the %d×%d map of layer %d", what, m.query, m.key, q, kk, m.layer)
					}
				}
			}
		}
	}
}

// pairRun is fakePairRun's layout with S source and T target tokens.
func pairRun(S, T int) *Run {
	res := &result.Result{
		Attn: [][][][]float32{{uniform(S, S)}, {uniform(T, T)}, {uniform(T, S)}},
		Sides: [][2]result.Side{
			{result.SourceSide, result.SourceSide},
			{result.TargetSide, result.TargetSide},
			{result.TargetSide, result.SourceSide},
		},
	}
	run := &Run{Prompt: "source", Result: res}
	for i := range S {
		res.Source = append(res.Source, int64(i))
		run.SourceLabels = append(run.SourceLabels, fmt.Sprintf("S%d", i))
	}
	for i := range T {
		res.Tokens = append(res.Tokens, int64(i))
		run.Labels = append(run.Labels, fmt.Sprintf("T%d", i))
	}
	return run
}

// Each sequence keeps its own cursor: moving from a decoder layer to an encoder layer and
// back finds the target's cursor where it was, not cut down to the source's length.
func TestEncoderDecoderCursorPerSequence(t *testing.T) {
	m := newModel(heatmap.NoColor, pairRun(2, 5))
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	steps := []struct {
		key          string
		layer, query int
	}{
		{"", 0, 1},     // encoder: the source's last token
		{"down", 1, 4}, // decoder: the target's last token
		{"enter", 1, 4},
		{"up", 1, 3},
		{"up", 1, 2},
		{"esc", 1, 2},
		{"down", 2, 2}, // cross-attention: target queries too
		{"up", 1, 2},
		{"up", 0, 1},
		{"enter", 0, 1},
		{"up", 0, 0},
		{"esc", 0, 0},
		{"down", 1, 2},
		{"up", 0, 0},
	}
	for i, s := range steps {
		if s.key != "" {
			m.Update(press(s.key))
		}
		if m.layer != s.layer || m.query != s.query {
			t.Fatalf("step %d (%s): layer %d query %d, want layer %d query %d", i, s.key, m.layer, m.query, s.layer, s.query)
		}
	}
}

// Probe scores compare positions of one sequence: cross-attention shows "-" for them even
// when the probe reports numbers, and a head the probe left out shows "-" once it has
// finished ("…" only while it runs).
func TestEncoderDecoderProbeScores(t *testing.T) {
	m := New(Config{ModelName: "m", Initial: pairRun(3, 4), Rerun: nil,
		Probe: func(context.Context) ([]analysis.HeadScores, error) {
			return []analysis.HeadScores{{Layer: 0, Head: 0, Induction: 0.7, DuplicateToken: 0.1}, {Layer: 2, Head: 0, Induction: 0.9, DuplicateToken: 0.9}}, nil
		}})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	panel := func() string {
		for _, l := range strings.Split(ansi.Strip(m.render()), "\n") {
			if i := strings.Index(l, "induction"); i >= 0 {
				return strings.Join(strings.Fields(l[i:]), " ")
			}
		}
		return ""
	}
	if got := panel(); got != "induction …" {
		t.Fatalf("encoder layer while the probe runs: %q", got)
	}
	m.Update(m.Init()())
	for _, c := range []struct {
		layer int
		want  string
	}{{0, "induction 0.700 ★"}, {1, "induction -"}, {2, "induction -"}} {
		m.layer = c.layer
		m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
		if got := panel(); got != c.want {
			t.Fatalf("layer %d: %q, want %q", c.layer, got, c.want)
		}
	}
}
