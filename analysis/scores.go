package analysis

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/attnscope/attnscope/result"
)

// Score names one of the head scores.
type Score int

const (
	Induction Score = iota
	PrevToken
	DuplicateToken
	FirstToken
	Self
	Entropy
)

// AllScores are the scores in the order of the CSV columns.
var AllScores = []Score{Induction, PrevToken, DuplicateToken, FirstToken, Self, Entropy}

var scoreNames = [...]string{"induction", "prev_token", "duplicate_token", "first_token", "self", "entropy"}

// String is the score's CSV column name (induction, prev_token, …).
func (s Score) String() string { return scoreNames[s] }

// ParseScore reads a score name as written in the CSV header (a '-' may stand for '_').
func ParseScore(name string) (Score, error) {
	n := strings.ReplaceAll(strings.ToLower(name), "-", "_")
	for i, s := range scoreNames {
		if n == s {
			return Score(i), nil
		}
	}
	return 0, fmt.Errorf("unknown score %q; use one of %s", name, strings.Join(scoreNames[:], ", "))
}

// Threshold is the value above which (≥) a head is flagged as having the score's pattern;
// ok is false for entropy, which flags nothing. 0.4 is the ARENA induction-head threshold,
// used for every pattern score.
func (s Score) Threshold() (v float64, ok bool) {
	if s == Entropy {
		return 0, false
	}
	return 0.4, true
}

// HeadScores are one head's scores.
type HeadScores struct {
	Layer, Head                                                     int
	Induction, PrevToken, DuplicateToken, FirstToken, Self, Entropy float64
	// The pattern scores with the first token discounted (sink.go: InductionNoSinkScore,
	// PrevTokenNoSinkScore, DuplicateTokenNoSinkScore, SelfNoSinkScore); FirstToken is
	// their sink share. They are not among AllScores (not in the CSV); Label uses them.
	InductionNoSink, PrevTokenNoSink, DuplicateNoSink, SelfNoSink float64
}

// Name is the head's name, L{layer}H{head}.
func (h HeadScores) Name() string { return fmt.Sprintf("L%dH%d", h.Layer, h.Head) }

// Get returns one score.
func (h HeadScores) Get(s Score) float64 {
	switch s {
	case Induction:
		return h.Induction
	case PrevToken:
		return h.PrevToken
	case DuplicateToken:
		return h.DuplicateToken
	case FirstToken:
		return h.FirstToken
	case Self:
		return h.Self
	}
	return h.Entropy
}

// Flags lists the scores whose value reaches their threshold.
func (h HeadScores) Flags() []Score {
	var out []Score
	for _, s := range AllScores {
		if t, ok := s.Threshold(); ok && h.Get(s) >= t {
			out = append(out, s)
		}
	}
	return out
}

// PrevTokenScore is the mean over i ≥ 1 of a[i][i−1] (0 for a single row; NaN for a map
// that is not square, such as cross-attention, where the diagonal means nothing).
func PrevTokenScore(a [][]float32) float64 {
	if !square(a) {
		return math.NaN()
	}
	if len(a) < 2 {
		return 0
	}
	sum := 0.0
	for i := 1; i < len(a); i++ {
		sum += float64(a[i][i-1])
	}
	return sum / float64(len(a)-1)
}

// SelfScore is the mean over all i of a[i][i] (NaN for a map that is not square).
func SelfScore(a [][]float32) float64 {
	if !square(a) {
		return math.NaN()
	}
	if len(a) == 0 {
		return 0
	}
	sum := 0.0
	for i, row := range a {
		sum += float64(row[i])
	}
	return sum / float64(len(a))
}

// FirstTokenScore is the mean over all i of a[i][0].
func FirstTokenScore(a [][]float32) float64 {
	if len(a) == 0 {
		return 0
	}
	sum := 0.0
	for _, row := range a {
		if len(row) == 0 {
			return math.NaN()
		}
		sum += float64(row[0])
	}
	return sum / float64(len(a))
}

// EntropyScore is the mean row entropy in nats (0 ln 0 = 0).
func EntropyScore(a [][]float32) float64 {
	if len(a) == 0 {
		return 0
	}
	sum := 0.0
	for _, row := range a {
		sum += RowEntropy(row)
	}
	return sum / float64(len(a))
}

// RowEntropy is −Σ p ln p over one row, in nats.
func RowEntropy(row []float32) float64 {
	h := 0.0
	for _, p := range row {
		if p > 0 {
			h -= float64(p) * lnFloat32(p)
		}
	}
	return h
}

// lnFloat32 is ln x for a positive float32, within 1e-9 of math.Log and about three times
// faster (entropy is most of the cost of scoring a corpus window): x = m·2^e with m in
// [√½, √2), ln m = 2 atanh s = 2(s + s³/3 + … + s⁹/9) with s = (m−1)/(m+1), |s| < 0.172.
func lnFloat32(x float32) float64 {
	bits := math.Float32bits(x)
	exp := int(bits>>23) & 0xff
	if exp == 0 || exp == 0xff {
		return math.Log(float64(x)) // subnormal, infinite or NaN
	}
	m := float64(math.Float32frombits(bits&0x007fffff | 0x3f800000)) // in [1, 2)
	e := exp - 127
	if m > math.Sqrt2 {
		m /= 2
		e++
	}
	s := (m - 1) / (m + 1)
	s2 := s * s
	return float64(e)*math.Ln2 + 2*s*(1+s2*(1.0/3+s2*(1.0/5+s2*(1.0/7+s2*(1.0/9+s2/11)))))
}

// InductionScore is the mean over the probe's second copy (positions start+n … start+2n−1)
// of a[i][i−n+1].
func InductionScore(a [][]float32, n, start int) float64 {
	return diagonalMean(a, start+n, start+2*n, n-1)
}

// DuplicateTokenScore is the mean over the probe's second copy of a[i][i−n].
func DuplicateTokenScore(a [][]float32, n, start int) float64 {
	return diagonalMean(a, start+n, start+2*n, n)
}

// diagonalMean is the mean of a[i][i−back] for i in [from, to); NaN when the map is not
// square or the range does not fit.
func diagonalMean(a [][]float32, from, to, back int) float64 {
	if !square(a) || to > len(a) || from >= to || from-back < 0 {
		return math.NaN()
	}
	sum := 0.0
	for i := from; i < to; i++ {
		sum += float64(a[i][i-back])
	}
	return sum / float64(to-from)
}

// square reports whether every row of a has len(a) entries: diagonal scores compare a
// query with keys of the same sequence.
func square(a [][]float32) bool {
	for _, row := range a {
		if len(row) != len(a) {
			return false
		}
	}
	return true
}

// Accumulator sums per-sequence head scores over any number of runs, so that a corpus can
// stream through it: its memory depends on the number of heads only.
type Accumulator struct {
	layers, heads []int // heads per layer
	probe, text   []sums
	probeN, textN int
	// noSink holds each head's sink-discounted scores, which a sequence may leave
	// undefined (every row on key 0), so each has its own count.
	noSink []noSinkSums
}

// sums holds the running totals of one head, indexed by Score.
type sums [len(scoreNames)]float64

// noSinkSums holds the running totals of one head's sink-discounted scores, indexed by
// the scores they discount (Induction, PrevToken, DuplicateToken, Self); Induction and
// DuplicateToken per probe, the others per text run.
type noSinkSums [len(scoreNames)]struct {
	sum float64
	n   int
}

// add adds one sequence's score unless it is NaN (no row counted).
func (s *noSinkSums) add(sc Score, v float64) {
	if !math.IsNaN(v) {
		s[sc].sum += v
		s[sc].n++
	}
}

// mean is the mean of the defined per-sequence scores, NaN when there is none.
func (s *noSinkSums) mean(sc Score) float64 {
	if s[sc].n == 0 {
		return math.NaN()
	}
	return s[sc].sum / float64(s[sc].n)
}

// NewAccumulator returns an empty Accumulator.
func NewAccumulator() *Accumulator { return &Accumulator{} }

func (acc *Accumulator) shape(res *result.Result) error {
	if acc.heads == nil {
		for l := range res.Attn {
			acc.heads = append(acc.heads, res.Heads(l))
		}
		n := 0
		for _, h := range acc.heads {
			n += h
		}
		acc.probe, acc.text = make([]sums, n), make([]sums, n)
		acc.noSink = make([]noSinkSums, n)
		return nil
	}
	if len(res.Attn) != len(acc.heads) {
		return fmt.Errorf("a run with %d layers after runs with %d", len(res.Attn), len(acc.heads))
	}
	for l, h := range acc.heads {
		if res.Heads(l) != h {
			return fmt.Errorf("layer %d has %d heads after runs with %d", l, res.Heads(l), h)
		}
	}
	return nil
}

// AddProbe adds the induction and duplicate-token scores of one probe sequence, plain and
// sink-discounted: n tokens
// per copy, the first copy starting at position start. Layers whose queries and keys are
// not positions of one sequence (an encoder–decoder's cross-attention, see
// result.Result.OneSequence) get NaN, even when the two sequences have the same length.
func (acc *Accumulator) AddProbe(res *result.Result, n, start int) error {
	if err := acc.shape(res); err != nil {
		return err
	}
	for _, heads := range res.Attn { // the first exposed layer (see result.Result.Attn)
		if len(heads) > 0 {
			if len(heads[0]) < start+2*n {
				return fmt.Errorf("the probe run has %d positions, the probe needs %d", len(heads[0]), start+2*n)
			}
			break
		}
	}
	k := 0
	for l, heads := range res.Attn {
		one := res.OneSequence(l)
		for _, a := range heads {
			if one {
				acc.probe[k][Induction] += InductionScore(a, n, start)
				acc.probe[k][DuplicateToken] += DuplicateTokenScore(a, n, start)
				acc.noSink[k].add(Induction, InductionNoSinkScore(a, n, start))
				acc.noSink[k].add(DuplicateToken, DuplicateTokenNoSinkScore(a, n, start))
			} else {
				acc.probe[k][Induction], acc.probe[k][DuplicateToken] = math.NaN(), math.NaN()
			}
			k++
		}
	}
	acc.probeN++
	return nil
}

// AddText adds the previous-token, first-token, self and entropy scores of one run, and
// the sink-discounted previous-token and self (previous-token and self, discounted or not,
// are NaN for cross-attention layers, as in AddProbe). The
// heads are scored in parallel (GOMAXPROCS goroutines) when the run is long enough for it
// to pay: onnxruntime is idle between runs, so the cores are free.
func (acc *Accumulator) AddText(res *result.Result) error {
	if err := acc.shape(res); err != nil {
		return err
	}
	var mats [][][]float32
	var one []bool // per head: queries and keys from one sequence
	for l, heads := range res.Attn {
		mats = append(mats, heads...)
		for range heads {
			one = append(one, res.OneSequence(l))
		}
	}
	score := func(k int) {
		a, t := mats[k], &acc.text[k]
		if one[k] {
			t[PrevToken] += PrevTokenScore(a)
			t[Self] += SelfScore(a)
			prev, self := textNoSink(a)
			acc.noSink[k].add(PrevToken, prev)
			acc.noSink[k].add(Self, self)
		} else {
			t[PrevToken], t[Self] = math.NaN(), math.NaN()
		}
		t[FirstToken] += FirstTokenScore(a)
		t[Entropy] += EntropyScore(a)
	}
	workers := runtime.GOMAXPROCS(0)
	if T := len(res.Tokens); len(mats) == 0 || (T > 0 && T*T*len(mats) < 1<<18) || workers < 2 {
		workers = 1
	}
	if workers == 1 {
		for k := range mats {
			score(k)
		}
	} else {
		var wg sync.WaitGroup
		next := atomic.Int64{}
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := int(next.Add(1) - 1); k < len(mats); k = int(next.Add(1) - 1) {
					score(k)
				}
			}()
		}
		wg.Wait()
	}
	acc.textN++
	return nil
}

// Counts are the numbers of probe and text runs added.
func (acc *Accumulator) Counts() (probes, texts int) { return acc.probeN, acc.textN }

// Scores returns every head's mean scores, layers then heads in order. Scores with no run
// behind them (induction without a probe, say) are NaN. A sink-discounted score is the
// mean over the runs where it is defined (see PrevTokenNoSinkScore), NaN when none is.
func (acc *Accumulator) Scores() []HeadScores {
	var out []HeadScores
	k := 0
	mean := func(sum float64, n int) float64 {
		if n == 0 {
			return math.NaN()
		}
		return sum / float64(n)
	}
	for l, nh := range acc.heads {
		for h := 0; h < nh; h++ {
			p, t, ns := acc.probe[k], acc.text[k], &acc.noSink[k]
			out = append(out, HeadScores{
				Layer: l, Head: h,
				Induction:      mean(p[Induction], acc.probeN),
				DuplicateToken: mean(p[DuplicateToken], acc.probeN),
				PrevToken:      mean(t[PrevToken], acc.textN),
				FirstToken:     mean(t[FirstToken], acc.textN),
				Self:           mean(t[Self], acc.textN),
				Entropy:        mean(t[Entropy], acc.textN),

				InductionNoSink: ns.mean(Induction),
				DuplicateNoSink: ns.mean(DuplicateToken),
				PrevTokenNoSink: ns.mean(PrevToken),
				SelfNoSink:      ns.mean(Self),
			})
			k++
		}
	}
	return out
}

// Scores computes every head's scores from probe runs (see Probe) and text runs; with no
// text runs, the text scores come from the probe runs themselves.
func Scores(probes []*result.Result, p *Probe, texts []*result.Result) ([]HeadScores, error) {
	acc := NewAccumulator()
	for _, r := range probes {
		if err := acc.AddProbe(r, p.N, p.Start()); err != nil {
			return nil, err
		}
	}
	if len(texts) == 0 {
		texts = probes
	}
	for _, r := range texts {
		if err := acc.AddText(r); err != nil {
			return nil, err
		}
	}
	return acc.Scores(), nil
}

// TextScores computes the scores that need no probe (previous-token, first-token, self,
// entropy, and previous-token and self with the sink discounted) from one run, e.g. the
// TUI's current prompt; induction and duplicate-token, discounted or not, are NaN.
func TextScores(res *result.Result) []HeadScores {
	acc := NewAccumulator()
	acc.AddText(res)
	return acc.Scores()
}

// Merge takes induction and duplicate-token (plain and sink-discounted) from probe and
// every other score from text (both from Scores, TextScores or an Accumulator over the
// same model).
func Merge(probe, text []HeadScores) []HeadScores {
	out := append([]HeadScores(nil), text...)
	for i := range out {
		if i < len(probe) {
			out[i].Induction, out[i].DuplicateToken = probe[i].Induction, probe[i].DuplicateToken
			out[i].InductionNoSink, out[i].DuplicateNoSink = probe[i].InductionNoSink, probe[i].DuplicateNoSink
		}
	}
	return out
}
