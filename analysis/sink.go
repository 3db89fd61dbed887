package analysis

import (
	"math"
	"strings"
)

// Sink-discounted scores.
//
// Many trained models park most of a head's attention on the first position (an
// "attention sink"): on Llama-style models over a third of the heads put 0.4 or more of
// their weight there, so a first-token flag says little about what the head does with the
// rest. The scores below measure a head's pattern on its rows with key 0 taken out: row i
// of A becomes
//
//	Â[i, j] = A[i, j] / m_i  for j ≥ 1,   m_i = Σ_{j≥1} A[i, j]   (= 1 − A[i, 0])
//
// and a row with m_i = 0 (all its weight on key 0) is skipped: it says nothing about the
// rest of the head's behaviour. The share on key 0 itself is the first-token score,
// reported beside them as the sink share.

// sinkMass is m_i, the weight a row puts off key 0: 1 − row[0] when that is at least ½,
// else Σ_{j≥1} row[j], so that a row with row[0] within float32 rounding of 1 keeps its
// small remainder exactly (the two agree within the row's rounding from 1; subtracting
// spares a pass over the row where the relative error stays that small).
func sinkMass(row []float32) float64 {
	if p := float64(row[0]); p <= 0.5 {
		return 1 - p
	}
	m := 0.0
	for _, p := range row[1:] {
		m += float64(p)
	}
	return m
}

// PrevTokenNoSinkScore is the previous-token score with the first token discounted: the
// mean over rows i ≥ 2 with m_i > 0 of A[i, i−1] / m_i (row 1's previous token is key 0
// itself). NaN when no row counts (a map of fewer than 3 rows, a head that puts all its
// weight on key 0) and for a map that is not square.
func PrevTokenNoSinkScore(a [][]float32) float64 {
	prev, _ := textNoSink(a)
	return prev
}

// SelfNoSinkScore is the self score with the first token discounted: the mean over rows
// i ≥ 2 with m_i > 0 of A[i, i] / m_i. Row 1 is left out as row 0 is: in a causal model,
// once key 0 is taken out, row 1 can only attend to itself (Â[1, 1] = 1 for every head).
// NaN when no row counts and for a map that is not square.
func SelfNoSinkScore(a [][]float32) float64 {
	_, self := textNoSink(a)
	return self
}

// textNoSink computes PrevTokenNoSinkScore and SelfNoSinkScore in one pass.
func textNoSink(a [][]float32) (prev, self float64) {
	if !square(a) {
		return math.NaN(), math.NaN()
	}
	sumP, sumS, n := 0.0, 0.0, 0
	for i := 2; i < len(a); i++ {
		m := sinkMass(a[i])
		if !(m > 0) {
			continue
		}
		sumP += float64(a[i][i-1]) / m
		sumS += float64(a[i][i]) / m
		n++
	}
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	return sumP / float64(n), sumS / float64(n)
}

// InductionNoSinkScore is the induction score with the first token discounted: the mean
// over the probe's second copy (positions start+n … start+2n−1) with m_i > 0 of
// A[i, i−n+1] / m_i. NaN when no row counts, when the map is not square or the probe does
// not fit.
func InductionNoSinkScore(a [][]float32, n, start int) float64 {
	return diagonalMeanNoSink(a, start+n, start+2*n, n-1)
}

// DuplicateTokenNoSinkScore is the duplicate-token score with the first token discounted:
// the mean over the probe's second copy with m_i > 0 of A[i, i−n] / m_i, skipping the row
// whose earlier occurrence is key 0 itself (the first row of the second copy when the
// probe has no BOS). NaN when no row counts, when the map is not square or the probe does
// not fit.
func DuplicateTokenNoSinkScore(a [][]float32, n, start int) float64 {
	return diagonalMeanNoSink(a, start+n, start+2*n, n)
}

// diagonalMeanNoSink is the mean of A[i, i−back] / m_i over i in [from, to) with
// i−back ≥ 1 and m_i > 0.
func diagonalMeanNoSink(a [][]float32, from, to, back int) float64 {
	if !square(a) || to > len(a) || from >= to || from-back < 0 {
		return math.NaN()
	}
	sum, n := 0.0, 0
	for i := max(from, back+1); i < to; i++ {
		m := sinkMass(a[i])
		if !(m > 0) {
			continue
		}
		sum += float64(a[i][i-back]) / m
		n++
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// Label kinds, as Label returns them.
const (
	LabelInduction      = "induction"
	LabelPrevToken      = "prev-token"
	LabelDuplicateToken = "duplicate-token"
	LabelSelf           = "self"
	LabelSink           = "sink"
)

// LabelThreshold is the value a sink-discounted score (or, for "sink", the first-token
// score) must reach for Label to name it: 0.4, as for every pattern score (Threshold).
const LabelThreshold = 0.4

// Label names the head's strongest behaviour once the first token is discounted, and
// returns its sink share (the first-token score, NaN when unknown):
//
//   - the largest of InductionNoSink, PrevTokenNoSink, DuplicateNoSink and SelfNoSink that
//     reaches LabelThreshold ("induction", "prev-token", "duplicate-token", "self"); on an
//     exact tie the first in that order wins; NaN scores (no probe, cross-attention, a
//     head with every row on key 0) take no part;
//   - otherwise "sink" when FirstToken reaches LabelThreshold: the head parks its weight
//     on the first token and does nothing else measured here;
//   - otherwise "".
//
// So a head with 0.6 on key 0 and the rest on the previous token is "prev-token" with
// sink 0.6. The table of `inspect heads --format table` shows this label.
func (h HeadScores) Label() (kind string, sink float64) {
	best, bestV := "", math.Inf(-1)
	for _, c := range []struct {
		kind string
		v    float64
	}{
		{LabelInduction, h.InductionNoSink},
		{LabelPrevToken, h.PrevTokenNoSink},
		{LabelDuplicateToken, h.DuplicateNoSink},
		{LabelSelf, h.SelfNoSink},
	} {
		if c.v >= LabelThreshold && c.v > bestV { // NaN fails both
			best, bestV = c.kind, c.v
		}
	}
	if best == "" && h.FirstToken >= LabelThreshold {
		best = LabelSink
	}
	return best, h.FirstToken
}

// NoSink returns the sink-discounted score behind a label kind ("induction",
// "prev-token", "duplicate-token", "self"; a '_' may stand for '-'), and the first-token
// score for "sink"; NaN for anything else.
func (h HeadScores) NoSink(kind string) float64 {
	switch strings.ReplaceAll(kind, "_", "-") {
	case LabelInduction:
		return h.InductionNoSink
	case LabelPrevToken:
		return h.PrevTokenNoSink
	case LabelDuplicateToken:
		return h.DuplicateNoSink
	case LabelSelf:
		return h.SelfNoSink
	case LabelSink:
		return h.FirstToken
	}
	return math.NaN()
}
