package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/tableio"
	"github.com/attnscope/attnscope/timeline"
)

// timelineTop is how many heads, by their score at the last step, `heads --timeline
// --format table` shows besides those that reach the score's threshold at some step.
const timelineTop = 5

// stepScores are one step's head scores.
type stepScores struct {
	step   timeline.Step
	scores []analysis.HeadScores
}

// timelineRun scores a timeline's steps one after another with one set of heads flags.
type timelineRun struct {
	f   *runFlags
	h   *headsFlags
	bos int64
	// first is the first step's options: every later step must run the same probe and text.
	first *analysis.HeadsOptions
	// rep is the first step's report (its probe and text source head the table); source
	// words the text the scores came from.
	rep    *analysis.HeadsReport
	source string
}

// runTimeline is `inspect heads --timeline DIR`: every step of the training timeline in
// dir (package timeline) scored as runHeads scores one model, with the same probe, prompt
// or sample and flags, each step's session opened and closed before the next; the table
// has leading step and tokens columns, one block of rows per step.
func runTimeline(dir string, args []string, f *runFlags, h *headsFlags) error {
	switch {
	case dir == "":
		return usagef("--timeline is empty; give the timeline folder (the one holding timeline.json)")
	case len(args) > 0:
		return usagef("--timeline %s scores the timeline's own models; give no MODEL with it", dir)
	case f.file != "":
		return usagef("--file picks a model inside a MODEL folder; a timeline's steps are each step's model.onnx")
	}
	var picture pictureFormat
	if h.png != "" {
		var err error
		if picture, err = pictureFormatOf(h.png); err != nil {
			return err
		}
		if f.out != "" && filepath.Clean(h.png) == filepath.Clean(f.out) {
			return usagef("--png and --out name the same file %s; give each its own", h.png)
		}
	}
	sortBy, bos, err := h.check(f)
	if err != nil {
		return err
	}
	tl, err := timeline.Open(dir)
	if err != nil {
		return err
	}
	if f.tokenizer == "" {
		f.tokenizer = tl.Tokenizer // one tokenizer for every step
	}
	// Outputs are opened before any step is scored, so that a refused path costs no run.
	inputs := timelineInputs(tl, f)
	var pngOut, out output
	if h.png != "" {
		if pngOut, err = openOutput("--png", h.png, inputs); err != nil {
			return err
		}
		defer pngOut.Abort()
		inputs = append(inputs, input{"the --png picture", h.png})
	}
	if h.png == "" || f.out != "" { // with --png, the table only with --out
		if out, err = openOutput("--out", f.out, inputs); err != nil {
			return err
		}
		defer out.Abort()
		if sameTarget(pngOut, out) {
			return usagef("--png and --out name the same file %s; give each its own", h.png)
		}
	}
	r := &timelineRun{f: f, h: h, bos: bos}
	blocks := make([]stepScores, 0, len(tl.Steps))
	for i, st := range tl.Steps {
		notice("step %d of %d: step %d, %d tokens (%s)", i+1, len(tl.Steps), st.Step, st.Tokens, filepath.Base(st.Dir))
		scores, err := r.score(st)
		if err != nil {
			return fmt.Errorf("step %d (%s): %w", st.Step, st.Model, err)
		}
		blocks = append(blocks, stepScores{st, scores})
	}
	if pngOut != nil {
		write := heatmap.WriteLinesPNG
		if picture == formatSVG {
			write = heatmap.WriteLinesSVG
		}
		if err := write(pngOut, phaseChart(tl, r, blocks, sortBy)); err != nil {
			return err
		}
		if err := pngOut.Commit(); err != nil {
			return err
		}
		if h.png != "-" {
			fmt.Fprintf(os.Stderr, "inspect: wrote %s (%s over %d steps)\n", h.png, sortBy, len(blocks))
		}
		if out == nil {
			return nil
		}
	}
	if f.format == "table" {
		err = writeTimelineReport(out, tl, r, blocks, sortBy)
	} else {
		err = writeTable(out, f.format, timelineTable(blocks))
	}
	if err != nil {
		return err
	}
	return out.Commit()
}

// phaseChart is the phase-change figure of --png: over tokens seen, (1) the score by of
// every head, the heads of timelineHeads (the table's rows) each in its colour and named at
// its line's end, the others faint; (2) the run's eval_loss, and train_loss dashed; (3) its
// icl score with a zero line.
func phaseChart(tl *timeline.Timeline, r *timelineRun, blocks []stepScores, by analysis.Score) heatmap.LineChart {
	name := tl.Model
	if name == "" {
		name = filepath.Base(tl.Dir)
	}
	x := make([]float64, len(blocks))
	for i, b := range blocks {
		x[i] = float64(b.step.Tokens)
	}
	series := func(get func(b stepScores) float64) []float64 {
		y := make([]float64, len(blocks))
		for i, b := range blocks {
			y[i] = get(b)
		}
		return y
	}
	scoreOf := func(head string) []float64 {
		return series(func(b stepScores) float64 {
			for _, h := range b.scores {
				if h.Name() == head {
					return h.Get(by)
				}
			}
			return math.NaN()
		})
	}
	shown := timelineHeads(blocks, by)
	var heads []heatmap.Series
	seen := map[string]bool{}
	for _, b := range blocks { // the faint heads, in the order first seen
		for _, h := range b.scores {
			if n := h.Name(); !seen[n] && !slices.Contains(shown, n) {
				seen[n] = true
				heads = append(heads, heatmap.Series{Name: n, Y: scoreOf(n), Faint: true})
			}
		}
	}
	for i, n := range shown {
		c := heatmap.SeriesColours[i%len(heatmap.SeriesColours)]
		heads = append(heads, heatmap.Series{Name: n, Y: scoreOf(n), Colour: c})
	}
	threshold, ok := by.Threshold()
	if !ok {
		threshold = math.NaN()
	}
	metric := func(get func(m timeline.Metrics) float64) []float64 {
		return series(func(b stepScores) float64 { return get(b.step.Metrics) })
	}
	loss := []heatmap.Series{
		{Name: "eval_loss", Y: metric(func(m timeline.Metrics) float64 { return m.EvalLoss }), Colour: heatmap.Ink()},
		{Name: "train_loss", Y: metric(func(m timeline.Metrics) float64 { return m.TrainLoss }), Colour: color.RGBA{0x99, 0x99, 0x99, 255}, Dashed: true},
	}
	icl := []heatmap.Series{{Name: "icl", Y: metric(func(m timeline.Metrics) float64 { return m.ICL }), Colour: heatmap.SeriesColours[4]}}
	rule := fmt.Sprintf("coloured: the heads that reach %.1f at any step and the %d best at the last step", threshold, timelineTop)
	if !ok {
		rule = fmt.Sprintf("coloured: the %d lowest at the last step", timelineTop)
	}
	first, last := blocks[0].step, blocks[len(blocks)-1].step
	return heatmap.LineChart{
		Title:    fmt.Sprintf("%s · %s by tokens seen · %d steps, step %d to %d", name, by, len(blocks), first.Step, last.Step),
		Subtitle: rule + "; the others grey",
		X:        x,
		XLabel:   "tokens seen",
		XScale:   strings.TrimPrefix(r.h.xScale, "auto"),
		Panels: []heatmap.Panel{
			{YLabel: by.String() + " score", Series: heads, Threshold: threshold},
			{YLabel: "loss", Series: loss, Empty: "no eval_loss or train_loss in metrics.csv"},
			{YLabel: "ICL score", Series: icl, ZeroLine: true, Threshold: math.NaN(), Empty: "no icl in metrics.csv"},
		},
	}
}

// notTimeline refuses a training timeline given as heads' MODEL, saying to use --timeline.
func notTimeline(model string) error {
	if model != "" && timeline.IsTimeline(model) {
		return usagef("%s is a training timeline, not a model; score its steps with --timeline %s (or browse them with inspect %s)", model, model, model)
	}
	return nil
}

// score opens the step's model, scores its heads as runHeads does, and closes it.
func (r *timelineRun) score(st timeline.Step) ([]analysis.HeadScores, error) {
	f, h := r.f, r.h
	l, err := f.open(st.Model)
	if err != nil {
		return nil, err
	}
	defer l.close()
	o, bar, closeCorpus, err := h.options(f, l, r.bos)
	if err != nil {
		return nil, err
	}
	defer closeCorpus()
	if err := r.same(&o); err != nil {
		return nil, err
	}
	if l.sess.Seq2Seq() && r.rep == nil {
		notice("the model is an encoder–decoder; every sequence is run as both its source and its target")
	}
	if err := f.applyAblation(l, o.Text); err != nil {
		return nil, err
	}
	if l.limit.given {
		o.Budget = l.limit.bytes
	}
	rep, err := analysis.ScoreHeads(l.sess, o)
	if err != nil {
		return nil, headsError(err, f, h, l.limit)
	}
	if err := f.sel.only.checkHeads(rep.Scores); err != nil {
		return nil, err
	}
	if rep.Degenerate != "" {
		fmt.Fprintf(os.Stderr, "warning: step %d: %s\n", st.Step, rep.Degenerate)
	}
	if rep.Text.Kind == analysis.TextCorpus {
		if err := corpusReport(bar, rep, f.textFile, h.window); err != nil {
			return nil, err
		}
	}
	if r.rep == nil { // said once: every step runs the same probe and text
		r.rep, r.source = rep, rep.Text.String()
		if rep.Probe.N < h.probeLen {
			notice("the probe has %d tokens per copy (not %d) to fit the model's %d positions", rep.Probe.N, h.probeLen, l.sess.Limits.Positions)
		}
		switch rep.Text.Kind {
		case analysis.TextCorpus:
			r.source = fmt.Sprintf("%d windows of %d tokens of %s", rep.Text.Corpus.Windows, h.window, f.textFile)
		case analysis.TextProbes:
			r.source += " (the model has no tokenizer and no prompt was given)"
			if f.format != "table" {
				notice("previous-token, first-token, self and entropy are scored on the probes: no tokenizer and no prompt")
			}
		}
	}
	return f.sel.only.headsOf(rep.Scores), nil
}

// same checks that the step runs the first step's probe and text: a timeline is compared
// step by step only on one input. Steps whose models differ in vocabulary or positions
// (and so draw other probes) are refused.
func (r *timelineRun) same(o *analysis.HeadsOptions) error {
	if r.first == nil {
		r.first = o
		return nil
	}
	a, b := r.first.Probe, o.Probe
	switch {
	case a.Vocab != b.Vocab || a.Positions != b.Positions:
		return fmt.Errorf("its model has %d ids and %d positions where the first step's has %d and %d, so its probe would differ; every step of a timeline must have one vocabulary and position table", b.Vocab, b.Positions, a.Vocab, a.Positions)
	case a.N != b.N || a.K != b.K || a.Seed != b.Seed || a.BOS != b.BOS:
		return fmt.Errorf("its probe (%d × %d tokens, seed %d, BOS %d) differs from the first step's (%d × %d, seed %d, BOS %d); every step must run the same probe", b.K, b.N, b.Seed, b.BOS, a.K, a.N, a.Seed, a.BOS)
	}
	if !slices.Equal(r.first.Text, o.Text) || !slices.Equal(r.first.Sample, o.Sample) {
		return fmt.Errorf("its prompt encodes to other ids than the first step's; give a prompt that does not change while the timeline is scored")
	}
	return nil
}

// timelineInputs are the files scoring the timeline reads, which --out may not replace:
// its index, metrics and tokenizer, every file of its steps' folders, and the files the
// flags name (--tokenizer, --text-file, --ablate-ref, --input arrays).
func timelineInputs(tl *timeline.Timeline, f *runFlags) []input {
	in := []input{
		{"the timeline's index", filepath.Join(tl.Dir, timeline.IndexFile)},
		{"the timeline's metrics", filepath.Join(tl.Dir, timeline.MetricsFile)},
		{"the tokenizer", tl.Tokenizer},
	}
	if f.tokenizer != "" {
		in = append(in, input{"the tokenizer", f.tokenizer}, input{"the tokenizer", filepath.Join(f.tokenizer, "tokenizer.json")})
	}
	for _, st := range tl.Steps {
		entries, _ := os.ReadDir(st.Dir)
		for _, e := range entries {
			if !e.IsDir() {
				in = append(in, input{fmt.Sprintf("a file of step %d's model (%s)", st.Step, e.Name()), filepath.Join(st.Dir, e.Name())})
			}
		}
	}
	return append(in, f.flagInputs()...)
}

// timelineTable is heads' table with leading step and tokens columns, the steps' blocks
// one after another.
func timelineTable(blocks []stepScores) *tableio.Table {
	var step, tokens []int64
	var all []analysis.HeadScores
	for _, b := range blocks {
		for range b.scores {
			step, tokens = append(step, b.step.Step), append(tokens, b.step.Tokens)
		}
		all = append(all, b.scores...)
	}
	t := (&tableio.Table{}).Add(tableio.Ints("step", step), tableio.Ints("tokens", tokens))
	return t.Add(headsTable(all).Columns...)
}

// timelineHeads are the heads the table shows: those whose score by reaches its threshold
// at any step, and the timelineTop best at the last step; sorted by their score at the
// last step (best first; a head the last step lacks, or without the score, last).
func timelineHeads(blocks []stepScores, by analysis.Score) []string {
	threshold, hasThreshold := by.Threshold()
	better := func(a, b float64) bool {
		switch {
		case math.IsNaN(a) || math.IsNaN(b):
			return !math.IsNaN(a) && math.IsNaN(b)
		case by == analysis.Entropy:
			return a < b
		}
		return a > b
	}
	last := map[string]float64{}
	var order []string // every head, first seen first
	shown := map[string]bool{}
	for _, b := range blocks {
		for _, h := range b.scores {
			name := h.Name()
			if _, seen := last[name]; !seen {
				order = append(order, name)
				last[name] = math.NaN()
			}
			if v := h.Get(by); hasThreshold && v >= threshold {
				shown[name] = true
			}
		}
	}
	final := blocks[len(blocks)-1].scores
	for _, h := range final {
		last[h.Name()] = h.Get(by)
	}
	sort.SliceStable(order, func(i, j int) bool { return better(last[order[i]], last[order[j]]) })
	for i, name := range order {
		if i < timelineTop && !math.IsNaN(last[name]) {
			shown[name] = true
		}
	}
	var out []string
	for _, name := range order {
		if shown[name] {
			out = append(out, name)
		}
	}
	return out
}

// writeTimelineReport writes the table of --format table: what was scored, then one
// column per step (its tokens under it), the run's train_loss, eval_loss and icl where
// metrics.csv has them, and one row per head of timelineHeads with its score by at each
// step ('*' at or above the threshold, '-' where the step lacks the head or the score).
func writeTimelineReport(w io.Writer, tl *timeline.Timeline, r *timelineRun, blocks []stepScores, by analysis.Score) error {
	name := tl.Model
	if name == "" {
		name = filepath.Base(tl.Dir)
	}
	first, last := blocks[0].step, blocks[len(blocks)-1].step
	fmt.Fprintf(w, "timeline %s: %d steps, step %d to %d (%s to %s tokens)\n", name, len(blocks), first.Step, last.Step, count(first.Tokens), count(last.Tokens))
	p := r.rep.Probe
	bosText := ""
	if p.BOS >= 0 {
		bosText = fmt.Sprintf("BOS %d + ", p.BOS)
	}
	fmt.Fprintf(w, "probe: %d sequences of %s2 × %d random tokens, seed %d; other scores on %s\n", len(p.IDs), bosText, p.N, p.Seed, r.source)
	threshold, hasThreshold := by.Threshold()
	if hasThreshold {
		fmt.Fprintf(w, "%s by step: the heads that reach %.1f at any step ('*') and the %d best at the last step\n\n", by, threshold, timelineTop)
	} else {
		fmt.Fprintf(w, "%s by step: the %d lowest at the last step\n\n", by, timelineTop)
	}
	cells := make([]string, len(blocks))
	width := 7
	for i, b := range blocks {
		cells[i] = strconv.FormatInt(b.step.Step, 10)
		width = max(width, len(cells[i])+1)
	}
	row := func(label string, cell func(i int) string) error {
		line := fmt.Sprintf("%-10s", label)
		for i := range blocks {
			line += fmt.Sprintf(" %*s", width+1, cell(i))
		}
		_, err := fmt.Fprintln(w, strings.TrimRight(line, " "))
		return err
	}
	row("step", func(i int) string { return cells[i] + " " })
	row("tokens", func(i int) string { return count(blocks[i].step.Tokens) + " " })
	for _, col := range []string{"train_loss", "eval_loss", "icl"} {
		if !slices.Contains(tl.Columns, col) {
			continue
		}
		row(col, func(i int) string { return fixed(blocks[i].step.Metrics.Get(col)) + " " })
	}
	fmt.Fprintln(w)
	heads := timelineHeads(blocks, by)
	byStep := make([]map[string]float64, len(blocks))
	for i, b := range blocks {
		byStep[i] = map[string]float64{}
		for _, h := range b.scores {
			byStep[i][h.Name()] = h.Get(by)
		}
	}
	for _, name := range heads {
		err := row(name, func(i int) string {
			v, ok := byStep[i][name]
			if !ok {
				v = math.NaN()
			}
			mark := " "
			if hasThreshold && v >= threshold {
				mark = "*"
			}
			return fixed(v) + mark
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// fixed is v with 3 decimals, "-" for NaN.
func fixed(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// count writes a token count briefly: 950, 51.2k, 3.1M, 1.2B.
func count(n int64) string {
	v := float64(n)
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e9, "B"}, {1e6, "M"}, {1e3, "k"}} {
		if v >= u.div {
			return strconv.FormatFloat(v/u.div, 'g', 3, 64) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
