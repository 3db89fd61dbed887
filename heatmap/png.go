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
	// Title is the first line: the model, the head, the kind of attention.
	Title string
	// Subtitle, when given, is a second line (the prompt, what was switched off).
	Subtitle string
	// Matrix is [query][key].
	Matrix      [][]float32
	QueryLabels []string
	KeyLabels   []string
	// QueryAxis and KeyAxis name the axes; "" is "query" and "key" (AxisNames gives
	// "target" and "source" for cross-attention).
	QueryAxis, KeyAxis string
	Scale              Scale
}

// GridFigure is every head of a model as thumbnails, layers as rows.
type GridFigure struct {
	Title    string
	Subtitle string
	// Attn is [layer][head][query][key]; a nil layer (not exposed) gets no row.
	Attn [][][][]float32
	// Cross marks, per layer, cross-attention (target × source); nil: none.
	Cross []bool
	Scale Scale
}

var (
	face       = basicfont.Face7x13
	ink        = color.RGBA{0x22, 0x22, 0x22, 255}
	paper      = color.RGBA{0xff, 0xff, 0xff, 255}
	glyphW     = 7
	lineHeight = 13
)

// Ink is the colour of the figures' text: a pixel of it is text, never the map.
func Ink() color.RGBA { return ink }

// Paper is the figures' background colour.
func Paper() color.RGBA { return paper }

// WritePNG draws the figure in viridis, labelled (see layoutHead), and encodes it as PNG.
// The map is drawn cell for cell, max-pooled only when it has more than 1024 positions
// along an axis, which the picture then says.
func WritePNG(w io.Writer, f Figure) error {
	sc, err := layoutHead(f)
	if err != nil {
		return err
	}
	return png.Encode(w, sc.image())
}

// WriteGridPNG draws every head as a thumbnail with its L{layer}H{head} name.
func WriteGridPNG(w io.Writer, f GridFigure) error {
	sc, err := layoutGrid(f)
	if err != nil {
		return err
	}
	return png.Encode(w, sc.image())
}

// image draws the scene.
func (sc *scene) image() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, sc.W, sc.H))
	draw.Draw(img, img.Bounds(), &image.Uniform{paper}, image.Point{}, draw.Src)
	for _, m := range sc.Maps {
		for i, row := range m.Values {
			for j, v := range row {
				r := image.Rect(m.Box.Min.X+j*m.Cell, m.Box.Min.Y+i*m.Cell, m.Box.Min.X+(j+1)*m.Cell, m.Box.Min.Y+(i+1)*m.Cell)
				draw.Draw(img, r, &image.Uniform{Viridis(sc.Scale.Apply(v))}, image.Point{}, draw.Src)
			}
		}
	}
	for _, b := range sc.Bars {
		for i := 0; i < b.Dy(); i++ {
			t := 1 - float64(i)/float64(max(b.Dy()-1, 1))
			draw.Draw(img, image.Rect(b.Min.X, b.Min.Y+i, b.Max.X, b.Min.Y+i+1), &image.Uniform{Viridis(t)}, image.Point{}, draw.Src)
		}
	}
	for _, t := range sc.Texts {
		if t.Vertical {
			verticalText(img, t)
		} else {
			text(img, t.Box.Min.X, t.Box.Min.Y+ascent, t.Text)
		}
	}
	return img
}

func trimFloat(v float64) string { return fmt.Sprintf("%.3g", v) }

// text draws s (spelt by Glyphs) with its baseline's left end at (x, y).
func text(img draw.Image, x, y int, s string) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(ink), Face: face}
	for _, r := range Glyphs(s) {
		if g, ok := extraGlyphs[r]; ok {
			for gy, row := range g {
				for gx, c := range row {
					if c == '#' {
						img.Set(x+gx, y-ascent+gy, ink)
					}
				}
			}
		} else {
			d.Dot = fixed.P(x, y)
			d.DrawString(string(r))
		}
		x += glyphW
	}
}

// verticalText draws t rotated 90° counter-clockwise (reading upwards) in its box.
func verticalText(img *image.RGBA, t TextBox) {
	n := t.Box.Dy()
	if n == 0 {
		return
	}
	tmp := image.NewRGBA(image.Rect(0, 0, n, lineHeight))
	draw.Draw(tmp, tmp.Bounds(), &image.Uniform{paper}, image.Point{}, draw.Src)
	text(tmp, 0, ascent, t.Text)
	// Rotate: tmp (tx, ty) → img (x+ty, bottom−1−tx).
	for tx := 0; tx < n; tx++ {
		for ty := 0; ty < lineHeight; ty++ {
			if c := tmp.RGBAAt(tx, ty); c != paper {
				img.SetRGBA(t.Box.Min.X+ty, t.Box.Max.Y-1-tx, c)
			}
		}
	}
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

// extraGlyphs are 7×13 glyphs (rows top to bottom, the baseline under row 10) for the
// characters the figures need that basicfont lacks.
var extraGlyphs = map[rune][13]string{
	'…': {"", "", "", "", "", "", "", "", "", "", ".#.#.#.", "", ""},
	'×': {"", "", "", "", ".#...#.", "..#.#..", "...#...", "..#.#..", ".#...#.", "", "", "", ""},
	'→': {"", "", "", "", "....#..", ".....#.", "######", ".....#.", "....#..", "", "", "", ""},
	'↓': {"", "", "...#...", "...#...", "...#...", "...#...", "...#...", "...#...", ".#.#.#.", "..###..", "...#...", "", ""},
	'·': {"", "", "", "", "", "", "...#...", "", "", "", "", "", ""},
}
