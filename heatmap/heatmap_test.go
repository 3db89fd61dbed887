package heatmap

import (
	"bytes"
	"flag"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// causal is a T×T matrix with a previous-token stripe and some attention to token 0.
func causal(T int) [][]float32 {
	m := make([][]float32, T)
	for i := range m {
		m[i] = make([]float32, T)
		switch i {
		case 0:
			m[i][0] = 1
		default:
			m[i][0] = 0.2
			m[i][i-1] += 0.7
			m[i][i] += 0.1
		}
	}
	return m
}

func profiles() []Profile { return []Profile{TrueColor, ANSI256, ANSI16, NoColor} }

// TestMapGolden is a change detector, not a proof of correctness: the golden files were
// written by this package (go test ./heatmap -update), so they only say that the escape
// sequences did not change. That the colours and glyphs are right is checked against
// independent references in reference_test.go (matplotlib's viridis, go-colorful's CIELAB,
// xterm's colour definitions, Unicode's shades); update the golden files only after those
// pass.
func TestMapGolden(t *testing.T) {
	for _, p := range profiles() {
		t.Run(p.String(), func(t *testing.T) {
			pal := NewPalette(p)
			var b strings.Builder
			for _, s := range []Scale{Linear, Sqrt} {
				for _, line := range pal.Map(causal(12), 14, 7, s) {
					b.WriteString(line + "|\n")
				}
				b.WriteString(pal.Legend(30, s) + "|\n")
				b.WriteString(pal.Cells([]float32{0, 0.25, 0.5, 1}, 2, s) + "|\n")
				b.WriteString(pal.Text(" the", 0.9, s) + pal.Text(" cat", 0.05, s) + "|\n")
			}
			golden(t, filepath.Join("testdata", "map-"+p.String()+".golden"), b.String())
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./heatmap -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./heatmap -update rewrites it):\n%s", path, got)
	}
}

// Every line Map draws is exactly the requested width, whatever the matrix size.
func TestMapWidth(t *testing.T) {
	for _, p := range profiles() {
		pal := NewPalette(p)
		for _, T := range []int{1, 3, 17, 200} {
			for _, size := range [][2]int{{1, 1}, {5, 2}, {40, 12}, {300, 80}} {
				lines := pal.Map(causal(T), size[0], size[1], Sqrt)
				if len(lines) != size[1] {
					t.Fatalf("%s T=%d %v: %d lines", p, T, size, len(lines))
				}
				for i, l := range lines {
					if w := ansi.StringWidth(l); w != size[0] {
						t.Fatalf("%s T=%d %v: line %d is %d cells wide", p, T, size, i, w)
					}
				}
			}
		}
	}
}

// Max-pooling keeps a single sharp weight visible when 1000 keys share 10 cells.
func TestPoolKeepsPeaks(t *testing.T) {
	m := [][]float32{make([]float32, 1000)}
	m[0][777] = 0.9
	px := Pool(m, 1, 10)
	if px[0][7] != float64(float32(0.9)) {
		t.Fatalf("pooled row %v", px[0])
	}
	for j, v := range px[0] {
		if j != 7 && v != 0 {
			t.Fatalf("cell %d = %g", j, v)
		}
	}
}

var sgrColour = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// The no-colour palette emits no colour codes anywhere. (The colour ramps are checked
// against matplotlib's viridis and go-colorful's CIELAB in reference_test.go, not with the
// lab() that chose them.)
func TestNoColorHasNoEscapes(t *testing.T) {
	none := NewPalette(NoColor)
	out := strings.Join(none.Map(causal(8), 8, 8, Linear), "") + none.Cells([]float32{0, 1}, 1, Linear) + none.Text("x", 1, Linear) + none.Legend(20, Sqrt)
	if sgrColour.MatchString(out) || strings.Contains(out, "\x1b") {
		t.Errorf("no-colour output has escape codes: %q", out)
	}
}

func TestLevelsAndScales(t *testing.T) {
	p := NewPalette(TrueColor)
	cases := []struct {
		v    float64
		s    Scale
		want int
	}{
		// 63·v rounded; √0.25 = 0.5; log: 1 + log10(0.01)/3 = 1/3 → 21; below 1e-3 → 0.
		{0, Linear, 0}, {1, Linear, 63}, {0.5, Linear, 32}, {0.25, Sqrt, 32}, {0.0001, Log, 0}, {0.01, Log, 21}, {2, Linear, 63}, {-1, Linear, 0},
		// A NaN weight (a broken run) is drawn dark, never as a bright level or a panic.
		{math.NaN(), Linear, 0}, {math.NaN(), Sqrt, 0}, {math.NaN(), Log, 0}, {math.Inf(1), Linear, 63}, {math.Inf(-1), Log, 0},
	}
	for _, c := range cases {
		if got := p.Level(c.v, c.s); got != c.want {
			t.Errorf("Level(%g, %s) = %d, want %d", c.v, c.s, got, c.want)
		}
	}
}

func TestWritePNG(t *testing.T) {
	var b bytes.Buffer
	labels := []string{"The", "␣cat", "␣sat", "␣on", "␣the", "␣mat", ".", "␣The", "␣cat", "␣sat", "␣on", "␣the"}
	err := WritePNG(&b, Figure{Title: "L1H2 (sqrt)", Matrix: causal(12), QueryLabels: labels, KeyLabels: labels, Scale: Sqrt})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() < 12*14 || img.Bounds().Dy() < 12*14 {
		t.Fatalf("image is %v", img.Bounds())
	}
	if err := WritePNG(&b, Figure{}); err == nil {
		t.Fatal("an empty figure should be refused")
	}
	b.Reset()
	grid := [][][][]float32{{causal(5), causal(5)}, {causal(5), causal(5)}}
	if err := WriteGridPNG(&b, GridFigure{Title: "grid", Attn: grid}); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkMapFrame(b *testing.B) {
	m := causal(1024)
	for _, p := range []Profile{TrueColor, ANSI256} {
		pal := NewPalette(p)
		b.Run(p.String(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				pal.Map(m, 200, 60, Sqrt)
			}
		})
	}
}

func TestASCIILabels(t *testing.T) {
	cases := map[string]string{"␣the": "_the", "↵": `\n`, "⇥x": `\tx`, "<e2 80>": "<e2 80>", "日本": "??", "a—b": "a-b", "\x01": ""}
	for in, want := range cases {
		if got := ASCII(in); got != want {
			t.Errorf("ASCII(%q) = %q, want %q", in, got, want)
		}
	}
}
