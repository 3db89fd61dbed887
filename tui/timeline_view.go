package tui

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/charmbracelet/x/ansi"
)

// sparkTicks are a sparkline's eight levels, lowest first.
var sparkTicks = []rune("▁▂▃▄▅▆▇█")

// sparkMinHeight is the least window height that shows the sparkline line in timeline
// mode (the step bar is always shown).
const sparkMinHeight = 14

// timelineLines is how many lines timeline mode adds above the status line: the step bar,
// and the sparklines when the window is tall enough.
func (m *Model) timelineLines() int {
	switch {
	case !m.timeline():
		return 0
	case m.height >= sparkMinHeight:
		return 2
	}
	return 1
}

// stepBar is the step bar: the step shown of how many, the tokens seen, the loss and ICL
// score ("–" where not measured) and the step's place in the list; the step loading
// follows.
func (m *Model) stepBar() string {
	tc := m.cfg.Timeline
	s := tc.Steps[m.tl.cur]
	last := tc.Steps[len(tc.Steps)-1]
	loss := tc.LossName
	if loss == "" {
		loss = "loss"
	}
	line := fmt.Sprintf(" step %d/%d · %s tokens · %s %s · ICL %s  [%d/%d]",
		s.Step, last.Step, tokens(s.Tokens), loss, metric(s.Loss, 2), metric(s.ICL, 2), m.tl.cur+1, len(tc.Steps))
	if ansi.StringWidth(line) > m.width {
		line = fmt.Sprintf(" step %d/%d · %s tok · loss %s · ICL %s [%d/%d]",
			s.Step, last.Step, tokens(s.Tokens), metric(s.Loss, 2), metric(s.ICL, 2), m.tl.cur+1, len(tc.Steps))
	}
	if m.tl.loading {
		line += fmt.Sprintf("  → opening %s…", m.stepName(m.tl.want))
	}
	return sgrBold + fit(line, m.width) + sgrReset
}

// sparkLines is the sparklines line: the selected head's selected score, the loss and the
// ICL score over the steps, each named, with the shown step's column in reverse video and
// its value; as wide as the window at most (the sparklines shrink, then the names).
func (m *Model) sparkLines() string {
	tc := m.cfg.Timeline
	n := len(tc.Steps)
	loss, icl := make([]float64, n), make([]float64, n)
	for i, s := range tc.Steps {
		loss[i], icl[i] = s.Loss, s.ICL
	}
	head := fmt.Sprintf("L%dH%d", m.layer, m.head)
	lossName := tc.LossName
	if lossName == "" {
		lossName = "loss"
	}
	type series struct {
		long, short string
		y           []float64
		digits      int
		note        string // shown instead of the sparkline when set
		unit        bool   // a head score: drawn on 0..1
	}
	var scores []float64
	note := ""
	switch {
	case tc.Scores == nil:
		note = "not scored"
	case m.tl.scores == nil && m.tl.scoresErr != nil:
		note = "failed"
	case m.tl.scores == nil:
		note = "computing…"
	default:
		scores = make([]float64, n)
		for i := range scores {
			scores[i] = m.stepScore(i)
		}
	}
	all := []series{
		{head + " " + m.sortBy.String(), head + " " + shortScore(m.sortBy.String()), scores, 3, note, true},
		{lossName, "loss", loss, 2, "", false},
		{"ICL", "ICL", icl, 2, "", false},
	}
	draw := func(w int, short bool) (string, int) {
		var parts []string
		for _, s := range all {
			name := s.long
			if short {
				name = s.short
			}
			if s.note != "" {
				parts = append(parts, name+" "+s.note)
				continue
			}
			parts = append(parts, name+" "+sparkline(s.y, m.tl.cur, w, s.unit)+" "+metric(s.y[m.tl.cur], s.digits))
		}
		line := " " + strings.Join(parts, "  ")
		return line, ansi.StringWidth(line)
	}
	for _, short := range []bool{false, true} {
		line, width := draw(n, short)
		if width <= m.width {
			return line
		}
		// Narrower sparklines: each loses an equal share of the excess, down to 4 cells.
		sparks := 0
		for _, s := range all {
			if s.note == "" {
				sparks++
			}
		}
		if sparks == 0 {
			continue
		}
		w := n - (width-m.width+sparks-1)/sparks
		if w >= 4 {
			if line, width := draw(w, short); width <= m.width {
				return line
			}
		}
	}
	line, _ := draw(min(n, 4), true)
	return fit(line, m.width)
}

// shortScore abbreviates a score's name for a narrow sparkline label.
func shortScore(name string) string {
	if r := []rune(name); len(r) > 5 {
		return string(r[:4]) + "."
	}
	return name
}

// sparkline draws y in w cells (each cell the mean of its share of the steps; NaN values
// are left out, a cell of none is blank), with the cell holding step cur in reverse
// video. With unit (the head scores) values that all lie in [0, 1] are drawn on that fixed
// scale, so a head that stays near 0 draws a flat low line; otherwise y is scaled from its
// least to its greatest value.
func sparkline(y []float64, cur, w int, unit bool) string {
	n := len(y)
	if n == 0 || w <= 0 {
		return ""
	}
	w = min(w, n)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range y {
		if !math.IsNaN(v) {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if unit && lo >= 0 && hi <= 1 {
		lo, hi = 0, 1
	}
	var b strings.Builder
	mark := 0 // the cell whose share of the steps holds cur
	for c := 0; c < w; c++ {
		if c*n/w <= cur && cur < (c+1)*n/w {
			mark = c
		}
	}
	for c := 0; c < w; c++ {
		from, to := c*n/w, (c+1)*n/w
		sum, cnt := 0.0, 0
		for _, v := range y[from:to] {
			if !math.IsNaN(v) {
				sum, cnt = sum+v, cnt+1
			}
		}
		cell := " "
		if cnt > 0 {
			level := len(sparkTicks) - 1
			if hi > lo {
				level = int(math.Round((sum/float64(cnt) - lo) / (hi - lo) * float64(len(sparkTicks)-1)))
			}
			cell = string(sparkTicks[clamp(level, 0, len(sparkTicks)-1)])
		}
		if c == mark {
			cell = sgrReverse + cell + sgrReset
		}
		b.WriteString(cell)
	}
	return b.String()
}

// metric writes a score with the given decimals and a real minus sign; "–" for NaN.
func metric(v float64, digits int) string {
	if math.IsNaN(v) {
		return "–"
	}
	s := strconv.FormatFloat(v, 'f', digits, 64)
	if strings.HasPrefix(s, "-") {
		s = "−" + s[1:]
	}
	return s
}

// tokens writes a token count briefly: 950, 153.6 k, 47.1 M, 1.2 B.
func tokens(n int64) string {
	v := float64(n)
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e9, " B"}, {1e6, " M"}, {1e3, " k"}} {
		if v >= u.div {
			return strconv.FormatFloat(v/u.div, 'f', 1, 64) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
