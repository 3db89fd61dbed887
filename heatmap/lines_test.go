package heatmap

import (
	"bytes"
	"encoding/xml"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
	"testing"
)

// A line chart per case: the x axis is logarithmic only past LogDecades; each series'
// values land at the pixels the documented axes give (Inset, ZeroGap), in its colour; a NaN
// breaks the path (one M per run, one point per value); labels never overlap; the zero line
// is drawn; bad charts are refused.
func TestLines(t *testing.T) {
	nan := math.NaN()
	red, blue := color.RGBA{0xd6, 0x27, 0x28, 255}, color.RGBA{0x1f, 0x77, 0xb4, 255}
	for _, c := range []struct {
		name   string
		x      []float64
		log    bool
		a, b   []float64
		points int // M and L commands of a
		runs   int // M commands of a
	}{
		{"linear", []float64{0, 100, 200, 400}, false, []float64{0.1, 0.5, 0.9, 0.7}, []float64{0.1, 0.51, 0.88, 0.69}, 4, 1},
		{"log with zero", []float64{0, 1e3, 1e4, 1e6}, true, []float64{0.2, 0.3, nan, 0.6}, []float64{0.2, 0.31, 0.4, 0.61}, 3, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			if LogX(c.x) != c.log {
				t.Fatalf("LogX = %t", !c.log)
			}
			chart := LineChart{Title: "t", X: c.x, XLabel: "tokens seen", Panels: []Panel{
				{YLabel: "score", Series: []Series{{Name: "A", Y: c.a, Colour: red}, {Name: "B", Y: c.b, Colour: blue, Dashed: true}, {Name: "C", Y: c.b, Faint: true}}, Threshold: 0.4},
				{YLabel: "icl", Series: []Series{{Name: "icl", Y: []float64{-0.1, 0.2, 0.1, 0.3}, Colour: blue}}, ZeroLine: true, Threshold: nan},
			}}
			sc, err := layoutLines(chart)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := WriteLinesPNG(&buf, chart); err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(&buf)
			if err != nil {
				t.Fatal(err)
			}
			p := sc.panels[0]
			left, right := float64(p.Box.Min.X+Inset), float64(p.Box.Max.X-1-Inset)
			xOf := func(v float64) int {
				if !c.log {
					return int(math.Round(left + (v-c.x[0])/(c.x[len(c.x)-1]-c.x[0])*(right-left)))
				}
				if v == 0 {
					return int(math.Round(left))
				}
				l0 := left + ZeroGap
				return int(math.Round(l0 + math.Log10(v/c.x[1])/math.Log10(c.x[len(c.x)-1]/c.x[1])*(right-l0)))
			}
			top, bottom := float64(p.Box.Min.Y+Inset), float64(p.Box.Max.Y-1-Inset)
			for i, v := range c.a {
				if math.IsNaN(v) {
					continue
				}
				x, y := xOf(c.x[i]), int(math.Round(bottom-(v-p.y.lo)/(p.y.hi-p.y.lo)*(bottom-top)))
				if got := color.RGBAModel.Convert(img.At(x, y)); got != red {
					t.Errorf("A at x %g: pixel (%d, %d) is %v", c.x[i], x, y, got)
				}
			}
			z := sc.panels[1]
			y0 := int(math.Round(float64(z.Box.Max.Y-1-Inset) - (0-z.y.lo)/(z.y.hi-z.y.lo)*float64(z.Box.Dy()-1-2*Inset)))
			if got := color.RGBAModel.Convert(img.At(z.Box.Min.X+3, y0)); got != ZeroColour {
				t.Errorf("zero line at y %d: %v", y0, got)
			}
			// Labels: A, B and icl, none overlapping another text.
			var labels []TextBox
			for _, tb := range sc.Texts {
				if tb.Role == RoleSeries {
					labels = append(labels, tb)
				}
			}
			if len(labels) != 3 {
				t.Errorf("%d series labels, want 3 (the faint series has none)", len(labels))
			}
			for i, a := range sc.Texts {
				for _, b := range sc.Texts[i+1:] {
					if a.Box.Overlaps(b.Box) {
						t.Errorf("%q %v overlaps %q %v", a.Text, a.Box, b.Text, b.Box)
					}
				}
				if !a.Box.In(image.Rect(0, 0, sc.W, sc.H)) {
					t.Errorf("%q %v is cut by the %dx%d picture", a.Text, a.Box, sc.W, sc.H)
				}
			}
			buf.Reset()
			if err := WriteLinesSVG(&buf, chart); err != nil {
				t.Fatal(err)
			}
			dec := xml.NewDecoder(&buf)
			paths := map[string]string{}
			for {
				tok, err := dec.Token()
				if err != nil {
					if err.Error() != "EOF" {
						t.Fatalf("the SVG does not parse: %v", err)
					}
					break
				}
				if e, ok := tok.(xml.StartElement); ok && e.Name.Local == "path" {
					var name, d, class string
					for _, a := range e.Attr {
						switch a.Name.Local {
						case "data-name":
							name = a.Value
						case "d":
							d = a.Value
						case "class":
							class = a.Value
						}
					}
					if strings.HasPrefix(class, "series") {
						paths[name] = d
					}
				}
			}
			if len(paths) != 4 {
				t.Errorf("%d series paths, want 4: %v", len(paths), paths)
			}
			if d := paths["A"]; strings.Count(d, "M")+strings.Count(d, "L") != c.points || strings.Count(d, "M") != c.runs {
				t.Errorf("A's path %q: want %d points in %d runs", d, c.points, c.runs)
			}
		})
	}
	for _, bad := range []LineChart{
		{},
		{X: []float64{1}},
		{X: []float64{1, 2}, Panels: []Panel{{Series: []Series{{Y: []float64{1}}}}}},
	} {
		if err := WriteLinesPNG(&bytes.Buffer{}, bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// XScale overrides LogX's choice; log on x values with nothing positive falls back to a
// linear axis (there is nothing to take a log of); an unknown scale is an error.
func TestLineChartXScale(t *testing.T) {
	panel := []Panel{{YLabel: "score", Series: []Series{{Name: "A", Y: []float64{0.1, 0.2, 0.3}}}, Threshold: math.NaN()}}
	for _, c := range []struct {
		scale string
		x     []float64
		log   bool
	}{
		{"", []float64{0, 1e3, 1e6}, true},
		{"linear", []float64{0, 1e3, 1e6}, false},
		{"log", []float64{0, 10, 20}, true},
		{"", []float64{0, 10, 20}, false},
		{"log", []float64{0, 0, 0}, false},
	} {
		sc, err := layoutLines(LineChart{Title: "t", X: c.x, XLabel: "tokens", XScale: c.scale, Panels: panel})
		if err != nil {
			t.Fatalf("scale %q x %v: %v", c.scale, c.x, err)
		}
		if sc.x.log != c.log {
			t.Errorf("scale %q x %v: log axis %v, want %v", c.scale, c.x, sc.x.log, c.log)
		}
		if math.IsInf(sc.x.lo, 0) || math.IsInf(sc.x.hi, 0) || math.IsNaN(sc.x.lo) || math.IsNaN(sc.x.hi) {
			t.Errorf("scale %q x %v: axis bounds %v..%v", c.scale, c.x, sc.x.lo, sc.x.hi)
		}
	}
	if _, err := layoutLines(LineChart{Title: "t", X: []float64{1, 2}, XScale: "cubic", Panels: panel}); err == nil {
		t.Error("XScale cubic: no error")
	}
}
