package tui

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"

	"github.com/attnscope/attnscope/circuits"
	"github.com/attnscope/attnscope/heatmap"
)

// fakeCircuits is circuits data for fakeRun(2, 3, …): L1H2 reads L0H1 through its keys.
func fakeCircuits(calls *int) func(context.Context) (*CircuitsData, error) {
	return func(context.Context) (*CircuitsData, error) {
		*calls++
		d := &CircuitsData{Baseline: 0.125}
		for l := 0; l < 2; l++ {
			for h := 0; h < 3; h++ {
				d.Heads = append(d.Heads, circuits.Head{Layer: l, Head: h, OVCopying: 0.1*float64(l*3+h) + 0.05, QKPrevToken: 0.25, QKSelf: math.NaN()})
			}
		}
		d.Compositions = []circuits.Composition{
			{FromLayer: 0, FromHead: 0, ToLayer: 1, ToHead: 2, Q: 0.2, K: 0.1, V: 0.15},
			{FromLayer: 0, FromHead: 1, ToLayer: 1, ToHead: 2, Q: 0.1, K: 0.6, V: 0.12},
		}
		d.TopOV = func(_ context.Context, l, h, k int) ([]circuits.TokenPair, error) {
			if l == 0 && h == 2 {
				return nil, errors.New("no unembedding")
			}
			return []circuits.TokenPair{{Source: 3, Output: 4, Value: 9}, {Source: 1, Output: 1, Value: 8}}, nil
		}
		return d, nil
	}
}

func TestCircuitsPanel(t *testing.T) {
	calls := 0
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.cfg.Circuits = fakeCircuits(&calls)
	names := []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
	m.cfg.Label = func(id int64) string { return names[id] }
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	send(m, press("G")) // layer 1
	send(m, press("l"))
	send(m, press("l")) // L1H2
	if m.layer != 1 || m.head != 2 {
		t.Fatalf("selected L%dH%d, want L1H2", m.layer, m.head)
	}
	send(m, press("c"))
	panel := sidePanelOf(strings.Join(screenLines(m), "\n"))
	for _, want := range []string{"L1H2 circuits", "OV copying        0.550", "pos. prev-token   0.250", "pos. self             -", "random 0.12", "L0H1   K", "three      → four", "one        → one"} {
		if !strings.Contains(panel, want) {
			t.Errorf("the circuits panel lacks %q:\n%s", want, panel)
		}
	}
	// The strongest partner comes first.
	if i, j := strings.Index(panel, "L0H1"), strings.Index(panel, "L0H0"); i < 0 || j < 0 || i > j {
		t.Errorf("partners not strongest first:\n%s", panel)
	}
	// Moving to another head asks for its pairs; an error is shown, not a panic.
	send(m, press("l"))
	send(m, press("k")) // L0H2
	panel = sidePanelOf(strings.Join(screenLines(m), "\n"))
	if !strings.Contains(panel, "L0H2 circuits") || !strings.Contains(panel, "no unembedding") || strings.Contains(panel, "reads from") {
		t.Errorf("L0H2's panel:\n%s", panel)
	}
	// c goes back to the scores, and again to circuits without computing them twice.
	send(m, press("c"))
	if panel := sidePanelOf(strings.Join(screenLines(m), "\n")); strings.Contains(panel, "circuits (weights)") {
		t.Errorf("c did not switch back to the scores:\n%s", panel)
	}
	send(m, press("c"))
	if calls != 1 {
		t.Errorf("circuits computed %d times, want once", calls)
	}
}

func TestCircuitsPanelUnavailable(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.cfg.CircuitsWhy = "the weights could not be read: at node MatMul_3, the weight is an input"
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	send(m, press("c"))
	panel := sidePanelOf(strings.Join(screenLines(m), "\n"))
	if !strings.Contains(panel, "MatMul_3") {
		t.Errorf("the panel does not say why there are no circuits:\n%s", panel)
	}
	// Too narrow for a panel: the status line says so.
	m.Update(tea.WindowSizeMsg{Width: 70, Height: 20})
	send(m, press("c"))
	send(m, press("c"))
	if !strings.Contains(strings.Join(screenLines(m), "\n"), "wider window") {
		t.Error("c in a window without a side panel says nothing")
	}
}
