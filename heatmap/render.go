package heatmap

import (
	"math"
	"strings"
)

const reset = "\x1b[0m"

// Pool max-pools a rows×cols matrix into outRows×outCols: each output value is the
// largest weight of the block it covers, so a sharp attention peak stays visible however
// long the prompt. When the matrix is smaller than the output, values are repeated.
func Pool(m [][]float32, outRows, outCols int) [][]float64 {
	out := make([][]float64, outRows)
	for r := range out {
		out[r] = make([]float64, outCols)
	}
	rows := len(m)
	if rows == 0 || outRows == 0 || outCols == 0 {
		return out
	}
	cols := len(m[0])
	if rows >= outRows && cols >= outCols {
		// Shrinking: one pass over the matrix, each value into the block that holds it.
		colOf, rowOf := blocks(outCols, cols), blocks(outRows, rows)
		for i, row := range m {
			dst := out[rowOf[i]]
			for j, v := range row {
				if c := colOf[j]; float64(v) > dst[c] {
					dst[c] = float64(v)
				}
			}
		}
		return out
	}
	for r := range out {
		r0, r1 := span(r, outRows, rows)
		for c := range out[r] {
			c0, c1 := span(c, outCols, cols)
			best := float32(0)
			for i := r0; i < r1; i++ {
				row := m[i]
				for j := c0; j < c1 && j < len(row); j++ {
					if row[j] > best {
						best = row[j]
					}
				}
			}
			out[r][c] = float64(best)
		}
	}
	return out
}

// blocks maps each of src source indices to the output block (of n) whose span holds it.
func blocks(n, src int) []int {
	of := make([]int, src)
	for b := 0; b < n; b++ {
		lo, hi := span(b, n, src)
		for i := lo; i < hi; i++ {
			of[i] = b
		}
	}
	return of
}

// span is the source range [lo, hi) that output index i of n covers in a source of size
// src; never empty.
func span(i, n, src int) (int, int) {
	lo := i * src / n
	hi := (i + 1) * src / n
	if hi <= lo {
		hi = lo + 1
	}
	if hi > src {
		hi = src
	}
	if lo >= src {
		lo = src - 1
	}
	return lo, hi
}

// Map draws matrix m scaled into exactly width×height cells and returns one string per
// line, each exactly width cells wide. With colours each cell holds two values (the upper
// half-block ▀ takes the top value as foreground and the bottom value as background);
// without colours each cell holds one value as a shade glyph. The matrix is max-pooled
// when larger than the area and drawn at its natural size, left-aligned, when smaller.
func (p *Palette) Map(m [][]float32, width, height int, s Scale) []string {
	if width <= 0 || height <= 0 {
		return nil
	}
	perCell := 2
	if p.Profile == NoColor {
		perCell = 1
	}
	rows, cols := len(m), 0
	if rows > 0 {
		cols = len(m[0])
	}
	w := min(width, cols)
	h := min(height, (rows+perCell-1)/perCell)
	px := Pool(m, min(h*perCell, rows), w)
	lines := make([]string, height)
	var b strings.Builder
	for y := 0; y < height; y++ {
		b.Reset()
		if y < h {
			if p.Profile == NoColor {
				for x := 0; x < w; x++ {
					b.WriteString(p.glyphs[p.Level(px[y][x], s)])
				}
			} else {
				top := px[min(2*y, len(px)-1)]
				var bottom []float64
				if 2*y+1 < len(px) {
					bottom = px[2*y+1]
				}
				last := ""
				for x := 0; x < w; x++ {
					seq := "\x1b[" + p.fg[p.Level(top[x], s)]
					if bottom != nil {
						seq += ";" + p.bg[p.Level(bottom[x], s)] + "m"
					} else {
						seq += ";49m"
					}
					if seq != last {
						b.WriteString(seq)
						last = seq
					}
					b.WriteString("▀")
				}
				b.WriteString(reset)
			}
		}
		drawn := w
		if y >= h {
			drawn = 0
		}
		b.WriteString(strings.Repeat(" ", width-drawn))
		lines[y] = b.String()
	}
	return lines
}

// Cells draws one row of values, each value as `each` cells: a background colour, or a
// shade glyph without colours. The string is exactly len(values)·each cells wide.
func (p *Palette) Cells(values []float32, each int, s Scale) string {
	var b strings.Builder
	last := -1
	for _, v := range values {
		l := p.Level(float64(v), s)
		if p.Profile == NoColor {
			b.WriteString(strings.Repeat(p.glyphs[l], each))
			continue
		}
		if l != last {
			b.WriteString("\x1b[" + p.bg[l] + "m")
			last = l
		}
		b.WriteString(strings.Repeat(" ", each))
	}
	if p.Profile != NoColor && len(values) > 0 {
		b.WriteString(reset)
	}
	return b.String()
}

// Text draws text on the colour of weight v, in black or white, whichever reads better;
// without colours the text is followed by the weight's shade glyph.
func (p *Palette) Text(text string, v float64, s Scale) string {
	l := p.Level(v, s)
	if p.Profile == NoColor {
		return text + p.glyphs[l]
	}
	fg := "97"
	if lab(p.Colors[l]).l > 60 {
		fg = "30"
	}
	return "\x1b[" + p.bg[l] + ";" + fg + "m" + text + reset
}

// TextWidthExtra is how many cells Text adds to its text (the shade glyph without colours).
func (p *Palette) TextWidthExtra() int {
	if p.Profile == NoColor {
		return 1
	}
	return 0
}

// Legend draws the colour scale as exactly width cells: "0 ▀▀▀…▀ 1" with the scale's name.
func (p *Palette) Legend(width int, s Scale) string {
	label := " " + s.String()
	bar := width - len("0 ") - len(" 1") - len(label)
	if bar < 2 {
		return strings.Repeat(" ", max(width, 0))
	}
	values := make([]float32, bar)
	for i := range values {
		// Invert the scale so the bar shows evenly spaced colours.
		t := float64(i) / float64(bar-1)
		values[i] = float32(invert(s, t))
	}
	return "0 " + p.Cells(values, 1, s) + " 1" + label
}

func invert(s Scale, t float64) float64 {
	switch s {
	case Sqrt:
		return t * t
	case Log:
		if t == 0 {
			return 0
		}
		return math.Pow(10, 3*(t-1))
	}
	return t
}
