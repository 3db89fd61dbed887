package main

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

	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/timeline"
)

// phaseSVG is what the tests read from the phase-change figure's SVG.
type phaseSVG struct {
	plots  []phasePlot
	series [][]phaseSeries // per plot, in drawing order
	labels []string        // the series labels' texts
	zero   int             // <line class="zero"> elements
}

type phasePlot struct {
	box        image.Rectangle
	ymin, ymax float64
	log        bool
}

type phaseSeries struct {
	name, stroke string
	faint        bool
	points       int
}

func readPhaseSVG(t *testing.T, data []byte) phaseSVG {
	t.Helper()
	var s phaseSVG
	dec := xml.NewDecoder(bytes.NewReader(data))
	class := ""
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("the SVG does not parse: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			attr := func(n string) string {
				for _, a := range e.Attr {
					if a.Name.Local == n {
						return a.Value
					}
				}
				return ""
			}
			num := func(n string) float64 {
				v, err := strconv.ParseFloat(attr(n), 64)
				if err != nil {
					t.Fatalf("<%s> %s=%q: %v", e.Name.Local, n, attr(n), err)
				}
				return v
			}
			switch {
			case e.Name.Local == "rect" && attr("class") == "plot":
				x, y := int(num("x")), int(num("y"))
				s.plots = append(s.plots, phasePlot{image.Rect(x, y, x+int(num("width")), y+int(num("height"))), num("data-ymin"), num("data-ymax"), attr("data-xlog") == "true"})
				s.series = append(s.series, nil)
			case e.Name.Local == "path" && strings.HasPrefix(attr("class"), "series"):
				d := attr("d")
				n := strings.Count(d, "M") + strings.Count(d, "L")
				i := len(s.plots) - 1
				s.series[i] = append(s.series[i], phaseSeries{attr("data-name"), attr("stroke"), strings.Contains(attr("class"), "faint"), n})
			case e.Name.Local == "line" && attr("class") == "zero":
				s.zero++
			case e.Name.Local == "text":
				class = attr("class")
			}
		case xml.CharData:
			if class == string(heatmap.RoleSeries) {
				s.labels = append(s.labels, string(e))
			}
			class = ""
		}
	}
	return s
}

// The phase-change figure of testdata/timeline/tiny: the SVG has one path per head (the
// table's heads coloured, the others faint) with a point per step, the losses and the ICL
// score with a zero line, the coloured heads named; the PNG has each coloured head's
// colour where its scores (read from the CSV of the same run) map on the axes, computed
// here from the documented layout, and the ICL panel's zero line.
func TestTimelinePhasePNG(t *testing.T) {
	dir := committedTimeline(t)
	tl, err := timeline.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	base := []string{"heads", "--timeline", dir, "--device", "cpu"}
	csvOut, stderr, code := inspect(t, base...)
	if code != 0 {
		t.Fatalf("csv: exit %d: %s", code, stderr)
	}
	// scores[head][step index] of induction, from the CSV.
	scores := map[string][]float64{}
	rows := readCSV(t, csvOut)
	for _, r := range rows[1:] {
		step, _ := strconv.ParseInt(r[0], 10, 64)
		name := "L" + r[2] + "H" + r[3]
		if scores[name] == nil {
			scores[name] = make([]float64, len(tl.Steps))
		}
		v, _ := strconv.ParseFloat(r[4], 64)
		for i, st := range tl.Steps {
			if st.Step == step {
				scores[name][i] = v
			}
		}
	}
	table, _, _ := inspect(t, append(base, "--format", "table")...)
	var shown []string
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) == len(tl.Steps)+1 && strings.HasPrefix(f[0], "L") {
			shown = append(shown, f[0])
		}
	}
	files := map[string]string{}
	for _, ext := range []string{"png", "svg"} {
		files[ext] = filepath.Join(tmp, "phase."+ext)
		stdout, stderr, code := inspect(t, append(base, "--png", files[ext])...)
		if code != 0 || stdout != "" || !strings.Contains(stderr, "wrote "+files[ext]) {
			t.Fatalf("--png %s: exit %d, stdout %q, stderr %q", ext, code, stdout, stderr)
		}
	}
	data, err := os.ReadFile(files["svg"])
	if err != nil {
		t.Fatal(err)
	}
	svg := readPhaseSVG(t, data)
	if len(svg.plots) != 3 || svg.zero != 1 {
		t.Fatalf("%d plots and %d zero lines, want 3 and 1", len(svg.plots), svg.zero)
	}
	finite := func(ys []float64) int {
		n := 0
		for _, v := range ys {
			if !math.IsNaN(v) {
				n++
			}
		}
		return n
	}
	var train, eval, icl []float64
	for _, st := range tl.Steps {
		train, eval, icl = append(train, st.Metrics.TrainLoss), append(eval, st.Metrics.EvalLoss), append(icl, st.Metrics.ICL)
	}
	colours := map[string]string{}
	for _, c := range []struct {
		plot  int
		want  map[string]int // series name → points
		faint int
	}{
		{0, func() map[string]int {
			m := map[string]int{}
			for _, h := range shown {
				m[h] = len(tl.Steps)
			}
			return m
		}(), len(scores) - len(shown)},
		{1, map[string]int{"eval_loss": finite(eval), "train_loss": finite(train)}, 0},
		{2, map[string]int{"icl": finite(icl)}, 0},
	} {
		got, faint := map[string]int{}, 0
		for _, s := range svg.series[c.plot] {
			if s.faint {
				faint++
				continue
			}
			got[s.name] = s.points
			if c.plot == 0 {
				for h, col := range colours {
					if col == s.stroke {
						t.Errorf("%s and %s share the colour %s", h, s.name, col)
					}
				}
				colours[s.name] = s.stroke
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) || faint != c.faint {
			t.Errorf("plot %d: series %v and %d faint, want %v and %d", c.plot, got, faint, c.want, c.faint)
		}
	}
	if len(shown) == 0 || fmt.Sprint(svg.labels) == "" {
		t.Fatalf("no heads shown (table:\n%s)", table)
	}
	for _, want := range append(append([]string{}, shown...), "eval_loss", "train_loss", "icl") {
		if !has(svg.labels, want) {
			t.Errorf("no label %q among %v", want, svg.labels)
		}
	}

	f, err := os.Open(files["png"])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// x of tokens: log axis (the fixture spans more than 1.5 decades) with 0 at the plot's
	// left edge + Inset and the smallest positive count ZeroGap further.
	p := svg.plots[0]
	if !p.log {
		t.Fatalf("the fixture's x axis is not logarithmic")
	}
	lo, hi := math.Inf(1), 0.0
	for _, st := range tl.Steps {
		if st.Tokens > 0 {
			lo, hi = math.Min(lo, float64(st.Tokens)), math.Max(hi, float64(st.Tokens))
		}
	}
	xOf := func(tokens int64) int {
		left, right := float64(p.box.Min.X+heatmap.Inset), float64(p.box.Max.X-1-heatmap.Inset)
		if tokens == 0 {
			return int(math.Round(left))
		}
		l0 := left + heatmap.ZeroGap
		return int(math.Round(l0 + math.Log10(float64(tokens)/lo)/math.Log10(hi/lo)*(right-l0)))
	}
	yOf := func(p phasePlot, v float64) int {
		top, bottom := float64(p.box.Min.Y+heatmap.Inset), float64(p.box.Max.Y-1-heatmap.Inset)
		return int(math.Round(bottom - (v-p.ymin)/(p.ymax-p.ymin)*(bottom-top)))
	}
	near := func(x, y int, c string) bool {
		for dy := -3; dy <= 3; dy++ {
			for dx := -3; dx <= 3; dx++ {
				r, g, b, _ := img.At(x+dx, y+dy).RGBA()
				if fmt.Sprintf("#%02x%02x%02x", r>>8, g>>8, b>>8) == c {
					return true
				}
			}
		}
		return false
	}
	for _, h := range shown {
		for i, st := range tl.Steps {
			x, y := xOf(st.Tokens), yOf(p, scores[h][i])
			if near(x, y, colours[h]) {
				continue
			}
			// Another coloured head's marker may cover this one's.
			covered := false
			for _, o := range shown {
				if o != h && math.Abs(float64(yOf(p, scores[o][i])-y)) <= 4 {
					covered = true
				}
			}
			if !covered {
				t.Errorf("%s at step %d: no %s pixel near (%d, %d)", h, st.Step, colours[h], x, y)
			}
		}
	}
	for i, st := range tl.Steps {
		if v := st.Metrics.ICL; !math.IsNaN(v) {
			if x, y := xOf(st.Tokens), yOf(svg.plots[2], v); !near(x, y, svg.series[2][0].stroke) {
				t.Errorf("icl at step %d (%d): no %s pixel near (%d, %d)", st.Step, i, svg.series[2][0].stroke, x, y)
			}
		}
	}
	// The zero line crosses the ICL plot at y = 0.
	z := heatmap.ZeroColour
	y0 := yOf(svg.plots[2], 0)
	n := 0
	for x := svg.plots[2].box.Min.X; x < svg.plots[2].box.Max.X; x++ {
		if color.RGBAModel.Convert(img.At(x, y0)).(color.RGBA) == z {
			n++
		}
	}
	if n < svg.plots[2].box.Dx()/2 {
		t.Errorf("the zero line at y %d: %d of %d pixels in its colour", y0, n, svg.plots[2].box.Dx())
	}
}

// --png's refusals: another extension, --png without --timeline, and a file of the timeline
// (the outfile protection): each one line with exit 2, nothing written or changed.
func TestTimelinePhaseRefused(t *testing.T) {
	dir := tinyTimeline(t)
	tmp := t.TempDir()
	inStep := filepath.Join(dir, "step-000030", "attn.png")
	if err := os.WriteFile(inStep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args  []string
		says  string
		check string // a file that must not exist afterwards ("" none)
	}{
		{[]string{"--timeline", dir, "--png", filepath.Join(tmp, "x.jpg")}, ".jpg pictures are not supported", filepath.Join(tmp, "x.jpg")},
		{[]string{"--timeline", dir, "--png", filepath.Join(tmp, "noext")}, "has no extension", filepath.Join(tmp, "noext")},
		{[]string{"--timeline", dir, "--png", filepath.Join(dir, "timeline.json")}, ".json pictures are not supported", ""},
		{[]string{"--timeline", dir, "--png", inStep}, "would overwrite a file of step 30's model (attn.png)", ""},
		{[]string{model("attn2l"), "--png", filepath.Join(tmp, "y.png")}, "give --timeline DIR with it", filepath.Join(tmp, "y.png")},
		{[]string{"--timeline", dir, "--png", filepath.Join(tmp, "z.png"), "--out", filepath.Join(tmp, "z.png")}, "name the same file", filepath.Join(tmp, "z.png")},
	} {
		stdout, stderr, code := inspect(t, append([]string{"heads", "--device", "cpu", "--probes", "2"}, c.args...)...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || stdout != "" || len(lines) != 1 || !strings.Contains(stderr, c.says) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line saying %q", c.args, code, stderr, c.says)
		}
		if c.check != "" {
			if _, err := os.Stat(c.check); err == nil {
				t.Errorf("%v wrote %s", c.args, c.check)
			}
		}
	}
	if b, err := os.ReadFile(inStep); err != nil || string(b) != "mine" {
		t.Errorf("the step's attn.png was changed: %q, %v", b, err)
	}
	// --png with --out writes both: the picture and the CSV.
	pic, csv := filepath.Join(tmp, "both.svg"), filepath.Join(tmp, "both.csv")
	if _, stderr, code := inspect(t, "heads", "--device", "cpu", "--probes", "2", "--timeline", dir, "--png", pic, "--out", csv); code != 0 {
		t.Fatalf("--png with --out: exit %d: %s", code, stderr)
	}
	for _, p := range []string{pic, csv} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// --x-scale chooses the figure's tokens axis: auto (log for the fixture, whose tokens span
// more than heatmap.LogDecades decades), log or linear.
func TestTimelinePhaseXScale(t *testing.T) {
	dir := committedTimeline(t)
	for _, c := range []struct {
		scale string
		log   bool
	}{{"auto", true}, {"log", true}, {"linear", false}} {
		out := filepath.Join(t.TempDir(), "phase.svg")
		_, stderr, code := inspect(t, "heads", "--timeline", dir, "--device", "cpu", "--png", out, "--x-scale", c.scale)
		if code != 0 {
			t.Fatalf("--x-scale %s: exit %d: %s", c.scale, code, stderr)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		plots := readPhaseSVG(t, data).plots
		if len(plots) != 3 {
			t.Fatalf("--x-scale %s: %d plots in the figure, want 3", c.scale, len(plots))
		}
		for i, p := range plots {
			if p.log != c.log {
				t.Errorf("--x-scale %s: plot %d's x axis log = %v, want %v", c.scale, i, p.log, c.log)
			}
		}
	}
	if _, stderr, code := inspect(t, "heads", "--timeline", dir, "--png", filepath.Join(t.TempDir(), "x.svg"), "--x-scale", "cubic"); code != 2 || !strings.Contains(stderr, "use auto, log or linear") {
		t.Errorf("--x-scale cubic: exit %d, stderr %q; want exit 2 naming the choices", code, stderr)
	}
}
