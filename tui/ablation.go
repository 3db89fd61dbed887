package tui

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/result"
)

// Head ablation: x switches the selected head off or back on, X switches every head back
// on. The state holds the heads the user wants off (state.off); the Model holds the run
// shown, with the heads it has off (shownOff), and the clean run of the same prompt.
// Whenever the two sets differ and nothing runs, sync starts the run that brings the
// shown run to the wanted set (one run at a time, like a prompt's re-run); a run that
// comes back for a set or a clean run no longer wanted is released unseen. Switching
// every head back on shows the kept clean run at once.

// ablation is the outcome of one ablated run: of base (a clean run) with the heads off
// switched off (as ablate.Join writes them).
type ablation struct {
	base *Run
	off  string
	run  *Run  // the ablated run (nil when Ablate failed); released when not shown
	err  error // Ablate's error, or why its run cannot be shown
	// loss and baseLoss are the next-token losses of run and base at every position
	// (nil without logits; baseLoss also nil when it was not asked for).
	loss, baseLoss []float64
}

// ablateDoneMsg ends an ablated run of the shown prompt.
type ablateDoneMsg struct{ abl *ablation }

// defaultAblateWhy is said when x is pressed, Config.Ablate is nil and AblateWhy is empty.
const defaultAblateWhy = "this model's heads cannot be switched off"

// offHeads reads a set of heads written by ablate.Join ("" is none).
func offHeads(s string) []ablate.Head {
	if s == "" {
		return nil
	}
	var out []ablate.Head
	for _, item := range strings.Split(s, ",") {
		var h ablate.Head
		if _, err := fmt.Sscanf(item, "L%dH%d", &h.Layer, &h.Head); err == nil {
			out = append(out, h)
		}
	}
	return out
}

// inSet reports whether head (l, h) is in a set written by ablate.Join.
func inSet(set string, l, h int) bool {
	if set == "" {
		return false
	}
	return strings.Contains(","+set+",", ","+ablate.Head{Layer: l, Head: h}.String()+",")
}

// isOff reports whether the user has switched head (l, h) off.
func (m *Model) isOff(l, h int) bool { return inSet(m.off, l, h) }

// countHeads is "1 head" or "n heads".
func countHeads(n int) string {
	if n == 1 {
		return "1 head"
	}
	return fmt.Sprintf("%d heads", n)
}

// toggleOff switches the selected head off, or back on, and starts the run that shows it.
func (m *Model) toggleOff() tea.Cmd {
	if m.cfg.Ablate == nil {
		why := m.cfg.AblateWhy
		if why == "" {
			why = defaultAblateWhy
		}
		m.setStatus("%s", why)
		return nil
	}
	if m.layers() == 0 || m.headsIn(m.layer) == 0 {
		m.setStatus("the run has no heads to switch off")
		return nil
	}
	h := ablate.Head{Layer: m.layer, Head: m.head}
	set := offHeads(m.off)
	if i := slices.Index(set, h); i >= 0 {
		set = slices.Delete(set, i, i+1)
	} else {
		set = append(set, h)
		slices.SortFunc(set, ablate.Compare)
	}
	m.off = ablate.Join(set)
	onOff := "back on"
	if slices.Contains(set, h) {
		onOff = "off"
	}
	switch {
	case len(set) == 0:
		m.setStatus("%s is back on: every head is on", h)
	case m.running:
		m.setStatus("%s goes %s after the current run (%s off)", h, onOff, countHeads(len(set)))
	default:
		m.setStatus("switching %s %s (%s off)…", h, onOff, countHeads(len(set)))
	}
	return m.sync()
}

// restoreAll switches every head back on: the clean run is shown again, without a run.
func (m *Model) restoreAll() tea.Cmd {
	if m.off == "" && m.shownOff == "" {
		m.setStatus("no head is switched off")
		return nil
	}
	m.off = ""
	m.setStatus("every head is back on")
	return m.sync()
}

// sync starts what brings the screen to what the user asked for: every head back on at
// once (the clean run is kept), and, when nothing runs, the queued prompt or else the
// run with the wanted heads off.
func (m *Model) sync() tea.Cmd {
	if m.off == "" && m.shownOff != "" {
		m.showClean()
	}
	if m.running {
		return nil
	}
	if q := m.queued; q != "" {
		t := m.queuedTarget
		m.queued, m.queuedTarget = "", ""
		return m.startRun(q, t)
	}
	if m.off == m.shownOff || m.cfg.Ablate == nil {
		return nil
	}
	return m.startAblate()
}

// showClean shows the clean run again, releasing the ablated one.
func (m *Model) showClean() {
	old := m.run
	m.run, m.shownOff, m.ablatedLoss = m.clean, "", nil
	m.dataChanged()
	if old != m.clean {
		m.release(old)
	}
}

// startAblate runs the shown prompt with the wanted heads off, in the background.
func (m *Model) startAblate() tea.Cmd {
	m.running, m.pending, m.pendingTarget = true, "", ""
	abl, base, off, key := m.cfg.Ablate, m.clean, offHeads(m.off), m.off
	needBase := m.cleanLoss == nil
	rel := m.cfg.Release
	return m.bg.cmd(func(ctx context.Context) tea.Msg {
		a := runAblation(ctx, abl, base, off, key, needBase)
		if a.run != nil {
			a.run.release = rel
		}
		return ablateDoneMsg{a}
	})
}

// runAblation runs base's prompt with the heads off switched off, checks that the run fits
// base and computes the losses (baseLoss: base's too). It runs in the background: it
// reads base, which stays shown meanwhile, and writes only the new run.
func runAblation(ctx context.Context, abl func(context.Context, string, []ablate.Head) (*Run, error), base *Run, off []ablate.Head, key string, baseLoss bool) *ablation {
	a := &ablation{base: base, off: key}
	r, err := abl(ctx, base.Prompt, off)
	if err != nil {
		a.err = err
		return a
	}
	a.run = r
	if err := fitAblated(r, base); err != nil {
		a.err = err
		return a
	}
	a.loss = tokenLosses(r.Result)
	if baseLoss {
		a.baseLoss = tokenLosses(base.Result)
	}
	return a
}

// fitAblated checks that r, an ablated run of base's prompt, can be shown in base's place
// (Run.Check, and the same tokens, layers and heads), and gives it base's labels where it
// has none.
func fitAblated(r, base *Run) error {
	if r == nil {
		return ErrNoResult
	}
	if err := r.Check(); err != nil {
		return err
	}
	rr, br := r.Result, base.Result
	same := len(rr.Tokens) == len(br.Tokens) && len(rr.Source) == len(br.Source) &&
		len(rr.Attn) == len(br.Attn) && slices.Equal(rr.Sides, br.Sides)
	for l := 0; same && l < len(rr.Attn); l++ {
		same = rr.Heads(l) == br.Heads(l)
	}
	if !same {
		return fmt.Errorf("the ablated run does not match the clean run (%d tokens, %d layers; the clean run has %d tokens, %d layers)",
			len(rr.Tokens), len(rr.Attn), len(br.Tokens), len(br.Attn))
	}
	if r.Prompt == "" {
		r.Prompt = base.Prompt
	}
	if r.Labels == nil {
		r.Labels = base.Labels
	}
	if r.Pieces == nil {
		r.Pieces = base.Pieces
	}
	if r.SourceLabels == nil {
		r.SourceLabels = base.SourceLabels
	}
	return nil
}

// tokenLosses is analysis.TokenLosses (split over the cores), nil without logits.
func tokenLosses(res *result.Result) []float64 {
	if res.Logits == nil || res.Vocab == 0 {
		return nil
	}
	return analysis.TokenLosses(res)
}

// ablateDone shows a finished ablated run of the shown prompt (or its error) and starts
// what is wanted next.
func (m *Model) ablateDone(msg ablateDoneMsg) tea.Cmd {
	m.running = false
	m.ablationDone(msg.abl)
	return m.sync()
}

// ablationDone shows an ablated run when it is still wanted: of the clean run shown, with
// the heads the user wants off. Otherwise it is released unseen. A failure puts the
// wanted heads back as shown.
func (m *Model) ablationDone(a *ablation) {
	if a.base == m.clean && m.cleanLoss == nil && a.baseLoss != nil {
		m.cleanLoss = a.baseLoss
		m.gen++
	}
	if a.base != m.clean || a.off != m.off {
		m.release(a.run)
		return
	}
	if a.err != nil {
		m.release(a.run)
		m.setStatus("error: cannot switch %s off: %v", strings.ReplaceAll(a.off, ",", " "), a.err)
		m.off = m.shownOff
		return
	}
	old := m.run
	m.run, m.shownOff, m.ablatedLoss = a.run, a.off, a.loss
	m.dataChanged()
	if old != m.clean {
		m.release(old)
	}
	m.setStatus("%s", m.ablationNews())
}

// lossStats are what the panel compares of a run's next-token losses: their mean, and
// the in-context-learning score (the loss at the late position less the loss at the
// early one, analysis.ICLPositions); iclOK is false for a prompt too short for it.
type lossStats struct {
	mean, icl float64
	iclOK     bool
}

func statsOf(losses []float64) lossStats {
	var s lossStats
	s.mean, s.icl, s.iclOK = analysis.LossSummary(losses)
	return s
}

// hasLosses reports whether the clean and the shown ablated run's losses are known (the
// model has logits).
func (m *Model) hasLosses() bool {
	T := len(m.clean.Result.Tokens)
	return m.clean.Result.Logits != nil && m.run.Result.Logits != nil &&
		len(m.cleanLoss) == T && len(m.ablatedLoss) == T
}

// ablationNews is the status line's word on a finished ablated run.
func (m *Model) ablationNews() string {
	off := strings.ReplaceAll(m.shownOff, ",", " ")
	if !m.hasLosses() {
		return off + " off (the model has no logits: no loss to compare)"
	}
	c, a := statsOf(m.cleanLoss), statsOf(m.ablatedLoss)
	return fmt.Sprintf("%s off: mean loss %.3f → %.3f (%+.3f)", off, c.mean, a.mean, a.mean-c.mean)
}

// ablationPanel is the side panel's section on the heads off (none when every head is
// on and none is being switched off): which heads, the mean next-token loss and the
// in-context-learning score of the clean and the ablated run, and their change.
func (m *Model) ablationPanel(w int) []string {
	if m.off == "" && m.shownOff == "" {
		return nil
	}
	list := func(set string) string { return strings.ReplaceAll(set, ",", " ") }
	if m.shownOff == "" {
		return []string{sgrBold + truncate(" off: "+list(m.off), w) + sgrReset, "  (running…)", ""}
	}
	n := len(offHeads(m.shownOff))
	head := " off: " + list(m.shownOff)
	if ansi.StringWidth(head) > w {
		head = fmt.Sprintf(" %s off: %s", countHeads(n), list(m.shownOff))
	}
	lines := []string{sgrBold + truncate(head, w) + sgrReset}
	if m.off != m.shownOff {
		next := list(m.off)
		if next == "" {
			next = "none"
		}
		lines = append(lines, truncate("  (next: "+next+")", w))
	}
	if !m.hasLosses() {
		return append(lines, "  the model has no logits:", "  no loss to compare", "")
	}
	c, a := statsOf(m.cleanLoss), statsOf(m.ablatedLoss)
	row := func(name string, x, y float64) string {
		return fmt.Sprintf(" %-4s%7.3f → %7.3f %+7.3f", name, x, y, y-x)
	}
	lines = append(lines, sgrFaint+fmt.Sprintf(" %-4s%7s   %7s %7s", "", "clean", "ablated", "change")+sgrReset,
		row("loss", c.mean, a.mean))
	if c.iclOK {
		lines = append(lines, row("ICL", c.icl, a.icl))
	} else {
		lines = append(lines, " ICL: prompt too short")
	}
	return append(lines, "")
}

// lossTableLines is the token view's table of each token's loss (of predicting it from
// the tokens before it), clean and ablated, and the change, n lines (a header and rows
// around the cursor token); nil when no head is off or the losses are not known.
func (m *Model) lossTableLines(n int) []string {
	if m.shownOff == "" || n < 2 {
		return nil
	}
	if !m.hasLosses() {
		return []string{sgrFaint + " the model has no logits: no loss per token to compare" + sgrReset}
	}
	T := len(m.cleanLoss)
	cursor := m.query
	onTarget := m.res().QuerySide(m.layer) == result.TargetSide
	if !onTarget {
		cursor = m.sideQuery[result.TargetSide]
	}
	rows := min(n-1, T)
	top := clamp(cursor-(rows-1)/2, 0, T-rows)
	lines := []string{sgrBold + fmt.Sprintf("   %4s %-12s %7s   %7s %7s", "", "token's loss", "clean", "ablated", "change") + sgrReset}
	for i := top; i < top+rows; i++ {
		mark := "  "
		if onTarget && i == cursor {
			mark = sgrBold + "▶ " + sgrReset
		}
		label := padRight(truncate(labelAt(m.run.Labels, i), 12), 12)
		if i == 0 || math.IsNaN(m.cleanLoss[i-1]) {
			lines = append(lines, fmt.Sprintf(" %s%4d %s %7s", mark, i, label, "-"))
			continue
		}
		c, a := m.cleanLoss[i-1], m.ablatedLoss[i-1]
		lines = append(lines, fmt.Sprintf(" %s%4d %s %7.3f → %7.3f %+7.3f", mark, i, label, c, a, a-c))
	}
	return lines
}

// markOff overlays the off marker on the first row of a head's thumbnail, keeping its
// width.
func markOff(row string) string {
	label := "×"
	w := ansi.StringWidth(row)
	if w >= 6 {
		label = "×off"
	}
	lw := min(ansi.StringWidth(label), w)
	if lw == 0 {
		return row
	}
	label = string([]rune(label)[:lw])
	return sgrReverse + sgrBold + label + sgrReset + ansi.Cut(row, lw, w)
}

// keepExistingOff drops from the wanted set the heads the shown run does not have (a new
// prompt's run of another shape).
func (m *Model) keepExistingOff() {
	m.off = ablate.Join(existingHeads(m.res(), offHeads(m.off)))
}

// existingHeads are the heads of set that res has.
func existingHeads(res *result.Result, set []ablate.Head) []ablate.Head {
	return slices.DeleteFunc(slices.Clone(set), func(h ablate.Head) bool {
		return h.Layer >= len(res.Attn) || h.Head >= res.Heads(h.Layer)
	})
}
