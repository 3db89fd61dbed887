package heatmap

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// A line chart: panels stacked top to bottom that share one x axis, each with its own y
// axis, drawn by WriteLinesPNG and WriteLinesSVG from one layout (the same pixel units,
// as the heatmap figures are) with the figures' font.

// Series is one line of a panel: a value per x of the chart (NaN where it has none, which
// breaks the line there).
type Series struct {
	// Name labels the line at its right end; "" draws no label.
	Name string
	Y    []float64
	// Colour is the line's colour (and its label's).
	Colour color.RGBA
	// Dashed draws the line dashed; Faint draws it one pixel wide without markers or label,
	// behind the other lines (the heads a chart does not single out).
	Dashed, Faint bool
}

// Panel is one chart of the stack.
type Panel struct {
	// YLabel names the y axis (written upwards at the panel's left).
	YLabel string
	Series []Series
	// ZeroLine draws y = 0 across the panel (in ZeroColour), which the y range then holds.
	ZeroLine bool
	// Threshold, when not NaN and inside the y range, is drawn as a dotted line.
	Threshold float64
	// Empty is the note written in a panel that has no value to draw.
	Empty string
}

// LineChart is the whole figure: a title, panels sharing the x axis, and that axis.
type LineChart struct {
	Title, Subtitle string
	// X are the x values (ascending, at least one) the series' values belong to.
	X []float64
	// XLabel names the x axis; " (log scale; 0 at the left edge)" is added to it when the
	// axis is logarithmic (see LogX).
	XLabel string
	// XScale is "log" or "linear" to choose the x axis's scale; "" chooses by LogX.
	XScale string
	Panels []Panel
}

// Layout constants of a line chart, in pixels.
const (
	// PlotWidth and PanelHeight are a plot area's size (the first panel is
	// FirstPanelHeight high).
	PlotWidth        = 600
	PanelHeight      = 130
	FirstPanelHeight = 240
	// Inset is kept free inside a plot area on every side: the first x and the top of the
	// y range lie Inset pixels inside it.
	Inset = 8
	// ZeroGap is, on a log x axis, the distance from x = 0 (at the plot's left edge +
	// Inset) to the smallest positive x.
	ZeroGap = 28
	// LogDecades: the x axis is logarithmic when its positive values span more than this
	// many decades.
	LogDecades = 1.5
	panelGap   = 10
	marker     = 2 // a marker is a square of 2·marker+1 pixels at each value
)

// Colours of a line chart besides its series'.
var (
	// ZeroColour is the colour of a panel's y = 0 line.
	ZeroColour = color.RGBA{0x80, 0x80, 0x80, 255}
	// FaintColour is the colour of Faint series.
	FaintColour = color.RGBA{0xcc, 0xcc, 0xcc, 255}
	frameColour = color.RGBA{0x55, 0x55, 0x55, 255}
	gridColour  = color.RGBA{0xee, 0xee, 0xee, 255}
	thresholdC  = color.RGBA{0xb0, 0xb0, 0xb0, 255}
)

// SeriesColours are distinct colours for the lines a chart singles out (Tableau 10 without
// its grey, then darker variants); a chart with more lines uses them again.
var SeriesColours = []color.RGBA{
	{0x1f, 0x77, 0xb4, 255}, {0xff, 0x7f, 0x0e, 255}, {0x2c, 0xa0, 0x2c, 255},
	{0xd6, 0x27, 0x28, 255}, {0x94, 0x67, 0xbd, 255}, {0x8c, 0x56, 0x4b, 255},
	{0xe3, 0x77, 0xc2, 255}, {0xbc, 0xbd, 0x22, 255}, {0x17, 0xbe, 0xcf, 255},
	{0x0b, 0x3c, 0x5d, 255}, {0x8a, 0x45, 0x00, 255}, {0x14, 0x55, 0x14, 255},
	{0x6b, 0x10, 0x10, 255}, {0x4a, 0x2a, 0x6b, 255},
}

// RoleSeries is the role of a series' label at its line's end.
const RoleSeries Role = "series-label"

// LogX reports whether a chart of these x values draws its x axis on a log scale: when
// the positive values span more than LogDecades decades.
func LogX(x []float64) bool {
	lo, hi := math.Inf(1), 0.0
	for _, v := range x {
		if v > 0 {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	return hi > 0 && math.Log10(hi/lo) > LogDecades
}

// xAxis maps x values to pixels.
type xAxis struct {
	log     bool
	lo, hi  float64 // linear: the data range; log: the smallest and largest positive x
	left, w int     // the plot area's left edge and width
	hasZero bool
}

func (a xAxis) px(v float64) float64 {
	l, r := float64(a.left+Inset), float64(a.left+a.w-1-Inset)
	if !a.log {
		if a.hi == a.lo {
			return (l + r) / 2
		}
		return l + (v-a.lo)/(a.hi-a.lo)*(r-l)
	}
	if v <= 0 {
		return l
	}
	l0 := l
	if a.hasZero {
		l0 += ZeroGap
	}
	if a.hi == a.lo {
		return l0
	}
	return l0 + (math.Log10(v)-math.Log10(a.lo))/(math.Log10(a.hi)-math.Log10(a.lo))*(r-l0)
}

// yAxis maps one panel's values to pixels.
type yAxis struct {
	lo, hi   float64
	top, h   int
	ticks    []float64
	decimals int
}

func (a yAxis) px(v float64) float64 {
	t, b := float64(a.top+Inset), float64(a.top+a.h-1-Inset)
	return b - (v-a.lo)/(a.hi-a.lo)*(b-t)
}

// linePanel is one laid-out panel.
type linePanel struct {
	Panel
	Box image.Rectangle
	y   yAxis
}

// lineScene is a laid-out line chart.
type lineScene struct {
	W, H   int
	Texts  []TextBox
	colour map[int]color.RGBA // colour of Texts[i] when not ink
	panels []linePanel
	x      xAxis
	xTicks []float64
	chart  LineChart
}

// niceStep is 1, 2 or 5 × 10^k, the smallest such at least span/n.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// yRange is a panel's y axis: the values' range (with 0 for a zero line) widened to
// multiples of a 1-2-5 tick step, about 4 ticks (2 in a low panel).
func yRange(p Panel, h int) yAxis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range p.Series {
		for _, v := range s.Y {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if p.ZeroLine || math.IsInf(lo, 1) {
		lo, hi = math.Min(lo, 0), math.Max(hi, 0)
	}
	if hi-lo < 1e-9 {
		d := math.Max(math.Abs(hi)*0.1, 0.05)
		lo, hi = lo-d, hi+d
	}
	n := 4
	if h < 150 {
		n = 3
	}
	step := niceStep(hi-lo, n)
	a := yAxis{lo: math.Floor(lo/step+1e-9) * step, hi: math.Ceil(hi/step-1e-9) * step}
	for v := a.lo; v <= a.hi+step/2; v += step {
		a.ticks = append(a.ticks, math.Round(v/step)*step)
	}
	a.decimals = max(0, -int(math.Floor(math.Log10(step)+1e-9)))
	return a
}

// TokensLabel writes an x tick briefly: 0, 500, 2.5k, 10k, 1M, 1.5B.
func TokensLabel(v float64) string {
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e9, "B"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(v) >= u.div {
			return strconv.FormatFloat(v/u.div, 'g', 3, 64) + u.suffix
		}
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// xTickValues are the x axis's ticks: on a log axis the powers of ten in range (and 2 and
// 5 times them when fewer than 3 powers fall in it), on a linear one about 6 1-2-5 steps.
func xTickValues(a xAxis) []float64 {
	var out []float64
	if a.log {
		k0, k1 := int(math.Floor(math.Log10(a.lo))), int(math.Ceil(math.Log10(a.hi)))
		mults := []float64{1}
		if k1-k0 < 4 {
			mults = []float64{1, 2, 5}
		}
		for k := k0; k <= k1; k++ {
			for _, m := range mults {
				v := m * math.Pow(10, float64(k))
				if v >= a.lo*(1-1e-9) && v <= a.hi*(1+1e-9) {
					out = append(out, v)
				}
			}
		}
		return out
	}
	if a.hi == a.lo {
		return []float64{a.lo}
	}
	step := niceStep(a.hi-a.lo, 6)
	for v := math.Ceil(a.lo/step-1e-9) * step; v <= a.hi+step*1e-9; v += step {
		out = append(out, math.Round(v/step)*step)
	}
	return out
}

// layoutLines lays out the chart: title lines, the panels one under another (y axis name
// and ticks at the left, series labels at the right), the x ticks and axis name under the
// last.
func layoutLines(c LineChart) (*lineScene, error) {
	if len(c.X) == 0 {
		return nil, fmt.Errorf("nothing to draw: the chart has no x values")
	}
	if len(c.Panels) == 0 {
		return nil, fmt.Errorf("nothing to draw: the chart has no panels")
	}
	for _, p := range c.Panels {
		for _, s := range p.Series {
			if len(s.Y) != len(c.X) {
				return nil, fmt.Errorf("series %q has %d values for %d x values", s.Name, len(s.Y), len(c.X))
			}
		}
	}
	sc := &lineScene{chart: c, colour: map[int]color.RGBA{}}
	add := func(tb TextBox, col *color.RGBA) {
		if col != nil {
			sc.colour[len(sc.Texts)] = *col
		}
		sc.Texts = append(sc.Texts, tb)
	}
	y := margin
	for _, line := range []struct {
		s    string
		role Role
	}{{c.Title, RoleTitle}, {c.Subtitle, RoleSubtitle}} {
		if line.s != "" {
			add(horizontal(line.s, line.role, margin, y+ascent), nil)
			y += lineStep
		}
	}
	y += gap

	// The y axes first: their tick labels set the plot's left edge.
	axes := make([]yAxis, len(c.Panels))
	tickW := 0
	for i, p := range c.Panels {
		h := PanelHeight
		if i == 0 {
			h = FirstPanelHeight
		}
		axes[i] = yRange(p, h)
		axes[i].h = h
		for _, t := range axes[i].ticks {
			tickW = max(tickW, textWidth(strconv.FormatFloat(t, 'f', axes[i].decimals, 64)))
		}
	}
	plotX := margin + lineHeight + gap + tickW + 4
	logX := LogX(c.X)
	switch c.XScale {
	case "log":
		logX = slices.ContainsFunc(c.X, func(v float64) bool { return v > 0 }) // else nothing to take a log of
	case "linear":
		logX = false
	case "":
	default:
		return nil, fmt.Errorf("x scale %q: use log, linear or \"\" (chosen by the data)", c.XScale)
	}
	x := xAxis{left: plotX, w: PlotWidth, log: logX}
	x.lo, x.hi = math.Inf(1), math.Inf(-1)
	for _, v := range c.X {
		if v == 0 {
			x.hasZero = true
		}
		if !x.log || v > 0 {
			x.lo, x.hi = math.Min(x.lo, v), math.Max(x.hi, v)
		}
	}
	sc.x = x
	sc.xTicks = xTickValues(x)

	right := plotX + PlotWidth
	for i, p := range c.Panels {
		a := axes[i]
		a.top = y
		box := image.Rect(plotX, y, plotX+PlotWidth, y+a.h)
		sc.panels = append(sc.panels, linePanel{Panel: p, Box: box, y: a})
		// The y axis's name, upwards, centred on the panel; its ticks right-aligned.
		name := vertical(p.YLabel, RoleAxis, margin, 0)
		n := name.Box.Dy()
		name.Box = name.Box.Add(image.Pt(0, y+n+max(0, (a.h-n)/2)))
		add(name, nil)
		for _, t := range a.ticks {
			s := strconv.FormatFloat(t, 'f', a.decimals, 64)
			py := int(math.Round(a.px(t)))
			add(horizontal(s, RoleTick, plotX-4-textWidth(s), py+4), nil)
		}
		if p.Empty != "" && !hasValues(p) {
			w := textWidth(Glyphs(p.Empty))
			add(horizontal(p.Empty, RoleNote, plotX+max(0, (PlotWidth-w)/2), y+a.h/2+4), nil)
		}
		// Series labels at their lines' ends, pushed apart so none overlap.
		type label struct {
			s   Series
			y   float64
			idx int
		}
		var labels []label
		for j, s := range p.Series {
			if s.Name == "" || s.Faint {
				continue
			}
			for k := len(s.Y) - 1; k >= 0; k-- {
				if !math.IsNaN(s.Y[k]) {
					labels = append(labels, label{s, a.px(s.Y[k]), j})
					break
				}
			}
		}
		sort.SliceStable(labels, func(i, j int) bool { return labels[i].y < labels[j].y })
		ys := make([]float64, len(labels))
		for j, l := range labels {
			ys[j] = l.y
			if j > 0 {
				ys[j] = math.Max(ys[j], ys[j-1]+float64(lineHeight))
			}
		}
		// Pushed past the panel's bottom: move the run back up.
		if n := len(ys); n > 0 && ys[n-1] > float64(box.Max.Y-4) {
			ys[n-1] = float64(box.Max.Y - 4)
			for j := n - 2; j >= 0; j-- {
				ys[j] = math.Min(ys[j], ys[j+1]-float64(lineHeight))
			}
		}
		for j, l := range labels {
			col := l.s.Colour
			tb := horizontal(l.s.Name, RoleSeries, box.Max.X+12, int(math.Round(ys[j]))+4)
			add(tb, &col)
			right = max(right, tb.Box.Max.X)
		}
		y += a.h + panelGap
	}
	y -= panelGap
	// x ticks under the last panel, left to right, dropping any that would touch the one
	// before; 0 at the left edge on a log axis.
	base := y + 4 + ascent
	lastRight := math.MinInt
	tick := func(v float64) {
		s := TokensLabel(v)
		px := int(math.Round(x.px(v)))
		tb := horizontal(s, RoleTick, px-textWidth(s)/2, base)
		if tb.Box.Min.X <= lastRight+4 || tb.Box.Max.X > right+margin {
			return
		}
		lastRight = tb.Box.Max.X
		add(tb, nil)
	}
	if x.log && x.hasZero {
		tick(0)
	}
	for _, v := range sc.xTicks {
		tick(v)
	}
	y = base + descent + 4
	label := c.XLabel
	if x.log {
		label += " (log scale"
		if x.hasZero {
			label += "; 0 at the left edge"
		}
		label += ")"
	}
	xl := horizontal(label, RoleAxis, 0, y+ascent)
	xl.Box = xl.Box.Add(image.Pt(max(margin, plotX+(PlotWidth-xl.Box.Dx())/2), 0))
	add(xl, nil)
	bottom := xl.Box.Max.Y
	for _, t := range sc.Texts {
		right, bottom = max(right, t.Box.Max.X), max(bottom, t.Box.Max.Y)
	}
	sc.W, sc.H = right+margin, bottom+margin
	return sc, nil
}

func hasValues(p Panel) bool {
	for _, s := range p.Series {
		for _, v := range s.Y {
			if !math.IsNaN(v) {
				return true
			}
		}
	}
	return false
}

// points are a series' pixels, one run per stretch without NaN.
func (sc *lineScene) points(p linePanel, s Series) [][]image.Point {
	var runs [][]image.Point
	var cur []image.Point
	for i, v := range s.Y {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if len(cur) > 0 {
				runs, cur = append(runs, cur), nil
			}
			continue
		}
		cur = append(cur, image.Pt(int(math.Round(sc.x.px(sc.chart.X[i]))), int(math.Round(p.y.px(v)))))
	}
	if len(cur) > 0 {
		runs = append(runs, cur)
	}
	return runs
}

// drawOrder is the series in the order drawn: faint ones first, then the others last to
// first, so that the first series lies on top.
func drawOrder(p Panel) []Series {
	var out []Series
	for _, s := range p.Series {
		if s.Faint {
			out = append(out, s)
		}
	}
	for i := len(p.Series) - 1; i >= 0; i-- {
		if !p.Series[i].Faint {
			out = append(out, p.Series[i])
		}
	}
	return out
}

// WriteLinesPNG draws the chart (see LineChart) and encodes it as PNG.
func WriteLinesPNG(w io.Writer, c LineChart) error {
	sc, err := layoutLines(c)
	if err != nil {
		return err
	}
	return png.Encode(w, sc.image())
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, &image.Uniform{c}, image.Point{}, draw.Src)
}

// segment draws a line from a to b, width pixels wide; dashed lines are drawn 6 on, 4 off
// (counted along the line from *run).
func segment(img *image.RGBA, a, b image.Point, c color.RGBA, width int, dashed bool, run *int) {
	dx, dy := abs(b.X-a.X), -abs(b.Y-a.Y)
	sx, sy := 1, 1
	if a.X > b.X {
		sx = -1
	}
	if a.Y > b.Y {
		sy = -1
	}
	e := dx + dy
	p := a
	for {
		if !dashed || *run%10 < 6 {
			fill(img, image.Rect(p.X, p.Y, p.X+width, p.Y+width), c)
		}
		*run++
		if p == b {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			p.X += sx
		}
		if e2 <= dx {
			e += dx
			p.Y += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func (sc *lineScene) image() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, sc.W, sc.H))
	fill(img, img.Bounds(), paper)
	for _, p := range sc.panels {
		b := p.Box
		for _, t := range p.y.ticks {
			y := int(math.Round(p.y.px(t)))
			fill(img, image.Rect(b.Min.X, y, b.Max.X, y+1), gridColour)
		}
		for _, v := range sc.xTicks {
			x := int(math.Round(sc.x.px(v)))
			fill(img, image.Rect(x, b.Min.Y, x+1, b.Max.Y), gridColour)
		}
		if th := p.Threshold; !math.IsNaN(th) && th > p.y.lo && th < p.y.hi {
			y := int(math.Round(p.y.px(th)))
			for x := b.Min.X; x < b.Max.X; x += 4 {
				fill(img, image.Rect(x, y, x+2, y+1), thresholdC)
			}
		}
		if p.ZeroLine {
			y := int(math.Round(p.y.px(0)))
			fill(img, image.Rect(b.Min.X, y, b.Max.X, y+1), ZeroColour)
		}
		for _, s := range drawOrder(p.Panel) {
			col, width := s.Colour, 2
			if s.Faint {
				col, width = FaintColour, 1
			}
			for _, run := range sc.points(p, s) {
				n := 0
				for i := 1; i < len(run); i++ {
					segment(img, run[i-1], run[i], col, width, s.Dashed, &n)
				}
				if !s.Faint {
					for _, q := range run {
						fill(img, image.Rect(q.X-marker, q.Y-marker, q.X+marker+1, q.Y+marker+1), col)
					}
				}
			}
		}
		// The frame: left and bottom axes, with ticks.
		fill(img, image.Rect(b.Min.X-1, b.Min.Y, b.Min.X, b.Max.Y), frameColour)
		fill(img, image.Rect(b.Min.X-1, b.Max.Y, b.Max.X, b.Max.Y+1), frameColour)
		for _, t := range p.y.ticks {
			y := int(math.Round(p.y.px(t)))
			fill(img, image.Rect(b.Min.X-4, y, b.Min.X-1, y+1), frameColour)
		}
		for _, v := range sc.xTicks {
			x := int(math.Round(sc.x.px(v)))
			fill(img, image.Rect(x, b.Max.Y+1, x+1, b.Max.Y+4), frameColour)
		}
		if sc.x.log && sc.x.hasZero {
			x := int(math.Round(sc.x.px(0)))
			fill(img, image.Rect(x, b.Max.Y+1, x+1, b.Max.Y+4), frameColour)
		}
	}
	for i, t := range sc.Texts {
		if t.Vertical {
			verticalText(img, t)
			continue
		}
		c, ok := sc.colour[i]
		if !ok {
			text(img, t.Box.Min.X, t.Box.Min.Y+ascent, t.Text)
			continue
		}
		// Coloured text: the font's ink pixels, drawn on a scratch image, in c.
		tmp := image.NewRGBA(image.Rect(0, 0, t.Box.Dx(), lineHeight))
		fill(tmp, tmp.Bounds(), paper)
		text(tmp, 0, ascent, t.Text)
		for ty := 0; ty < lineHeight; ty++ {
			for tx := 0; tx < t.Box.Dx(); tx++ {
				if tmp.RGBAAt(tx, ty) != paper {
					img.SetRGBA(t.Box.Min.X+tx, t.Box.Min.Y+ty, c)
				}
			}
		}
		// A short leader from the plot's edge to the label.
		for _, p := range sc.panels {
			if t.Box.Min.X == p.Box.Max.X+12 && t.Box.Min.Y >= p.Box.Min.Y-lineHeight && t.Box.Min.Y < p.Box.Max.Y {
				y := t.Box.Min.Y + ascent - 4
				fill(img, image.Rect(p.Box.Max.X+2, y, p.Box.Max.X+10, y+2), c)
			}
		}
	}
	return img
}

// WriteLinesSVG draws the chart of WriteLinesPNG as SVG: the same layout, each panel's
// plot area a <rect class="plot"> (with data-ymin, data-ymax and data-xlog), each series
// one <path class="series"> (class "series faint" for faint ones) with data-name and one
// M or L per value, its markers in a <g class="markers">, the zero line a <line
// class="zero">, text as <text> elements as the heatmap figures' SVG has them.
func WriteLinesSVG(w io.Writer, c LineChart) error {
	sc, err := layoutLines(c)
	if err != nil {
		return err
	}
	return sc.svg(w)
}

func (sc *lineScene) svg(out io.Writer) error {
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", sc.W, sc.H, sc.W, sc.H)
	fmt.Fprintf(w, `<rect class="background" x="0" y="0" width="%d" height="%d" fill="%s"/>`+"\n", sc.W, sc.H, hex(paper))
	for _, p := range sc.panels {
		b := p.Box
		fmt.Fprintf(w, `<rect class="plot" x="%d" y="%d" width="%d" height="%d" fill="none" data-ymin="%g" data-ymax="%g" data-xlog="%t"/>`+"\n", b.Min.X, b.Min.Y, b.Dx(), b.Dy(), p.y.lo, p.y.hi, sc.x.log)
		for _, t := range p.y.ticks {
			y := math.Round(p.y.px(t))
			fmt.Fprintf(w, `<line class="grid" x1="%d" y1="%g" x2="%d" y2="%g" stroke="%s"/>`+"\n", b.Min.X, y+0.5, b.Max.X, y+0.5, hex(gridColour))
		}
		for _, v := range sc.xTicks {
			x := math.Round(sc.x.px(v))
			fmt.Fprintf(w, `<line class="grid" x1="%g" y1="%d" x2="%g" y2="%d" stroke="%s"/>`+"\n", x+0.5, b.Min.Y, x+0.5, b.Max.Y, hex(gridColour))
		}
		if th := p.Threshold; !math.IsNaN(th) && th > p.y.lo && th < p.y.hi {
			y := math.Round(p.y.px(th))
			fmt.Fprintf(w, `<line class="threshold" x1="%d" y1="%g" x2="%d" y2="%g" stroke="%s" stroke-dasharray="2 2"/>`+"\n", b.Min.X, y+0.5, b.Max.X, y+0.5, hex(thresholdC))
		}
		if p.ZeroLine {
			y := math.Round(p.y.px(0))
			fmt.Fprintf(w, `<line class="zero" x1="%d" y1="%g" x2="%d" y2="%g" stroke="%s"/>`+"\n", b.Min.X, y+0.5, b.Max.X, y+0.5, hex(ZeroColour))
		}
		for _, s := range drawOrder(p.Panel) {
			col, width, class := s.Colour, 2, "series"
			if s.Faint {
				col, width, class = FaintColour, 1, "series faint"
			}
			var d []string
			for _, run := range sc.points(p, s) {
				for i, q := range run {
					cmd := "L"
					if i == 0 {
						cmd = "M"
					}
					d = append(d, fmt.Sprintf("%s%d %d", cmd, q.X, q.Y))
				}
			}
			if len(d) == 0 {
				continue
			}
			dash := ""
			if s.Dashed {
				dash = ` stroke-dasharray="6 4"`
			}
			fmt.Fprintf(w, `<path class="%s" data-name="%s" d="%s" fill="none" stroke="%s" stroke-width="%d"%s/>`+"\n", class, esc(s.Name), strings.Join(d, " "), hex(col), width, dash)
			if !s.Faint {
				fmt.Fprintf(w, `<g class="markers" fill="%s">`, hex(col))
				for _, run := range sc.points(p, s) {
					for _, q := range run {
						fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d"/>`, q.X-marker, q.Y-marker, 2*marker+1, 2*marker+1)
					}
				}
				fmt.Fprintf(w, "</g>\n")
			}
		}
		fmt.Fprintf(w, `<path class="frame" d="M%d %d V%d H%d" fill="none" stroke="%s"/>`+"\n", b.Min.X, b.Min.Y, b.Max.Y, b.Max.X, hex(frameColour))
	}
	for i, t := range sc.Texts {
		x, y, rot := t.Box.Min.X, t.Box.Min.Y+ascent, ""
		if t.Vertical {
			x, y = t.Box.Min.X+ascent, t.Box.Max.Y
			rot = fmt.Sprintf(` transform="rotate(-90 %d %d)"`, x, y)
		}
		c, ok := sc.colour[i]
		if !ok {
			c = ink
		}
		fmt.Fprintf(w, `<text class="%s" x="%d" y="%d"%s font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12" textLength="%d" lengthAdjust="spacingAndGlyphs" fill="%s">%s</text>`+"\n",
			t.Role, x, y, rot, textWidth(t.Text), hex(c), esc(t.Text))
	}
	fmt.Fprintf(w, "</svg>\n")
	return w.Flush()
}
