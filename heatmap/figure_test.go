package heatmap

// Figures (WritePNG, WriteGridPNG, WriteSVG, WriteGridSVG) per case, each written to a
// golden file (a change detector: go test ./heatmap -update rewrites them) and checked
// independently of the layout code:
//
//   - PNG: every ink pixel of the decoded picture lies in a text box the layout reports;
//     each box is read back glyph by glyph against basicfont's own masks (OCR), so its text
//     is drawn whole and uncut; boxes overlap neither each other nor any region of palette
//     pixels (the maps and colour bars, found as connected regions of the decoded image);
//     the map region has the size of the matrix (cells × cell size: never pooled when it
//     fits, aspect kept) and cell colours are matplotlib's viridis (checkPNG).
//   - SVG: parsed with encoding/xml; its title, axis names, token labels and colour-scale
//     name are <text> elements, none overlapping another or a map; a map has one <rect>
//     per cell, or an <image> of the pooled size.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

type figureCase struct {
	name string
	head *Figure
	grid *GridFigure
	// What the picture must say, as text boxes of these roles (checked by OCR in the PNG
	// and as <text> elements in the SVG).
	want map[Role][]string
	// The map's drawn size in cells (single head only), and whether it is pooled.
	rows, cols int
	pooled     bool
}

func tokens(n int, long bool) []string {
	words := []string{"The", "␣cat", "␣sat", "␣on", "␣the", "␣mat", "."}
	out := make([]string, n)
	for i := range out {
		out[i] = words[i%len(words)]
		if long && i%5 == 3 {
			out[i] = "␣supercalifragilistic" // 21 runes: cut to 16 with …
		}
	}
	return out
}

func figureCases() []figureCase {
	short := tokens(5, false)
	long := tokens(40, true)
	src := []string{"Le", "␣chat", "␣est", "␣assis", "␣sur", "␣le", "␣tapis"}
	cross := asymmetric()[:3] // 3 target × 7 source
	big := causal(1500)
	grid := [][][][]float32{{causal(5), causal(5)}, {causal(5), causal(5)}, {cross, cross}}
	return []figureCase{
		{name: "short", head: &Figure{Title: "attn2l · L1 H0 · self-attention (query × key)", Matrix: causal(5), QueryLabels: short, KeyLabels: short, Scale: Sqrt},
			want: map[Role][]string{
				RoleTitle: {"attn2l · L1 H0 · self-attention (query × key)"}, RoleAxis: {"key", "query"},
				RoleQuery: {"The", "_cat", "_sat", "_on", "_the"}, RoleKey: {"The", "_cat", "_sat", "_on", "_the"}, RoleScale: {"sqrt scale"},
			}, rows: 5, cols: 5},
		{name: "long", head: &Figure{Title: "demo · L1 H5 · self-attention (query × key)", Subtitle: strconv.Quote(Cut(strings.Repeat("The cat sat on the mat. ", 8), 60)), Matrix: causal(40), QueryLabels: long, KeyLabels: long, Scale: Log},
			want: map[Role][]string{
				RoleSubtitle: {`"The cat sat on the mat. The cat sat on the mat. The cat sat…"`},
				RoleQuery:    {"The", "_cat", "_sat", "_supercalifragi…"}, RoleScale: {"log scale"},
			}, rows: 40, cols: 40},
		{name: "cross", head: &Figure{Title: "encdec · L2 H0 · cross-attention (target × source)", Matrix: cross, QueryLabels: short[:3], KeyLabels: src, QueryAxis: "target", KeyAxis: "source", Scale: Linear},
			want: map[Role][]string{
				RoleAxis: {"source", "target"}, RoleKey: {"Le", "_chat", "_tapis"}, RoleQuery: {"The", "_cat", "_sat"},
				RoleNote: {"target ↓ × source →: 3 × 7"}, RoleScale: {"linear scale"},
			}, rows: 3, cols: 7},
		{name: "single", head: &Figure{Title: "one token", Matrix: [][]float32{{1}}, QueryLabels: []string{"Hi"}, KeyLabels: []string{"Hi"}, Scale: Sqrt},
			want: map[Role][]string{RoleTitle: {"one token"}, RoleAxis: {"key", "query"}, RoleQuery: {"Hi"}, RoleKey: {"Hi"}, RoleScale: {"sqrt scale"}},
			rows: 1, cols: 1},
		{name: "sparse", head: &Figure{Title: "300 tokens", Matrix: causal(300), QueryLabels: tokens(300, false), KeyLabels: tokens(300, false), Scale: Sqrt},
			want: map[Role][]string{RoleQuery: {"0 The", "5 _mat", "295 _cat"}, RoleKey: {"0 The", "10 _on"}},
			rows: 300, cols: 300},
		{name: "pooled", head: &Figure{Title: "big", Matrix: big, Scale: Sqrt},
			want: map[Role][]string{RoleNote: {"query ↓ × key →: 1500 × 1500; max-pooled 1500 → 750 (each cell the max of a 2×2 block)"}},
			rows: 750, cols: 750, pooled: true},
		{name: "grid", grid: &GridFigure{Title: "encdec · every head · 7 source, 3 target tokens", Subtitle: `"Le chat"`, Attn: grid, Cross: []bool{false, false, true}, Scale: Sqrt},
			want: map[Role][]string{
				RoleTitle: {"encdec · every head · 7 source, 3 target tokens"}, RoleHead: {"L0H0", "L0H1", "L1H0", "L2H0 cross", "L2H1 cross"},
				RoleNote: {"each map: query ↓ × key → (target ↓ × source → in cross-attention layers)"}, RoleScale: {"sqrt scale"},
			}},
	}
}

func (c figureCase) layout(t *testing.T) *scene {
	t.Helper()
	var sc *scene
	var err error
	if c.head != nil {
		sc, err = layoutHead(*c.head)
	} else {
		sc, err = layoutGrid(*c.grid)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func (c figureCase) write(t *testing.T, svg bool) []byte {
	t.Helper()
	var b bytes.Buffer
	var err error
	switch {
	case c.head != nil && svg:
		err = WriteSVG(&b, *c.head)
	case c.head != nil:
		err = WritePNG(&b, *c.head)
	case svg:
		err = WriteGridSVG(&b, *c.grid)
	default:
		err = WriteGridPNG(&b, *c.grid)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// goldenBytes compares got with testdata/figures/name (or rewrites it with -update).
func goldenBytes(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "figures", name)
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./heatmap -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		os.WriteFile(filepath.Join(t.TempDir(), name), got, 0o644)
		t.Errorf("%s differs from its golden file (go test ./heatmap -update rewrites it, once the checks pass)", name)
	}
}

func TestFigurePNG(t *testing.T) {
	for _, c := range figureCases() {
		t.Run(c.name, func(t *testing.T) {
			data := c.write(t, false)
			goldenBytes(t, c.name+".png", data)
			img, err := png.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			sc := c.layout(t)
			checkFigurePNG(t, img, sc, c)
		})
	}
}

func TestFigureSVG(t *testing.T) {
	for _, c := range figureCases() {
		t.Run(c.name, func(t *testing.T) {
			data := c.write(t, true)
			goldenBytes(t, c.name+".svg", data)
			pngImg, err := png.Decode(bytes.NewReader(c.write(t, false)))
			if err != nil {
				t.Fatal(err)
			}
			checkFigureSVG(t, data, pngImg.Bounds(), c)
		})
	}
}

// checkFigurePNG is the PNG's independent check (see the top of the file).
func checkFigurePNG(t *testing.T, img image.Image, sc *scene, c figureCase) {
	t.Helper()
	b := img.Bounds()
	isInk := func(x, y int) bool { return color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == ink }
	isPaper := func(x, y int) bool { return color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == paper }
	// Regions of palette pixels (neither paper nor ink): the maps and colour bars.
	regions := paletteRegions(img, isInk, isPaper)
	if len(regions) == 0 {
		t.Fatal("no map in the picture")
	}
	// Every ink pixel belongs to a reported text box.
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if !isInk(x, y) {
				continue
			}
			in := false
			for _, tb := range sc.Texts {
				if (image.Point{x, y}).In(tb.Box) {
					in = true
					break
				}
			}
			if !in {
				t.Fatalf("ink at (%d, %d) belongs to no text box", x, y)
			}
		}
	}
	got := map[Role][]string{}
	for i, tb := range sc.Texts {
		if !tb.Box.In(b) {
			t.Errorf("%s %q at %v is cut by the picture's edge %v", tb.Role, tb.Text, tb.Box, b)
		}
		if read := ocr(img, tb); read != tb.Text {
			t.Errorf("%s at %v reads %q, want %q", tb.Role, tb.Box, read, tb.Text)
		}
		for _, other := range sc.Texts[i+1:] {
			if tb.Box.Overlaps(other.Box) {
				t.Errorf("%s %q at %v overlaps %s %q at %v", tb.Role, tb.Text, tb.Box, other.Role, other.Text, other.Box)
			}
		}
		for _, r := range regions {
			if tb.Box.Overlaps(r) {
				t.Errorf("%s %q at %v overlaps the map or colour bar at %v", tb.Role, tb.Text, tb.Box, r)
			}
		}
		got[tb.Role] = append(got[tb.Role], tb.Text)
	}
	for role, texts := range c.want {
		for _, w := range texts {
			if !contains(got[role], w) {
				t.Errorf("no %s %q in the picture; its %ss: %q", role, w, role, got[role])
			}
		}
	}
	if c.head == nil {
		if len(regions) != len(c.grid.Attn)*len(c.grid.Attn[0])+1 {
			t.Errorf("%d palette regions, want a thumbnail per head and a colour bar", len(regions))
		}
		return
	}
	// The leftmost region is the map (the colour bar stands to its right): rows×cols
	// cells of equal, whole pixels.
	m := regions[0]
	for _, r := range regions {
		if r.Min.X < m.Min.X {
			m = r
		}
	}
	if m.Dx()%c.cols != 0 || m.Dy()%c.rows != 0 || m.Dx()/c.cols != m.Dy()/c.rows {
		t.Fatalf("the map is %d×%d pixels: not %d×%d square cells", m.Dx(), m.Dy(), c.cols, c.rows)
	}
	if !c.pooled {
		checkPNG(t, img, c.head.Matrix, func(v float64) float64 { return c.head.Scale.Apply(v) })
	}
}

// paletteRegions are the bounding boxes of the 4-connected regions of pixels that are
// neither ink nor paper.
func paletteRegions(img image.Image, isInk, isPaper func(x, y int) bool) []image.Rectangle {
	b := img.Bounds()
	seen := make([]bool, b.Dx()*b.Dy())
	idx := func(x, y int) int { return (y-b.Min.Y)*b.Dx() + x - b.Min.X }
	var out []image.Rectangle
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if seen[idx(x, y)] || isInk(x, y) || isPaper(x, y) {
				continue
			}
			r := image.Rect(x, y, x+1, y+1)
			stack := []image.Point{{x, y}}
			seen[idx(x, y)] = true
			for len(stack) > 0 {
				p := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				r = r.Union(image.Rect(p.X, p.Y, p.X+1, p.Y+1))
				for _, d := range []image.Point{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
					n := p.Add(d)
					if n.In(b) && !seen[idx(n.X, n.Y)] && !isInk(n.X, n.Y) && !isPaper(n.X, n.Y) {
						seen[idx(n.X, n.Y)] = true
						stack = append(stack, n)
					}
				}
			}
			out = append(out, r)
		}
	}
	return out
}

// glyphMasks are the 7×13 ink patterns of the characters a figure may show: basicfont's
// (drawn here with its own Drawer) and the package's extra glyphs.
func glyphMasks() map[rune]string {
	out := map[rune]string{}
	for r := rune(0x20); r < 0x7f; r++ {
		tmp := image.NewAlpha(image.Rect(0, 0, 7, 13))
		d := &font.Drawer{Dst: tmp, Src: image.Opaque, Face: basicfont.Face7x13, Dot: fixed.P(0, 11)}
		d.DrawString(string(r))
		var s strings.Builder
		for y := 0; y < 13; y++ {
			for x := 0; x < 7; x++ {
				if tmp.AlphaAt(x, y).A != 0 {
					s.WriteByte('#')
				} else {
					s.WriteByte('.')
				}
			}
		}
		out[r] = s.String()
	}
	for r, rows := range extraGlyphs {
		var s strings.Builder
		for _, row := range rows {
			s.WriteString((row + ".......")[:7])
		}
		out[r] = strings.ReplaceAll(s.String(), " ", ".")
	}
	return out
}

// ocr reads the text in box tb of img, glyph by glyph (a vertical box is turned back
// first), by matching each 7×13 cell's ink with glyphMasks.
func ocr(img image.Image, tb TextBox) string {
	masks := glyphMasks()
	isInk := func(x, y int) bool {
		return image.Pt(x, y).In(img.Bounds()) && color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == ink
	}
	n := tb.Box.Dx() / 7
	if tb.Vertical {
		n = tb.Box.Dy() / 7
	}
	var out strings.Builder
	for i := 0; i < n; i++ {
		var s strings.Builder
		for gy := 0; gy < 13; gy++ {
			for gx := 0; gx < 7; gx++ {
				x, y := tb.Box.Min.X+7*i+gx, tb.Box.Min.Y+gy
				if tb.Vertical {
					// Reading upwards: glyph column gx of letter i is row bottom−1−(7i+gx);
					// the glyph's top row gy is the box's left column.
					x, y = tb.Box.Min.X+gy, tb.Box.Max.Y-1-(7*i+gx)
				}
				if isInk(x, y) {
					s.WriteByte('#')
				} else {
					s.WriteByte('.')
				}
			}
		}
		r := '�'
		for c, m := range masks {
			if m == s.String() && (c != ' ' || r == '�') {
				r = c
			}
		}
		out.WriteRune(r)
	}
	return out.String()
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// svgNode is any SVG element, read generically.
type svgNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Text    string     `xml:",chardata"`
	Nodes   []svgNode  `xml:",any"`
}

func (n svgNode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (n svgNode) num(t *testing.T, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(n.attr(name), 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", n.XMLName.Local, name, n.attr(name), err)
	}
	return v
}

func (n svgNode) walk(f func(svgNode)) {
	f(n)
	for _, c := range n.Nodes {
		c.walk(f)
	}
}

type fbox struct{ x0, y0, x1, y1 float64 }

func (a fbox) overlaps(b fbox) bool { return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1 }

// checkFigureSVG is the SVG's independent check (see the top of the file).
func checkFigureSVG(t *testing.T, data []byte, size image.Rectangle, c figureCase) {
	t.Helper()
	var root svgNode
	if err := xml.Unmarshal(data, &root); err != nil {
		t.Fatalf("the SVG does not parse: %v", err)
	}
	if root.XMLName.Local != "svg" || root.num(t, "width") != float64(size.Dx()) || root.num(t, "height") != float64(size.Dy()) {
		t.Fatalf("<%s width=%q height=%q>, want an svg of the PNG's %v", root.XMLName.Local, root.attr("width"), root.attr("height"), size)
	}
	type svgText struct {
		role, text string
		box        fbox
	}
	var texts []svgText
	var maps []fbox
	var mapCells [][2]int
	root.walk(func(n svgNode) {
		switch {
		case n.XMLName.Local == "text":
			x, y, w := n.num(t, "x"), n.num(t, "y"), n.num(t, "textLength")
			b := fbox{x, y - ascent, x + w, y + descent}
			if tr := n.attr("transform"); tr != "" {
				if tr != fmt.Sprintf("rotate(-90 %s %s)", n.attr("x"), n.attr("y")) {
					t.Fatalf("text %q transform %q", n.Text, tr)
				}
				b = fbox{x - ascent, y - w, x + descent, y}
			}
			if n.num(t, "font-size") > 13 {
				t.Errorf("text %q in a font larger than its line", n.Text)
			}
			texts = append(texts, svgText{n.attr("class"), n.Text, b})
		case n.XMLName.Local == "g" && n.attr("class") == "map":
			box := fbox{math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)}
			cells := 0
			for _, r := range n.Nodes {
				x, y, w, h := r.num(t, "x"), r.num(t, "y"), r.num(t, "width"), r.num(t, "height")
				box = fbox{math.Min(box.x0, x), math.Min(box.y0, y), math.Max(box.x1, x+w), math.Max(box.y1, y+h)}
				switch r.XMLName.Local {
				case "rect":
					cells++
				case "image":
					if !strings.HasPrefix(r.attr("href"), "data:image/png;base64,") {
						t.Fatalf("map image %.40q is not an embedded PNG", r.attr("href"))
					}
					cells = -1
				}
			}
			maps = append(maps, box)
			mapCells = append(mapCells, [2]int{cells, int(n.num(t, "data-rows") * n.num(t, "data-cols"))})
		}
	})
	got := map[Role][]string{}
	for i, tx := range texts {
		got[Role(tx.role)] = append(got[Role(tx.role)], tx.text)
		if tx.box.x0 < 0 || tx.box.y0 < 0 || tx.box.x1 > float64(size.Dx()) || tx.box.y1 > float64(size.Dy()) {
			t.Errorf("%s %q at %v is cut by the picture's edge", tx.role, tx.text, tx.box)
		}
		for _, o := range texts[i+1:] {
			if tx.box.overlaps(o.box) {
				t.Errorf("%s %q overlaps %s %q", tx.role, tx.text, o.role, o.text)
			}
		}
		for _, m := range maps {
			if tx.box.overlaps(m) {
				t.Errorf("%s %q overlaps a map", tx.role, tx.text)
			}
		}
	}
	for role, want := range c.want {
		for _, w := range want {
			if !contains(got[role], w) {
				t.Errorf("no <text class=%q> %q; there are %q", role, w, got[role])
			}
		}
	}
	if c.head != nil {
		if len(maps) != 1 {
			t.Fatalf("%d maps", len(maps))
		}
		m := maps[0]
		if mapCells[0][0] >= 0 && mapCells[0][0] != c.rows*c.cols {
			t.Errorf("the map has %d cells, want %d×%d", mapCells[0][0], c.rows, c.cols)
		}
		if mapCells[0][1] != c.rows*c.cols {
			t.Errorf("the map says %d cells, want %d×%d", mapCells[0][1], c.rows, c.cols)
		}
		// The drawn map has the matrix's aspect, in whole pixels per cell.
		w, h := m.x1-m.x0, m.y1-m.y0
		if w/float64(c.cols) != h/float64(c.rows) || w/float64(c.cols) < 1 {
			t.Errorf("the map is %g×%g: not %d×%d square cells", w, h, c.cols, c.rows)
		}
	} else if len(maps) != len(c.grid.Attn)*len(c.grid.Attn[0]) {
		t.Errorf("%d maps, want one per head", len(maps))
	}
}

// A map that fits is drawn cell for cell, at one pixel or more, never pooled; beyond
// maxMap positions it is pooled by the same factor on both axes, and the picture says so.
func TestPoolOnlyWhenTooBig(t *testing.T) {
	for _, c := range []struct {
		q, k, rows, cols int
		note             string
	}{
		{1000, 1000, 1000, 1000, ""},
		{3, 900, 3, 900, ""},
		{1025, 1025, 513, 513, "max-pooled 1025 → 513"},
		{2048, 100, 1024, 50, "max-pooled 2048×100 → 1024×50"},
	} {
		m := make([][]float32, c.q)
		for i := range m {
			m[i] = make([]float32, c.k)
		}
		sc, err := layoutHead(Figure{Matrix: m})
		if err != nil {
			t.Fatal(err)
		}
		mp := sc.Maps[0]
		if len(mp.Values) != c.rows || len(mp.Values[0]) != c.cols || mp.Pooled != (c.note != "") {
			t.Errorf("%d×%d drawn as %d×%d cells (pooled %t), want %d×%d", c.q, c.k, len(mp.Values), len(mp.Values[0]), mp.Pooled, c.rows, c.cols)
		}
		if mp.Cell < 1 || mp.Box.Dx() != c.cols*mp.Cell || mp.Box.Dy() != c.rows*mp.Cell {
			t.Errorf("%d×%d: box %v for cells of %d", c.q, c.k, mp.Box, mp.Cell)
		}
		said := false
		for _, tb := range sc.Texts {
			said = said || strings.Contains(tb.Text, "max-pooled")
			if c.note != "" && strings.Contains(tb.Text, c.note) {
				said = true
			}
		}
		if said != (c.note != "") {
			t.Errorf("%d×%d: the picture's note about pooling (%q): %t", c.q, c.k, c.note, said)
		}
	}
}

// The layout's text boxes match what the PNG draws: drawn into an empty picture, each
// text inks only its own box (a check of the check's premise).
func TestTextStaysInItsBox(t *testing.T) {
	for _, s := range []string{"query", "_supercalifrag…", "target × source →", "g|y_"} {
		for _, v := range []bool{false, true} {
			tb := horizontal(s, RoleAxis, 5, 5+ascent)
			if v {
				tb = vertical(s, RoleAxis, 5, 120)
			}
			sc := &scene{W: 140, H: 140, Texts: []TextBox{tb}}
			img := sc.image()
			inked := false
			for y := 0; y < 140; y++ {
				for x := 0; x < 140; x++ {
					if img.RGBAAt(x, y) == ink {
						inked = true
						if !(image.Point{x, y}).In(tb.Box) {
							t.Fatalf("%q (vertical %t) inks (%d, %d), outside %v", s, v, x, y, tb.Box)
						}
					}
				}
			}
			if !inked {
				t.Fatalf("%q drew nothing", s)
			}
			if got := ocr(img, tb); got != tb.Text {
				t.Errorf("%q (vertical %t) reads back as %q", s, v, got)
			}
		}
	}
}

// A truncated label ends in the ellipsis glyph (three dots), not in ?.
func TestEllipsisIsDots(t *testing.T) {
	if got := Glyphs(Cut("␣supercalifragilistic", 8)); got != "_superc…" {
		t.Fatalf("cut label %q", got)
	}
	if Glyphs("a…b") != "a…b" || ASCII("…") != "?" {
		t.Fatal("the ellipsis should be drawn by the figure's own glyph")
	}
	dots := 0
	for _, row := range extraGlyphs['…'] {
		dots += strings.Count(row, "#")
	}
	if dots != 3 {
		t.Fatalf("the ellipsis glyph has %d dots", dots)
	}
}
