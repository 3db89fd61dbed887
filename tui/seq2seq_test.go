package tui

import (
	"math"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

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
