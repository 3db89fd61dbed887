package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/circuits"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/tableio"
	"github.com/attnscope/attnscope/tokenizer"
	"github.com/attnscope/attnscope/tui"
)

// circuitsFlags are the flags of `inspect circuits`.
type circuitsFlags struct {
	composition, baseline bool
	head                  string
	top                   int
	tokenizer, out        string
	format                string
	// vocabFrom and minCount restrict token pairs to the tokens a corpus uses.
	vocabFrom string
	minCount  int
	// file picks the model inside a MODEL folder (--file).
	file  string
	flags *pflag.FlagSet
}

// maxTop is the most token pairs --top lists: the pairs are kept in a heap per block of
// the vocabulary, so the bound keeps memory far from vocabulary² entries.
const maxTop = 10000

// maxVocabText is the most --vocab-from reads.
const maxVocabText = 256 << 20

// baselineSamples is how many random draws the composition baseline averages.
const baselineSamples = 100

func newCircuitsCmd() *cobra.Command {
	var f circuitsFlags
	cmd := &cobra.Command{
		Use:   "circuits [MODEL] [--composition [--baseline]] [--head L0H3 [--top 20]]",
		Short: "Each head's QK and OV circuits from the weights: copying, positional preference, composition",
		Long: `circuits reads the attention weights from the ONNX file (no run, no prompt) and computes,
in TransformerLens's conventions (W_QK = W_Q W_Kᵀ, W_OV = W_V W_O, LayerNorm scales folded):

  per head     layer,head,ov_copying,qk_prev_token,qk_self,ov_norm,qk_norm
  --composition  from_layer,from_head,to_layer,to_head,q_comp,k_comp,v_comp (+ baseline)
  --head L0H3  the head's strongest OV token pairs and, for a layer-0 head, its skip-trigrams

Tables go out as csv (default), npz, parquet or json (--format, or --out's extension), or
as aligned text with --format table. Without MODEL it reads the built-in demo model.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("circuits takes at most one MODEL")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			return runCircuits(path, &f)
		},
	}
	fl := cmd.Flags()
	f.flags = fl
	fl.BoolVar(&f.composition, "composition", false, "composition scores for every pair of heads in different layers")
	fl.BoolVar(&f.baseline, "baseline", false, "with --composition: add the score of random matrices of the same shapes")
	fl.StringVar(&f.head, "head", "", "one head's strongest token pairs, e.g. L1H6")
	fl.IntVar(&f.top, "top", 20, "with --head: how many token pairs")
	fl.StringVar(&f.vocabFrom, "vocab-from", "", "with --head: list only tokens that occur in this text file (a vocabulary's untrained tokens otherwise crowd the lists)")
	fl.IntVar(&f.minCount, "min-count", 1, "with --vocab-from: only tokens that occur at least this often")
	fl.StringVar(&f.tokenizer, "tokenizer", "", "tokenizer.json for token labels (default: the one beside the model)")
	fl.StringVar(&f.file, "file", "", "the model to read inside a MODEL folder (default: chosen as README's \"Model folders\" says)")
	fl.StringVar(&f.out, "out", "", "write to this file instead of stdout (atomically; never over the model or its tokenizer)")
	fl.StringVar(&f.format, "format", "csv", formatUsage("table (aligned text for reading)"))
	return cmd
}

func runCircuits(path string, f *circuitsFlags) error {
	rf := runFlags{out: f.out, format: f.format, flags: f.flags}
	if err := rf.resolveFormat("circuits", append(tableFormats, "table")...); err != nil {
		return err
	}
	f.format = rf.format
	if f.baseline && !f.composition {
		return usagef("--baseline goes with --composition")
	}
	if f.head != "" && f.composition {
		return usagef("--head and --composition are separate reports; give one")
	}
	if f.top < 1 || f.top > maxTop {
		return usagef("--top %d: give a number of token pairs from 1 to %d", f.top, maxTop)
	}
	if f.vocabFrom != "" && f.head == "" {
		return usagef("--vocab-from goes with --head")
	}
	if f.minCount < 1 {
		return usagef("--min-count %d: give a count of at least 1", f.minCount)
	}
	m, mf, err := loadModel(path, f.file)
	if err != nil {
		return err
	}
	if f.tokenizer == "" && mf != nil && mf.Tokenizer != "" {
		f.tokenizer = mf.Tokenizer
	}
	c, err := loadCircuits(m)
	if err != nil {
		return err
	}
	for _, n := range c.Notes() {
		notice("%s", n)
	}
	inputs := modelInputs(m, f.tokenizer)
	if f.vocabFrom != "" {
		inputs = append(inputs, input{"the --vocab-from being read", f.vocabFrom})
	}
	out, err := openOutput("--out", f.out, inputs)
	if err != nil {
		return err
	}
	defer out.Abort()
	switch {
	case f.head != "":
		err = writeHeadCircuits(out, m, c, f)
	case f.composition:
		err = writeCompositions(out, c, f)
	default:
		err = writeHeadCircuitTable(out, c.HeadCircuits(), f.format)
	}
	if err != nil {
		return err
	}
	return out.Commit()
}

// loadCircuits finds the model's attention, traces its weights and folds them.
func loadCircuits(m *onnxgraph.Model) (*circuits.Circuits, error) {
	att, err := onnxgraph.FindAttention(m)
	if err != nil {
		return nil, err
	}
	w, err := onnxgraph.TraceWeights(m, att)
	if err != nil {
		var te *onnxgraph.TraceError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("cannot read the attention weights of %s: %w; circuits needs the Q, K, V and O projections as weights in the file", m.Path, err)
		}
		return nil, err
	}
	return circuits.New(w)
}

func cellScore(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// writeHeadCircuitTable writes one row per head.
func writeHeadCircuitTable(w io.Writer, heads []circuits.Head, format string) error {
	if format == "table" {
		fmt.Fprintf(w, "%-7s %10s %13s %8s %8s %8s\n", "head", "ov_copying", "qk_prev_token", "qk_self", "ov_norm", "qk_norm")
		for _, h := range heads {
			if _, err := fmt.Fprintf(w, "%-7s %10s %13s %8s %8s %8s\n", fmt.Sprintf("L%dH%d", h.Layer, h.Head), cellScore(h.OVCopying), cellScore(h.QKPrevToken), cellScore(h.QKSelf), cellScore(h.OVNorm), cellScore(h.QKNorm)); err != nil {
				return err
			}
		}
		return nil
	}
	n := len(heads)
	layer, head := make([]int64, n), make([]int64, n)
	cols := make([][]float64, 5)
	for k := range cols {
		cols[k] = make([]float64, n)
	}
	for i, h := range heads {
		layer[i], head[i] = int64(h.Layer), int64(h.Head)
		for k, v := range []float64{h.OVCopying, h.QKPrevToken, h.QKSelf, h.OVNorm, h.QKNorm} {
			cols[k][i] = v
		}
	}
	t := (&tableio.Table{}).Add(tableio.Ints("layer", layer), tableio.Ints("head", head))
	for k, name := range []string{"ov_copying", "qk_prev_token", "qk_self", "ov_norm", "qk_norm"} {
		t.Add(tableio.Floats(name, cols[k], 8))
	}
	return writeTable(w, format, t)
}

// writeCompositions writes every pair's scores; the table lists them strongest first.
func writeCompositions(w io.Writer, c *circuits.Circuits, f *circuitsFlags) error {
	comps := c.Compositions()
	base := map[[2]int]float64{}
	baseline := func(from, to int) float64 {
		k := [2]int{from, to}
		if v, ok := base[k]; ok {
			return v
		}
		v := c.BaselineFor(c.TracedIndex(from), c.TracedIndex(to), baselineSamples, 0)
		base[k] = v
		return v
	}
	if f.format == "table" {
		sort.SliceStable(comps, func(i, j int) bool { return strongest(comps[i]) > strongest(comps[j]) })
		fmt.Fprintf(w, "%-7s %-7s %7s %7s %7s", "from", "to", "q_comp", "k_comp", "v_comp")
		if f.baseline {
			fmt.Fprintf(w, " %8s", "baseline")
		}
		fmt.Fprintln(w)
		for _, p := range comps {
			fmt.Fprintf(w, "%-7s %-7s %7s %7s %7s", fmt.Sprintf("L%dH%d", p.FromLayer, p.FromHead), fmt.Sprintf("L%dH%d", p.ToLayer, p.ToHead), cellScore(p.Q), cellScore(p.K), cellScore(p.V))
			if f.baseline {
				fmt.Fprintf(w, " %8s", cellScore(baseline(p.FromLayer, p.ToLayer)))
			}
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		return nil
	}
	n := len(comps)
	ids := make([][]int64, 4)
	for k := range ids {
		ids[k] = make([]int64, n)
	}
	scores := make([][]float64, 4)
	for k := range scores {
		scores[k] = make([]float64, n)
	}
	for i, p := range comps {
		ids[0][i], ids[1][i], ids[2][i], ids[3][i] = int64(p.FromLayer), int64(p.FromHead), int64(p.ToLayer), int64(p.ToHead)
		scores[0][i], scores[1][i], scores[2][i] = p.Q, p.K, p.V
		if f.baseline {
			scores[3][i] = baseline(p.FromLayer, p.ToLayer)
		}
	}
	t := &tableio.Table{}
	for k, name := range []string{"from_layer", "from_head", "to_layer", "to_head"} {
		t.Add(tableio.Ints(name, ids[k]))
	}
	for k, name := range []string{"q_comp", "k_comp", "v_comp"} {
		t.Add(tableio.Floats(name, scores[k], 8))
	}
	if f.baseline {
		t.Add(tableio.Floats("baseline", scores[3], 8))
	}
	return writeTable(w, f.format, t)
}

// strongest is a pair's largest available score.
func strongest(p circuits.Composition) float64 {
	s := math.Inf(-1)
	for _, v := range []float64{p.Q, p.K, p.V} {
		if !math.IsNaN(v) && v > s {
			s = v
		}
	}
	return s
}

// writeHeadCircuits writes one head's strongest OV token pairs and, for a layer-0 head
// (whose queries and keys read only the embeddings), its skip-trigrams.
func writeHeadCircuits(w io.Writer, m *onnxgraph.Model, c *circuits.Circuits, f *circuitsFlags) error {
	counts := make([]int, 0, c.Layers())
	for li := 0; li < c.Layers(); li++ {
		for len(counts) <= c.LayerNumber(li) {
			counts = append(counts, 0)
		}
		counts[c.LayerNumber(li)] = c.Heads(li)
	}
	sel, err := ablate.ParseHeads(f.head, counts)
	if err != nil {
		var se *ablate.SelectionError
		if errors.As(err, &se) {
			return usagef("--head %s: %s", f.head, se.Reason)
		}
		return usagef("--head %s: %v", f.head, err)
	}
	if len(sel) != 1 {
		return usagef("--head %s names %d heads; give one, like L1H6", f.head, len(sel))
	}
	hd := sel[0]
	tok, tokErr := tokenizer.Find(m.Path, f.tokenizer, c.Vocab())
	if tokErr == nil {
		defer tok.Close()
	}
	var among []int
	if f.vocabFrom != "" {
		if tokErr != nil {
			return fmt.Errorf("--vocab-from needs the model's tokenizer: %w", tokErr)
		}
		if among, err = corpusTokens(tok, f.vocabFrom, f.minCount, c.Vocab()); err != nil {
			return err
		}
		notice("token pairs among the %d tokens that occur at least %d× in %s", len(among), f.minCount, f.vocabFrom)
	}
	pairs, err := c.TopOV(context.Background(), hd.Layer, hd.Head, f.top, among)
	if err != nil {
		return fmt.Errorf("%s: %w", f.head, err)
	}
	var tri []circuits.SkipTrigram
	triNote := ""
	if c.TracedIndex(hd.Layer) == 0 {
		if tri, err = c.SkipTrigrams(hd.Layer, hd.Head, f.top, among); err != nil {
			triNote = err.Error()
		}
	} else {
		triNote = fmt.Sprintf("layer %d reads earlier heads' outputs, so its token QK circuit alone does not give its skip-trigrams", hd.Layer)
	}
	if triNote != "" {
		notice("skip-trigrams of %s not listed: %s", f.head, triNote)
	}
	label := func(id int) string { return "#" + strconv.Itoa(id) }
	if tokErr != nil {
		notice("no tokenizer (%v): tokens shown as ids", oneLine(tokErr.Error()))
	} else {
		label = func(id int) string { return tok.Label(int64(id)) }
	}
	if f.format == "table" {
		fmt.Fprintf(w, "%s OV circuit: the tokens it raises most when attending to a token (logit per unit attention)\n", f.head)
		for i, p := range pairs {
			fmt.Fprintf(w, "%3d  %-16s → %-16s %9.3f\n", i+1, label(p.Source), label(p.Output), p.Value)
		}
		if len(tri) > 0 {
			fmt.Fprintf(w, "\n%s skip-trigrams: source … destination → output (QK score, OV logit)\n", f.head)
			for i, s := range tri {
				fmt.Fprintf(w, "%3d  %-16s … %-16s → %-16s %9.3f %9.3f\n", i+1, label(s.Source), label(s.Dest), label(s.Output), s.QK, s.OV)
			}
		}
		return nil
	}
	// One row per token pair; a skip-trigram row has a destination and a QK score, an OV
	// pair's are -1 / "" / NaN.
	var circuit, srcTok, dstTok, outTok []string
	var rank, srcID, dstID, outID []int64
	var qk, ov []float64
	add := func(kind string, r, src, dst, out int, q, o float64) {
		circuit, rank = append(circuit, kind), append(rank, int64(r))
		srcID, srcTok = append(srcID, int64(src)), append(srcTok, label(src))
		dstID, outID, outTok = append(dstID, int64(dst)), append(outID, int64(out)), append(outTok, label(out))
		if dst < 0 {
			dstTok = append(dstTok, "")
		} else {
			dstTok = append(dstTok, label(dst))
		}
		qk, ov = append(qk, q), append(ov, o)
	}
	for i, p := range pairs {
		add("ov", i+1, p.Source, -1, p.Output, math.NaN(), p.Value)
	}
	for i, s := range tri {
		add("skip_trigram", i+1, s.Source, s.Dest, s.Output, s.QK, s.OV)
	}
	qkCol := tableio.Floats("qk", qk, 8)
	qkCol.NaN = ""
	t := (&tableio.Table{}).Add(tableio.Strings("circuit", circuit), tableio.Ints("rank", rank),
		tableio.Ints("source_id", srcID), tableio.Strings("source_token", srcTok),
		tableio.Ints("destination_id", dstID), tableio.Strings("destination_token", dstTok),
		tableio.Ints("output_id", outID), tableio.Strings("output_token", outTok),
		qkCol, tableio.Floats("ov", ov, 8))
	return writeTable(w, f.format, t)
}

// corpusTokens are the token ids that occur at least minCount times in the text file at
// path, tokenized by tok, in ascending order.
func corpusTokens(tok *tokenizer.Tokenizer, path string, minCount, vocab int) ([]int, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read --vocab-from %s: %w", path, errors.Unwrap(err))
	}
	defer file.Close()
	if st, err := file.Stat(); err == nil && st.IsDir() {
		return nil, usagef("--vocab-from %s is a folder; give a text file", path)
	}
	data, err := io.ReadAll(io.LimitReader(file, maxVocabText+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read --vocab-from %s: %w", path, err)
	}
	if len(data) > maxVocabText {
		return nil, usagef("--vocab-from %s is longer than %d MiB; give a sample of it", path, maxVocabText>>20)
	}
	if !utf8.Valid(data) {
		at := 0
		for at < len(data) {
			r, size := utf8.DecodeRune(data[at:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			at += size
		}
		return nil, usagef("--vocab-from %s is not UTF-8 text (at byte %d); give a text file", path, at)
	}
	if at := bytes.IndexByte(data, 0); at >= 0 {
		return nil, usagef("--vocab-from %s holds a NUL byte (at byte %d); give a text file", path, at)
	}
	counts := make([]int, vocab)
	// Encode in pieces cut at line ends (else at a character boundary), so a large corpus
	// is not one huge call.
	text := string(data)
	for len(text) > 0 {
		n := min(len(text), 1<<16)
		if k := strings.LastIndexByte(text[:n], '\n'); k > 0 && n < len(text) {
			n = k + 1
		}
		for n < len(text) && n > 0 && !utf8.RuneStart(text[n]) {
			n--
		}
		ids, _, err := tok.Encode(text[:n], false)
		if err != nil {
			return nil, fmt.Errorf("--vocab-from %s: %w", path, err)
		}
		for _, id := range ids {
			if id >= 0 && int(id) < vocab {
				counts[id]++
			}
		}
		text = text[n:]
	}
	var out []int
	for id, c := range counts {
		if c >= minCount {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return nil, usagef("no token occurs %d× in --vocab-from %s; lower --min-count", minCount, path)
	}
	return out, nil
}

// browserCircuits computes the browser's circuits panel from m's weights (see
// tui.Config.Circuits).
func browserCircuits(m *onnxgraph.Model) func(ctx context.Context) (*tui.CircuitsData, error) {
	return func(ctx context.Context) (*tui.CircuitsData, error) {
		c, err := loadCircuits(m)
		if err != nil {
			return nil, err
		}
		d := &tui.CircuitsData{Heads: c.HeadCircuits(), Notes: c.Notes(), Baseline: math.NaN()}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if c.Layers() > 1 {
			d.Compositions = c.Compositions()
			d.Baseline = c.BaselineFor(0, 1, baselineSamples, 0)
		}
		if c.Vocab() > 0 {
			// One head's pairs at a time: each uses every core, and a user moving through
			// the heads would otherwise start one per head visited.
			var one sync.Mutex
			d.TopOV = func(ctx context.Context, layer, head, k int) ([]circuits.TokenPair, error) {
				one.Lock()
				defer one.Unlock()
				return c.TopOV(ctx, layer, head, k, nil)
			}
		}
		return d, nil
	}
}
