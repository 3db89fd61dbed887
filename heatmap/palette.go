// Package heatmap turns attention matrices into terminal cells and PNG and SVG images. It has no
// TUI dependency: a Palette holds, per colour profile, a precomputed escape sequence for
// every colour level, so a 200×60 frame is built with one strings.Builder instead of
// styling 12,000 cells one by one.
package heatmap

import (
	"fmt"
	"image/color"
	"math"
	"sort"
)

// Profile is a terminal's colour capability.
type Profile int

const (
	// NoColor draws shade glyphs ( ░▒▓█), one value per cell, and uses reverse video for
	// the cursor: NO_COLOR, --color none, or a terminal without colours.
	NoColor Profile = iota
	// ANSI16 uses a hand-ordered ramp of the 16 basic colours.
	ANSI16
	// ANSI256 uses xterm-256 indices chosen along viridis in CIELAB.
	ANSI256
	// TrueColor uses 64 levels of viridis.
	TrueColor
)

func (p Profile) String() string {
	return [...]string{"none", "16", "256", "truecolor"}[p]
}

// ParseProfile reads the --color values "none", "16", "256" and "truecolor".
func ParseProfile(s string) (Profile, error) {
	switch s {
	case "none":
		return NoColor, nil
	case "16":
		return ANSI16, nil
	case "256":
		return ANSI256, nil
	case "truecolor", "24bit":
		return TrueColor, nil
	}
	return NoColor, fmt.Errorf("unknown colour profile %q; use auto, truecolor, 256, 16 or none", s)
}

// viridis control points at t = 0, 0.1, …, 1 (matplotlib's viridis).
var viridis = []color.RGBA{
	{0x44, 0x01, 0x54, 255}, {0x48, 0x24, 0x75, 255}, {0x41, 0x44, 0x87, 255},
	{0x35, 0x5f, 0x8d, 255}, {0x2a, 0x78, 0x8e, 255}, {0x21, 0x91, 0x8c, 255},
	{0x22, 0xa8, 0x84, 255}, {0x44, 0xbf, 0x70, 255}, {0x7a, 0xd1, 0x51, 255},
	{0xbd, 0xdf, 0x26, 255}, {0xfd, 0xe7, 0x25, 255},
}

// Viridis returns the viridis colour at t in [0, 1].
func Viridis(t float64) color.RGBA {
	t = math.Max(0, math.Min(1, t))
	x := t * float64(len(viridis)-1)
	i := int(x)
	if i >= len(viridis)-1 {
		return viridis[len(viridis)-1]
	}
	f := x - float64(i)
	a, b := viridis[i], viridis[i+1]
	mix := func(p, q uint8) uint8 { return uint8(math.Round(float64(p)*(1-f) + float64(q)*f)) }
	return color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 255}
}

// Palette maps attention values to terminal cells for one colour profile.
type Palette struct {
	Profile Profile
	// Colors are the levels' colours, darkest (0) to brightest, as shown in the legend
	// and in PNGs; nil for NoColor.
	Colors []color.RGBA
	fg, bg []string // SGR parameter strings per level, e.g. "38;5;61"
	glyphs []string // NoColor levels
}

// Levels is the number of distinct steps the palette can show.
func (p *Palette) Levels() int {
	if p.Profile == NoColor {
		return len(p.glyphs)
	}
	return len(p.fg)
}

// NewPalette builds the palette of a profile.
func NewPalette(profile Profile) *Palette {
	p := &Palette{Profile: profile}
	switch profile {
	case TrueColor:
		for i := 0; i < 64; i++ {
			c := Viridis(float64(i) / 63)
			p.add(c, fmt.Sprintf("38;2;%d;%d;%d", c.R, c.G, c.B), fmt.Sprintf("48;2;%d;%d;%d", c.R, c.G, c.B))
		}
	case ANSI256:
		for _, idx := range viridis256() {
			c := xterm256(idx)
			p.add(c, fmt.Sprintf("38;5;%d", idx), fmt.Sprintf("48;5;%d", idx))
		}
	case ANSI16:
		// Dark to bright on xterm's default colours: black, blue, bright blue, green,
		// cyan, bright green, bright yellow, bright white. Automatic conversion of viridis
		// would end in bright red.
		for _, idx := range []int{0, 4, 12, 2, 6, 10, 11, 15} {
			c := xterm256(idx)
			fg, bg := 30+idx, 40+idx
			if idx >= 8 {
				fg, bg = 90+idx-8, 100+idx-8
			}
			p.add(c, fmt.Sprint(fg), fmt.Sprint(bg))
		}
	default:
		p.glyphs = []string{" ", "░", "▒", "▓", "█"}
	}
	return p
}

func (p *Palette) add(c color.RGBA, fg, bg string) {
	p.Colors = append(p.Colors, c)
	p.fg = append(p.fg, fg)
	p.bg = append(p.bg, bg)
}

// viridis256 chooses xterm-256 colours (indices 16–255, which do not depend on the
// terminal's theme) that lie close to the viridis curve in CIELAB (ΔE < 18), orders them
// along the curve, and keeps the longest run whose lightness strictly increases: a
// monotonic ramp with about twice the levels of nearest-colour conversion.
func viridis256() []int {
	const samples = 256
	curve := make([]labColor, samples)
	for i := range curve {
		curve[i] = lab(Viridis(float64(i) / (samples - 1)))
	}
	type cand struct {
		idx int
		t   int
		l   float64
	}
	var cands []cand
	for idx := 16; idx < 256; idx++ {
		c := lab(xterm256(idx))
		best, bestD := 0, math.Inf(1)
		for i, v := range curve {
			if d := c.dist(v); d < bestD {
				best, bestD = i, d
			}
		}
		if bestD < 18 {
			cands = append(cands, cand{idx, best, c.l})
		}
	}
	sort.Slice(cands, func(a, b int) bool { return cands[a].t < cands[b].t })
	// Longest strictly increasing subsequence in lightness (quadratic; n < 240).
	n := len(cands)
	length, prev := make([]int, n), make([]int, n)
	end := -1
	for i := range cands {
		length[i], prev[i] = 1, -1
		for j := 0; j < i; j++ {
			if cands[j].l < cands[i].l && cands[j].t < cands[i].t && length[j]+1 > length[i] {
				length[i], prev[i] = length[j]+1, j
			}
		}
		if end < 0 || length[i] > length[end] {
			end = i
		}
	}
	var out []int
	for i := end; i >= 0; i = prev[i] {
		out = append([]int{cands[i].idx}, out...)
	}
	return out
}

// xterm256 is the RGB value xterm gives a 256-colour index.
func xterm256(idx int) color.RGBA {
	base := [16][3]uint8{
		{0, 0, 0}, {205, 0, 0}, {0, 205, 0}, {205, 205, 0}, {0, 0, 238}, {205, 0, 205}, {0, 205, 205}, {229, 229, 229},
		{127, 127, 127}, {255, 0, 0}, {0, 255, 0}, {255, 255, 0}, {92, 92, 255}, {255, 0, 255}, {0, 255, 255}, {255, 255, 255},
	}
	switch {
	case idx < 16:
		b := base[idx]
		return color.RGBA{b[0], b[1], b[2], 255}
	case idx < 232:
		steps := [6]uint8{0, 95, 135, 175, 215, 255}
		i := idx - 16
		return color.RGBA{steps[i/36], steps[(i/6)%6], steps[i%6], 255}
	default:
		v := uint8(8 + 10*(idx-232))
		return color.RGBA{v, v, v, 255}
	}
}

type labColor struct{ l, a, b float64 }

func (c labColor) dist(d labColor) float64 {
	return math.Sqrt((c.l-d.l)*(c.l-d.l) + (c.a-d.a)*(c.a-d.a) + (c.b-d.b)*(c.b-d.b))
}

// lab converts sRGB to CIELAB (D65).
func lab(c color.RGBA) labColor {
	lin := func(v uint8) float64 {
		x := float64(v) / 255
		if x <= 0.04045 {
			return x / 12.92
		}
		return math.Pow((x+0.055)/1.055, 2.4)
	}
	r, g, b := lin(c.R), lin(c.G), lin(c.B)
	x := (0.4124*r + 0.3576*g + 0.1805*b) / 0.95047
	y := 0.2126*r + 0.7152*g + 0.0722*b
	z := (0.0193*r + 0.1192*g + 0.9505*b) / 1.08883
	f := func(t float64) float64 {
		if t > 216.0/24389 {
			return math.Cbrt(t)
		}
		return (24389.0/27*t + 16) / 116
	}
	fx, fy, fz := f(x), f(y), f(z)
	return labColor{116*fy - 16, 500 * (fx - fy), 200 * (fy - fz)}
}

// Scale maps an attention weight in [0, 1] to [0, 1] before it is given a colour level.
type Scale int

const (
	// Linear shows weights as they are.
	Linear Scale = iota
	// Sqrt lifts small weights (attention is mostly near zero).
	Sqrt
	// Log maps 1e-3…1 logarithmically; smaller weights are dark.
	Log
)

func (s Scale) String() string { return [...]string{"linear", "sqrt", "log"}[s] }

// Next cycles linear → sqrt → log → linear.
func (s Scale) Next() Scale { return (s + 1) % 3 }

// Apply maps v (clamped to [0, 1]) through the scale.
func (s Scale) Apply(v float64) float64 {
	v = math.Max(0, math.Min(1, v))
	switch s {
	case Sqrt:
		return math.Sqrt(v)
	case Log:
		if v <= 1e-3 {
			return 0
		}
		return 1 + math.Log10(v)/3
	}
	return v
}

// Level is the palette level of weight v under scale s.
func (p *Palette) Level(v float64, s Scale) int {
	n := p.Levels()
	l := int(math.Round(s.Apply(v) * float64(n-1)))
	if l < 0 || math.IsNaN(s.Apply(v)) {
		return 0
	}
	if l >= n {
		return n - 1
	}
	return l
}
