package analysis

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/result"
)

// fakeRunner runs "models" whose every layer is given by a function of T, and counts the
// bytes of outputs held at once.
type fakeRunner struct {
	layers func(T int) [][][][]float32 // [layer][head][q][k]
	sides  [][2]result.Side            // per layer; nil for one sequence
	vocab  int
	live   int64 // bytes of outputs not yet recycled
	peak   int64
	// batches records the size of every Run (1) and RunBatch call.
	batches []int
	// fixedLen, when > 0, refuses runs of any other length (a fixed-length input).
	fixedLen int
}

func (f *fakeRunner) result(ids []int64) *result.Result {
	attn := f.layers(len(ids))
	res := &result.Result{Tokens: ids, Attn: attn, Vocab: f.vocab, Logits: make([]float32, len(ids)*f.vocab)}
	if f.sides != nil {
		res.Source, res.Sides = ids, f.sides
	}
	for l := range attn {
		for range attn[l] {
			f.live += int64(4 * len(ids) * len(ids))
		}
	}
	f.live += int64(4 * len(res.Logits))
	f.peak = max(f.peak, f.live)
	return res
}

func (f *fakeRunner) Run(ids []int64) (*result.Result, error) {
	if f.fixedLen > 0 && len(ids) != f.fixedLen {
		return nil, errors.New("fixed length")
	}
	f.batches = append(f.batches, 1)
	return f.result(ids), nil
}

func (f *fakeRunner) RunBatch(b [][]int64) ([]*result.Result, error) {
	f.batches = append(f.batches, len(b))
	out := make([]*result.Result, len(b))
	for i, ids := range b {
		if f.fixedLen > 0 && len(ids) != f.fixedLen {
			return nil, errors.New("fixed length")
		}
		out[i] = f.result(ids)
	}
	return out, nil
}

func (f *fakeRunner) Recycle(res *result.Result) {
	for l := range res.Attn {
		for _, a := range res.Attn[l] {
			f.live -= int64(4 * len(a) * len(a))
		}
	}
	f.live -= int64(4 * len(res.Logits))
}

func (f *fakeRunner) RecycleBatch(rs []*result.Result) {
	for _, r := range rs {
		f.Recycle(r)
	}
}

// diagonalModel has layers of heads that look at the position itself (self 1, every other
// diagonal score 0): a cross-attention layer of such maps would score self = 1 if its
// diagonal were read.
func diagonalModel(layers, heads int) func(T int) [][][][]float32 {
	return func(T int) [][][][]float32 {
		out := make([][][][]float32, layers)
		for l := range out {
			for range heads {
				out[l] = append(out[l], shifted(T, 0))
			}
		}
		return out
	}
}

// An encoder–decoder's cross-attention layers have no diagonal scores (NaN), even when the
// source and target have the same length; its self-attention layers have them; first-token
// and entropy exist everywhere.
func TestCrossAttentionHasNoDiagonalScores(t *testing.T) {
	encdec := [][2]result.Side{
		{result.SourceSide, result.SourceSide}, // encoder
		{result.TargetSide, result.TargetSide}, // decoder self-attention
		{result.TargetSide, result.SourceSide}, // cross-attention
	}
	r := &fakeRunner{layers: diagonalModel(3, 2), sides: encdec, vocab: 8}
	rep, err := ScoreHeads(r, HeadsOptions{Probe: ProbeOptions{N: 4, K: 3, Vocab: 8, BOS: -1}})
	if err != nil {
		t.Fatal(err)
	}
	diagonal := []Score{Induction, DuplicateToken, PrevToken, Self}
	for _, h := range rep.Scores {
		for _, sc := range diagonal {
			if got := h.Get(sc); math.IsNaN(got) != (h.Layer == 2) {
				t.Errorf("%s %s = %v; want NaN exactly in the cross-attention layer", h.Name(), sc, got)
			}
		}
		if h.Layer < 2 && h.Self != 1 {
			t.Errorf("%s self = %v, want 1", h.Name(), h.Self)
		}
		for _, sc := range []Score{FirstToken, Entropy} {
			if math.IsNaN(h.Get(sc)) {
				t.Errorf("%s %s is NaN", h.Name(), sc)
			}
		}
	}
	// The same model as one sequence (no sides): every layer has its diagonal scores.
	r = &fakeRunner{layers: diagonalModel(3, 2), vocab: 8}
	rep, err = ScoreHeads(r, HeadsOptions{Probe: ProbeOptions{N: 4, K: 3, Vocab: 8, BOS: -1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range rep.Scores {
		if h.Self != 1 || math.IsNaN(h.Induction) {
			t.Errorf("one sequence: %s self %v induction %v", h.Name(), h.Self, h.Induction)
		}
	}
}

// The probe runs in batches whose outputs fit the budget; the scores equal those of all
// sequences scored at once (Scores over RunProbe's runs).
func TestScoreHeadsBatchesFitBudget(t *testing.T) {
	const layers, heads, vocab, N, K = 2, 3, 50, 8, 10
	T := 2 * N
	one := int64(4 * (layers*heads*T*T + T*vocab))
	for _, c := range []struct {
		name       string
		budget     int64
		sequential bool
		wantBatch  int
	}{
		{"all fit", 100 * one, false, K},
		{"three fit", 3*one + one/2, false, 3},
		{"one fits", one, false, 1},
		{"sequential", 100 * one, true, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &fakeRunner{layers: func(T int) [][][][]float32 {
				out := make([][][][]float32, layers)
				for l := range out {
					for h := range heads {
						out[l] = append(out[l], shifted(T, (l+h)%3))
					}
				}
				return out
			}, vocab: vocab}
			opts := ProbeOptions{N: N, K: K, Seed: 3, Vocab: vocab, BOS: -1}
			rep, err := ScoreHeads(r, HeadsOptions{Probe: opts, Budget: c.budget, Sequential: c.sequential})
			if err != nil {
				t.Fatal(err)
			}
			if rep.BatchSize != c.wantBatch {
				t.Errorf("batch size %d, want %d", rep.BatchSize, c.wantBatch)
			}
			if r.peak > max(c.budget, int64(4*(layers*heads*4+2*vocab))) {
				t.Errorf("peak outputs %d bytes, budget %d", r.peak, c.budget)
			}
			if r.live != 0 {
				t.Errorf("%d bytes of outputs never recycled", r.live)
			}
			runs := 0
			for _, b := range r.batches[1:] { // the first is the 2-token measurement
				runs += b
			}
			if runs != K {
				t.Errorf("%d probe sequences run (batches %v), want %d", runs, r.batches, K)
			}
			p, _ := NewProbe(opts)
			ref := &fakeRunner{layers: r.layers, vocab: vocab}
			all, _ := RunProbe(ref, p, true)
			want, err := Scores(all, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(rep.Scores, want, sameScores) {
				t.Errorf("scores\n%v\nwant\n%v", rep.Scores, want)
			}
		})
	}
}

// sameScores compares two heads' scores, NaN equal to NaN only.
func sameScores(a, b HeadScores) bool {
	if a.Layer != b.Layer || a.Head != b.Head {
		return false
	}
	for _, sc := range AllScores {
		x, y := a.Get(sc), b.Get(sc)
		if !(x == y || math.IsNaN(x) && math.IsNaN(y)) || math.Abs(x-y) > 1e-12 {
			return false
		}
	}
	return true
}

// A probe, prompt or window whose single run exceeds the budget is refused before it runs,
// saying the longest that fits; a model of fixed length is measured on its first probe run.
func TestScoreHeadsRefusesOverBudget(t *testing.T) {
	model := diagonalModel(4, 4)
	bytes := func(T int) int64 { return int64(4 * (16*T*T + 10*T)) }
	budget := bytes(30)
	cases := []struct {
		name string
		opts HeadsOptions
		what string
	}{
		{"probe", HeadsOptions{Probe: ProbeOptions{N: 20, K: 2, Vocab: 10, BOS: -1}}, "probe of 40 tokens"},
		{"prompt", HeadsOptions{Probe: ProbeOptions{N: 4, K: 2, Vocab: 10, BOS: -1}, Text: make([]int64, 31)}, "prompt of 31 tokens"},
		{"sample", HeadsOptions{Probe: ProbeOptions{N: 4, K: 2, Vocab: 10, BOS: -1}, Sample: make([]int64, 64)}, "sample of 64 tokens"},
		{"window", HeadsOptions{Probe: ProbeOptions{N: 4, K: 2, Vocab: 10, BOS: -1}, Corpus: strings.NewReader("x"), CorpusOptions: CorpusOptions{Window: 50, BOS: -1}}, "window of 50 tokens"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &fakeRunner{layers: model, vocab: 10}
			c.opts.Budget = budget
			_, err := ScoreHeads(r, c.opts)
			var le *LimitError
			if !errors.As(err, &le) {
				t.Fatalf("error %v, want a *LimitError", err)
			}
			if le.MaxTokens != 30 || !strings.Contains(err.Error(), c.what) || !strings.Contains(err.Error(), "at most 30 tokens fit") {
				t.Errorf("%q (max %d)", err, le.MaxTokens)
			}
			if r.peak > budget {
				t.Errorf("ran %d bytes before refusing", r.peak)
			}
		})
	}
	// Fixed length 8: the 2-token measurement fails, the first probe run measures.
	r := &fakeRunner{layers: model, vocab: 10, fixedLen: 8}
	rep, err := ScoreHeads(r, HeadsOptions{Probe: ProbeOptions{N: 4, K: 5, Vocab: 10, BOS: -1}, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.batches, []int{1, 4}) || rep.BatchSize != 1 {
		t.Errorf("batches %v, first %d; want the first sequence alone, then the rest together", r.batches, rep.BatchSize)
	}
}

// A probe of more than MaxProbeTokens tokens is refused before its ids are drawn.
func TestNewProbeRefusesHugeProbe(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := NewProbe(ProbeOptions{N: 50, K: 1000000, Vocab: 1000, BOS: 0})
	runtime.ReadMemStats(&after)
	var pe *ProbeSizeError
	if !errors.As(err, &pe) || pe.Sequences != 1000000 || pe.Len != 101 {
		t.Fatalf("error %v, want a *ProbeSizeError for 1000000 × 101", err)
	}
	if !strings.Contains(err.Error(), "more than the limit of 4194304") {
		t.Errorf("%q", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("allocated %d bytes before refusing", grew)
	}
	if _, err := NewProbe(ProbeOptions{N: 1 << 30, K: 1, Vocab: 1000, BOS: -1}); !errors.As(err, &pe) {
		t.Errorf("a probe of 2^31 tokens: %v", err)
	}
}

// The text source is described for the report line.
func TestTextSourceString(t *testing.T) {
	for _, c := range []struct {
		s    TextSource
		want string
	}{
		{TextSource{Kind: TextPrompt, Tokens: 12}, "the prompt (12 tokens)"},
		{TextSource{Kind: TextSample, Tokens: 85}, "the built-in English sample (85 tokens)"},
		{TextSource{Kind: TextCorpus, Corpus: CorpusStats{Windows: 3, Tokens: 192}}, "3 windows of 64 tokens of the corpus"},
		{TextSource{Kind: TextProbes}, "the probes"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
}

// CheckRunSize refuses a run whose outputs exceed the limit, measured from a two-token
// run, and leaves short runs unchecked (no extra run).
func TestCheckRunSize(t *testing.T) {
	r := &fakeRunner{layers: diagonalModel(2, 4), vocab: 100}
	limit := int64(4 * (8*1000*1000 + 1000*100)) // exactly 1000 tokens
	if err := CheckRunSize(r, "prompt", 1000, limit); err != nil {
		t.Errorf("1000 tokens: %v", err)
	}
	err := CheckRunSize(r, "prompt", 1001, limit)
	var le *LimitError
	if !errors.As(err, &le) || le.MaxTokens != 1000 || le.Tokens != 1001 || !strings.Contains(err.Error(), "one prompt of 1001 tokens") {
		t.Errorf("1001 tokens: %v", err)
	}
	if r.live != 0 {
		t.Errorf("%d bytes of the measurement never recycled", r.live)
	}
	r.batches = nil
	if err := CheckRunSize(r, "prompt", 511, 1); err != nil || len(r.batches) != 0 {
		t.Errorf("a short run: %v, runs %v", err, r.batches)
	}
	// A limit the user gave is checked at any length, by the measuring run (before, a run
	// under 512 tokens went ahead whatever --max-memory said).
	err = CheckRunSizeMeasured(r, "prompt", 30, 1)
	if !errors.As(err, &le) || le.Tokens != 30 || len(r.batches) != 1 {
		t.Errorf("a short run, limit given: %v, runs %v", err, r.batches)
	}
	if err := CheckRunSizeMeasured(r, "prompt", 30, limit); err != nil {
		t.Errorf("a short run within the limit given: %v", err)
	}
}

// sizedRunner is a fakeRunner that tells its output sizes, as a session does.
type sizedRunner struct{ *fakeRunner }

func (r sizedRunner) OutputBytes(T int) (int64, bool) {
	t := int64(T)
	return 4 * (8*t*t + 100*t), true
}

// A runner that tells its output sizes is never run to measure them: a browser re-run of
// a long prompt paid for a two-token run, which also made the session drop its recycled
// buffers before the real run.
func TestCheckRunSizeWithoutRunning(t *testing.T) {
	r := sizedRunner{&fakeRunner{layers: diagonalModel(2, 4), vocab: 100}}
	limit := int64(4 * (8*1000*1000 + 1000*100))
	if err := CheckRunSize(r, "target", 1000, limit); err != nil {
		t.Errorf("1000 tokens: %v", err)
	}
	err := CheckRunSize(r, "target", 1001, limit)
	var le *LimitError
	if !errors.As(err, &le) || le.MaxTokens != 1000 || !strings.Contains(err.Error(), "one target of 1001 tokens") {
		t.Errorf("1001 tokens: %v", err)
	}
	if len(r.batches) != 0 {
		t.Errorf("the model was run to measure it: %v", r.batches)
	}
}
