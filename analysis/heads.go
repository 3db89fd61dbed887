package analysis

import (
	"errors"
	"fmt"
	"io"

	"github.com/attnscope/attnscope/result"
)

// HeadsOptions say what ScoreHeads runs. Induction and duplicate-token come from the probe;
// the other scores from the first of Text, Corpus, Sample that is set, else from the probe.
type HeadsOptions struct {
	// Probe says how to draw the probe (NewProbe).
	Probe ProbeOptions
	// Sequential runs the probe's sequences one at a time instead of in batches.
	Sequential bool
	// Text is a prompt's ids.
	Text []int64
	// Corpus is a text streamed through the model in windows (ScoreCorpus), cut and
	// tokenized as CorpusOptions say; its memory does not grow with its length.
	Corpus        io.Reader
	CorpusOptions CorpusOptions
	// Sample is a natural text's ids (NaturalText, tokenized), cut here to Probe.Positions.
	Sample []int64
	// Budget is the most bytes of outputs (attention and logits) one batch of probe
	// sequences may take; 0 means DefaultBudget().
	Budget int64
}

// TextKind says where the text scores (previous-token, first-token, self, entropy) came from.
type TextKind int

const (
	TextProbes TextKind = iota // the probe sequences themselves
	TextPrompt                 // HeadsOptions.Text
	TextCorpus                 // HeadsOptions.Corpus, in windows
	TextSample                 // HeadsOptions.Sample
)

// TextSource describes what the text scores were computed on.
type TextSource struct {
	Kind TextKind
	// Tokens is the prompt's or the sample's length (after cutting to the positions).
	Tokens int
	// Corpus counts what the corpus gave (TextCorpus only).
	Corpus CorpusStats
}

// String words the source for a report line: "the prompt (12 tokens)", "14 windows of 64
// tokens of the corpus", …
func (s TextSource) String() string {
	switch s.Kind {
	case TextPrompt:
		return fmt.Sprintf("the prompt (%d tokens)", s.Tokens)
	case TextSample:
		return fmt.Sprintf("the built-in English sample (%d tokens)", s.Tokens)
	case TextCorpus:
		n := 0
		if s.Corpus.Windows > 0 {
			n = s.Corpus.Tokens / s.Corpus.Windows
		}
		return fmt.Sprintf("%d windows of %d tokens of the corpus", s.Corpus.Windows, n)
	}
	return "the probes"
}

// HeadsReport is what ScoreHeads scored and how.
type HeadsReport struct {
	// Scores are every head's scores, layers then heads. In an encoder–decoder's
	// cross-attention layers (queries of the target, keys of the source) the diagonal
	// scores (induction, duplicate-token, previous-token, self) are NaN: they compare
	// positions of one sequence.
	Scores []HeadScores
	// Probe is the probe that was run (its N may be smaller than asked: see NewProbe).
	Probe *Probe
	// Text says where the text scores came from.
	Text TextSource
	// ICL is the corpus's in-context-learning losses (nil unless a corpus was scored with
	// windows long enough for ICLPositions).
	ICL *ICL
	// Degenerate is the first probe run's Result.Degenerate() ("" for ordinary maps).
	Degenerate string
	// BatchSize is how many probe sequences ran together (1 when sequential or when one
	// sequence's outputs already take most of the budget).
	BatchSize int
}

// ScoreHeads runs the probe on r, in batches whose outputs fit the memory budget, and the
// text the options name, and returns every head's scores. Each run's buffers go back to r
// before the next. It refuses, with a *LimitError, a probe whose single sequence needs
// more memory than the budget, and a prompt or sample that does.
func ScoreHeads(r Runner, o HeadsOptions) (_ *HeadsReport, err error) {
	probe, err := NewProbe(o.Probe)
	if err != nil {
		return nil, err
	}
	budget := o.Budget
	if budget <= 0 {
		budget = DefaultBudget()
	}
	size := measure(r, probe.IDs[0])
	rep := &HeadsReport{Probe: probe}
	acc := NewAccumulator()
	textFromProbes := o.Text == nil && o.Corpus == nil && o.Sample == nil
	defer func() {
		var le *LimitError
		if errors.As(err, &le) {
			withLayers(r, le)
		}
	}()
	err = runProbe(r, probe, size, budget, o.Sequential, func(runs []*result.Result) error {
		if rep.BatchSize == 0 {
			rep.BatchSize = len(runs)
			rep.Degenerate = runs[0].Degenerate()
		}
		for _, res := range runs {
			if err := acc.AddProbe(res, probe.N, probe.Start()); err != nil {
				return err
			}
			if textFromProbes {
				if err := acc.AddText(res); err != nil {
					return err
				}
			}
		}
		return nil
	})
	var le *LimitError
	if err != nil && !errors.As(err, &le) {
		return nil, &ProbeRunError{Len: probe.Len(), Err: err}
	}
	if err != nil {
		return nil, err
	}
	switch {
	case o.Text != nil:
		rep.Text = TextSource{Kind: TextPrompt, Tokens: len(o.Text)}
		err = scoreText(r, o.Text, size, budget, "prompt", acc)
	case o.Corpus != nil:
		copts := o.CorpusOptions
		if early, late, ok := ICLPositions(copts.Window); ok {
			rep.ICL = &ICL{Early: early, Late: late}
		}
		if size.known() && size.bytes(copts.Window, 1) > budget {
			return nil, &LimitError{What: "window", Tokens: copts.Window, Bytes: size.bytes(copts.Window, 1), Budget: budget, MaxTokens: size.maxTokens(budget)}
		}
		var st CorpusStats
		st, err = ScoreCorpus(r, o.Corpus, copts, acc, rep.ICL)
		rep.Text = TextSource{Kind: TextCorpus, Corpus: st}
	case o.Sample != nil:
		ids := o.Sample
		if p := o.Probe.Positions; p > 0 && len(ids) > p {
			ids = ids[:p]
		}
		rep.Text = TextSource{Kind: TextSample, Tokens: len(ids)}
		err = scoreText(r, ids, size, budget, "sample", acc)
	default:
		rep.Text = TextSource{Kind: TextProbes}
	}
	if err != nil {
		return nil, err
	}
	rep.Scores = acc.Scores()
	return rep, nil
}

// scoreText runs one text and adds its text scores, refusing one whose outputs exceed the
// budget.
func scoreText(r Runner, ids []int64, size runSize, budget int64, what string, acc *Accumulator) error {
	if size.known() && size.bytes(len(ids), 1) > budget {
		return &LimitError{What: what, Tokens: len(ids), Bytes: size.bytes(len(ids), 1), Budget: budget, MaxTokens: size.maxTokens(budget)}
	}
	res, err := r.Run(ids)
	if err != nil {
		return err
	}
	defer r.Recycle(res)
	return acc.AddText(res)
}

// runProbe runs the probe's sequences in batches of at most MaxBatch whose outputs fit
// budget (one at a time when sequential) and hands each batch's results to use before giving them back to r.
func runProbe(r Runner, p *Probe, size runSize, budget int64, sequential bool, use func([]*result.Result) error) error {
	T := p.Len()
	batch := 1
	if size.known() {
		one := size.bytes(T, 1)
		if one > budget {
			return &LimitError{What: "probe", Tokens: T, Bytes: one, Budget: budget, MaxTokens: size.maxTokens(budget)}
		}
		if !sequential {
			batch = int(min(int64(len(p.IDs)), budget/one, MaxBatch))
		}
	}
	for i := 0; i < len(p.IDs); {
		seqs := p.IDs[i:min(i+batch, len(p.IDs))]
		i += len(seqs)
		var runs []*result.Result
		var err error
		if len(seqs) == 1 {
			var res *result.Result
			if res, err = r.Run(seqs[0]); err == nil {
				runs = []*result.Result{res}
			}
		} else {
			runs, err = r.RunBatch(seqs)
		}
		if err != nil {
			return err
		}
		if !size.known() { // learn the size from the first sequence, then batch the rest
			size = sizeOf(runs[0])
			if size.known() && !sequential {
				batch = int(max(1, min(int64(len(p.IDs)), budget/size.bytes(T, 1), MaxBatch)))
			}
		}
		err = use(runs)
		r.RecycleBatch(runs)
		if err != nil {
			return err
		}
	}
	return nil
}

// MaxBatch bounds how many probe sequences run together: larger batches gain no speed,
// and onnxruntime's working memory grows with them beyond the outputs the budget counts.
const MaxBatch = 64

// LimitError is a refusal of a run whose outputs (attention and logits, float32) would
// take more memory than the budget.
type LimitError struct {
	// What is refused: "probe" (one probe sequence), "prompt", "sample" or "window".
	What string
	// Tokens is its length; Bytes its outputs' size; Budget the limit.
	Tokens        int
	Bytes, Budget int64
	// MaxTokens is the longest sequence that fits the budget (0 when unknown).
	MaxTokens int
	// Layers are the layers whose attention the run would return (all of the model's,
	// unless a selection was exposed), Attention the part of Bytes their maps take, and Fit
	// the longest leading part of Layers whose run of Tokens fits the budget: nil when not
	// even one layer fits, or when the sizes per layer are unknown (Layers nil too).
	Layers    []int
	Attention int64
	Fit       []int
}

func (e *LimitError) Error() string {
	fit := ""
	if e.MaxTokens > 0 {
		fit = fmt.Sprintf(" (at most %d tokens fit)", e.MaxTokens)
	}
	return fmt.Sprintf("one %s of %d tokens needs %s of attention and logits, more than the %s memory budget%s", e.What, e.Tokens, bytesString(e.Bytes), bytesString(e.Budget), fit)
}

// runSize is how many float32 outputs a run of T tokens gives: heads·T² of attention (the
// sum of every layer's head count: every map is T×T when source and target have T tokens)
// and T·vocab of logits.
type runSize struct {
	heads, vocab int64
}

func (s runSize) known() bool { return s.heads > 0 }

// bytes is the outputs' size of k sequences of T tokens.
func (s runSize) bytes(T, k int) int64 {
	t := int64(T)
	return 4 * int64(k) * (s.heads*t*t + s.vocab*t)
}

// maxTokens is the longest sequence whose outputs fit budget.
func (s runSize) maxTokens(budget int64) int {
	return maxTokens(func(t int) int64 { return s.bytes(t, 1) }, budget)
}

// maxTokens is the longest sequence whose outputs, bytes(T) for T tokens (growing with
// T), fit budget.
func maxTokens(bytes func(T int) int64, budget int64) int {
	lo, hi := 0, 1
	for bytes(hi) <= budget && hi < 1<<30 {
		hi *= 2
	}
	for lo+1 < hi {
		mid := (lo + hi) / 2
		if bytes(mid) <= budget {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// sizeOf reads a run's output sizes per position: each map counts as ⌈Q·K / T²⌉ heads
// (one, when source and target both have the run's T tokens).
func sizeOf(res *result.Result) runSize {
	var s runSize
	t := int64(len(res.Tokens))
	if t == 0 {
		return s
	}
	for _, heads := range res.Attn {
		for _, a := range heads {
			if len(a) > 0 {
				qk := int64(len(a)) * int64(len(a[0]))
				s.heads += max(1, (qk+t*t-1)/(t*t))
			}
		}
	}
	s.vocab = int64(res.Vocab)
	return s
}

// measure learns the output sizes from a run of the first two tokens of seq (cheap at any
// probe length). For a model that cannot run those (a fixed input length) it returns the
// zero runSize, and runProbe measures the first probe run instead.
func measure(r Runner, seq []int64) runSize {
	res, err := r.Run(seq[:min(len(seq), 2)])
	if err != nil {
		return runSize{}
	}
	defer r.Recycle(res)
	return sizeOf(res)
}

// OutputSizer tells the memory of a run's outputs without running the model (package
// session's Session does, from the output shapes it learned when it opened).
type OutputSizer interface {
	OutputBytes(T int) (bytes int64, ok bool)
}

// LayerSizer tells the memory of a run's outputs layer by layer: the layers whose
// attention a run returns, each one's attention bytes at T tokens (in that order) and the
// bytes of the other outputs (logits). Package session's Session is one.
type LayerSizer interface {
	Layers() []int
	AttentionBytes(T int) (layers []int64, other int64, ok bool)
}

// withLayers adds to a refusal the layers r would return, their attention's share of the
// bytes, and the leading part of them that would fit the budget (see LimitError), when r
// can tell its sizes layer by layer; it returns e.
func withLayers(r Runner, e *LimitError) *LimitError {
	ls, ok := r.(LayerSizer)
	if !ok {
		return e
	}
	per, other, ok := ls.AttentionBytes(e.Tokens)
	layers := ls.Layers()
	if !ok || len(per) != len(layers) || len(layers) == 0 {
		return e
	}
	e.Layers, e.Attention = layers, 0
	for _, b := range per {
		e.Attention += b
	}
	sum := other
	for i, b := range per {
		if sum += b; sum > e.Budget {
			break
		}
		e.Fit = layers[:i+1]
	}
	return e
}

// CheckRunSize refuses, with a *LimitError, a run of T tokens on r (the longer of an
// encoder–decoder's source and target; what names the sequence in the error) whose
// outputs would exceed limit bytes: a model without a position table takes any length,
// and its T² attention maps grow past the machine's memory long before onnxruntime says
// anything. The sizes come from r's OutputBytes when it can tell them, else from one
// two-token run, which is not made for runs shorter than 512 tokens (a browser re-run of a
// long prompt must not pay for a measuring run, which also throws away the recycled
// buffers): those are checked only when OutputBytes tells. A refusal says, when r is a
// LayerSizer, which leading part of its layers would fit (LimitError.Fit).
func CheckRunSize(r Runner, what string, T int, limit int64) error {
	return checkRunSize(r, what, T, limit, 512)
}

// CheckRunSizeMeasured is CheckRunSize measuring r (one two-token run) at any T when its
// OutputBytes cannot tell: for a limit the user gave, which must hold for short runs too.
func CheckRunSizeMeasured(r Runner, what string, T int, limit int64) error {
	return checkRunSize(r, what, T, limit, 0)
}

// checkRunSize is CheckRunSize, measuring by a run only from minMeasure tokens on.
func checkRunSize(r Runner, what string, T int, limit int64, minMeasure int) error {
	bytes := func(t int) int64 { return 0 }
	known := false
	if sz, ok := r.(OutputSizer); ok {
		if _, known = sz.OutputBytes(T); known {
			bytes = func(t int) int64 { b, _ := sz.OutputBytes(t); return b }
		}
	}
	if !known && T < minMeasure {
		return nil
	}
	if !known {
		size := measure(r, []int64{0, 0})
		known = size.known()
		bytes = func(t int) int64 { return size.bytes(t, 1) }
	}
	if known && bytes(T) > limit {
		return withLayers(r, &LimitError{What: what, Tokens: T, Bytes: bytes(T), Budget: limit, MaxTokens: maxTokens(bytes, limit)})
	}
	return nil
}

// RunLimit is the most memory one run's outputs may take: a quarter of the machine's
// memory (onnxruntime's working memory and the copies around a run take about as much
// again), or 4 GiB when that is unknown.
func RunLimit() int64 {
	if m := physicalMemory(); m > 0 {
		return m / 4
	}
	return 4 << 30
}

// DefaultBudget is the memory one batch of outputs may take: 1 GiB, or a quarter of the
// machine's memory when that is less.
func DefaultBudget() int64 {
	const gib = 1 << 30
	if m := physicalMemory(); m > 0 && m/4 < gib {
		return m / 4
	}
	return gib
}

func bytesString(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", (b+1023)/1024)
}
