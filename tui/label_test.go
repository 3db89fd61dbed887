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
)

// sinkPrevRun is fakeRun(1, 2, T) with head 0 putting 0.6 of every row (from row 2 on) on
// token 0 and the rest on the previous token; head 1 attends to itself alone.
func sinkPrevRun(T int) *Run {
	r := fakeRun(1, 2, T)
	a := r.Result.Attn[0][0]
	for i := range a {
		clear(a[i])
		if i < 2 {
			a[i][0] = 1
			continue
		}
		a[i][0], a[i][i-1] = 0.6, 0.4
	}
	b := r.Result.Attn[0][1]
	for i := range b {
		clear(b[i])
		b[i][i] = 1
	}
	return r
}

func TestHeadLabelInPanelAndTable(t *testing.T) {
	run := sinkPrevRun(12)
	first := analysis.FirstTokenScore(run.Result.Attn[0][0])
	m := New(Config{ModelName: "m", Profile: heatmap.NoColor, Initial: run,
		Probe: func(context.Context) ([]analysis.HeadScores, error) {
			return []analysis.HeadScores{{Layer: 0, Head: 1, Induction: 0.2, InductionNoSink: 0.2}}, nil
		}})
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 40})

	s := m.headScores(0, 0)
	if s.PrevTokenNoSink != 1 || math.IsNaN(s.SelfNoSink) || !math.IsNaN(s.InductionNoSink) || !math.IsNaN(s.DuplicateNoSink) {
		t.Fatalf("no-sink scores before the probe: %+v", s)
	}
	if kind, sink := s.Label(); kind != analysis.LabelPrevToken || sink != first {
		t.Fatalf("label %q sink %g, want prev-token, %g", kind, sink, first)
	}
	m.Update(press("enter")) // the head view, with the panel
	screen := ansi.Strip(m.render())
	want := "pattern  prev-token 1.000"
	if !strings.Contains(screen, want) || !strings.Contains(screen, fmt.Sprintf("sink %.3f", first)) {
		t.Fatalf("panel lacks %q and the sink share %.3f:\n%s", want, first, screen)
	}

	// Head 1 attends to itself: "self", and no sink part.
	m.Update(press("esc"))
	m.Update(press("right"))
	m.Update(press("enter"))
	screen = ansi.Strip(m.render())
	if !strings.Contains(screen, "pattern  self 1.000") || strings.Contains(screen, "· sink") {
		t.Fatalf("head 1's panel:\n%s", screen)
	}

	// The probe's sink-discounted scores are copied: its induction score 0.2 names nothing.
	m.Update(m.Init()())
	if got := m.headScores(0, 1).InductionNoSink; got != 0.2 {
		t.Fatalf("InductionNoSink %g after the probe, want 0.2", got)
	}

	// The score table has the pattern column.
	m.Update(press("esc"))
	m.Update(press("h"))
	screen = ansi.Strip(m.render())
	if !strings.Contains(screen, "pattern") || !strings.Contains(screen, "prev-token+sink") || !strings.Contains(screen, "  self") {
		t.Fatalf("score table lacks the pattern column:\n%s", screen)
	}
}

func TestHeadLabelFromProbe(t *testing.T) {
	m := New(Config{ModelName: "m", Profile: heatmap.NoColor, Initial: fakeRun(2, 3, 8),
		Probe: func(context.Context) ([]analysis.HeadScores, error) {
			return []analysis.HeadScores{{Layer: 1, Head: 2, Induction: 0.3, InductionNoSink: 0.97}}, nil
		}})
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 40})
	m.Update(m.Init()())
	m.layer, m.head = 1, 2
	m.Update(press("enter"))
	if screen := ansi.Strip(m.render()); !strings.Contains(screen, "pattern  induction 0.970") {
		t.Fatalf("panel lacks the probe's label:\n%s", screen)
	}
}
