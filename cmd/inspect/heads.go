package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/session"
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
}

func newHeadsCmd() *cobra.Command {
	var f runFlags
	var h headsFlags
	cmd := &cobra.Command{
		Use:   "heads MODEL [--probe-len N] [--probes K] [--seed S] [--text TEXT | --ids … | --text-file FILE [--window T]]",
		Short: "Score every head: induction, previous-token, duplicate-token, first-token, self, entropy",
		Long: `heads scores every attention head and prints one CSV row per head:
layer,head,induction,prev_token,duplicate_token,first_token,self,entropy

Induction and duplicate-token come from seeded probes, "N random tokens, then the same N
again" (K sequences, run as one batch). The other scores come from the prompt (--text,
--text-file, --ids), else a built-in English sample when the model has a tokenizer, else the
probes. With --text-file and --window T, the file is streamed through the model in windows of
T tokens and the text scores are averaged over all of them (memory does not grow with the
file). --format table prints a sorted table that flags heads at or above 0.4.`,
		Args: exactArgs(1, "heads needs one MODEL file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHeads(args[0], &f, &h)
		},
	}
	f.register(cmd)
	cmd.Flags().Lookup("format").Usage = "output format: csv, or table (sorted, thresholds flagged)"
	fl := cmd.Flags()
	fl.IntVar(&h.probeLen, "probe-len", analysis.DefaultProbeLen, "random tokens per copy in each probe")
	fl.IntVar(&h.probes, "probes", analysis.DefaultProbes, "number of probe sequences")
	fl.Uint64Var(&h.seed, "seed", 0, "seed of the probe tokens")
	fl.StringVar(&h.bos, "bos", "auto", "token put before each probe: auto (the tokenizer's BOS when it adds one), none, or an id")
	fl.StringVar(&h.sortBy, "sort", "induction", "score the table is sorted by (highest first; entropy lowest first)")
	fl.IntVar(&h.window, "window", 0, "with --text-file: stream the file in windows of this many tokens")
	fl.BoolVar(&h.sequential, "sequential", false, "run the probes one by one instead of as one batch")
	return cmd
}

func runHeads(modelPath string, f *runFlags, h *headsFlags) error {
	if f.format != "csv" && f.format != "table" {
		return usagef("heads writes csv or table; --format %q is not supported", f.format)
	}
	sortBy, err := analysis.ParseScore(h.sortBy)
	if err != nil {
		return usageError{err}
	}
	if h.probeLen < 2 || h.probes < 1 {
		return usagef("--probe-len must be at least 2 and --probes at least 1")
	}
	if f.target != "" || f.targetIDs != "" {
		return usagef("heads runs every sequence as both source and target; --target and --target-ids are for dump, tokens and the browser")
	}
	if h.window != 0 {
		if f.textFile == "" || f.text != "" || f.ids != "" {
			return usagef("--window streams a corpus: give it with --text-file only")
		}
		if h.window < 2 {
			return usagef("--window must be at least 2 tokens")
		}
	}
	bos, err := parseBOS(h.bos)
	if err != nil {
		return err
	}
	l, err := f.open(modelPath)
	if err != nil {
		return err
	}
	defer l.close()
	s := l.sess
	notice := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "inspect: "+format+"\n", args...) }

	// The prompt for the text scores, when one is given on the command line (this loads
	// the tokenizer when text must be encoded).
	var promptIDs []int64
	textSource := ""
	if (f.text != "" || f.ids != "" || f.textFile != "") && h.window == 0 {
		if promptIDs, err = f.prompt(l); err != nil {
			return err
		}
		if p := s.Limits.Positions; f.textFile != "" && p > 0 && len(promptIDs) > p {
			return fmt.Errorf("%s has %d tokens but the model's position table holds %d; score it as a corpus with --window %d", f.textFile, len(promptIDs), p, p)
		}
		textSource = fmt.Sprintf("the prompt (%d tokens)", len(promptIDs))
	}
	if l.tok == nil {
		tok, err := tokenizer.Find(l.model.Path, f.tokenizer, s.Limits.Vocab)
		switch {
		case err == nil:
			l.tok = tok
		case f.tokenizer != "" || h.window > 0:
			return err
		}
	}

	opts, err := l.probeOptions(h.probeLen, h.probes, h.seed, bos, h.bos == "auto")
	if err != nil {
		return err
	}
	probe, err := analysis.NewProbe(opts)
	if err != nil {
		return err
	}
	if probe.N < h.probeLen {
		notice("the probe has %d tokens per copy (not %d) to fit the model's %d positions", probe.N, h.probeLen, s.Limits.Positions)
	}
	if s.Seq2Seq() {
		notice("the model is an encoder–decoder; every sequence is run as both its source and its target")
	}
	probeRuns, err := analysis.RunProbe(s, probe, !h.sequential)
	if err != nil {
		return err
	}
	if len(probeRuns) > 0 {
		warnDegenerate(os.Stderr, probeRuns[0])
	}
	acc := analysis.NewAccumulator()
	for _, r := range probeRuns {
		if err := acc.AddProbe(r, probe.N, probe.Start()); err != nil {
			return err
		}
	}
	noText := h.window == 0 && promptIDs == nil && l.tok == nil
	if noText {
		for _, r := range probeRuns {
			acc.AddText(r)
		}
		textSource = "the probes (the model has no tokenizer and no prompt was given)"
		if f.format == "csv" {
			notice("previous-token, first-token, self and entropy are scored on the probes: no tokenizer and no prompt")
		}
	}
	s.RecycleBatch(probeRuns)

	var icl *analysis.ICL
	switch {
	case h.window > 0:
		if icl, err = streamCorpus(l, f.textFile, h.window, opts.BOS, acc); err != nil {
			return err
		}
		_, n := acc.Counts()
		textSource = fmt.Sprintf("%d windows of %d tokens of %s", n, h.window, f.textFile)
	case promptIDs != nil:
		if err := addText(s, promptIDs, acc); err != nil {
			return err
		}
	case l.tok != nil:
		ids, _, err := l.tok.EncodeDefault(analysis.NaturalText)
		if err != nil {
			return fmt.Errorf("tokenizing the built-in sample: %w", err)
		}
		if p := s.Limits.Positions; p > 0 && len(ids) > p {
			ids = ids[:p]
		}
		if err := addText(s, ids, acc); err != nil {
			return err
		}
		textSource = fmt.Sprintf("the built-in English sample (%d tokens)", len(ids))
	}
	scores := acc.Scores()

	out, err := openOutput(f.out)
	if err != nil {
		return err
	}
	if f.format == "table" {
		bosText := ""
		if probe.BOS >= 0 {
			bosText = fmt.Sprintf("BOS %d + ", probe.BOS)
		}
		fmt.Fprintf(out, "probe: %d sequences of %s2 × %d random tokens, seed %d; other scores on %s\n", len(probe.IDs), bosText, probe.N, probe.Seed, textSource)
		if icl != nil && icl.N() > 0 {
			sc, e, lt := icl.Score()
			fmt.Fprintf(out, "in-context-learning score: %.4f (mean loss %.4f at position %d − %.4f at position %d, %d windows)\n", sc, lt, icl.Late, e, icl.Early, icl.N())
		}
		fmt.Fprintln(out)
		err = writeHeadsTable(out, scores, sortBy)
	} else {
		err = writeHeadsCSV(out, scores)
	}
	if err != nil {
		out.abort()
		return err
	}
	return out.commit()
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

// addText runs one prompt and adds its text scores.
func addText(s *session.Session, ids []int64, acc *analysis.Accumulator) error {
	res, err := s.Run(ids)
	if err != nil {
		return err
	}
	defer s.Recycle(res)
	return acc.AddText(res)
}

// streamCorpus runs the corpus at path through the model in windows of T tokens (see
// analysis.ScoreCorpus), with a progress bar on stderr when stderr is a terminal, and
// reports the window count and the in-context-learning score on stderr.
func streamCorpus(l *loaded, path string, T int, bos int64, acc *analysis.Accumulator) (*analysis.ICL, error) {
	s := l.sess
	if p := s.Limits.Positions; p > 0 && T > p {
		return nil, usagef("--window %d is longer than the model's %d positions", T, p)
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read --text-file: %w", errors.Unwrap(err))
	}
	defer file.Close()
	var size int64
	if st, err := file.Stat(); err == nil {
		size = st.Size()
	}
	var icl *analysis.ICL
	if early, late, ok := analysis.ICLPositions(T); ok {
		icl = &analysis.ICL{Early: early, Late: late}
	}
	bar := newProgress(size)
	st, err := analysis.ScoreCorpus(s, file, analysis.CorpusOptions{
		Window: T,
		BOS:    bos,
		Encode: func(text string) ([]int64, error) {
			ids, _, err := l.tok.Encode(text, false)
			if err == nil {
				err = l.tok.CheckVocab(ids, s.Limits.Vocab)
			}
			return ids, err
		},
		Progress: bar.update,
	}, acc, icl)
	if err != nil {
		return nil, fmt.Errorf("scoring %s: %w", path, err)
	}
	bar.done(st.Bytes, st.Windows, st.Tokens)
	if st.Windows == 0 {
		return nil, fmt.Errorf("%s holds fewer than %d tokens: no window to score; use a smaller --window", path, T)
	}
	msg := fmt.Sprintf("inspect: scored %d windows of %d tokens (%d tokens left over)", st.Windows, T, st.Leftover)
	if icl != nil && icl.N() > 0 {
		sc, e, lt := icl.Score()
		msg += fmt.Sprintf("; in-context-learning score %.4f (loss %.4f at position %d − %.4f at position %d)", sc, lt, icl.Late, e, icl.Early)
	}
	fmt.Fprintln(os.Stderr, msg)
	return icl, nil
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

// writeHeadsCSV writes the contract's CSV: layer,head,induction,prev_token,…
func writeHeadsCSV(w *output, scores []analysis.HeadScores) error {
	if _, err := w.WriteString("layer,head,induction,prev_token,duplicate_token,first_token,self,entropy\n"); err != nil {
		return err
	}
	var buf []byte
	for _, h := range scores {
		buf = buf[:0]
		buf = strconv.AppendInt(buf, int64(h.Layer), 10)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, int64(h.Head), 10)
		for _, sc := range analysis.AllScores {
			buf = append(buf, ',')
			buf = appendScore(buf, h.Get(sc))
		}
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// appendScore writes a score with 8 significant digits (NaN for a score with no data).
func appendScore(buf []byte, v float64) []byte {
	if math.IsNaN(v) {
		return append(buf, "NaN"...)
	}
	return strconv.AppendFloat(buf, v, 'g', 8, 64)
}

// writeHeadsTable writes the heads sorted by one score, values at or above their threshold
// marked with '*', and the flagged patterns named.
func writeHeadsTable(w *output, scores []analysis.HeadScores, by analysis.Score) error {
	sorted := append([]analysis.HeadScores(nil), scores...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Get(by), sorted[j].Get(by)
		if by == analysis.Entropy {
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
	fmt.Fprintf(w, "  %s\n", "pattern (≥ 0.4)")
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
		var names []string
		for _, sc := range h.Flags() {
			names = append(names, strings.ReplaceAll(sc.String(), "_", "-"))
		}
		if _, err := fmt.Fprintf(w, "  %s\n", strings.Join(names, ", ")); err != nil {
			return err
		}
	}
	return nil
}
