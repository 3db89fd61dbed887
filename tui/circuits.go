package tui

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	tea "charm.land/bubbletea/v2"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/circuits"
)

// CircuitsData is what the circuits panel (c) shows, computed from the model's weights
// (no run): each head's numbers, every composition score, and a head's strongest OV token
// pairs on demand.
type CircuitsData struct {
	Heads        []circuits.Head
	Compositions []circuits.Composition
	// Baseline is the composition score of random matrices of the heads' shapes (NaN when
	// unknown): scores near it mean no composition.
	Baseline float64
	// TopOV lists a head's k strongest OV token pairs; the UI calls it in the background
	// (it takes seconds on a 50,000-token vocabulary). nil: not shown.
	TopOV func(ctx context.Context, layer, head, k int) ([]circuits.TokenPair, error)
	// Notes say which numbers are unavailable and why.
	Notes []string
}

// circuitsPairs is how many OV token pairs and composition partners the panel lists.
const (
	circuitsPairs    = 5
	circuitsPartners = 5
)

type circuitsDoneMsg struct {
	epoch int // the timeline step change it was asked in (see timelineState)
	data  *CircuitsData
	err   error
}

type ovDoneMsg struct {
	epoch int
	head  ablate.Head
	pairs []circuits.TokenPair
	err   error
}

// circuitsCache is the circuits panel's data, written only by Update.
type circuitsCache struct {
	asked bool
	data  *CircuitsData
	err   error
	heads map[ablate.Head]circuits.Head
	// partners are, per later head, the compositions into it, strongest first.
	partners map[ablate.Head][]circuits.Composition
	ov       map[ablate.Head]ovEntry
}

type ovEntry struct {
	done  bool
	pairs []circuits.TokenPair
	err   error
}

// toggleCircuits switches the side panel between scores and circuits, starting the
// computation the first time.
func (m *Model) toggleCircuits() tea.Cmd {
	m.circuits = !m.circuits
	if !m.circuits {
		return nil
	}
	if !m.hasPanel(m.view) {
		m.setStatus("the circuits panel needs a wider window (%d columns here)", m.width)
	}
	if m.cfg.Circuits == nil || m.circ.asked {
		return nil
	}
	m.circ.asked = true
	compute, epoch := m.cfg.Circuits, m.tl.epoch
	return m.bg.cmd(func(ctx context.Context) tea.Msg {
		d, err := compute(ctx)
		return circuitsDoneMsg{epoch, d, err}
	})
}

// circuitsDone files the computed circuits by head.
func (m *Model) circuitsDone(msg circuitsDoneMsg) {
	m.circ.data, m.circ.err = msg.data, msg.err
	m.gen++
	if msg.err != nil {
		m.setStatus("circuits: %v", msg.err)
		return
	}
	if msg.data == nil {
		return
	}
	m.circ.heads = map[ablate.Head]circuits.Head{}
	for _, h := range msg.data.Heads {
		m.circ.heads[ablate.Head{Layer: h.Layer, Head: h.Head}] = h
	}
	m.circ.partners = map[ablate.Head][]circuits.Composition{}
	for _, c := range msg.data.Compositions {
		to := ablate.Head{Layer: c.ToLayer, Head: c.ToHead}
		m.circ.partners[to] = append(m.circ.partners[to], c)
	}
	for _, ps := range m.circ.partners {
		sort.SliceStable(ps, func(i, j int) bool { return bestMode(ps[i]).v > bestMode(ps[j]).v })
	}
}

// ovCmd asks for the selected head's OV token pairs when the panel shows them and they
// are neither known nor asked for.
func (m *Model) ovCmd() tea.Cmd {
	d := m.circ.data
	if !m.circuits || d == nil || d.TopOV == nil || !m.hasPanel(m.view) {
		return nil
	}
	h := ablate.Head{Layer: m.layer, Head: m.head}
	if _, ok := m.circ.ov[h]; ok {
		return nil
	}
	if m.circ.ov == nil {
		m.circ.ov = map[ablate.Head]ovEntry{}
	}
	m.circ.ov[h] = ovEntry{}
	top, epoch := d.TopOV, m.tl.epoch
	return m.bg.cmd(func(ctx context.Context) tea.Msg {
		pairs, err := top(ctx, h.Layer, h.Head, circuitsPairs)
		return ovDoneMsg{epoch, h, pairs, err}
	})
}

type mode struct {
	name string
	v    float64
}

// bestMode is a composition's strongest available score and its letter.
func bestMode(c circuits.Composition) mode {
	best := mode{"", math.Inf(-1)}
	for _, x := range []mode{{"Q", c.Q}, {"K", c.K}, {"V", c.V}} {
		if !math.IsNaN(x.v) && x.v > best.v {
			best = x
		}
	}
	return best
}

// circuitsPanel is the side panel in circuits mode: the selected head's numbers from the
// weights, the earlier heads it reads most, and its strongest OV token pairs.
func (m *Model) circuitsPanel(w, h int) []string {
	head := ablate.Head{Layer: m.layer, Head: m.head}
	lines := []string{sgrBold + fmt.Sprintf(" %s circuits (weights)", head) + sgrReset}
	switch {
	case m.cfg.Circuits == nil:
		lines = append(lines, wrapIndent(m.cfg.CircuitsWhy, w)...)
		return padLines(lines, h)
	case m.circ.err != nil:
		lines = append(lines, wrapIndent(m.circ.err.Error(), w)...)
		return padLines(lines, h)
	case m.circ.data == nil:
		lines = append(lines, "  computing…")
		return padLines(lines, h)
	}
	c, ok := m.circ.heads[head]
	if !ok {
		lines = append(lines, "  (no weights traced for it)")
		return padLines(lines, h)
	}
	num := func(v float64) string {
		if math.IsNaN(v) {
			return "     -"
		}
		return fmt.Sprintf("%6.3f", v)
	}
	lines = append(lines,
		" OV copying       "+num(c.OVCopying),
		" pos. prev-token  "+num(c.QKPrevToken),
		" pos. self        "+num(c.QKSelf))
	partners := m.circ.partners[head]
	if len(partners) > 0 {
		base := m.circ.data.Baseline
		title := " reads from"
		if !math.IsNaN(base) {
			title += fmt.Sprintf(" (random %.2f)", base)
		}
		lines = append(lines, sgrBold+title+sgrReset)
		top := partners[:min(len(partners), circuitsPartners)]
		scale := bestMode(top[0]).v
		barW := max(w-16, 1)
		for _, p := range top {
			b := bestMode(p)
			n := 0
			if scale > 0 {
				n = int(math.Round(b.v / scale * float64(barW)))
			}
			lines = append(lines, fmt.Sprintf("  %-6s %s %s%s %.2f", fmt.Sprintf("L%dH%d", p.FromLayer, p.FromHead), b.name, strings.Repeat("█", n), strings.Repeat(" ", barW-n), b.v))
		}
	}
	if m.circ.data.TopOV != nil {
		lines = append(lines, sgrBold+" OV: attends to → raises"+sgrReset)
		e := m.circ.ov[head]
		switch {
		case !e.done:
			lines = append(lines, "  computing…")
		case e.err != nil:
			lines = append(lines, wrapIndent(e.err.Error(), w)...)
		default:
			label := func(id int) string {
				if m.cfg.Label != nil {
					return m.cfg.Label(int64(id))
				}
				return fmt.Sprint(id)
			}
			for _, p := range e.pairs {
				lines = append(lines, fmt.Sprintf("  %-10s → %-10s", truncate(label(p.Source), 10), truncate(label(p.Output), 10)))
			}
		}
	}
	return padLines(lines, h)
}

// wrapIndent wraps s to w cells, each line indented by two spaces.
func wrapIndent(s string, w int) []string {
	var out []string
	for _, l := range wrap(s, max(w-2, 1)) {
		out = append(out, "  "+l)
	}
	return out
}

// padLines cuts or pads lines to exactly h.
func padLines(lines []string, h int) []string {
	for len(lines) < h {
		lines = append(lines, "")
	}
	return lines[:h]
}
