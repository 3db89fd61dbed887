package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tableio"
	"github.com/attnscope/attnscope/tokenizer"
)

// headsFlags are the flags of `inspect heads` besides the shared ones.
type headsFlags struct {
	probeLen, probes int
	seed             uint64
	bos              string
	sortBy           string
	window           int
	sequential       bool
	timeline         string // --timeline DIR (see timeline.go)
	png              string // --png FILE: with --timeline, the phase-change figure
	xScale           string // --x-scale auto|log|linear: the figure's tokens axis
}

func newHeadsCmd() *cobra.Command {
	var f runFlags
	var h headsFlags
	cmd := &cobra.Command{
		Use:   "heads [MODEL | --timeline DIR] [--probe-len N] [--probes K] [--seed S] [--text TEXT | --ids … | --text-file FILE [--window T]]",
		Short: "Score every head: induction, previous-token, duplicate-token, first-token, self, entropy",
		Long: `heads scores every attention head and prints one CSV row per head:
layer,head,induction,prev_token,duplicate_token,first_token,self,entropy

Induction and duplicate-token come from seeded probes, "N random tokens, then the same N
again" (K sequences, run in batches of up to 64 whose outputs fit in memory: 1 GiB, or a
quarter of RAM when less; at most 4194304 probe tokens in all). The other scores come from the prompt (--text,
--text-file, --ids), else a built-in English sample when the model has a tokenizer, else the
probes. With --text-file and --window T, the file is streamed through the model in windows of
T tokens and the text scores are averaged over all of them (memory does not grow with the
file). --format table prints a sorted table that marks scores at or above 0.4 with '*' and
names each head's pattern with the first token discounted: its rows are renormalised
without position 0 (where many models park attention, an "attention sink"), and the
strongest of induction, prev-token, duplicate-token and self that still reaches 0.4 is
named with its discounted score, e.g. "prev-token 0.712, sink 0.620" (the first-token
share is added when it reaches 0.4 too); "sink" alone when the head does nothing else.
--format npz, parquet or json (or an --out named so) writes the CSV's columns as numpy
arrays, a Parquet file or a JSON array of objects.

--layer and --head (lists and ranges such as 0,3-5) keep those heads' rows; only the chosen
layers are exposed and run for their attention, so memory follows them (every head of a
chosen layer is scored anyway). --max-memory SIZE bounds a batch of probes and any one run.

--timeline DIR scores every step of a training timeline (a folder with timeline.json, as
export/timeline.py writes it) instead of one MODEL: the same columns after leading
step,tokens columns, one block of rows per step, every step scored on the same probes and
prompt (or sample) with the same flags, its tokenizer DIR/tokenizer.json, one step's model
open at a time. Its --format table shows the --sort score over the steps: a column per
step, rows for the run's train_loss, eval_loss and icl, then the heads that reach 0.4 at
any step and the 5 best at the last step (for entropy, the 5 lowest), sorted by their last
score. --png FILE (.png or .svg) draws those heads' --sort score over tokens seen (the
others faint), the run's eval_loss and train_loss, and its icl score, instead of the table.`,
		Args: modelArgs("heads"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := f.sel.parse(); err != nil {
				return err
			}
			if cmd.Flags().Changed("timeline") {
				return runTimeline(h.timeline, args, &f, &h)
			}
			if err := notTimeline(firstArg(args)); err != nil {
				return err
			}
			if cmd.Flags().Changed("png") {
				return usagef("--png draws a timeline's phase-change figure; give --timeline DIR with it (dump --png draws one model's attention)")
			}
			return runHeads(firstArg(args), &f, &h)
		},
	}
	f.register(cmd)
	f.sel.register(cmd)
	f.registerOutput(cmd, formatUsage("table (sorted, thresholds flagged)"), "csv")
	fl := cmd.Flags()
	fl.IntVar(&h.probeLen, "probe-len", analysis.DefaultProbeLen, "random tokens per copy in each probe")
	fl.IntVar(&h.probes, "probes", analysis.DefaultProbes, "number of probe sequences")
	fl.Uint64Var(&h.seed, "seed", 0, "seed of the probe tokens")
	fl.StringVar(&h.bos, "bos", "auto", "token put before each probe: auto (the tokenizer's BOS when it adds one), none, or an id")
	fl.StringVar(&h.sortBy, "sort", "induction", "score the table is sorted by (highest first; entropy lowest first)")
	fl.IntVar(&h.window, "window", 0, "with --text-file: stream the file in windows of this many tokens")
	fl.BoolVar(&h.sequential, "sequential", false, "run the probes one by one instead of in batches")
	fl.StringVar(&h.timeline, "timeline", "", "score every step of the training timeline in this folder instead of MODEL")
	fl.StringVar(&h.png, "png", "", "with --timeline: save the phase-change figure instead of the table (the table too with --out); FILE.png is a PNG, FILE.svg an SVG")
	fl.StringVar(&h.xScale, "x-scale", "auto", "with --png: the tokens axis: auto (log when the tokens span more than "+fmt.Sprint(heatmap.LogDecades)+" decades), log or linear")
	return cmd
}

// runHeads scores the heads of the model at modelPath (analysis.ScoreHeads) and prints them.
func runHeads(modelPath string, f *runFlags, h *headsFlags) error {
	sortBy, bos, err := h.check(f)
	if err != nil {
		return err
	}
	l, out, err := f.openTable(modelPath)
	if err != nil {
		return err
	}
	defer l.close()
	defer out.Abort()
	o, bar, closeCorpus, err := h.options(f, l, bos)
	if err != nil {
		return err
	}
	defer closeCorpus()
	if l.sess.Seq2Seq() {
		notice("the model is an encoder–decoder; every sequence is run as both its source and its target")
	}
	if err := f.applyAblation(l, o.Text); err != nil {
		return err
	}
	if l.limit.given {
		o.Budget = l.limit.bytes // a batch of probes, and any one run, stays within --max-memory
	}
	rep, err := analysis.ScoreHeads(l.sess, o)
	if err != nil {
		return headsError(err, f, h, l.limit)
	}
	if err := f.sel.only.checkHeads(rep.Scores); err != nil {
		return err
	}
	rep.Scores = f.sel.only.headsOf(rep.Scores)
	if rep.Probe.N < h.probeLen {
		notice("the probe has %d tokens per copy (not %d) to fit the model's %d positions", rep.Probe.N, h.probeLen, l.sess.Limits.Positions)
	}
	if rep.Degenerate != "" {
		fmt.Fprintln(os.Stderr, "warning: "+rep.Degenerate)
	}
	source := rep.Text.String()
	switch rep.Text.Kind {
	case analysis.TextCorpus:
		if err := corpusReport(bar, rep, f.textFile, h.window); err != nil {
			return err
		}
		source = fmt.Sprintf("%d windows of %d tokens of %s", rep.Text.Corpus.Windows, h.window, f.textFile)
	case analysis.TextProbes:
		source += " (the model has no tokenizer and no prompt was given)"
		if f.format != "table" {
			notice("previous-token, first-token, self and entropy are scored on the probes: no tokenizer and no prompt")
		}
	}
	if f.format == "table" {
		err = writeHeadsReport(out, rep, source, sortBy)
	} else {
		err = writeTable(out, f.format, headsTable(rep.Scores))
	}
	if err != nil {
		return err
	}
	return out.Commit()
}

// notice writes "inspect: …" on stderr.
func notice(format string, args ...any) { fmt.Fprintf(os.Stderr, "inspect: "+format+"\n", args...) }

// check refuses wrong combinations of heads' flags before anything is loaded, and returns
// the table's sort score and --bos.
func (h *headsFlags) check(f *runFlags) (analysis.Score, int64, error) {
	if err := f.resolveFormat("heads", append(tableFormats, "table")...); err != nil {
		return 0, 0, err
	}
	sortBy, err := analysis.ParseScore(h.sortBy)
	if err != nil {
		return 0, 0, usageError{err}
	}
	switch h.xScale {
	case "auto", "log", "linear":
	default:
		return 0, 0, usagef("--x-scale %q: use auto, log or linear", h.xScale)
	}
	if h.probeLen < 2 || h.probes < 1 {
		return 0, 0, usagef("--probe-len must be at least 2 and --probes at least 1")
	}
	if f.given("target", f.target) || f.given("target-ids", f.targetIDs) {
		return 0, 0, usagef("heads runs every sequence as both source and target; --target and --target-ids are for dump, tokens and the browser")
	}
	if h.window != 0 {
		if !f.given("text-file", f.textFile) || f.given("text", f.text) || f.given("ids", f.ids) {
			return 0, 0, usagef("--window streams a corpus: give it with --text-file only")
		}
		if h.window < 2 {
			return 0, 0, usagef("--window must be at least 2 tokens")
		}
	}
	bos, err := parseBOS(h.bos)
	return sortBy, bos, err
}

// options builds what analysis.ScoreHeads runs: the probe, and the prompt (--text, --ids,
// --text-file), the corpus (--text-file with --window, streamed, with a progress bar) or
// the built-in sample (a model with a tokenizer). The returned function closes the corpus.
func (h *headsFlags) options(f *runFlags, l *loaded, bos int64) (analysis.HeadsOptions, *progress, func(), error) {
	var o analysis.HeadsOptions
	none := func() {}
	var err error
	prompted := f.given("text", f.text) || f.given("ids", f.ids) || f.given("text-file", f.textFile)
	if prompted && h.window == 0 {
		// The prompt for the text scores (this loads the tokenizer when text must be encoded).
		if o.Text, err = f.prompt(l); err != nil {
			return o, nil, none, err
		}
	}
	if l.tok == nil {
		tok, err := tokenizer.Find(l.model.Path, f.tokenizer, l.sess.Limits.Vocab)
		switch {
		case err == nil:
			l.tok = tok
		case f.tokenizer != "" || h.window > 0:
			return o, nil, none, err
		}
	}
	if o.Probe, err = l.probeOptions(h.probeLen, h.probes, h.seed, bos, h.bos == "auto"); err != nil {
		return o, nil, none, err
	}
	o.Sequential = h.sequential
	switch {
	case h.window > 0:
		if p := l.sess.Limits.Positions; p > 0 && h.window > p {
			return o, nil, none, usagef("--window %d is longer than the model's %d positions", h.window, p)
		}
		file, err := os.Open(f.textFile)
		if err != nil {
			return o, nil, none, fmt.Errorf("cannot read --text-file %s: %w", f.textFile, errors.Unwrap(err))
		}
		var size int64
		if st, err := file.Stat(); err == nil {
			size = st.Size()
		}
		bar := newProgress(size)
		o.Corpus = file
		o.CorpusOptions = analysis.CorpusOptions{Window: h.window, BOS: o.Probe.BOS, Encode: l.encodePiece, Progress: bar.update}
		return o, bar, func() { file.Close() }, nil
	case o.Text == nil && l.tok != nil:
		if o.Sample, _, err = l.tok.EncodeDefault(analysis.NaturalText); err != nil {
			return o, nil, none, fmt.Errorf("tokenizing the built-in sample: %w", err)
		}
	}
	return o, nil, none, nil
}

// headsError words analysis's limits in terms of the flags that set them.
func headsError(err error, f *runFlags, h *headsFlags, limit memLimit) error {
	var pe *analysis.ProbeSizeError
	var le *analysis.LimitError
	var pr *analysis.ProbeRunError
	var given *session.GivenInputError
	budget := limit.headsBudget()
	switch {
	case errors.As(err, &pr) && errors.As(err, &given) && given.Length > 0:
		return usagef("--input %s: %s; heads runs its induction probes with the given arrays too, so give arrays as long as the probe (%d tokens), or leave --input out", given.Name, given.For("the probe"), pr.Len)
	case errors.As(err, &le) && le.Layers != nil && le.What == "probe":
		return memoryRefusal(le, budget, smallerProbe(le, h.probeLen), true)
	case errors.As(err, &le) && le.Layers != nil && le.What == "window":
		return memoryRefusal(le, budget, "use a smaller --window", true)
	case errors.As(err, &le) && le.Layers != nil:
		return memoryRefusal(le, budget, shorter(le.What, le.MaxTokens), true)
	case errors.As(err, &pe):
		return usagef("--probes %d × %d tokens per sequence is %d probe tokens, more than the limit of %d; use fewer --probes or a smaller --probe-len", pe.Sequences, pe.Len, int64(pe.Sequences)*int64(pe.Len), pe.Max)
	case errors.As(err, &le) && le.What == "probe":
		return usagef("%v; %s", err, smallerProbe(le, h.probeLen))
	case errors.As(err, &le) && le.What == "window":
		return usagef("%v; use a smaller --window", err)
	case errors.As(err, &le):
		return usagef("%v; give a shorter prompt", err)
	case h.window > 0:
		return fmt.Errorf("scoring %s: %w", f.textFile, err)
	}
	return err
}

// smallerProbe is the advice for a probe that does not fit --max-memory: the --probe-len
// that fits (2N tokens and a BOS within le.MaxTokens), or, when none smaller than the one
// given does (not even the least, 2), that --max-memory must grow (ending in noneFits).
func smallerProbe(le *analysis.LimitError, given int) string {
	fit := (le.MaxTokens - 1) / 2
	if fit < 2 || fit >= given {
		return "no smaller --probe-len fits (the least is 2), so " + noneFits
	}
	return fmt.Sprintf("use a smaller --probe-len (at most %d)", fit)
}

// corpusReport finishes the progress bar and reports the window count and the
// in-context-learning score on stderr; a corpus with no full window is an error.
func corpusReport(bar *progress, rep *analysis.HeadsReport, path string, T int) error {
	st := rep.Text.Corpus
	bar.done(st.Bytes, st.Windows, st.Tokens)
	if st.Windows == 0 {
		return fmt.Errorf("%s holds fewer than %d tokens: no window to score; use a smaller --window", path, T)
	}
	msg := fmt.Sprintf("inspect: scored %d windows of %d tokens (%d tokens left over)", st.Windows, T, st.Leftover)
	if icl := rep.ICL; icl != nil && icl.N() > 0 {
		sc, e, lt := icl.Score()
		msg += fmt.Sprintf("; in-context-learning score %.4f (loss %.4f at position %d − %.4f at position %d)", sc, lt, icl.Late, e, icl.Early)
	}
	fmt.Fprintln(os.Stderr, msg)
	return nil
}

// encodePiece tokenizes one piece of a corpus (no special tokens added) and checks the
// ids against the model's vocabulary.
func (l *loaded) encodePiece(text string) ([]int64, error) {
	ids, _, err := l.tok.Encode(text, false)
	if err == nil {
		err = l.tok.CheckVocab(ids, l.sess.Limits.Vocab)
	}
	return ids, err
}

// writeHeadsReport writes the table: a line saying what was scored, the corpus's
// in-context-learning score, then the heads sorted by one score.
func writeHeadsReport(w io.Writer, rep *analysis.HeadsReport, source string, sortBy analysis.Score) error {
	p := rep.Probe
	bosText := ""
	if p.BOS >= 0 {
		bosText = fmt.Sprintf("BOS %d + ", p.BOS)
	}
	fmt.Fprintf(w, "probe: %d sequences of %s2 × %d random tokens, seed %d; other scores on %s\n", len(p.IDs), bosText, p.N, p.Seed, source)
	if icl := rep.ICL; icl != nil && icl.N() > 0 {
		sc, e, lt := icl.Score()
		fmt.Fprintf(w, "in-context-learning score: %.4f (mean loss %.4f at position %d − %.4f at position %d, %d windows)\n", sc, lt, icl.Late, e, icl.Early, icl.N())
	}
	fmt.Fprintln(w)
	return writeHeadsTable(w, rep.Scores, sortBy)
}

// parseBOS reads --bos: auto and none are -1 here (auto is decided once the tokenizer is known).
func parseBOS(s string) (int64, error) {
	switch s {
	case "auto", "none", "":
		return -1, nil
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 0 {
		return 0, usagef("--bos takes auto, none or a token id, not %q", s)
	}
	return id, nil
}

// probeOptions are the options of a probe of n tokens per copy, k sequences and seed, over
// the ids the model has trained: its vocabulary (or the tokenizer's, when the embedding is
// padded beyond it), without special tokens, after bos (or the tokenizer's own BOS token
// when autoBOS).
func (l *loaded) probeOptions(n, k int, seed uint64, bos int64, autoBOS bool) (analysis.ProbeOptions, error) {
	s := l.sess
	vocab := s.Limits.Vocab
	if vocab == 0 {
		res, err := s.Run([]int64{0})
		if err != nil {
			return analysis.ProbeOptions{}, err
		}
		vocab = res.Vocab
		s.Recycle(res)
		if vocab == 0 {
			return analysis.ProbeOptions{}, fmt.Errorf("cannot tell the model's vocabulary size (no token embedding found, no logits output), so probe tokens cannot be drawn")
		}
	}
	opts := analysis.ProbeOptions{N: n, K: k, Seed: seed, Vocab: vocab, BOS: bos, Positions: s.Limits.Positions}
	if l.tok != nil {
		opts.Special = l.tok.IsSpecial
		if n := l.tok.VocabSize(); n > 0 && n < vocab {
			opts.Vocab = n // a padded embedding: rows past the tokenizer's ids are never trained
		}
		if autoBOS {
			opts.BOS = tokenizerBOS(l.tok)
		}
	}
	if opts.BOS >= int64(vocab) {
		return analysis.ProbeOptions{}, usagef("--bos %d is outside the model's vocabulary of %d ids", opts.BOS, vocab)
	}
	return opts, nil
}

// tokenizerBOS is the special token the tokenizer puts in front of a text, or −1.
func tokenizerBOS(tok *tokenizer.Tokenizer) int64 {
	const text = "The cat sat on the mat."
	ids, _, err := tok.EncodeDefault(text)
	plain, _, err2 := tok.Encode(text, false)
	if err != nil || err2 != nil || len(ids) <= len(plain) || !tok.IsSpecial(ids[0]) {
		return -1
	}
	return ids[0]
}

// progress draws a one-line bar on stderr when stderr is a terminal.
type progress struct {
	on    bool
	size  int64
	start time.Time
	last  time.Time
}

func newProgress(size int64) *progress {
	st, err := os.Stderr.Stat()
	return &progress{on: err == nil && st.Mode()&os.ModeCharDevice != 0, size: size, start: time.Now()}
}

func (p *progress) update(read int64, windows, tokens int) {
	if !p.on || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.draw(read, windows, tokens)
}

func (p *progress) draw(read int64, windows, tokens int) {
	frac := 1.0
	if p.size > 0 {
		frac = math.Min(1, float64(read)/float64(p.size))
	}
	const width = 30
	full := int(frac * width)
	rate := float64(tokens) / math.Max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(os.Stderr, "\r[%s%s] %3.0f%%  %d windows  %.0f tokens/s ", strings.Repeat("#", full), strings.Repeat(".", width-full), frac*100, windows, rate)
}

func (p *progress) done(read int64, windows, tokens int) {
	if p.on {
		p.draw(read, windows, tokens)
		fmt.Fprintln(os.Stderr)
	}
}

// headsTable is the contract's table: layer,head,induction,prev_token,… (8 significant
// digits in CSV and JSON; NaN for a score with no data).
func headsTable(scores []analysis.HeadScores) *tableio.Table {
	layer, head := make([]int64, len(scores)), make([]int64, len(scores))
	for i, h := range scores {
		layer[i], head[i] = int64(h.Layer), int64(h.Head)
	}
	t := (&tableio.Table{}).Add(tableio.Ints("layer", layer), tableio.Ints("head", head))
	for _, sc := range analysis.AllScores {
		v := make([]float64, len(scores))
		for i, h := range scores {
			v[i] = h.Get(sc)
		}
		t.Add(tableio.Floats(sc.String(), v, 8))
	}
	return t
}

// appendScore writes a score with 8 significant digits (NaN for a score with no data).
func appendScore(buf []byte, v float64) []byte {
	if math.IsNaN(v) {
		return append(buf, "NaN"...)
	}
	return strconv.AppendFloat(buf, v, 'g', 8, 64)
}

// writeHeadsTable writes the heads sorted by one score, values at or above their threshold
// marked with '*', and each head's pattern named with the first token discounted
// (patternCell).
func writeHeadsTable(w io.Writer, scores []analysis.HeadScores, by analysis.Score) error {
	sorted := append([]analysis.HeadScores(nil), scores...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Get(by), sorted[j].Get(by)
		switch {
		case math.IsNaN(a) || math.IsNaN(b):
			return !math.IsNaN(a) && math.IsNaN(b) // heads without the score go last
		case by == analysis.Entropy:
			return a < b
		}
		return a > b
	})
	width := func(sc analysis.Score) int { return max(len(sc.String())+1, 7) }
	fmt.Fprintf(w, "%-7s", "head")
	for _, sc := range analysis.AllScores {
		name := sc.String()
		if sc == by {
			name += "↓"
			if by == analysis.Entropy {
				name = sc.String() + "↑"
			}
		}
		fmt.Fprintf(w, " %*s", width(sc)+1, name)
	}
	fmt.Fprintf(w, "  %s\n", "pattern, first token discounted (≥ 0.4)")
	for _, h := range sorted {
		fmt.Fprintf(w, "%-7s", h.Name())
		for _, sc := range analysis.AllScores {
			v := h.Get(sc)
			mark := " "
			if t, ok := sc.Threshold(); ok && v >= t {
				mark = "*"
			}
			cell := "-"
			if !math.IsNaN(v) {
				cell = strconv.FormatFloat(v, 'f', 3, 64)
			}
			fmt.Fprintf(w, " %*s%s", width(sc), cell, mark)
		}
		if _, err := fmt.Fprintf(w, "  %s\n", patternCell(h)); err != nil {
			return err
		}
	}
	return nil
}

// patternCell words a head's analysis.HeadScores.Label: the pattern and its score with the
// first token discounted, then the sink share when it reaches the threshold too
// ("prev-token 0.712, sink 0.620"); "sink 0.950" for a head that does nothing else; "" for
// a head with no pattern.
func patternCell(h analysis.HeadScores) string {
	kind, sink := h.Label()
	switch {
	case kind == "":
		return ""
	case kind == analysis.LabelSink:
		return fmt.Sprintf("sink %.3f", sink)
	}
	cell := fmt.Sprintf("%s %.3f", kind, h.NoSink(kind))
	if sink >= analysis.LabelThreshold {
		cell += fmt.Sprintf(", sink %.3f", sink)
	}
	return cell
}
