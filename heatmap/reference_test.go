package heatmap

// Checks of the palettes and of what Map, Cells, Legend and WritePNG draw against references
// that do not come from this package: matplotlib's published viridis table
// (testdata/viridis-matplotlib.txt), go-colorful's CIELAB (not lab() in palette.go), xterm's
// own definition of its 256 colours, the Unicode names of the shade glyphs, and WCAG's
// contrast ratio. Expected values are computed here from the matrix drawn, never from the
// palette under test.

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	colorful "github.com/lucasb-eyer/go-colorful"

	"github.com/attnscope/attnscope/internal/testutil"
)

const viridisFile = "testdata/viridis-matplotlib.txt"

var (
	viridisOnce  sync.Once
	viridisTable []colorful.Color
	viridisErr   error
)

// matplotlibViridis is matplotlib's 256-entry viridis, index 0 (t = 0) to 255 (t = 1).
func matplotlibViridis(t *testing.T) []colorful.Color {
	t.Helper()
	viridisOnce.Do(func() {
		f, err := os.Open(viridisFile)
		if err != nil {
			viridisErr = err
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			var rgb [3]float64
			fields := strings.Fields(line)
			if len(fields) != 3 {
				viridisErr = fmt.Errorf("%s: line %q does not hold three numbers", viridisFile, line)
				return
			}
			for i, s := range fields {
				if rgb[i], err = strconv.ParseFloat(s, 64); err != nil {
					viridisErr = fmt.Errorf("%s: %v", viridisFile, err)
					return
				}
			}
			viridisTable = append(viridisTable, colorful.Color{R: rgb[0], G: rgb[1], B: rgb[2]})
		}
		if viridisErr = sc.Err(); viridisErr == nil && len(viridisTable) != 256 {
			viridisErr = fmt.Errorf("%s has %d entries, want 256", viridisFile, len(viridisTable))
		}
	})
	if viridisErr != nil {
		t.Fatal(viridisErr)
	}
	return viridisTable
}

func cf(c color.Color) colorful.Color {
	out, _ := colorful.MakeColor(c)
	return out
}

// lightness is CIELAB L* (0–100) by go-colorful.
func lightness(c color.Color) float64 {
	l, _, _ := cf(c).Lab()
	return 100 * l
}

// deltaE is the CIE76 colour difference (ΔE*ab, 0–100 scale) by go-colorful.
func deltaE(a, b colorful.Color) float64 { return 100 * a.DistanceLab(b) }

// nearestViridis is the position t in [0, 1] of the matplotlib entry closest to c, and the
// distance to it.
func nearestViridis(t *testing.T, c color.Color) (float64, float64) {
	tab := matplotlibViridis(t)
	best, bestD := 0, math.Inf(1)
	for i, v := range tab {
		if d := deltaE(cf(c), v); d < bestD {
			best, bestD = i, d
		}
	}
	return float64(best) / 255, bestD
}

// The committed table is matplotlib's, where matplotlib is installed (the set-up installs it;
// under CI it must be there).
func TestViridisTableIsMatplotlibs(t *testing.T) {
	tab := matplotlibViridis(t)
	py := testutil.Python(t, "matplotlib")
	out, err := exec.Command(py, "-c", "from matplotlib._cm_listed import _viridis_data as v\nfor r, g, b in v: print(r, g, b)").Output()
	if err != nil {
		t.Fatalf("reading matplotlib's viridis: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(tab) {
		t.Fatalf("matplotlib has %d entries, the committed table %d", len(lines), len(tab))
	}
	for i, l := range lines {
		var r, g, b float64
		if _, err := fmt.Sscan(l, &r, &g, &b); err != nil {
			t.Fatalf("matplotlib line %d %q: %v", i, l, err)
		}
		if c := tab[i]; math.Abs(c.R-r) > 5e-7 || math.Abs(c.G-g) > 5e-7 || math.Abs(c.B-b) > 5e-7 {
			t.Fatalf("entry %d: committed %v, matplotlib %v %v %v", i, c, r, g, b)
		}
	}
}

// Viridis(t) is matplotlib's viridis at t: the ends exactly (#440154, #FDE725), every one of
// the 256 entries within ΔE 3 (Viridis interpolates 11 control points in sRGB; measured
// worst 2.54 at entry 242, where a just-noticeable difference is about 2.3). A reversed
// ramp, a swapped channel, another colormap or a shifted parameter is off by 10 or more.
func TestViridisMatchesMatplotlib(t *testing.T) {
	tab := matplotlibViridis(t)
	for _, end := range []struct {
		t   float64
		hex string
	}{{0, "#440154"}, {1, "#fde725"}} {
		if got, want := cf(Viridis(end.t)).Hex(), end.hex; got != want {
			t.Errorf("Viridis(%g) = %s, matplotlib %s", end.t, got, want)
		}
		if got, want := cf(Viridis(end.t)).Hex(), tab[int(end.t*255)].Clamped().Hex(); got != want {
			t.Errorf("Viridis(%g) = %s, table %s", end.t, got, want)
		}
	}
	worst, at := 0.0, 0
	for i, want := range tab {
		if d := deltaE(cf(Viridis(float64(i)/255)), want); d > worst {
			worst, at = d, i
		}
	}
	if worst > 3 {
		t.Errorf("Viridis is ΔE %.2f from matplotlib's entry %d (want ≤ 3)", worst, at)
	}
	t.Logf("largest ΔE from matplotlib: %.2f at entry %d", worst, at)
}

// lab() (used to build the 256-colour ramp and pick text colours) agrees with go-colorful's
// CIELAB within 0.05 on every xterm colour and along viridis.
func TestLabMatchesColorful(t *testing.T) {
	var colours []color.RGBA
	for idx := 0; idx < 256; idx++ {
		colours = append(colours, xterm256(idx))
	}
	for i := 0; i <= 100; i++ {
		colours = append(colours, Viridis(float64(i)/100))
	}
	for _, c := range colours {
		l, a, b := cf(c).Lab()
		got := lab(c)
		if math.Abs(got.l-100*l) > 0.05 || math.Abs(got.a-100*a) > 0.05 || math.Abs(got.b-100*b) > 0.05 {
			t.Errorf("lab(%v) = %.3f %.3f %.3f, go-colorful %.3f %.3f %.3f", c, got.l, got.a, got.b, 100*l, 100*a, 100*b)
		}
	}
}

// xtermRGB is xterm's colour for a 256-colour index as xterm defines it: the 16 system
// colours of its default resources (XTerm-col.ad), the 6×6×6 cube of 256colres.pl (level
// n is 0 or 55 + 40n) and the 24 greys (8 + 10n).
func xtermRGB(idx int) color.RGBA {
	system := []string{"000000", "cd0000", "00cd00", "cdcd00", "0000ee", "cd00cd", "00cdcd", "e5e5e5",
		"7f7f7f", "ff0000", "00ff00", "ffff00", "5c5cff", "ff00ff", "00ffff", "ffffff"}
	level := func(n int) uint8 {
		if n == 0 {
			return 0
		}
		return uint8(55 + 40*n)
	}
	switch {
	case idx < 16:
		c, _ := colorful.Hex("#" + system[idx])
		r, g, b := c.RGB255()
		return color.RGBA{r, g, b, 255}
	case idx < 232:
		n := idx - 16
		return color.RGBA{level(n / 36), level(n / 6 % 6), level(n % 6), 255}
	}
	g := uint8(8 + 10*(idx-232))
	return color.RGBA{g, g, g, 255}
}

// xterm256 gives xterm's colours: every index against xterm's definition, and a few against
// the published chart.
func TestXterm256(t *testing.T) {
	for idx := 0; idx < 256; idx++ {
		if got, want := xterm256(idx), xtermRGB(idx); got != want {
			t.Errorf("xterm256(%d) = %v, xterm %v", idx, got, want)
		}
	}
	for idx, hex := range map[int]string{16: "#000000", 21: "#0000ff", 61: "#5f5faf", 110: "#87afd7", 196: "#ff0000", 231: "#ffffff", 232: "#080808", 244: "#808080", 255: "#eeeeee"} {
		if got := cf(xterm256(idx)).Hex(); got != hex {
			t.Errorf("xterm256(%d) = %s, the xterm chart says %s", idx, got, hex)
		}
	}
}

// Every colour ramp gets lighter at every level (go-colorful's L*), runs from dark (L* < 25)
// to light (L* > 85), and the 256- and 24-bit ones follow matplotlib's viridis in order: each
// level within ΔE 18 of the curve (the limit viridis256 chooses by; 24-bit within 3), at a
// position along it that never goes back.
func TestPalettesAgainstColorful(t *testing.T) {
	for _, c := range []struct {
		p        Profile
		minLevel int
		onCurve  float64 // largest ΔE from viridis; 0: not a viridis ramp
	}{{TrueColor, 64, 3}, {ANSI256, 12, 18}, {ANSI16, 8, 0}} {
		t.Run(c.p.String(), func(t *testing.T) {
			p := NewPalette(c.p)
			if len(p.Colors) < c.minLevel || p.Levels() != len(p.Colors) {
				t.Fatalf("%d colours, %d levels; want at least %d of each", len(p.Colors), p.Levels(), c.minLevel)
			}
			if l := lightness(p.Colors[0]); l > 25 {
				t.Errorf("darkest level has L* %.1f", l)
			}
			if l := lightness(p.Colors[len(p.Colors)-1]); l < 85 {
				t.Errorf("brightest level has L* %.1f", l)
			}
			prevT := -1.0
			for i, col := range p.Colors {
				if i > 0 && lightness(col) <= lightness(p.Colors[i-1]) {
					t.Errorf("level %d (L* %.1f) is not lighter than level %d (L* %.1f)", i, lightness(col), i-1, lightness(p.Colors[i-1]))
				}
				if c.onCurve == 0 {
					continue
				}
				pos, d := nearestViridis(t, col)
				if d > c.onCurve {
					t.Errorf("level %d %s is ΔE %.1f from viridis", i, cf(col).Hex(), d)
				}
				if pos < prevT {
					t.Errorf("level %d lies at %.3f along viridis, before level %d at %.3f", i, pos, i-1, prevT)
				}
				prevT = pos
			}
		})
	}
}

// wcagContrast is WCAG 2's contrast ratio between two colours.
func wcagContrast(a, b color.Color) float64 {
	lum := func(c color.Color) float64 {
		r, g, bl := cf(c).LinearRgb()
		return 0.2126*r + 0.7152*g + 0.0722*bl
	}
	la, lb := lum(a), lum(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

// Text writes black or white on a level's colour, whichever WCAG 2 says is at least 3:1 (its
// floor for large text; labels are bold-ish single tokens). Measured: every level reaches
// 3:1; between L* 49 and 60 black would read better than the white chosen (see the report).
func TestTextContrast(t *testing.T) {
	black, white := color.RGBA{0, 0, 0, 255}, color.RGBA{255, 255, 255, 255}
	for _, prof := range []Profile{TrueColor, ANSI256, ANSI16} {
		p := NewPalette(prof)
		for l := 0; l < p.Levels(); l++ {
			// The weight that lands on level l under the linear scale.
			v := float64(l) / float64(p.Levels()-1)
			cells := decodeSGR(t, p.Text("x", v, Linear))
			if len(cells) != 1 {
				t.Fatalf("%s level %d: %d cells for one letter", prof, l, len(cells))
			}
			fg := black
			if cells[0].fg == sgrWhite {
				fg = white
			} else if cells[0].fg != sgrBlack {
				t.Fatalf("%s level %d: text colour %q, want black (30) or bright white (97)", prof, l, cells[0].fg)
			}
			bg := cellColour(t, cells[0].bg)
			if r := wcagContrast(fg, bg); r < 3 {
				t.Errorf("%s level %d (%s): contrast %.2f:1 for the text colour chosen", prof, l, cf(bg).Hex(), r)
			}
		}
	}
}

// cell is one printed character with the SGR colours in force.
type cell struct {
	r      rune
	fg, bg string // "38;2;r;g;b", "38;5;n", "31", "" (default) …
}

const (
	sgrBlack = "30"
	sgrWhite = "97"
)

// decodeSGR reads a string of SGR colour sequences and text into cells, as a terminal does:
// 0 resets, 38/48 take 5;n or 2;r;g;b, 30–37/90–97 and 40–47/100–107 are the 16 colours,
// 39/49 the defaults. Anything else fails the test.
func decodeSGR(t *testing.T, s string) []cell {
	t.Helper()
	var out []cell
	fg, bg := "", ""
	for len(s) > 0 {
		if strings.HasPrefix(s, "\x1b[") {
			end := strings.IndexByte(s, 'm')
			if end < 0 {
				t.Fatalf("unterminated escape in %q", s)
			}
			params := strings.Split(s[2:end], ";")
			s = s[end+1:]
			for i := 0; i < len(params); i++ {
				n, err := strconv.Atoi(params[i])
				if err != nil {
					t.Fatalf("escape parameter %q", params[i])
				}
				switch {
				case n == 0:
					fg, bg = "", ""
				case n == 38 || n == 48:
					k := 3
					if i+1 < len(params) && params[i+1] == "2" {
						k = 5
					}
					if i+k > len(params) {
						t.Fatalf("short colour in %q", params)
					}
					v := strings.Join(params[i:i+k], ";")
					if n == 38 {
						fg = v
					} else {
						bg = v
					}
					i += k - 1
				case n >= 30 && n <= 37 || n >= 90 && n <= 97:
					fg = params[i]
				case n >= 40 && n <= 47 || n >= 100 && n <= 107:
					bg = params[i]
				case n == 39:
					fg = ""
				case n == 49:
					bg = ""
				default:
					t.Fatalf("unexpected SGR parameter %d", n)
				}
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s)
		out = append(out, cell{r, fg, bg})
		s = s[size:]
	}
	return out
}

// cellColour is the RGB a terminal with xterm's colours shows for an SGR colour (fg or bg).
func cellColour(t *testing.T, sgr string) color.RGBA {
	t.Helper()
	p := strings.Split(sgr, ";")
	num := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("colour %q", sgr)
		}
		return n
	}
	switch {
	case len(p) == 5 && p[1] == "2":
		return color.RGBA{uint8(num(p[2])), uint8(num(p[3])), uint8(num(p[4])), 255}
	case len(p) == 3 && p[1] == "5":
		return xtermRGB(num(p[2]))
	case len(p) == 1 && sgr != "":
		n := num(p[0])
		switch {
		case n >= 30 && n <= 37:
			return xtermRGB(n - 30)
		case n >= 40 && n <= 47:
			return xtermRGB(n - 40)
		case n >= 90 && n <= 97:
			return xtermRGB(n - 90 + 8)
		case n >= 100 && n <= 107:
			return xtermRGB(n - 100 + 8)
		}
	}
	t.Fatalf("no colour %q", sgr)
	return color.RGBA{}
}

// shades are the NoColor glyphs by the coverage Unicode gives them: space, LIGHT SHADE
// (25 %), MEDIUM SHADE (50 %), DARK SHADE (75 %), FULL BLOCK.
var shades = []rune{' ', '░', '▒', '▓', '█'}

// drawn is what a test reads back from a map: per matrix entry the colour or glyph shown.
type drawn struct {
	q, k int
	col  color.RGBA // colour profiles
	r    rune       // NoColor
}

// readMap decodes Map's lines for a matrix that fits the area (no pooling): with colours,
// cell (y, x) shows query 2y in its upper half (foreground of ▀) and query 2y+1 in its lower
// half (background; default background past the last query); without colours, query y.
func readMap(t *testing.T, p *Palette, lines []string, rows, cols int) []drawn {
	t.Helper()
	var out []drawn
	for y, line := range lines {
		cells := decodeSGR(t, line)
		for x, c := range cells {
			if x >= cols {
				if c.r != ' ' || c.bg != "" {
					t.Fatalf("line %d: cell %d past the %d keys is %q on %q", y, x, cols, c.r, c.bg)
				}
				continue
			}
			if p.Profile == NoColor {
				if y < rows {
					out = append(out, drawn{q: y, k: x, r: c.r})
				}
				continue
			}
			if 2*y >= rows {
				if c.r != ' ' {
					t.Fatalf("line %d past the %d queries holds %q", y, rows, c.r)
				}
				continue
			}
			if c.r != '▀' {
				t.Fatalf("line %d cell %d is %q, want ▀", y, x, c.r)
			}
			out = append(out, drawn{q: 2 * y, k: x, col: cellColour(t, c.fg)})
			switch {
			case 2*y+1 < rows:
				out = append(out, drawn{q: 2*y + 1, k: x, col: cellColour(t, c.bg)})
			case c.bg != "":
				t.Fatalf("line %d cell %d: the lower half has %q but there is no query %d", y, x, c.bg, 2*y+1)
			}
		}
	}
	return out
}

// asymmetric is a 5×7 map (more keys than queries) whose transposition, or any exchange of
// rows or columns, puts different values in different places.
func asymmetric() [][]float32 {
	m := make([][]float32, 5)
	for q := range m {
		m[q] = make([]float32, 7)
		for k := range m[q] {
			m[q][k] = float32((q*7+k)%11) / 10 // 0 … 1 in steps of 0.1
		}
	}
	return m
}

// Map draws each query and key where it belongs, in the colour the value should have:
// truecolor within one level of matplotlib's viridis at √v (the sqrt scale), 256 and 16
// colours ordered in lightness as the values are, NoColor with the Unicode shade whose
// coverage is nearest √v. A transposed or mirrored map fails each of these.
func TestMapDrawsTheMatrix(t *testing.T) {
	for _, m := range [][][]float32{asymmetric(), causal(12)} {
		rows, cols := len(m), len(m[0])
		for _, prof := range profiles() {
			t.Run(fmt.Sprintf("%s/%dx%d", prof, rows, cols), func(t *testing.T) {
				p := NewPalette(prof)
				height := (rows + 1) / 2
				if prof == NoColor {
					height = rows
				}
				cells := readMap(t, p, p.Map(m, cols+3, height+1, Sqrt), rows, cols)
				if len(cells) != rows*cols {
					t.Fatalf("read %d entries back, want %d", len(cells), rows*cols)
				}
				checkDrawn(t, prof, cells, func(q, k int) float64 { return math.Sqrt(float64(m[q][k])) })
			})
		}
	}
}

// checkDrawn fails the test for each entry drawnMismatches reports.
func checkDrawn(t *testing.T, prof Profile, cells []drawn, want func(q, k int) float64) {
	t.Helper()
	for _, m := range drawnMismatches(t, prof, cells, want) {
		t.Error(m)
	}
}

// drawnMismatches checks the colours or glyphs read back against want(q, k) in [0, 1]:
// truecolor within 1.5 levels of matplotlib's viridis at want, 256 and 16 colours ordered in
// lightness as the values are (0 darkest, 1 brightest), NoColor the Unicode shade nearest
// want. It returns one line per wrong entry.
func drawnMismatches(t *testing.T, prof Profile, cells []drawn, want func(q, k int) float64) []string {
	t.Helper()
	var bad []string
	switch prof {
	case TrueColor:
		for _, c := range cells {
			pos, d := nearestViridis(t, c.col)
			if d > 3 || math.Abs(pos-want(c.q, c.k)) > 1.5/63 {
				bad = append(bad, fmt.Sprintf("query %d key %d: %s is viridis at %.3f (ΔE %.1f), want %.3f", c.q, c.k, cf(c.col).Hex(), pos, d, want(c.q, c.k)))
			}
		}
	case NoColor:
		for _, c := range cells {
			if w := shades[int(math.Round(want(c.q, c.k)*4))]; c.r != w {
				bad = append(bad, fmt.Sprintf("query %d key %d: %q, want %q for %.3f", c.q, c.k, c.r, w, want(c.q, c.k)))
			}
		}
	default:
		// Lightness must order the entries as their values do (levels are coarse: entries
		// closer than one level may share a colour).
		sorted := append([]drawn(nil), cells...)
		sort.SliceStable(sorted, func(i, j int) bool { return want(sorted[i].q, sorted[i].k) < want(sorted[j].q, sorted[j].k) })
		levels := float64(NewPalette(prof).Levels() - 1)
		for i := 1; i < len(sorted); i++ {
			a, b := sorted[i-1], sorted[i]
			wa, wb := want(a.q, a.k), want(b.q, b.k)
			la, lb := lightness(a.col), lightness(b.col)
			if la > lb+1e-9 || (wb-wa > 1.01/levels && la >= lb) {
				bad = append(bad, fmt.Sprintf("query %d key %d (%.3f) has L* %.1f, query %d key %d (%.3f) L* %.1f", a.q, a.k, wa, la, b.q, b.k, wb, lb))
			}
		}
		for _, c := range cells {
			if want(c.q, c.k) == 0 && lightness(c.col) > 25 {
				bad = append(bad, fmt.Sprintf("query %d key %d is 0 but drawn with L* %.1f", c.q, c.k, lightness(c.col)))
			}
			if want(c.q, c.k) == 1 && lightness(c.col) < 85 {
				bad = append(bad, fmt.Sprintf("query %d key %d is 1 but drawn with L* %.1f", c.q, c.k, lightness(c.col)))
			}
		}
	}
	return bad
}

// The check above fails on a transposed map: causal(12) drawn transposed, read back against
// causal(12), is wrong in every profile.
func TestMapCheckCatchesTransposition(t *testing.T) {
	m := causal(12)
	mt := make([][]float32, len(m))
	for k := range mt {
		mt[k] = make([]float32, len(m))
		for q := range m {
			mt[k][q] = m[q][k]
		}
	}
	for _, prof := range profiles() {
		p := NewPalette(prof)
		height := len(m) / 2
		if prof == NoColor {
			height = len(m)
		}
		cells := readMap(t, p, p.Map(mt, len(m), height, Sqrt), len(m), len(m))
		if bad := drawnMismatches(t, prof, cells, func(q, k int) float64 { return math.Sqrt(float64(m[q][k])) }); len(bad) == 0 {
			t.Errorf("%s: a transposed map passes the check", prof)
		}
	}
}

// Cells and Legend: values left to right, each in its colour; the legend's bar runs from the
// darkest level to the brightest, evenly in the scale's terms.
func TestCellsAndLegend(t *testing.T) {
	values := []float32{0, 0.04, 0.25, 0.5, 0.81, 1}
	for _, prof := range profiles() {
		t.Run(prof.String(), func(t *testing.T) {
			p := NewPalette(prof)
			cells := decodeSGR(t, p.Cells(values, 2, Sqrt))
			if len(cells) != 2*len(values) {
				t.Fatalf("%d cells for %d values of 2", len(cells), len(values))
			}
			var got []drawn
			for i := range values {
				a, b := cells[2*i], cells[2*i+1]
				if a != b {
					t.Fatalf("value %d drawn as %v then %v", i, a, b)
				}
				d := drawn{q: 0, k: i, r: a.r}
				if prof != NoColor {
					if a.r != ' ' {
						t.Fatalf("value %d: %q on a colour, want a space", i, a.r)
					}
					d.col = cellColour(t, a.bg)
				}
				got = append(got, d)
			}
			checkDrawn(t, prof, got, func(_, k int) float64 { return math.Sqrt(float64(values[k])) })

			for _, s := range []Scale{Linear, Sqrt, Log} {
				legend := p.Legend(40, s)
				if !strings.HasPrefix(legend, "0 ") || !strings.HasSuffix(legend, " 1 "+s.String()) {
					t.Fatalf("legend %q", legend)
				}
				bar := decodeSGR(t, strings.TrimSuffix(strings.TrimPrefix(legend, "0 "), " 1 "+s.String()))
				var drawnBar []drawn
				for i, c := range bar {
					d := drawn{k: i, r: c.r}
					if prof != NoColor {
						d.col = cellColour(t, c.bg)
					}
					drawnBar = append(drawnBar, d)
				}
				// Evenly spaced colours: entry i of n shows i/(n−1) whatever the scale.
				checkDrawn(t, prof, drawnBar, func(_, k int) float64 { return float64(k) / float64(len(bar)-1) })
			}
		})
	}
}

// WritePNG paints cell (query i, key j) at row i, column j in matplotlib's viridis at √v, the
// cells square and equal; the colour bar runs from viridis(1) at the top to viridis(0).
func TestPNGAgainstMatplotlib(t *testing.T) {
	m := asymmetric()
	var b bytes.Buffer
	if err := WritePNG(&b, Figure{Title: "asymmetric", Matrix: m, Scale: Sqrt}); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	checkPNG(t, img, m, math.Sqrt)
}

// checkPNG finds the map in img: its top-left cell is the first pixel, in reading order, of
// matplotlib's colour for m[0][0] (the title and labels are dark ink on white), its cell size
// the run of that colour; then checks every cell's centre.
func checkPNG(t *testing.T, img image.Image, m [][]float32, scale func(float64) float64) {
	t.Helper()
	tab := matplotlibViridis(t)
	want := func(q, k int) colorful.Color { return tab[int(math.Round(scale(float64(m[q][k]))*255))] }
	close := func(x, y int, c colorful.Color) bool { return deltaE(cf(img.At(x, y)), c) < 3 }
	bounds := img.Bounds()
	x0, y0 := -1, -1
	for y := bounds.Min.Y; y < bounds.Max.Y && x0 < 0; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			if close(x, y, want(0, 0)) {
				x0, y0 = x, y
				break
			}
		}
	}
	if x0 < 0 {
		t.Fatalf("no pixel of viridis(%.3f) for query 0 key 0", scale(float64(m[0][0])))
	}
	size := 0
	for close(x0+size, y0, want(0, 0)) {
		size++
	}
	if size < 2 {
		t.Fatalf("cell of %d pixels", size)
	}
	for q := range m {
		for k := range m[q] {
			x, y := x0+k*size+size/2, y0+q*size+size/2
			if got := cf(img.At(x, y)); deltaE(got, want(q, k)) > 3 {
				t.Errorf("query %d key %d at (%d, %d): %s, matplotlib's viridis(%.3f) is %s", q, k, x, y, got.Hex(), scale(float64(m[q][k])), want(q, k).Clamped().Hex())
			}
		}
	}
}

// Pool against block maxima computed here: a 12×12 matrix into 6×4 takes the maximum of
// each 2×3 block; a 5×7 matrix into 10×14 repeats each value in a 2×2 block (the grid
// PNG's thumbnails of cross-attention take this path). Query stays the row, key the column.
func TestPoolAgainstBlocks(t *testing.T) {
	m := asymmetric()
	big := make([][]float32, 12)
	for q := range big {
		big[q] = make([]float32, 12)
		for k := range big[q] {
			big[q][k] = float32((q*12+k*5)%17) / 16
		}
	}
	cases := []struct {
		name       string
		m          [][]float32
		rows, cols int
		want       func(r, c int) float64
	}{
		{"shrink 12x12 to 6x4", big, 6, 4, func(r, c int) float64 {
			best := float32(0)
			for q := 2 * r; q < 2*r+2; q++ {
				for k := 3 * c; k < 3*c+3; k++ {
					best = max(best, big[q][k])
				}
			}
			return float64(best)
		}},
		{"grow 5x7 to 10x14", m, 10, 14, func(r, c int) float64 { return float64(m[r/2][c/2]) }},
		{"same size 5x7", m, 5, 7, func(r, c int) float64 { return float64(m[r][c]) }},
	}
	for _, c := range cases {
		got := Pool(c.m, c.rows, c.cols)
		if len(got) != c.rows {
			t.Fatalf("%s: %d rows", c.name, len(got))
		}
		for r := range got {
			if len(got[r]) != c.cols {
				t.Fatalf("%s: row %d has %d columns", c.name, r, len(got[r]))
			}
			for col, v := range got[r] {
				if v != c.want(r, col) {
					t.Errorf("%s: (%d, %d) = %g, want %g", c.name, r, col, v, c.want(r, col))
				}
			}
		}
	}
}

// WriteGridPNG draws layer l's head h in row l, column h, each thumbnail query-down and
// key-across in matplotlib's viridis.
func TestGridPNGAgainstMatplotlib(t *testing.T) {
	m := causal(5) // m[0][0] = 1: the first viridis-yellow pixel of layer 1's row
	zero := make([][]float32, len(m))
	for q := range zero {
		zero[q] = make([]float32, len(m[0]))
	}
	var b bytes.Buffer
	// Only layer 1 head 0 holds the map: a thumbnail anywhere else shows it misplaced.
	if err := WriteGridPNG(&b, GridFigure{Title: "grid", Attn: [][][][]float32{{zero, zero}, {m, zero}}, Scale: Linear}); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	// The lower half holds layer 1's row (the colour bar, yellow at its top, stands beside
	// layer 0's row).
	bounds := img.Bounds()
	lower := img.(interface {
		SubImage(image.Rectangle) image.Image
	}).SubImage(image.Rect(bounds.Min.X, bounds.Dy()/2, bounds.Max.X, bounds.Max.Y))
	checkPNG(t, lower, m, func(v float64) float64 { return v })
	if x := firstPixel(lower, cf(Viridis(1))); x < 0 || x > bounds.Dx()/3 {
		t.Errorf("the map starts at x = %d, not in head 0's column", x)
	}
}

// firstPixel is the x of the first pixel, in reading order, within ΔE 3 of c; -1 if none.
func firstPixel(img image.Image, c colorful.Color) int {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if deltaE(cf(img.At(x, y)), c) < 3 {
				return x
			}
		}
	}
	return -1
}
