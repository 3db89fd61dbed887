package analysis

import (
	"math"
	"testing"

	"github.com/attnscope/attnscope/result"
)

// shifted is a causal head in which row i looks only at i−shift (at 0 when i < shift).
func shifted(T, shift int) [][]float32 {
	a := zeros(T)
	for i := range a {
		a[i][max(i-shift, 0)] = 1
	}
	return a
}

func zeros(T int) [][]float32 {
	a := make([][]float32, T)
	for i := range a {
		a[i] = make([]float32, T)
	}
	return a
}

func uniformCausal(T int) [][]float32 {
	a := zeros(T)
	for i := range a {
		for j := 0; j <= i; j++ {
			a[i][j] = 1 / float32(i+1)
		}
	}
	return a
}

// inductionHead attends, on the probe's second copy, to the token after the earlier
// occurrence; every other row attends to position 0.
func inductionHead(n, start int) [][]float32 {
	T := start + 2*n
	a := zeros(T)
	for i := range a {
		if i >= start+n {
			a[i][i-n+1] = 1
		} else {
			a[i][0] = 1
		}
	}
	return a
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if !(math.Abs(got-want) <= 1e-12) {
		t.Errorf("%s = %.15g, want %.15g", what, got, want)
	}
}

// Hand-built heads whose scores are known in closed form.
func TestClosedForm(t *testing.T) {
	const n = 10
	for _, start := range []int{0, 1} {
		T := start + 2*n
		prev := shifted(T, 1)
		near(t, "prev-token of a previous-token head", PrevTokenScore(prev), 1)
		near(t, "induction of a previous-token head", InductionScore(prev, n, start), 0)
		near(t, "duplicate of a previous-token head", DuplicateTokenScore(prev, n, start), 0)
		near(t, "self of a previous-token head", SelfScore(prev), 1/float64(T))
		near(t, "first-token of a previous-token head", FirstTokenScore(prev), 2/float64(T))
		near(t, "entropy of a previous-token head", EntropyScore(prev), 0)

		ind := inductionHead(n, start)
		near(t, "induction of an induction head", InductionScore(ind, n, start), 1)
		near(t, "duplicate of an induction head", DuplicateTokenScore(ind, n, start), 0)
		near(t, "prev-token of an induction head", PrevTokenScore(ind), 1/float64(T-1)) // row 1 → 0

		dup := shifted(T, n)
		near(t, "duplicate of a duplicate-token head", DuplicateTokenScore(dup, n, start), 1)
		near(t, "induction of a duplicate-token head", InductionScore(dup, n, start), 0)
	}
	T := 16
	eye := zeros(T)
	for i := range eye {
		eye[i][i] = 1
	}
	near(t, "self of the identity", SelfScore(eye), 1)
	near(t, "prev-token of the identity", PrevTokenScore(eye), 0)
	first := shifted(T, T)
	near(t, "first-token of a first-token head", FirstTokenScore(first), 1)
	near(t, "prev-token of a first-token head", PrevTokenScore(first), 1/float64(T-1))

	// Uniform causal attention: row i has entropy ln(i+1) and puts 1/(i+1) everywhere.
	u := uniformCausal(T)
	wantH, wantPrev, wantFirst := 0.0, 0.0, 0.0
	for i := 0; i < T; i++ {
		wantH += math.Log(float64(i + 1))
		wantFirst += 1 / float64(i+1)
		if i > 0 {
			wantPrev += 1 / float64(i+1)
		}
	}
	if got, want := EntropyScore(u), wantH/float64(T); !(math.Abs(got-want) <= 1e-6) {
		t.Errorf("entropy of uniform attention %g, want %g", got, want)
	}
	if got, want := PrevTokenScore(u), wantPrev/float64(T-1); !(math.Abs(got-want) <= 1e-6) {
		t.Errorf("prev-token of uniform attention %g, want %g", got, want)
	}
	if got, want := FirstTokenScore(u), wantFirst/float64(T); !(math.Abs(got-want) <= 1e-6) {
		t.Errorf("first-token of uniform attention %g, want %g", got, want)
	}
	if got := SelfScore(u); !(math.Abs(got-wantFirst/float64(T)) <= 1e-6) {
		t.Errorf("self of uniform attention %g", got)
	}
}

// The accumulator averages per-sequence scores, and a 2-layer model with a previous-token
// head in layer 0 and an induction head in layer 1 comes out as such.
func TestAccumulatorAndFlags(t *testing.T) {
	const n, start = 8, 1
	T := start + 2*n
	res := &result.Result{Attn: [][][][]float32{
		{shifted(T, 1), uniformCausal(T)},
		{inductionHead(n, start), shifted(T, T)},
	}}
	p := &Probe{N: n, BOS: 0, IDs: make([][]int64, 2)}
	scores, err := Scores([]*result.Result{res, res}, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 4 {
		t.Fatalf("%d heads", len(scores))
	}
	if s := scores[0]; s.Name() != "L0H0" || s.PrevToken != 1 || len(s.Flags()) != 1 || s.Flags()[0] != PrevToken {
		t.Errorf("L0H0 %+v flags %v", s, s.Flags())
	}
	if s := scores[2]; s.Name() != "L1H0" || s.Induction != 1 || s.Flags()[0] != Induction {
		t.Errorf("L1H0 %+v flags %v", s, s.Flags())
	}
	if s := scores[3]; s.FirstToken != 1 || s.Get(FirstToken) != 1 {
		t.Errorf("L1H1 %+v", s)
	}
	text := TextScores(res)
	if !math.IsNaN(text[2].Induction) || text[0].PrevToken != 1 {
		t.Errorf("text scores %+v", text[:3])
	}
	if m := Merge(scores, text); m[2].Induction != 1 || m[0].PrevToken != 1 {
		t.Errorf("merged %+v", m)
	}
	acc := NewAccumulator()
	acc.AddText(res)
	if err := acc.AddText(&result.Result{Attn: res.Attn[:1]}); err == nil {
		t.Error("a run with another layer count was accepted")
	}
}

func TestParseScore(t *testing.T) {
	for _, s := range AllScores {
		got, err := ParseScore(s.String())
		if err != nil || got != s {
			t.Errorf("ParseScore(%q) = %v, %v", s, got, err)
		}
	}
	if s, err := ParseScore("prev-token"); err != nil || s != PrevToken {
		t.Errorf("prev-token: %v %v", s, err)
	}
	if _, err := ParseScore("nope"); err == nil {
		t.Error("nope parsed")
	}
}

func TestProbe(t *testing.T) {
	special := func(id int64) bool { return id == 3 }
	p, err := NewProbe(ProbeOptions{N: 20, K: 4, Seed: 7, Vocab: 30, BOS: 29, Special: special})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.IDs) != 4 || p.Len() != 41 || p.Start() != 1 {
		t.Fatalf("probe %d × %d", len(p.IDs), p.Len())
	}
	for _, seq := range p.IDs {
		if len(seq) != 41 || seq[0] != 29 {
			t.Fatalf("sequence %v", seq)
		}
		seen := map[int64]bool{}
		for i := 1; i <= 20; i++ {
			if seq[i] != seq[i+20] {
				t.Fatalf("copies differ at %d: %v", i, seq)
			}
			if seq[i] == 3 || seq[i] == 29 || seq[i] < 0 || seq[i] >= 30 || seen[seq[i]] {
				t.Fatalf("bad or repeated id %d in %v", seq[i], seq)
			}
			seen[seq[i]] = true
		}
	}
	q, _ := NewProbe(ProbeOptions{N: 20, K: 4, Seed: 7, Vocab: 30, BOS: 29, Special: special})
	if q.IDs[2][5] != p.IDs[2][5] || q.IDs[3][20] != p.IDs[3][20] {
		t.Error("the same seed drew different probes")
	}
	r, _ := NewProbe(ProbeOptions{N: 50, K: 1, Vocab: 1000, BOS: -1, Positions: 32})
	if r.N != 16 || r.Len() != 32 {
		t.Errorf("probe not fitted to 32 positions: n %d", r.N)
	}
	if _, err := NewProbe(ProbeOptions{N: 5, K: 1, Vocab: 0, BOS: -1}); err == nil {
		t.Error("drew from an unknown vocabulary")
	}
}

func TestLossTopKAndICL(t *testing.T) {
	// 3 positions over a vocabulary of 4; logits row p favours id p+1.
	res := &result.Result{Tokens: []int64{0, 1, 3}, Vocab: 4, Logits: []float32{
		0, 2, 0, 0,
		0, 0, 1, 0,
		5, 5, 5, 5,
	}}
	lse0 := math.Log(3 + math.Exp(2))
	losses := TokenLosses(res)
	near(t, "loss 0", losses[0], lse0-2)
	near(t, "loss 1", losses[1], math.Log(3+math.E)-0)
	if !math.IsNaN(losses[2]) {
		t.Errorf("the last position has a loss %g", losses[2])
	}
	top := TopK(LogitsRow(res, 0), 2)
	if len(top) != 2 || top[0].ID != 1 || top[1].ID != 0 {
		t.Fatalf("top-2 %+v", top)
	}
	near(t, "top-1 probability", top[0].Prob, math.Exp(2-lse0))
	if all := TopK(LogitsRow(res, 2), 10); len(all) != 4 || all[0].ID != 0 || all[3].ID != 3 {
		t.Errorf("ties %+v", all)
	}
	if e, l, ok := ICLPositions(1024); !ok || e != 50 || l != 500 {
		t.Errorf("ICL positions at 1024: %d %d", e, l)
	}
	if e, l, ok := ICLPositions(128); !ok || e != 12 || l != 126 {
		t.Errorf("ICL positions at 128: %d %d", e, l)
	}
	c := ICL{Early: 0, Late: 1}
	c.Add(res)
	c.Add(res)
	score, _, _ := c.Score()
	near(t, "ICL score", score, losses[1]-losses[0])
	if c.N() != 2 {
		t.Errorf("ICL over %d runs", c.N())
	}
}

// lnFloat32 agrees with math.Log within 1e-9 from the smallest normal float32 up.
func TestLnFloat32(t *testing.T) {
	worst := 0.0
	for x := float32(1e-38); x < 2; x *= 1.0001 {
		worst = math.Max(worst, math.Abs(lnFloat32(x)-math.Log(float64(x))))
	}
	for _, x := range []float32{1, 0.5, 1e-45, math.MaxFloat32, math.SmallestNonzeroFloat32} {
		worst = math.Max(worst, math.Abs(lnFloat32(x)-math.Log(float64(x))))
	}
	if !(worst <= 1e-9) {
		t.Errorf("max error %g", worst)
	}
}

// Scores on maps that are not square (cross-attention: 3 target queries × 2 source keys,
// or 2 × 4) or have empty rows never panic: the diagonal ones are NaN, the others defined.
func TestScoresOnNonSquareMaps(t *testing.T) {
	for _, a := range [][][]float32{
		{{0.5, 0.5}, {1, 0}, {0, 1}},
		{{0.25, 0.25, 0.25, 0.25}, {0, 0, 0, 1}},
		{{}, {}},
	} {
		for name, v := range map[string]float64{
			"prev_token": PrevTokenScore(a), "self": SelfScore(a),
			"induction": InductionScore(a, 1, 0), "duplicate_token": DuplicateTokenScore(a, 1, 0),
		} {
			if !math.IsNaN(v) {
				t.Errorf("%v: %s = %g, want NaN", a, name, v)
			}
		}
		if len(a[0]) > 0 && (math.IsNaN(FirstTokenScore(a)) || math.IsNaN(EntropyScore(a))) {
			t.Errorf("%v: first-token or entropy score undefined", a)
		}
	}
}
