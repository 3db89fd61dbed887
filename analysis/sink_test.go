package analysis

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/attnscope/attnscope/result"
)

// withSink is a causal head that puts sink on key 0 and the rest on key target(i) in every
// row i ≥ 2 whose target is ≥ 1; rows 0 and 1, and rows whose target is < 1, put
// everything on key 0.
func withSink(T int, sink float32, target func(i int) int) [][]float32 {
	a := zeros(T)
	for i := range a {
		j := target(i)
		if i < 2 || j < 1 || j > i {
			a[i][0] = 1
			continue
		}
		a[i][0], a[i][j] = sink, 1-sink
	}
	return a
}

// sinkPlusUniform puts sink on key 0 and spreads the rest evenly over keys 1 … i.
func sinkPlusUniform(T int, sink float32) [][]float32 {
	a := zeros(T)
	a[0][0] = 1
	for i := 1; i < T; i++ {
		a[i][0] = sink
		for j := 1; j <= i; j++ {
			a[i][j] = (1 - sink) / float32(i)
		}
	}
	return a
}

func isNaN(v float64) bool { return math.IsNaN(v) }

// nearOrNaN is near, where want NaN asks for NaN.
func nearOrNaN(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.IsNaN(want) {
		if !math.IsNaN(got) {
			t.Errorf("%s = %.15g, want NaN", what, got)
		}
		return
	}
	if !(math.Abs(got-want) <= 1e-6) {
		t.Errorf("%s = %.15g, want %.15g", what, got, want)
	}
}

// Hand-built heads whose sink-discounted scores and label are known by construction.
func TestSinkDiscountedLabels(t *testing.T) {
	const T = 16
	const n, start = 7, 1 // probe: BOS + 2 × 7
	P := start + 2*n
	nan := math.NaN()
	// The first-token share of a text map with sink s in rows 2 … T−1 and 1 in rows 0, 1.
	share := func(s float64) float64 { return (2 + s*float64(T-2)) / T }
	// On the probe, rows of the second copy with sink s, every other row 1.
	half := make([][]float32, T)
	for i := range half {
		half[i] = make([]float32, T)
		if i%2 == 0 || i < 2 {
			half[i][0] = 1 // rows with all their weight on key 0 are skipped
		} else {
			half[i][0], half[i][i-1] = 0.3, 0.7
		}
	}
	cases := []struct {
		name                             string
		text, probe                      [][]float32
		prev, self, induction, duplicate float64
		kind                             string
		sink                             float64
	}{
		{
			name: "previous-token head with 0.6 on key 0",
			text: withSink(T, 0.6, func(i int) int { return i - 1 }),
			prev: 1, self: 0, kind: "prev-token", sink: share(0.6),
		},
		{
			name: "pure sink head",
			text: shifted(T, T), probe: shifted(P, P),
			prev: nan, self: nan, induction: nan, duplicate: nan, kind: "sink", sink: 1,
		},
		{
			name:  "induction head with 0.7 on key 0",
			text:  shifted(T, T),
			probe: withSink(P, 0.7, func(i int) int { return map[bool]int{true: i - n + 1, false: -1}[i >= start+n] }),
			prev:  nan, self: nan, induction: 1, duplicate: 0, kind: "induction", sink: 1,
		},
		{
			name: "rows with all weight on key 0 are skipped",
			text: half,
			prev: 1, self: 0, kind: "prev-token", sink: (2 + 7 + 0.3*7) / T, // rows 0, 1, 2, 4, …, 14 on key 0
		},
		{
			// Key 0 holds 1 − 1e-9, which is 1 in float32: the remainder is summed, not
			// subtracted from 1.
			name: "previous-token head behind a sink within float32 rounding of 1",
			text: func() [][]float32 {
				a := withSink(T, 1, func(i int) int { return i - 1 })
				for i := 2; i < T; i++ {
					a[i][i-1] = 1e-9
				}
				return a
			}(),
			prev: 1, self: 0, kind: "prev-token", sink: 1,
		},
		{
			name: "self head with 0.9 on key 0",
			text: withSink(T, 0.9, func(i int) int { return i }),
			prev: 0, self: 1, kind: "self", sink: share(0.9),
		},
		{
			name: "sink with the rest spread evenly is only a sink",
			text: sinkPlusUniform(T, 0.8),
			// rows i ≥ 2 renormalise to 1/i on each of keys 1 … i
			prev: harmonicTail(T), self: harmonicTail(T), kind: "sink",
			sink: (1 + 0.8*float64(T-1)) / T,
		},
		{
			name: "uniform causal attention is nothing",
			text: uniformCausal(T),
			prev: harmonicTail(T), self: harmonicTail(T), kind: "",
			sink: harmonicAll(T) / T,
		},
		{
			name:  "duplicate-token head without BOS: the row whose earlier occurrence is key 0 is skipped",
			text:  shifted(T, T),
			probe: withSink(2*n, 0.5, func(i int) int { return map[bool]int{true: i - n, false: -1}[i >= n] }),
			prev:  nan, self: nan, induction: 0, duplicate: 1, kind: "duplicate-token", sink: 1,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := HeadScores{
				FirstToken:      FirstTokenScore(c.text),
				PrevTokenNoSink: PrevTokenNoSinkScore(c.text),
				SelfNoSink:      SelfNoSinkScore(c.text),
				InductionNoSink: nan, DuplicateNoSink: nan,
			}
			nearOrNaN(t, "prev-token without sink", h.PrevTokenNoSink, c.prev)
			nearOrNaN(t, "self without sink", h.SelfNoSink, c.self)
			if c.probe != nil {
				s := start
				if len(c.probe) == 2*n {
					s = 0
				}
				h.InductionNoSink = InductionNoSinkScore(c.probe, n, s)
				h.DuplicateNoSink = DuplicateTokenNoSinkScore(c.probe, n, s)
				nearOrNaN(t, "induction without sink", h.InductionNoSink, c.induction)
				nearOrNaN(t, "duplicate-token without sink", h.DuplicateNoSink, c.duplicate)
			}
			kind, sink := h.Label()
			if kind != c.kind {
				t.Errorf("label %q, want %q (%+v)", kind, c.kind, h)
			}
			nearOrNaN(t, "sink share", sink, c.sink)
		})
	}
}

// harmonicTail is the mean over i = 2 … T−1 of 1/i.
func harmonicTail(T int) float64 {
	s := 0.0
	for i := 2; i < T; i++ {
		s += 1 / float64(i)
	}
	return s / float64(T-2)
}

// harmonicAll is Σ_{i=1…T} 1/i.
func harmonicAll(T int) float64 {
	s := 0.0
	for i := 1; i <= T; i++ {
		s += 1 / float64(i)
	}
	return s
}

// Label's rule on given scores: the largest discounted score at or above 0.4, ties to the
// first of induction, prev-token, duplicate-token, self; NaN ignored; "sink" only when
// nothing else reaches it.
func TestLabelRule(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		ind, prev, dup, self, first float64
		want                        string
	}{
		{0.5, 0.6, 0.1, 0.2, 0.9, "prev-token"},
		{0.6, 0.6, 0.6, 0.6, 0.9, "induction"}, // tie: the first in order
		{0.1, 0.5, 0.5, 0.5, 0, "prev-token"},
		{0.1, 0.1, 0.5, 0.5, 0, "duplicate-token"},
		{nan, nan, nan, 0.4, 0, "self"}, // 0.4 reaches the threshold
		{nan, nan, 0.45, nan, 0, "duplicate-token"},
		{0.39, 0.39, 0.39, 0.39, 0.4, "sink"},
		{0.39, 0.39, 0.39, 0.39, 0.39, ""},
		{nan, nan, nan, nan, nan, ""},
		{nan, nan, nan, nan, 1, "sink"},
		{0.41, nan, nan, nan, 1, "induction"},
	} {
		h := HeadScores{InductionNoSink: c.ind, PrevTokenNoSink: c.prev, DuplicateNoSink: c.dup, SelfNoSink: c.self, FirstToken: c.first}
		kind, sink := h.Label()
		if kind != c.want || !(sink == c.first || isNaN(sink) && isNaN(c.first)) {
			t.Errorf("%+v: Label() = %q, %g; want %q, %g", c, kind, sink, c.want, c.first)
		}
		if kind != "" && kind != LabelSink && h.NoSink(kind) < LabelThreshold {
			t.Errorf("%+v: label %q with discounted score %g", c, kind, h.NoSink(kind))
		}
	}
	h := HeadScores{InductionNoSink: 1, PrevTokenNoSink: 2, DuplicateNoSink: 3, SelfNoSink: 4, FirstToken: 5}
	for kind, want := range map[string]float64{"induction": 1, "prev_token": 2, "prev-token": 2, "duplicate-token": 3, "self": 4, "sink": 5} {
		if got := h.NoSink(kind); got != want {
			t.Errorf("NoSink(%q) = %g, want %g", kind, got, want)
		}
	}
	if !math.IsNaN(h.NoSink("entropy")) {
		t.Error("NoSink(entropy) is a number")
	}
}

// randomMap is a causal map of random rows: some with a heavy sink, some with all their
// weight on key 0, the others spread at random.
func randomMap(rng *rand.Rand, T int) [][]float32 {
	a := zeros(T)
	for i := range a {
		switch rng.IntN(4) {
		case 0:
			a[i][0] = 1
			continue
		case 1:
			a[i][0] = 20 * float32(i+1) // heavy sink
		}
		sum := float32(0)
		for j := 0; j <= i; j++ {
			if a[i][j] == 0 {
				a[i][j] = rng.Float32()
			}
			sum += a[i][j]
		}
		for j := 0; j <= i; j++ {
			a[i][j] /= sum
		}
	}
	return a
}

// The sink-discounted scores equal a direct computation: build the renormalised map Â
// (key 0 removed, each row divided by its remaining weight 1 − A[i, 0], rows with none
// dropped), then average the diagonals over the rows the definitions name.
func TestNoSinkMatchesRenormalisedMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		n := 2 + rng.IntN(10)
		start := rng.IntN(2)
		T := start + 2*n + rng.IntN(3)
		a := randomMap(rng, T)
		// Â as a map from row to renormalised row (keys keep their positions; key 0 is 0).
		hat := map[int][]float64{}
		for i, row := range a {
			rest := 1 - float64(row[0])
			if float64(row[0]) == 1 {
				continue
			}
			r := make([]float64, T)
			for j := 1; j < T; j++ {
				r[j] = float64(row[j]) / rest
			}
			hat[i] = r
		}
		mean := func(rows []int, key func(i int) int) float64 {
			s, c := 0.0, 0
			for _, i := range rows {
				r, ok := hat[i]
				if !ok || key(i) < 1 {
					continue
				}
				s += r[key(i)]
				c++
			}
			if c == 0 {
				return math.NaN()
			}
			return s / float64(c)
		}
		var textRows, copyRows []int
		for i := 2; i < T; i++ {
			textRows = append(textRows, i)
		}
		for i := start + n; i < start+2*n; i++ {
			copyRows = append(copyRows, i)
		}
		check := func(what string, got, want float64) {
			t.Helper()
			// The direct computation divides by 1 − A[i, 0], the function by the sum of the
			// other keys: equal for rows that sum to 1, within float32 rounding here.
			if math.IsNaN(got) != math.IsNaN(want) || math.Abs(got-want) > 1e-5 {
				t.Fatalf("trial %d (T %d, n %d, start %d): %s = %g, direct %g", trial, T, n, start, what, got, want)
			}
		}
		check("prev-token", PrevTokenNoSinkScore(a), mean(textRows, func(i int) int { return i - 1 }))
		check("self", SelfNoSinkScore(a), mean(textRows, func(i int) int { return i }))
		check("induction", InductionNoSinkScore(a, n, start), mean(copyRows, func(i int) int { return i - n + 1 }))
		check("duplicate-token", DuplicateTokenNoSinkScore(a, n, start), mean(copyRows, func(i int) int { return i - n }))
		// Discounting only removes weight from the denominator: a head's discounted score is
		// never below the plain one on the same rows.
		if d, p := InductionNoSinkScore(a, n, start), InductionScore(a, n, start); !math.IsNaN(d) && d < p-1e-9 {
			t.Fatalf("trial %d: induction %g discounted to %g", trial, p, d)
		}
	}
}

// Non-square maps (cross-attention) and maps too short for the definitions give NaN.
func TestNoSinkUndefined(t *testing.T) {
	for _, a := range [][][]float32{
		{{0.5, 0.5}, {1, 0}, {0, 1}},
		{{0.25, 0.25, 0.25, 0.25}, {0, 0, 0, 1}},
		{},
	} {
		for name, v := range map[string]float64{
			"prev_token": PrevTokenNoSinkScore(a), "self": SelfNoSinkScore(a),
			"induction": InductionNoSinkScore(a, 1, 0), "duplicate_token": DuplicateTokenNoSinkScore(a, 1, 0),
		} {
			if !math.IsNaN(v) {
				t.Errorf("%v: %s = %g, want NaN", a, name, v)
			}
		}
	}
	short := [][]float32{{1, 0}, {0.5, 0.5}} // no row i ≥ 2
	if !math.IsNaN(PrevTokenNoSinkScore(short)) || !math.IsNaN(SelfNoSinkScore(short)) {
		t.Errorf("%v: prev-token or self without sink defined", short)
	}
}

// The accumulator fills the discounted scores beside the plain ones, which it leaves as
// they were; a run in which a head puts everything on key 0 does not count towards that
// head's discounted mean; Merge and TextScores carry them; cross-attention gives NaN.
func TestAccumulatorNoSink(t *testing.T) {
	const n, start = 6, 1
	T := start + 2*n
	prevSink := withSink(T, 0.6, func(i int) int { return i - 1 })
	indSink := withSink(T, 0.7, func(i int) int { return map[bool]int{true: i - n + 1, false: -1}[i >= start+n] })
	run1 := &result.Result{Attn: [][][][]float32{{prevSink, indSink, shifted(T, T)}}}
	run2 := &result.Result{Attn: [][][][]float32{{shifted(T, T), indSink, uniformCausal(T)}}}
	p := &Probe{N: n, BOS: 0, IDs: make([][]int64, 2)}
	got, err := Scores([]*result.Result{run1, run2}, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Head 0: previous-token with a sink in run 1, a pure sink in run 2 (skipped).
	h := got[0]
	near(t, "L0H0 prev-token without sink", h.PrevTokenNoSink, 1)
	near(t, "L0H0 prev-token", h.PrevToken, (PrevTokenScore(prevSink)+PrevTokenScore(shifted(T, T)))/2)
	near(t, "L0H0 first-token", h.FirstToken, (FirstTokenScore(prevSink)+1)/2)
	if kind, sink := h.Label(); kind != "prev-token" || sink != h.FirstToken {
		t.Errorf("L0H0 label %q %g", kind, sink)
	}
	h = got[1]
	near(t, "L0H1 induction without sink", h.InductionNoSink, 1)
	nearOrNaN(t, "L0H1 induction", h.Induction, 0.3)
	if kind, _ := h.Label(); kind != "induction" {
		t.Errorf("L0H1 label %q", kind)
	}
	// Head 2: a pure sink in run 1 (undefined there), uniform in run 2.
	h = got[2]
	near(t, "L0H2 prev-token without sink", h.PrevTokenNoSink, PrevTokenNoSinkScore(uniformCausal(T)))
	near(t, "L0H2 induction without sink", h.InductionNoSink, InductionNoSinkScore(uniformCausal(T), n, start))
	near(t, "L0H2 induction", h.Induction, InductionScore(uniformCausal(T), n, start)/2)
	text := TextScores(run1)
	if !math.IsNaN(text[1].InductionNoSink) || text[0].PrevTokenNoSink != 1 {
		t.Errorf("text scores %+v", text[:2])
	}
	if m := Merge(got, text); m[1].InductionNoSink != 1 || m[0].PrevTokenNoSink != 1 {
		t.Errorf("merged %+v", m[:2])
	}
	cross := &result.Result{Attn: [][][][]float32{{prevSink}}, Sides: [][2]result.Side{{result.TargetSide, result.SourceSide}}}
	c := TextScores(cross)[0]
	if !math.IsNaN(c.PrevTokenNoSink) || !math.IsNaN(c.SelfNoSink) || math.IsNaN(c.FirstToken) {
		t.Errorf("cross-attention: %+v", c)
	}
}
