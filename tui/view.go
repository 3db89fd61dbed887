package tui

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/result"
)

// Minimum terminal size; smaller gets a one-line request to enlarge the window.
const (
	minWidth  = 40
	minHeight = 10
	panelW    = 30
)

const (
	sgrReverse = "\x1b[7m"
	sgrBold    = "\x1b[1m"
	sgrFaint   = "\x1b[2m"
	sgrReset   = "\x1b[0m"
)

// View draws the whole screen: exactly height lines, none wider than width. It changes
// nothing: all but the bottom line come from the cache settle fills, or are drawn afresh
// when the state has changed behind Update's back.
func (m *Model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	// Clicks and the wheel (keys do everything too; shift selects text in most terminals).
	v.MouseMode = tea.MouseModeCellMotion
	v.WindowTitle = "attnscope — " + m.cfg.ModelName
	return v
}

func (m *Model) render() string {
	if m.width <= 0 || m.height <= 0 {
		return ""
	}
	if m.width < minWidth || m.height < minHeight {
		return fit(fmt.Sprintf("make the window larger: attnscope needs %d×%d, this is %d×%d", minWidth, minHeight, m.width, m.height), m.width)
	}
	top, frame := m.top, m.frame
	if !m.topOK || m.topFor != (topKey{m.state, m.gen}) {
		top = m.renderTop()
		frame = top + m.renderHelpLine()
	}
	if !m.editing {
		return frame
	}
	if line := m.editor.view(); m.editor.width == m.width-len(m.editor.lead()) {
		return top + line // never wider than the window: measuring it again costs 5 µs a key
	} else {
		return top + fit(line, m.width)
	}
}

// renderHelpLine draws the bottom line when the editor is closed: the key bar, the
// least important keys left out when the window is narrow (help and quit always shown).
func (m *Model) renderHelpLine() string {
	if m.showHelp {
		items := []barItem{{"any key", "close", 0}, {"q", "quit", 0}}
		if m.helpScroll() > 0 {
			items = append([]barItem{{"↑/↓", "scroll", 0}}, items...)
		}
		return fit(keyBar(items, m.width), m.width)
	}
	return fit(keyBar(barItems(m.view, m.gridPaged(), m.table, m.timeline()), m.width), m.width)
}

// renderTop draws the screen above its bottom line: the title, the body and the status
// line, each line ending in a newline.
func (m *Model) renderTop() string {
	if m.width < minWidth || m.height < minHeight {
		return ""
	}
	lines := append([]string{m.titleBar()}, m.renderBody()...)
	if n := m.timelineLines(); n > 0 {
		lines = append(lines, m.stepBar())
		if n > 1 {
			lines = append(lines, fit(m.sparkLines(), m.width))
		}
	}
	lines = append(lines, m.statusLine(), "")
	return strings.Join(lines, "\n")
}

func (m *Model) bodyHeight() int { return m.height - 3 - m.timelineLines() }

// hasPanel reports whether view v shows the side panel at the current width.
func (m *Model) hasPanel(v view) bool {
	return (v == gridView && m.width >= 100) || (v != gridView && m.width >= 80)
}

// mainArea is the size of view v's main area: the body less the side panel.
func (m *Model) mainArea(v view) (w, h int) {
	w, h = m.width, m.bodyHeight()
	if m.hasPanel(v) {
		w -= panelW + 1
	}
	return w, h
}

// renderBody draws the lines between the title and the status line, each exactly width
// cells wide.
func (m *Model) renderBody() []string {
	h := m.bodyHeight()
	if h <= 0 || m.width < minWidth || m.height < minHeight {
		return nil
	}
	if m.showHelp {
		return m.helpOverlay(h)
	}
	w, _ := m.mainArea(m.view)
	var panel, main []string
	switch {
	case m.layers() == 0 || m.headsIn(m.layer) == 0:
		main = []string{"", " the run has no attention maps to show"}
	case m.view == gridView && m.table:
		main = m.tableLines(w, h)
	case m.view == gridView:
		main = m.gridLines(w, h)
	case m.keyLen() == 0:
		main = []string{"", fmt.Sprintf(" the map of L%dH%d is empty", m.layer, m.head)}
	case m.view == headView:
		main = m.headLines(w, h)
	default:
		main = m.tokenLines(w, h)
	}
	if m.hasPanel(m.view) && m.layers() > 0 && m.headsIn(m.layer) > 0 {
		panel = m.sidePanel(panelW, h)
	} else {
		w = m.width
	}
	out := make([]string, h)
	for i := range out {
		line := ""
		if i < len(main) {
			line = main[i]
		}
		line = fit(line, w)
		if panel != nil {
			line += sgrFaint + "│" + sgrReset + fit(panel[i], panelW)
		}
		out[i] = line
	}
	return out
}

func (m *Model) titleBar() string {
	heads := 0
	if m.layers() > 0 {
		heads = m.headsIn(0)
	}
	name := fmt.Sprintf("L%dH%d", m.layer, m.head)
	if m.isOff(m.layer, m.head) {
		name += " (ablated)"
	}
	off := ""
	if n := len(offHeads(m.off)); n > 0 {
		off = fmt.Sprintf(" · %s off", countHeads(n))
	}
	vname := m.view.String()
	if m.view == gridView && m.table {
		vname = "table"
	}
	title := fmt.Sprintf(" attnscope · %s · %s · %s view%s · %d layers × %d heads", m.cfg.ModelName, name, vname, off, m.layers(), heads)
	return sgrReverse + fit(title, m.width) + sgrReset
}

func (m *Model) statusLine() string {
	count := fmt.Sprintf("%d tokens", m.tokens())
	if m.res().Source != nil {
		count = fmt.Sprintf("%d source + %d target tokens", len(m.res().Source), m.tokens())
	}
	// The standing facts, in the order they are dropped to make room for the news (the
	// token count stays).
	facts := []struct {
		text string
		drop int
	}{
		{m.cfg.ModelName, 4}, {m.cfg.Device, 3}, {count, 0}, {"run " + duration(m.res().RunTime), 2}, {"scale " + m.scale.String(), 1},
	}
	var news []string
	if m.running {
		news = append(news, "running…")
	}
	if m.status != "" {
		news = append(news, m.status)
	}
	// The news is what matters: the standing facts but the token count give way to it,
	// least useful first.
	var line string
	for drop := 5; drop >= 0; drop-- {
		var parts []string
		for _, f := range facts {
			if f.text != "" && (f.drop == 0 || f.drop < drop) {
				parts = append(parts, f.text)
			}
		}
		line = " " + strings.Join(append(parts, news...), " · ")
		if ansi.StringWidth(line) <= m.width {
			break
		}
	}
	return fit(line, m.width)
}

// gridGeom is the grid's layout in a main area: thumbnails of tw×th cells, visL layers
// from top and visH heads from left on screen.
type gridGeom struct {
	labelW, tw, th, visL, visH, top, left int
}

// minThumbH is the fewest lines a thumbnail shrinks to so that every layer fits: below
// it the grid pages by bands of layers (PgUp/PgDn) rather than shrink them to a line.
const minThumbH = 3

// gridGeometry lays the grid out in a w×h main area, scrolled from the current offsets
// just enough to show the selected head. Thumbnails are as wide as the heads allow and as
// tall as the map's aspect asks (a cell is two rows of a map wide one key; a wide
// cross-attention map gets wide thumbnails), never larger than the map (a short prompt
// gets small ones), and at least minThumbH lines: layers that do not fit are paged.
func (m *Model) gridGeometry(w, h int) gridGeom {
	L := m.layers()
	H := 1
	Q, K := 1, 1 // the largest map's sides
	for l := 0; l < L; l++ {
		H = max(H, m.headsIn(l))
		if m.headsIn(l) > 0 {
			if a := m.res().Attn[l][0]; len(a) > 0 {
				Q, K = max(Q, len(a)), max(K, len(a[0]))
			}
		}
	}
	g := gridGeom{labelW: len(fmt.Sprintf("L%d ", max(L-1, 0)))}
	avail := max(h-2, 1) // header and legend
	g.tw = max(min((w-g.labelW)/H-1, K), 2)
	aspect := func(tw int) int { return max((tw*Q+K)/(2*K), 1) } // lines for tw cells
	fitH := avail / max(L, 1)                                    // lines each if every layer shows
	g.th = min(aspect(g.tw), (Q+1)/2, avail)
	if fitH >= min(g.th, minThumbH) {
		g.th = min(g.th, fitH) // every layer fits
	}
	// else the layers are paged, each at the height its aspect asks (at least minThumbH
	// when the map has the rows)
	g.th = max(g.th, 1)
	// Keep the map's aspect when the height is what bounds it.
	if aspect(g.tw) > g.th {
		g.tw = max(min(g.tw, (2*g.th*K+Q-1)/Q), 2)
	}
	g.visH = max(min(H, (w-g.labelW)/(g.tw+1)), 1)
	g.visL = max(min(L, avail/g.th), 1)
	g.left = scrollTo(m.gridLeft, m.head, g.visH, H)
	g.top = scrollTo(m.gridTop, m.layer, g.visL, L)
	return g
}

// tableRows is how many heads the score table shows at once (below its header, above its
// footer).
func (m *Model) tableRows() int { return max(m.bodyHeight()-2, 1) }

// tableLines draws the score table: every head with all its scores, sorted by the sort
// score (o cycles it), the selected head marked; enter opens it.
func (m *Model) tableLines(w, h int) []string {
	order := m.tableOrder()
	top := scrollTo(m.tableTop, m.tableIndex(order), m.tableRows(), len(order))
	short := map[analysis.Score]string{analysis.Induction: "induct", analysis.PrevToken: "prev",
		analysis.DuplicateToken: "dup", analysis.FirstToken: "first", analysis.Self: "self", analysis.Entropy: "entropy"}
	var hdr strings.Builder
	hdr.WriteString("  head    ")
	for _, sc := range analysis.AllScores {
		name := short[sc]
		if sc == m.sortBy {
			arrow := "▼"
			if sc == analysis.Entropy {
				arrow = "▲" // lowest first: focused
			}
			name = sgrReverse + padLeft(name+arrow, 8) + sgrReset
		} else {
			name = padLeft(name, 8)
		}
		hdr.WriteString(name)
	}
	hdr.WriteString("  pattern")
	lines := []string{sgrBold + hdr.String() + sgrReset}
	for i := top; i < min(top+m.tableRows(), len(order)); i++ {
		s := order[i]
		var b strings.Builder
		mark := "  "
		if s.Layer == m.layer && s.Head == m.head {
			mark = sgrBold + "▶ " + sgrReset
		}
		name := padRight(s.Name(), 6)
		if m.isOff(s.Layer, s.Head) {
			name = padRight(s.Name()+"×", 6)
		}
		b.WriteString(mark + name + "  ")
		for _, sc := range analysis.AllScores {
			v := s.Get(sc)
			cell := "       -"
			if !math.IsNaN(v) {
				cell = fmt.Sprintf("%8.3f", v)
			}
			if sc == m.sortBy {
				cell = sgrBold + cell + sgrReset
			}
			b.WriteString(cell)
		}
		b.WriteString("  " + patternCell(s))
		line := b.String()
		if s.Layer == m.layer && s.Head == m.head {
			line = sgrReverse + ansi.Strip(line) + sgrReset
		}
		lines = append(lines, line)
	}
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	foot := fmt.Sprintf(" %d heads, sorted by %s · o: sort by another score · h: thumbnails", len(order), m.sortBy)
	if m.probePending() {
		foot += " · the probe is running"
	}
	return append(lines[:h-1], sgrFaint+foot+sgrReset)
}

// gridPaged reports whether the grid shows only some of the layers (PgUp/PgDn page them).
func (m *Model) gridPaged() bool {
	if m.layers() == 0 {
		return false
	}
	gw, gh := m.mainArea(gridView)
	return m.gridGeometry(gw, gh).visL < m.layers()
}

// gridLines draws every head as a thumbnail: layers down, heads across.
func (m *Model) gridLines(w, h int) []string {
	g := m.gridGeometry(w, h)
	var lines []string
	var hdr strings.Builder
	hdr.WriteString(strings.Repeat(" ", g.labelW))
	for hh := g.left; hh < g.left+g.visH; hh++ {
		label := center(fmt.Sprintf("H%d", hh), g.tw+1)
		if hh == m.head {
			label = sgrReverse + label + sgrReset
		}
		hdr.WriteString(label)
	}
	lines = append(lines, hdr.String())
	for l := g.top; l < min(g.top+g.visL, m.layers()); l++ {
		thumbs := make([][]string, g.visH)
		for i := range thumbs {
			if hh := g.left + i; hh < m.headsIn(l) {
				thumbs[i] = m.thumbnail(l, hh, g.tw, g.th)
			}
		}
		for r := 0; r < g.th; r++ {
			var b strings.Builder
			label := strings.Repeat(" ", g.labelW)
			if r == 0 {
				label = padRight(fmt.Sprintf("L%d", l), g.labelW)
				if l == m.layer {
					label = sgrReverse + label[:g.labelW-1] + sgrReset + " "
				}
			}
			b.WriteString(label)
			for i, t := range thumbs {
				hh := g.left + i
				gap := " "
				switch {
				case r == 0 && t != nil && m.marked(l, hh):
					// The score mark stays visible under the cursor: reversed there.
					gap = "•"
					if l == m.layer && hh == m.head {
						gap = sgrReverse + sgrBold + "•" + sgrReset
					}
				case l == m.layer && hh == m.head:
					gap = sgrBold + "▶" + sgrReset
				}
				b.WriteString(gap)
				switch {
				case r >= len(t):
					b.WriteString(strings.Repeat(" ", g.tw))
				case r == 0 && m.isOff(l, hh):
					b.WriteString(markOff(t[r]))
				default:
					b.WriteString(t[r])
				}
			}
			lines = append(lines, b.String())
		}
	}
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	mark := ""
	if t, ok := m.sortBy.Threshold(); ok {
		mark = fmt.Sprintf("  • %s ≥ %.1f", m.sortBy, t)
	}
	if m.off != "" {
		mark += "  × off"
	}
	return append(lines[:h-1], m.palette.Legend(min(w-ansi.StringWidth(mark), 40), m.scale)+mark)
}

// thumbKey identifies a rendered thumbnail; the cache is cleared when the run changes.
type thumbKey struct {
	layer, head, w, h int
	scale             heatmap.Scale
}

// thumbnail returns one head's thumbnail from the cache fillThumbnails fills, or draws
// it without caching: pooling 144 maps of 1024×1024 takes ~100 ms, assembling cached
// ones well under a millisecond.
func (m *Model) thumbnail(l, h, w, hgt int) []string {
	if t, ok := m.thumbs[thumbKey{l, h, w, hgt, m.scale}]; ok {
		return t
	}
	return m.palette.Map(m.res().Attn[l][h], w, hgt, m.scale)
}

// fillThumbnails puts the thumbnails on screen in grid layout g into the cache, drawing
// those missing on all cores: the first grid of a long prompt pools every head's full map.
func (m *Model) fillThumbnails(g gridGeom) {
	var todo []thumbKey
	for l := g.top; l < min(g.top+g.visL, m.layers()); l++ {
		for hh := g.left; hh < g.left+g.visH && hh < m.headsIn(l); hh++ {
			if k := (thumbKey{l, hh, g.tw, g.th, m.scale}); m.thumbs[k] == nil {
				todo = append(todo, k)
			}
		}
	}
	if len(todo) == 0 {
		return
	}
	done := make([][]string, len(todo))
	var wg sync.WaitGroup
	workers := min(runtime.NumCPU(), len(todo))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(todo); i += workers {
				k := todo[i]
				done[i] = m.palette.Map(m.res().Attn[k.layer][k.head], k.w, k.h, k.scale)
			}
		}(w)
	}
	wg.Wait()
	if m.thumbs == nil || len(m.thumbs)+len(todo) > 4096 {
		m.thumbs = map[thumbKey][]string{}
	}
	for i, k := range todo {
		m.thumbs[k] = done[i]
	}
}

// headGeom is the head detail's layout in a main area: query labels labelW cells wide,
// mapH query rows from rowTop, nk key columns from colLeft, keyRows lines of key labels.
type headGeom struct {
	labelW, keyRows, mapH, nk, rowTop, colLeft int
}

// headGeometry lays the head detail out in a w×h main area, scrolled from the current
// offsets just enough to show the cursor.
func (m *Model) headGeometry(w, h int) headGeom {
	Q, K := m.mapSize()
	d := headGeom{labelW: min(longest(m.queryLabels()), 16) + 2, keyRows: 3}
	if h < 12 {
		d.keyRows = 1
	}
	d.mapH = max(h-d.keyRows-1, 1)
	d.nk = max((w-d.labelW)/max(m.zoom, 1), 1)
	d.rowTop = scrollTo(m.rowTop, m.query, d.mapH, Q)
	d.colLeft = scrollTo(m.colLeft, m.key, d.nk, K)
	return d
}

// headLines draws the selected head: the whole map pooled into the window (fit), or one
// row per query with labels on both axes (detail).
func (m *Model) headLines(w, h int) []string {
	a := m.attn()
	Q, K := m.mapSize()
	qLabels, kLabels := m.queryLabels(), m.keyLabels()
	legend := m.palette.Legend(min(w, 40), m.scale) + fmt.Sprintf("  A[%d,%d] = %.4f", m.query, m.key, a[m.query][m.key])
	if m.fit {
		mapW, mapH := w-2, h-1
		rows := m.palette.Map(a, mapW, mapH, m.scale)
		perCell := 2
		if m.palette.Profile == heatmap.NoColor {
			perCell = 1
		}
		pooledRows := min(mapH*perCell, Q)
		cursorLine := m.query * pooledRows / Q / perCell
		lines := make([]string, 0, h)
		for i, r := range rows {
			mark := " "
			if i == cursorLine {
				mark = sgrBold + "▶" + sgrReset
			}
			lines = append(lines, mark+" "+r)
		}
		return append(lines, legend)
	}
	d := m.headGeometry(w, h)
	hi := min(d.colLeft+d.nk, K)
	lines := make([]string, 0, h)
	for q := d.rowTop; q < min(d.rowTop+d.mapH, Q); q++ {
		label := padLeft(truncate(labelAt(qLabels, q), d.labelW-2), d.labelW-2)
		mark := " "
		if q == m.query {
			mark = sgrBold + "▶" + sgrReset
			label = sgrReverse + label + sgrReset
		}
		lines = append(lines, mark+label+" "+m.palette.Cells(a[q][d.colLeft:hi], m.zoom, m.scale))
	}
	// The key labels go right under the map (a short map's labels at the bottom of a tall
	// window were far from their columns); the blank lines go below them.
	for r := 0; r < d.keyRows; r++ {
		var b strings.Builder
		b.WriteString(strings.Repeat(" ", d.labelW))
		for k := d.colLeft; k < hi; k++ {
			ch := " "
			if k < len(kLabels) {
				if runes := []rune(kLabels[k]); r < len(runes) {
					ch = string(runes[r])
					if ansi.StringWidth(ch) != 1 {
						ch = "·"
					}
				}
			}
			cell := ch + strings.Repeat(" ", m.zoom-1)
			if k == m.key {
				cell = sgrReverse + cell + sgrReset
			}
			b.WriteString(cell)
		}
		lines = append(lines, b.String())
	}
	for len(lines) < d.mapH+d.keyRows {
		lines = append(lines, "")
	}
	return append(lines, legend)
}

// tokenLines draws the prompt, each token coloured by how much the cursor token attends
// to it (or, reversed, how much it attends to the cursor token). In cross-attention the
// source is drawn, coloured by the attention of the cursor's target token.
func (m *Model) tokenLines(w, h int) []string {
	// With heads off, the table of each token's loss takes the lower part.
	var table []string
	if m.shownOff != "" && h >= 7 {
		table = m.lossTableLines(min(max(h/2, 3), len(m.run.Labels)+1))
		h -= len(table)
	}
	a := m.attn()
	res := m.res()
	shown := res.KeySide(m.layer) // the sequence drawn
	reverse := m.reverse && m.oneSequence(m.layer)
	n := len(m.sideLabels(shown))
	weights := make([]float64, n)
	for i := 0; i < n; i++ {
		switch {
		case !reverse && i < len(a[m.query]):
			weights[i] = float64(a[m.query][i])
		case reverse && i < len(a) && m.query < len(a[i]):
			weights[i] = float64(a[i][m.query])
		}
	}
	qLabel := truncate(labelAt(m.queryLabels(), m.query), 20)
	var head string
	switch {
	case !m.oneSequence(m.layer):
		head = fmt.Sprintf("what target %q (position %d) attends to in the source", qLabel, m.query)
	case reverse:
		head = fmt.Sprintf("who attends to %q (position %d) — r: what it attends to", qLabel, m.query)
	default:
		head = fmt.Sprintf("what %q (position %d) attends to — r: who attends to it", qLabel, m.query)
	}
	lines := []string{sgrBold + fit(head, w) + sgrReset, ""}
	var line strings.Builder
	lineW := 0
	cursorLine := 0
	flush := func() {
		lines = append(lines, line.String())
		line.Reset()
		lineW = 0
	}
	cursor := -1 // the cursor token, when it is among those drawn
	if res.QuerySide(m.layer) == shown {
		cursor = m.query
	}
	for i := 0; i < n; i++ {
		piece, breakAfter := m.piece(shown, i)
		pw := ansi.StringWidth(piece) + m.palette.TextWidthExtra()
		if lineW > 0 && lineW+pw > w {
			flush()
		}
		if pw > w {
			piece = truncate(piece, w-m.palette.TextWidthExtra())
			pw = w
		}
		if i == cursor {
			cursorLine = len(lines)
			line.WriteString(sgrReverse + sgrBold + piece + sgrReset + strings.Repeat(" ", m.palette.TextWidthExtra()))
		} else {
			line.WriteString(m.palette.Text(piece, weights[i], m.scale))
		}
		lineW += pw
		if breakAfter {
			flush()
		}
	}
	if lineW > 0 {
		flush()
	}
	// Keep the cursor's line on screen.
	if len(lines) > h-1 {
		top := max(min(cursorLine-(h-1)/2, len(lines)-(h-1)), 2)
		lines = append(lines[:2], lines[top:min(top+h-3, len(lines))]...)
	}
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	lines = append(lines[:h-1], table...)
	return append(lines, m.palette.Legend(min(w, 40), m.scale))
}

// piece is token i's text of one sequence for the prompt view, made safe to print, and
// whether a line break follows it.
func (m *Model) piece(sd result.Side, i int) (string, bool) {
	var p string
	labels := m.sideLabels(sd)
	if m.run.Pieces != nil && i < len(m.run.Pieces) && sd == result.TargetSide {
		p = m.run.Pieces[i]
	} else {
		p = labelAt(labels, i) + " "
	}
	breakAfter := strings.Contains(p, "\n")
	p = strings.NewReplacer("\n", "↵", "\r", "", "\t", "    ").Replace(p)
	p = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, p)
	if p == "" {
		p = "∅"
	}
	return p, breakAfter
}

// labelAt is labels[i], or i when there is no such label.
func labelAt(labels []string, i int) string {
	if i < len(labels) {
		return labels[i]
	}
	return fmt.Sprint(i)
}

// sidePanel shows the selected head's scores, the next-token predictions at the cursor
// and the keys the cursor attends to most.
func (m *Model) sidePanel(w, h int) []string {
	if m.circuits {
		return m.circuitsPanel(w, h)
	}
	s := m.headScores(m.layer, m.head)
	lines := m.ablationPanel(w)
	title := fmt.Sprintf(" %s scores", s.Name())
	pattern := patternLines(s, w)
	if m.isOff(m.layer, m.head) {
		title += " (ablated)"
	}
	lines = append(lines, sgrBold+title+sgrReset)
	for _, sc := range analysis.AllScores {
		v := s.Get(sc)
		val := "     -" // no probe, or a score the map has none of (cross-attention)
		switch {
		case !math.IsNaN(v):
			val = fmt.Sprintf("%6.3f", v)
		case (sc == analysis.Induction || sc == analysis.DuplicateToken) && m.probePending() && m.oneSequence(m.layer):
			val = "     …"
		}
		mark := " "
		if t, ok := sc.Threshold(); ok && !math.IsNaN(v) && v >= t {
			mark = "★"
		}
		name := sc.String()
		if sc == m.sortBy {
			name = sgrBold + name + sgrReset
		}
		lines = append(lines, fmt.Sprintf(" %s%s %s %s", name, strings.Repeat(" ", max(16-len(sc.String()), 0)), val, mark))
	}
	// The pattern line takes the place of the blank line that would part the scores from
	// the predictions (a line more would shift every line below it on each head change).
	lines = append(lines, pattern...)
	lines = append(lines, sgrBold+fmt.Sprintf(" next after %d %q", m.query, truncate(labelAt(m.queryLabels(), m.query), 10))+sgrReset)
	if m.res().QuerySide(m.layer) == result.SourceSide {
		lines = append(lines, "  (an encoder layer: its", "  queries are source tokens)")
	} else if row := analysis.LogitsRow(m.res(), m.query); row != nil {
		for _, p := range analysis.TopK(row, 5) {
			name := fmt.Sprint(p.ID)
			if m.cfg.Label != nil {
				name = m.cfg.Label(p.ID)
			}
			lines = append(lines, fmt.Sprintf("  %-16s %5.1f%%", truncate(name, 16), 100*p.Prob))
		}
	} else if m.res().Logits == nil || m.res().Vocab == 0 {
		lines = append(lines, "  (no logits: the model has no", "  output over its vocabulary)")
	} else {
		lines = append(lines, "  (no logits at this position)")
	}
	lines = append(lines, "", sgrBold+" attends most to"+sgrReset)
	if a := m.attn(); m.query < len(a) {
		row := a[m.query]
		for _, k := range topIndices(row, 5) {
			lines = append(lines, fmt.Sprintf("  %3d %-14s %6.3f", k, truncate(labelAt(m.keyLabels(), k), 14), row[k]))
		}
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return lines[:h]
}

// sinkShown is the first-token share from which the pattern line names the sink beside
// the head's behaviour.
const sinkShown = analysis.LabelThreshold

// patternKind is a head's label (analysis.HeadScores.Label: its strongest behaviour once
// attention to the first token is discounted) with that behaviour's score, and its sink
// share when that is at least sinkShown (NaN otherwise); kind is "" for none.
func patternKind(s analysis.HeadScores) (kind string, v, sink float64) {
	kind, sink = s.Label()
	v = s.NoSink(kind)
	if kind == analysis.LabelSink || !(sink >= sinkShown) {
		sink = math.NaN()
	}
	return kind, v, sink
}

// patternLines is the side panel's pattern line, e.g. " pattern  induction 0.771 · sink
// 0.620", the sink part on a line of its own where the two do not fit in w cells.
func patternLines(s analysis.HeadScores, w int) []string {
	kind, v, sink := patternKind(s)
	line := " pattern  -"
	if kind != "" {
		line = fmt.Sprintf(" pattern  %s %.3f", kind, v)
	}
	if math.IsNaN(sink) {
		return []string{line}
	}
	part := fmt.Sprintf("· sink %.3f", sink)
	if ansi.StringWidth(line)+1+len(part) <= w {
		return []string{line + " " + part}
	}
	return []string{line, "          " + part}
}

// patternCell is the score table's pattern column: the label, "+sink" when the head also
// parks at least sinkShown of its weight on the first token.
func patternCell(s analysis.HeadScores) string {
	kind, _, sink := patternKind(s)
	if kind == "" {
		return "-"
	}
	if !math.IsNaN(sink) {
		kind += "+sink"
	}
	return kind
}

// helpTitle heads the help overlay; it stays on screen while the rest scrolls.
const helpTitle = " keys (any key closes this)"

// helpProse explains the views, scores and ablation below the keys; it is wrapped to the
// window.
var helpProse = []string{
	"Views: grid = every head; head = one map, queries down, keys across; tokens = the prompt coloured by the cursor token's attention.",
	"Scores: prev_token, first_token, self, entropy on this prompt; induction, duplicate_token on a repeated random-token probe. ★ marks ≥ 0.4; • in the grid marks heads at the sort score's threshold. pattern is the head's strongest behaviour once attention to the first token (an attention sink) is discounted, with the sink's share when it is 0.4 or more.",
	"Mouse: click a thumbnail to open its head, a cell of the head view to put the cursor there; the wheel moves through layers and queries (and scrolls this help).",
	"Encoder–decoders: e edits the source, and tab in the editor switches to the target and back; enter runs both.",
	"Circuits: c switches the side panel to the head's circuits, read from the weights (no run): OV copying (positive eigenvalues of W_E W_OV W_U), the pattern the learned positions alone give, the earlier heads whose output it reads most (Q/K/V composition, with the random baseline) and the tokens its OV circuit raises most.",
	"Ablation: x switches the selected head off (its output zeroed) or back on, X every head back on; × marks heads off. The maps are the ablated run's (an off head's map is where it looks); the panel and token view show the loss change.",
}

// timelineProse explains timeline mode in the help.
const timelineProse = "Timeline: the browser shows one step of a training run; < and > move a step, { and } jump to the earlier or later step where the selected head's score (o chooses it) changes most from the step before. The prompt, cursors, view and the heads off stay; the grid, probe scores, ablation and circuits are the step's. The sparklines show that score, the loss and the ICL score over the steps, the step shown in reverse video."

// helpBody is the help overlay below its title for a window w cells wide: every key in
// as many columns as fit (one when narrow), then the prose, wrapped.
func (m *Model) helpBody(w int) []string {
	type entry struct{ key, desc string }
	var entries []entry
	keyW, descW := 0, 0
	groups := m.keys.FullHelp()
	if m.timeline() {
		groups = append(groups, m.keys.TimelineHelp())
	}
	for _, col := range groups {
		for _, b := range col {
			e := entry{b.Help().Key, b.Help().Desc}
			entries = append(entries, e)
			keyW, descW = max(keyW, ansi.StringWidth(e.key)), max(descW, ansi.StringWidth(e.desc))
		}
	}
	cellW := keyW + 1 + descW
	cols := max(min((w-1+3)/(cellW+3), len(entries)), 1)
	if cols == 1 {
		cellW = max(w-1, 1)
	}
	rows := (len(entries) + cols - 1) / cols
	lines := []string{""}
	for r := 0; r < rows; r++ {
		var b strings.Builder
		b.WriteString(" ")
		for c := 0; c < cols; c++ {
			i := c*rows + r
			if i >= len(entries) {
				break
			}
			if c > 0 {
				b.WriteString("   ")
			}
			e := entries[i]
			cell := sgrBold + padRight(e.key, keyW) + sgrReset + " " + truncate(e.desc, max(cellW-keyW-1, 1))
			b.WriteString(padRight(cell, cellW))
		}
		lines = append(lines, b.String())
	}
	prose := helpProse
	if m.timeline() {
		prose = append([]string{timelineProse}, prose...)
	}
	for _, p := range prose {
		lines = append(lines, "")
		for _, l := range wrap(p, max(w-2, 10)) {
			lines = append(lines, " "+l)
		}
	}
	return lines
}

// helpOverlay draws the help in h lines: the title, then the body from line helpTop
// (settle keeps it in range); when the body is taller than the window the title says how
// to scroll and where the view is.
func (m *Model) helpOverlay(h int) []string {
	body := m.helpBody(m.width)
	title := helpTitle
	rows := h - 1
	top := 0
	if len(body) > rows {
		top = clamp(m.helpTop, 0, len(body)-rows)
		title += fmt.Sprintf(" · ↑/↓ scroll · lines %d–%d of %d", top+1, top+rows, len(body))
		body = body[top : top+rows]
	}
	lines := append([]string{sgrBold + fit(title, m.width) + sgrReset}, body...)
	out := make([]string, h)
	for i := range out {
		if i < len(lines) {
			out[i] = fit(lines[i], m.width)
		} else {
			out[i] = strings.Repeat(" ", m.width)
		}
	}
	return out
}

// helpScroll is how far the help overlay's body can scroll at the current size (0: it fits).
func (m *Model) helpScroll() int {
	return max(len(m.helpBody(m.width))-(m.bodyHeight()-1), 0)
}

// wrap breaks s into lines of at most w cells at spaces (a word longer than w is cut).
func wrap(s string, w int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case ansi.StringWidth(line)+1+ansi.StringWidth(word) <= w:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
		for ansi.StringWidth(line) > w {
			lines = append(lines, ansi.Truncate(line, w, ""))
			line = ansi.TruncateLeft(line, w, "")
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// topIndices returns the indices of the n largest values, largest first.
func topIndices(row []float32, n int) []int {
	var idx []int
	for range min(n, len(row)) {
		best := -1
		for k, v := range row {
			taken := false
			for _, i := range idx {
				taken = taken || i == k
			}
			if !taken && (best < 0 || v > row[best]) {
				best = k
			}
		}
		idx = append(idx, best)
	}
	return idx
}

// scrollTo returns a new first-visible index so that cursor stays within a window of
// visible items out of total.
func scrollTo(top, cursor, visible, total int) int {
	if cursor < top {
		top = cursor
	}
	if cursor >= top+visible {
		top = cursor - visible + 1
	}
	return max(min(top, total-visible), 0)
}

// duration formats a run time for the status line: 0.42 ms, 12 ms, 1.53 s.
func duration(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// fit truncates or pads s (which may hold escape sequences) to exactly w cells.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	sw := ansi.StringWidth(s)
	if sw > w {
		s = ansi.Truncate(s, w, "")
		sw = ansi.StringWidth(s)
	}
	return s + strings.Repeat(" ", w-sw)
}

func truncate(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if ansi.StringWidth(s) <= w {
		return s
	}
	return ansi.Truncate(s, w-1, "") + "…"
}

func padLeft(s string, w int) string  { return strings.Repeat(" ", max(w-ansi.StringWidth(s), 0)) + s }
func padRight(s string, w int) string { return s + strings.Repeat(" ", max(w-ansi.StringWidth(s), 0)) }

func center(s string, w int) string {
	s = truncate(s, w)
	left := (w - ansi.StringWidth(s)) / 2
	return strings.Repeat(" ", left) + s + strings.Repeat(" ", w-left-ansi.StringWidth(s))
}

func longest(labels []string) int {
	n := 1
	for _, l := range labels {
		n = max(n, ansi.StringWidth(l))
	}
	return n
}
