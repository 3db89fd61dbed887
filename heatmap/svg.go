package heatmap

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"image"
	"image/png"
	"io"
)

// maxSVGCells is the most cells an SVG map draws as one <rect> each; a larger map is
// embedded as a PNG image of one pixel per cell, scaled up without smoothing, while its
// text, axes and colour bar stay vector.
const maxSVGCells = 128 * 128

// WriteSVG draws the same figure as WritePNG as SVG: the same layout in the same pixel
// units, text as <text> elements (monospace, stretched to the PNG font's width so
// nothing overlaps), each map a <g class="map"> of one <rect> per cell or, beyond 16384
// cells, an embedded PNG <image>, and the colour bar a viridis gradient.
func WriteSVG(w io.Writer, f Figure) error {
	sc, err := layoutHead(f)
	if err != nil {
		return err
	}
	return sc.svg(w)
}

// WriteGridSVG draws the grid figure of WriteGridPNG as SVG.
func WriteGridSVG(w io.Writer, f GridFigure) error {
	sc, err := layoutGrid(f)
	if err != nil {
		return err
	}
	return sc.svg(w)
}

func hex(c interface{ RGBA() (r, g, b, a uint32) }) string {
	r, g, b, _ := c.RGBA()
	return fmt.Sprintf("#%02x%02x%02x", r>>8, g>>8, b>>8)
}

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (sc *scene) svg(out io.Writer) error {
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", sc.W, sc.H, sc.W, sc.H)
	fmt.Fprintf(w, `<defs><linearGradient id="viridis" x1="0" y1="1" x2="0" y2="0">`)
	for i, c := range viridis {
		fmt.Fprintf(w, `<stop offset="%g" stop-color="%s"/>`, float64(i)/float64(len(viridis)-1), hex(c))
	}
	fmt.Fprintf(w, "</linearGradient></defs>\n")
	fmt.Fprintf(w, `<rect class="background" x="0" y="0" width="%d" height="%d" fill="%s"/>`+"\n", sc.W, sc.H, hex(paper))
	for _, m := range sc.Maps {
		rows, cols := len(m.Values), 0
		if rows > 0 {
			cols = len(m.Values[0])
		}
		fmt.Fprintf(w, `<g class="map" data-rows="%d" data-cols="%d" data-cell="%d" data-pooled="%t">`+"\n", rows, cols, m.Cell, m.Pooled)
		if rows*cols <= maxSVGCells {
			for i, row := range m.Values {
				for j, v := range row {
					fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, m.Box.Min.X+j*m.Cell, m.Box.Min.Y+i*m.Cell, m.Cell, m.Cell, hex(Viridis(sc.Scale.Apply(v))))
				}
				w.WriteByte('\n')
			}
		} else {
			img := image.NewRGBA(image.Rect(0, 0, cols, rows))
			for i, row := range m.Values {
				for j, v := range row {
					img.SetRGBA(j, i, Viridis(sc.Scale.Apply(v)))
				}
			}
			var b bytes.Buffer
			if err := png.Encode(&b, img); err != nil {
				return err
			}
			fmt.Fprintf(w, `<image x="%d" y="%d" width="%d" height="%d" preserveAspectRatio="none" style="image-rendering:pixelated" href="data:image/png;base64,%s"/>`+"\n",
				m.Box.Min.X, m.Box.Min.Y, m.Box.Dx(), m.Box.Dy(), base64.StdEncoding.EncodeToString(b.Bytes()))
		}
		fmt.Fprintf(w, "</g>\n")
	}
	for _, b := range sc.Bars {
		fmt.Fprintf(w, `<rect class="colour-bar" x="%d" y="%d" width="%d" height="%d" fill="url(#viridis)"/>`+"\n", b.Min.X, b.Min.Y, b.Dx(), b.Dy())
	}
	for _, t := range sc.Texts {
		x, y, rot := t.Box.Min.X, t.Box.Min.Y+ascent, ""
		if t.Vertical {
			x, y = t.Box.Min.X+ascent, t.Box.Max.Y
			rot = fmt.Sprintf(` transform="rotate(-90 %d %d)"`, x, y)
		}
		fmt.Fprintf(w, `<text class="%s" x="%d" y="%d"%s font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12" textLength="%d" lengthAdjust="spacingAndGlyphs" fill="%s">%s</text>`+"\n",
			t.Role, x, y, rot, textWidth(t.Text), hex(ink), esc(t.Text))
	}
	fmt.Fprintf(w, "</svg>\n")
	return w.Flush()
}
