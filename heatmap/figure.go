package heatmap

import (
	"fmt"
	"image"
	"strings"
	"unicode/utf8"
)

// The figure is laid out once, as a scene of text boxes, maps and colour bars in pixels,
// and then drawn by WritePNG (bitmap font, one pixel per unit) or WriteSVG (vector text
// of the same size at the same place), so both formats show the same picture.

const (
	margin   = 12
	gap      = 6
	maxMap   = 1024 // the most pixels a single head's map may take along its longer side
	maxThumb = 128  // the same for a grid thumbnail
	maxLabel = 16   // token labels longer than this are cut with …
	barWidth = 14
	maxCell  = 24 // the largest cell of a single head's map, in pixels
	lineStep = 16 // baseline to baseline of the title's lines
)

// Role says what a piece of text is, so tests and the SVG can tell them apart.
type Role string

// The roles of a figure's texts.
const (
	RoleTitle    Role = "title"
	RoleSubtitle Role = "subtitle"
	RoleNote     Role = "note"
	RoleAxis     Role = "axis"
	RoleQuery    Role = "query-label"
	RoleKey      Role = "key-label"
	RoleTick     Role = "tick"
	RoleScale    Role = "scale"
	RoleHead     Role = "head"
)

// TextBox is one piece of text of a laid-out figure: the text as drawn and the pixel box
// its glyphs occupy (a vertical text reads upwards, its first letter at the bottom).
type TextBox struct {
	Text     string
	Role     Role
	Box      image.Rectangle
	Vertical bool
}

// mapArea is one attention map drawn as rows×cols cells of cell pixels.
type mapArea struct {
	Box    image.Rectangle
	Cell   int
	Values [][]float64 // [row][col], after pooling when Pooled
	Pooled bool
}

// scene is a laid-out figure.
type scene struct {
	W, H  int
	Texts []TextBox
	Maps  []mapArea
	Bars  []image.Rectangle // viridis, 1 at the top
	Scale Scale
}

// textWidth is the width in pixels of s drawn in the figure's font (one cell per rune
// after Glyphs).
func textWidth(s string) int { return utf8.RuneCountInString(s) * glyphW }

// ascent and descent of the 7×13 font: a line's box runs from baseline−ascent to
// baseline+descent.
const (
	ascent  = 11
	descent = 2
)

// horizontal is a text box for s with its baseline's left end at (x, baseline).
func horizontal(s string, role Role, x, baseline int) TextBox {
	s = Glyphs(s)
	return TextBox{Text: s, Role: role, Box: image.Rect(x, baseline-ascent, x+textWidth(s), baseline+descent)}
}

// vertical is a text box for s reading upwards, its glyphs' tops at x, its first letter
// at bottom.
func vertical(s string, role Role, x, bottom int) TextBox {
	s = Glyphs(s)
	return TextBox{Text: s, Role: role, Box: image.Rect(x, bottom-textWidth(s), x+lineHeight, bottom), Vertical: true}
}

// Cut shortens s to at most n runes, ending in … when something was cut.
func Cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:max(n-1, 0)]) + "…"
}

// AxisNames are the names of a map's axes: query and key, or target and source for
// cross-attention.
func AxisNames(cross bool) (string, string) {
	if cross {
		return "target", "source"
	}
	return "query", "key"
}

// poolFactor is how many source positions one drawn cell covers (along both axes, so
// the map keeps its aspect) when rows×cols must fit in limit pixels: 1, no pooling, when
// it fits at one pixel or more per cell.
func poolFactor(rows, cols, limit int) int {
	n := max(rows, cols)
	if n <= limit {
		return 1
	}
	return (n + limit - 1) / limit
}

// drawnValues are the cells of m as drawn: the weights themselves, or the maxima of f×f
// blocks when f > 1.
func drawnValues(m [][]float32, f int) [][]float64 {
	rows := len(m)
	cols := 0
	if rows > 0 {
		cols = len(m[0])
	}
	if f <= 1 {
		out := make([][]float64, rows)
		for i, row := range m {
			out[i] = make([]float64, cols)
			for j := 0; j < cols && j < len(row); j++ {
				out[i][j] = float64(row[j])
			}
		}
		return out
	}
	return Pool(m, (rows+f-1)/f, (cols+f-1)/f)
}

// poolNote says what pooling did: "max-pooled 2048×2048 → 1024×1024 (max of 2×2 blocks)".
func poolNote(rows, cols, f int) string {
	return fmt.Sprintf("max-pooled %s → %s (each cell the max of a %d×%d block)", dims(rows, cols), dims((rows+f-1)/f, (cols+f-1)/f), f, f)
}

func dims(rows, cols int) string {
	if rows == cols {
		return fmt.Sprint(rows)
	}
	return fmt.Sprintf("%d×%d", rows, cols)
}

// labelStep is the spacing, in positions, of the token labels along an axis of cells of
// cell pixels: every token when a line fits in a cell, else every 2nd, 5th, 10th, … so
// labels never overlap.
func labelStep(cell int) int {
	for _, s := range []int{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000} {
		if s*cell >= lineHeight {
			return s
		}
	}
	return 10000
}

// axisLabels are the labels drawn along an axis: every step-th position, cut to maxLabel
// runes; with step > 1 each starts with its position. Missing labels are left blank.
func axisLabels(labels []string, n, step int) map[int]string {
	out := map[int]string{}
	for i := 0; i < n; i += step {
		l := ""
		if i < len(labels) {
			l = labels[i]
		}
		if step > 1 {
			l = fmt.Sprintf("%d %s", i, l)
		}
		if l = Cut(Glyphs(l), maxLabel); l != "" {
			out[i] = l
		}
	}
	return out
}

// positionLabels label every step-th of n pooled cells with the first of the pf
// positions it holds.
func positionLabels(n, step, pf int) map[int]string {
	out := map[int]string{}
	for i := 0; i < n; i += step {
		out[i] = fmt.Sprint(i * pf)
	}
	return out
}

func longestOf(labels map[int]string) int {
	n := 0
	for _, l := range labels {
		n = max(n, textWidth(l))
	}
	return n
}

// ticks are the colour bar's labels: the weights at its top, middle and bottom.
func ticks(s Scale) []string {
	var out []string
	for _, t := range []float64{1, 0.5, 0} {
		out = append(out, trimFloat(invert(s, t)))
	}
	return out
}

// colourBar lays out a bar of height h at (x, y) with its ticks and scale name, and
// returns the right and bottom edges of what it drew.
func (sc *scene) colourBar(x, y, h int) (int, int) {
	bar := image.Rect(x, y, x+barWidth, y+h)
	sc.Bars = append(sc.Bars, bar)
	right := bar.Max.X
	for i, t := range ticks(sc.Scale) {
		frac := 1 - []float64{1, 0.5, 0}[i]
		mid := y + int(frac*float64(h-1))
		// Keep the tick's text beside the bar: centred on its value, clamped to the bar.
		base := min(max(mid+4, y+ascent), y+h)
		tb := horizontal(t, RoleTick, bar.Max.X+4, base)
		sc.Texts = append(sc.Texts, tb)
		right = max(right, tb.Box.Max.X)
	}
	name := horizontal(sc.Scale.String()+" scale", RoleScale, x, bar.Max.Y+4+ascent)
	sc.Texts = append(sc.Texts, name)
	return max(right, name.Box.Max.X), name.Box.Max.Y
}

// layoutHead lays out one head's map: title lines, axis names, token labels, the map
// (max-pooled only when larger than maxMap cells), the colour bar.
func layoutHead(f Figure) (*scene, error) {
	q := len(f.Matrix)
	if q == 0 || len(f.Matrix[0]) == 0 {
		return nil, fmt.Errorf("nothing to draw: the attention map is empty")
	}
	k := len(f.Matrix[0])
	sc := &scene{Scale: f.Scale}
	qName, kName := f.QueryAxis, f.KeyAxis
	if qName == "" {
		qName = "query"
	}
	if kName == "" {
		kName = "key"
	}
	pf := poolFactor(q, k, maxMap)
	values := drawnValues(f.Matrix, pf)
	rows, cols := len(values), len(values[0])
	cell := max(1, min(maxCell, maxMap/max(rows, cols)))

	// Header: title, subtitle, notes.
	right := 0
	y := margin
	for _, line := range []struct {
		s    string
		role Role
	}{{f.Title, RoleTitle}, {f.Subtitle, RoleSubtitle}} {
		if line.s == "" {
			continue
		}
		tb := horizontal(line.s, line.role, margin, y+ascent)
		sc.Texts = append(sc.Texts, tb)
		right = max(right, tb.Box.Max.X)
		y += lineStep
	}
	note := fmt.Sprintf("%s ↓ × %s →: %d × %d", qName, kName, q, k)
	if pf > 1 {
		note += "; " + poolNote(q, k, pf)
	}
	tb := horizontal(note, RoleNote, margin, y+ascent)
	sc.Texts = append(sc.Texts, tb)
	right = max(right, tb.Box.Max.X)
	y += lineStep + gap

	// Labels along both axes (only when cells carry them: cell·step ≥ a line).
	var qLabels, kLabels map[int]string
	step := labelStep(cell)
	if pf == 1 {
		qLabels = axisLabels(f.QueryLabels, q, step)
		kLabels = axisLabels(f.KeyLabels, k, step)
	} else {
		// A pooled map's cells are blocks of positions: label them with the first
		// position they hold.
		qLabels, kLabels = positionLabels(rows, step, pf), positionLabels(cols, step, pf)
	}
	kBand := 0
	if len(kLabels) > 0 {
		kBand = longestOf(kLabels) + 4
	}
	qBand := 0
	if len(qLabels) > 0 {
		qBand = longestOf(qLabels) + 4
	}
	// The key axis's name above its labels, the query axis's name (vertical) left of its.
	axisK := horizontal(kName, RoleAxis, 0, y+ascent)
	y += lineHeight + gap
	mapY := y + kBand
	mapX := margin + lineHeight + gap + qBand
	mapW, mapH := cols*cell, rows*cell
	axisK.Box = axisK.Box.Add(image.Pt(max(mapX, mapX+(mapW-axisK.Box.Dx())/2), 0))
	sc.Texts = append(sc.Texts, axisK)
	axisQ := vertical(qName, RoleAxis, margin, 0)
	qLen := axisQ.Box.Dy()
	axisQ.Box = axisQ.Box.Add(image.Pt(0, mapY+qLen+max(0, (mapH-qLen)/2)))
	sc.Texts = append(sc.Texts, axisQ)
	for i, l := range qLabels {
		w := textWidth(l)
		// Centred on its row when a line fits in a cell; else (every step-th cell
		// labelled) starting at its cell, so the labels, step·cell ≥ a line apart, never
		// touch, and the last reaches at most a line less a cell past the map.
		top := mapY + i*cell + (cell-lineHeight)/2
		if cell < lineHeight {
			top = mapY + i*cell
		}
		sc.Texts = append(sc.Texts, horizontal(l, RoleQuery, mapX-4-w, top+ascent))
	}
	for j, l := range kLabels {
		left := mapX + j*cell + (cell-lineHeight)/2
		if cell < lineHeight {
			left = mapX + j*cell
		}
		sc.Texts = append(sc.Texts, vertical(l, RoleKey, left, mapY-4))
	}
	box := image.Rect(mapX, mapY, mapX+mapW, mapY+mapH)
	sc.Maps = append(sc.Maps, mapArea{Box: box, Cell: cell, Values: values, Pooled: pf > 1})
	barR, barB := sc.colourBar(box.Max.X+2*gap, mapY, min(max(mapH, 96), 256))
	right = max(right, barR, axisK.Box.Max.X)
	bottom := max(box.Max.Y, barB)
	for _, t := range sc.Texts {
		right, bottom = max(right, t.Box.Max.X), max(bottom, t.Box.Max.Y)
	}
	sc.W, sc.H = right+margin, bottom+margin
	sortTexts(sc)
	return sc, nil
}

// layoutGrid lays out every head as a thumbnail (at most maxThumb pixels along its longer
// side, aspect kept), layers as rows, each named L{layer}H{head}.
func layoutGrid(f GridFigure) (*scene, error) {
	if len(f.Attn) == 0 {
		return nil, fmt.Errorf("nothing to draw: no layers")
	}
	heads := 0
	for _, l := range f.Attn {
		heads = max(heads, len(l))
	}
	if heads == 0 {
		return nil, fmt.Errorf("nothing to draw: no heads")
	}
	sc := &scene{Scale: f.Scale}
	right, y := 0, margin
	add := func(tb TextBox) {
		sc.Texts = append(sc.Texts, tb)
		right = max(right, tb.Box.Max.X)
	}
	for _, line := range []struct {
		s    string
		role Role
	}{{f.Title, RoleTitle}, {f.Subtitle, RoleSubtitle}} {
		if line.s != "" {
			add(horizontal(line.s, line.role, margin, y+ascent))
			y += lineStep
		}
	}
	// What the thumbnails show, and whether any was pooled.
	pooled := ""
	for _, hs := range f.Attn {
		for _, m := range hs {
			if len(m) == 0 {
				continue
			}
			if pf := poolFactor(len(m), len(m[0]), maxThumb); pf > 1 && pooled == "" {
				pooled = "; " + poolNote(len(m), len(m[0]), pf)
			}
		}
	}
	note := "each map: query ↓ × key →"
	for l := range f.Attn {
		if l < len(f.Cross) && f.Cross[l] {
			note += " (target ↓ × source → in cross-attention layers)"
			break
		}
	}
	add(horizontal(note+pooled, RoleNote, margin, y+ascent))
	y += lineStep + gap
	colW := maxThumb + 2*gap
	barTop := -1
	for l, hs := range f.Attn {
		if hs == nil {
			continue // a layer that was not exposed (a selection of layers) gets no row
		}
		rowTop := y
		thumbH := 0
		for h, m := range hs {
			x := margin + h*colW
			name := fmt.Sprintf("L%dH%d", l, h)
			if l < len(f.Cross) && f.Cross[l] {
				name += " cross"
			}
			add(horizontal(name, RoleHead, x, rowTop+ascent))
			if len(m) == 0 || len(m[0]) == 0 {
				continue
			}
			pf := poolFactor(len(m), len(m[0]), maxThumb)
			values := drawnValues(m, pf)
			rows, cols := len(values), len(values[0])
			cell := max(1, maxThumb/max(rows, cols))
			top := rowTop + lineHeight + 2
			box := image.Rect(x, top, x+cols*cell, top+rows*cell)
			sc.Maps = append(sc.Maps, mapArea{Box: box, Cell: cell, Values: values, Pooled: pf > 1})
			thumbH = max(thumbH, rows*cell)
		}
		if barTop < 0 {
			barTop = rowTop + lineHeight + 2
		}
		y = rowTop + lineHeight + 2 + max(thumbH, 1) + gap*2
	}
	barR, barB := sc.colourBar(margin+heads*colW, barTop, maxThumb)
	right = max(right, barR, margin+heads*colW)
	sc.W, sc.H = right+margin, max(y-gap*2, barB)+margin
	sortTexts(sc)
	return sc, nil
}

// sortTexts orders the texts top to bottom, left to right (stable output).
func sortTexts(sc *scene) {
	t := sc.Texts
	for i := 1; i < len(t); i++ {
		for j := i; j > 0 && less(t[j].Box.Min, t[j-1].Box.Min); j-- {
			t[j], t[j-1] = t[j-1], t[j]
		}
	}
}

func less(a, b image.Point) bool { return a.Y < b.Y || a.Y == b.Y && a.X < b.X }

// Glyphs spells s in the characters the figure's font draws: ASCII, and …, ×, →, ↓ and
// — drawn by this package; the terminal's marks for a space, newline and tab become _, \n
// and \t, a dash becomes -, control characters are dropped and anything else becomes ?.
func Glyphs(s string) string {
	var b strings.Builder
	for _, r := range s {
		if _, ok := extraGlyphs[r]; ok {
			b.WriteRune(r)
			continue
		}
		b.WriteString(ASCII(string(r)))
	}
	return b.String()
}
