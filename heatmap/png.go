package heatmap

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Figure is one head's attention map to save as a picture.
type Figure struct {
	Title string
	// Matrix is [query][key].
	Matrix      [][]float32
	QueryLabels []string
	KeyLabels   []string
	Scale       Scale
}

var (
	face       = basicfont.Face7x13
	ink        = color.RGBA{0x22, 0x22, 0x22, 255}
	paper      = color.RGBA{0xff, 0xff, 0xff, 255}
	glyphW     = 7
	lineHeight = 13
)

// WritePNG draws the figure in viridis with token labels on both axes (keys written
// vertically) and a colour bar, and encodes it as PNG. Labels are left out when cells are
// too small to carry them.
func WritePNG(w io.Writer, f Figure) error {
	q := len(f.Matrix)
	if q == 0 {
		return fmt.Errorf("nothing to draw: the attention map is empty")
	}
	k := len(f.Matrix[0])
	cell := max(2, min(16, 960/max(q, k)))
	labelled := cell >= lineHeight-1
	qLabel, kLabel := 0, 0
	if labelled {
		qLabel = (longest(f.QueryLabels) + 1) * glyphW
		kLabel = (longest(f.KeyLabels) + 1) * glyphW
	}
	margin := 12
	titleH := 2 * lineHeight
	barW := 70
	mapX, mapY := margin+qLabel, margin+titleH+kLabel
	width := mapX + k*cell + margin + barW
	height := mapY + q*cell + margin
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), &image.Uniform{paper}, image.Point{}, draw.Src)
	text(img, margin, margin+lineHeight-2, f.Title)
	for i, row := range f.Matrix {
		for j, v := range row {
			c := Viridis(f.Scale.Apply(float64(v)))
			draw.Draw(img, image.Rect(mapX+j*cell, mapY+i*cell, mapX+(j+1)*cell, mapY+(i+1)*cell), &image.Uniform{c}, image.Point{}, draw.Src)
		}
	}
	if labelled {
		for i, l := range f.QueryLabels {
			x := mapX - (len(ASCII(l))+1)*glyphW
			text(img, x, mapY+i*cell+cell/2+4, l)
		}
		for j, l := range f.KeyLabels {
			verticalText(img, mapX+j*cell+cell/2-lineHeight/2, mapY-glyphW/2, l)
		}
	}
	colorBar(img, mapX+k*cell+margin, mapY, min(q*cell, 256), f.Scale)
	return png.Encode(w, img)
}

// GridFigure is every head of a model as thumbnails, layers as rows.
type GridFigure struct {
	Title string
	// Attn is [layer][head][query][key].
	Attn  [][][][]float32
	Scale Scale
}

// WriteGridPNG draws every head as a thumbnail with its L{layer}H{head} name.
func WriteGridPNG(w io.Writer, f GridFigure) error {
	layers := len(f.Attn)
	if layers == 0 {
		return fmt.Errorf("nothing to draw: no layers")
	}
	heads := 0
	for _, l := range f.Attn {
		heads = max(heads, len(l))
	}
	thumb := 128
	gap, margin := 8, 12
	cellH := thumb + lineHeight + gap
	width := margin*2 + heads*(thumb+gap) + 70
	height := margin*2 + 2*lineHeight + layers*cellH
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), &image.Uniform{paper}, image.Point{}, draw.Src)
	text(img, margin, margin+lineHeight-2, f.Title)
	top := margin + 2*lineHeight
	for l, hs := range f.Attn {
		for h, m := range hs {
			x, y := margin+h*(thumb+gap), top+l*cellH
			text(img, x, y+lineHeight-2, fmt.Sprintf("L%dH%d", l, h))
			n := max(len(m), 1)
			px := Pool(m, min(n, thumb), min(n, thumb))
			size := thumb / len(px)
			for i, row := range px {
				for j, v := range row {
					c := Viridis(f.Scale.Apply(v))
					r := image.Rect(x+j*size, y+lineHeight+i*size, x+(j+1)*size, y+lineHeight+(i+1)*size)
					draw.Draw(img, r, &image.Uniform{c}, image.Point{}, draw.Src)
				}
			}
		}
	}
	colorBar(img, margin+heads*(thumb+gap), top+lineHeight, thumb, f.Scale)
	return png.Encode(w, img)
}

// colorBar draws a vertical viridis bar (1 at the top) with tick labels.
func colorBar(img *image.RGBA, x, y, h int, s Scale) {
	for i := 0; i < h; i++ {
		t := 1 - float64(i)/float64(max(h-1, 1))
		c := Viridis(t)
		draw.Draw(img, image.Rect(x, y+i, x+14, y+i+1), &image.Uniform{c}, image.Point{}, draw.Src)
	}
	for _, t := range []float64{1, 0.5, 0} {
		v := invert(s, t)
		yy := y + int((1-t)*float64(h-1))
		text(img, x+18, yy+4, trimFloat(v))
	}
	text(img, x, y+h+lineHeight+2, s.String())
}

func trimFloat(v float64) string { return fmt.Sprintf("%.3g", v) }

func text(img *image.RGBA, x, y int, s string) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(ink), Face: face, Dot: fixed.P(x, y)}
	d.DrawString(ASCII(s))
}

// ASCII spells a label in the characters the PNG font has: the terminal's marks for a
// space, newline and tab become _, \n and \t, a dash becomes -, and any other non-ASCII
// character becomes ?.
func ASCII(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '␣':
			b.WriteByte('_')
		case r == '↵':
			b.WriteString("\\n")
		case r == '⇥':
			b.WriteString("\\t")
		case r == '—' || r == '–':
			b.WriteByte('-')
		case r < 0x20 || r == 0x7f:
		case r < 0x80:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// verticalText writes s rotated 90° counter-clockwise (reading upwards), its first
// letter at (x, bottom): the key-axis labels.
func verticalText(img *image.RGBA, x, bottom int, s string) {
	n := len(ASCII(s))
	if n == 0 {
		return
	}
	tmp := image.NewRGBA(image.Rect(0, 0, n*glyphW+1, lineHeight))
	draw.Draw(tmp, tmp.Bounds(), &image.Uniform{paper}, image.Point{}, draw.Src)
	text(tmp, 0, lineHeight-3, s)
	// Rotate: tmp (tx, ty) → img (x+ty, bottom−tx).
	for tx := 0; tx < tmp.Bounds().Dx(); tx++ {
		for ty := 0; ty < lineHeight; ty++ {
			c := tmp.RGBAAt(tx, ty)
			if c != paper {
				img.SetRGBA(x+ty, bottom-tx, c)
			}
		}
	}
}

func longest(labels []string) int {
	n := 0
	for _, l := range labels {
		n = max(n, len(ASCII(l)))
	}
	return n
}
