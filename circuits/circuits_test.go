package circuits

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/attnscope/attnscope/onnxgraph"
)

// randomWeights is a small model with every feature the folding touches: norms before each
// layer and the unembedding, a grouped-query layer, learned positions.
func randomWeights(seed uint64) *onnxgraph.Weights {
	rng := rand.New(rand.NewPCG(seed, 1))
	vec := func(n int, mean float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = mean + rng.NormFloat64()*0.5
		}
		return v
	}
	const dm, dh, vocab, npos = 12, 3, 17, 9
	norm := func() *onnxgraph.Norm {
		return &onnxgraph.Norm{Kind: "layernorm", Node: "ln", Scale: vec(dm, 1), Bias: vec(dm, 0), Epsilon: 1e-5}
	}
	layer := func(i, heads, kv int, reads []int) onnxgraph.LayerWeights {
		lw := onnxgraph.LayerWeights{Layer: i, Heads: heads, KVHeads: kv, DHead: dh, Scale: 1 / math.Sqrt(dh), Causal: true,
			QReads: reads, KReads: reads, VReads: reads}
		for h := 0; h < heads; h++ {
			lw.WQ = append(lw.WQ, vec(dm*dh, 0))
			lw.WO = append(lw.WO, vec(dh*dm, 0))
		}
		for h := 0; h < kv; h++ {
			lw.WK = append(lw.WK, vec(dm*dh, 0))
			lw.WV = append(lw.WV, vec(dm*dh, 0))
		}
		lw.Norm = norm()
		lw.KVNorm = lw.Norm
		return lw
	}
	return &onnxgraph.Weights{
		DModel: dm, Vocab: vocab, NPos: npos,
		Embed: vec(vocab*dm, 0), PosEmbed: vec(npos*dm, 0), Unembed: vec(dm*vocab, 0),
		FinalNorm: norm(),
		Layers:    []onnxgraph.LayerWeights{layer(0, 4, 4, nil), layer(1, 4, 2, []int{0})},
	}
}

func dense(r, c int, v []float64, scale []float64) *mat.Dense {
	d := mat.NewDense(r, c, append([]float64(nil), v...))
	if scale != nil {
		for i := 0; i < r; i++ {
			for j := 0; j < c; j++ {
				d.Set(i, j, d.At(i, j)*scale[i])
			}
		}
	}
	return d
}

// full returns head h's folded W_QK and W_OV as d_model × d_model matrices.
func full(w *onnxgraph.Weights, l, h int) (qk, ov *mat.Dense) {
	lw := w.Layers[l]
	kv := h / (lw.Heads / lw.KVHeads)
	dm, dh := w.DModel, lw.DHead
	q := dense(dm, dh, lw.WQ[h], lw.Norm.Scale)
	k := dense(dm, dh, lw.WK[kv], lw.KVNorm.Scale)
	v := dense(dm, dh, lw.WV[kv], lw.KVNorm.Scale)
	o := dense(dh, dm, lw.WO[h], nil)
	qk, ov = new(mat.Dense), new(mat.Dense)
	qk.Mul(q, k.T())
	ov.Mul(v, o)
	return qk, ov
}

func relDiff(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.Inf(1)
	}
	return math.Abs(a-b) / math.Max(1e-12, math.Max(math.Abs(a), math.Abs(b)))
}

// TestAgainstFullMatrices computes every number the slow way, with the d_model × d_model
// circuits and the vocab × vocab OV circuit materialised, and compares.
func TestAgainstFullMatrices(t *testing.T) {
	w := randomWeights(7)
	c, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	dm := w.DModel
	we := dense(w.Vocab, dm, w.Embed, nil)
	wu := dense(dm, w.Vocab, w.Unembed, w.FinalNorm.Scale)
	heads := c.HeadCircuits()
	if len(heads) != 8 {
		t.Fatalf("%d heads, want 8", len(heads))
	}
	for _, got := range heads {
		qk, ov := full(w, got.Layer, got.Head)
		// OV copying from the vocab × vocab circuit's eigenvalues.
		var t1, fullOV mat.Dense
		t1.Mul(we, ov)
		fullOV.Mul(&t1, wu)
		var e mat.Eigen
		if !e.Factorize(&fullOV, mat.EigenNone) {
			t.Fatal("eigen failed")
		}
		var re, abs float64
		for _, l := range e.Values(nil) {
			re += real(l)
			abs += math.Hypot(real(l), imag(l))
		}
		if d := relDiff(got.OVCopying, re/abs); d > 1e-9 {
			t.Errorf("L%dH%d copying %v, full circuit %v", got.Layer, got.Head, got.OVCopying, re/abs)
		}
		if d := relDiff(got.OVNorm, mat.Norm(ov, 2)); d > 1e-9 {
			t.Errorf("L%dH%d ‖W_OV‖ %v, want %v", got.Layer, got.Head, got.OVNorm, mat.Norm(ov, 2))
		}
		if d := relDiff(got.QKNorm, mat.Norm(qk, 2)); d > 1e-9 {
			t.Errorf("L%dH%d ‖W_QK‖ %v, want %v", got.Layer, got.Head, got.QKNorm, mat.Norm(qk, 2))
		}
		// Positional pattern by an explicit loop.
		lw := w.Layers[got.Layer]
		n := w.NPos
		x := make([][]float64, n)
		for i := range x {
			row := w.PosEmbed[i*dm : (i+1)*dm]
			var mean, ss float64
			for _, v := range row {
				mean += v
			}
			mean /= float64(dm)
			for _, v := range row {
				ss += (v - mean) * (v - mean)
			}
			sd := math.Sqrt(ss/float64(dm) + lw.Norm.Epsilon)
			x[i] = make([]float64, dm)
			for j, v := range row {
				x[i][j] = (v - mean) / sd
			}
		}
		var prev, self float64
		for i := 0; i < n; i++ {
			logits := make([]float64, i+1)
			var z float64
			for j := 0; j <= i; j++ {
				var s float64
				for a := 0; a < dm; a++ {
					for b := 0; b < dm; b++ {
						s += x[i][a] * qk.At(a, b) * x[j][b]
					}
				}
				logits[j] = math.Exp(s * lw.Scale)
				z += logits[j]
			}
			self += logits[i] / z
			if i > 0 {
				prev += logits[i-1] / z
			}
		}
		if d := relDiff(got.QKPrevToken, prev/float64(n-1)); d > 1e-9 {
			t.Errorf("L%dH%d prev %v, loop %v", got.Layer, got.Head, got.QKPrevToken, prev/float64(n-1))
		}
		if d := relDiff(got.QKSelf, self/float64(n)); d > 1e-9 {
			t.Errorf("L%dH%d self %v, loop %v", got.Layer, got.Head, got.QKSelf, self/float64(n))
		}
	}

	comps := c.Compositions()
	if len(comps) != 16 {
		t.Fatalf("%d compositions, want 4 × 4", len(comps))
	}
	for _, got := range comps {
		_, ovA := full(w, got.FromLayer, got.FromHead)
		qkB, ovB := full(w, got.ToLayer, got.ToHead)
		for _, m := range []struct {
			name  string
			got   float64
			right mat.Matrix
		}{{"q", got.Q, qkB}, {"k", got.K, qkB.T()}, {"v", got.V, ovB}} {
			var p mat.Dense
			p.Mul(ovA, m.right)
			want := mat.Norm(&p, 2) / (mat.Norm(ovA, 2) * mat.Norm(m.right, 2))
			if d := relDiff(m.got, want); d > 1e-9 {
				t.Errorf("L%dH%d→L%dH%d %s-composition %v, full matrices %v", got.FromLayer, got.FromHead, got.ToLayer, got.ToHead, m.name, m.got, want)
			}
		}
	}
}

func TestTokenCircuits(t *testing.T) {
	w := randomWeights(3)
	c, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	dm := w.DModel
	we := dense(w.Vocab, dm, w.Embed, nil)
	wu := dense(dm, w.Vocab, w.Unembed, w.FinalNorm.Scale)
	qk, ov := full(w, 1, 2)
	var t1, fullOV, t2, fullQK mat.Dense
	t1.Mul(we, ov)
	fullOV.Mul(&t1, wu)
	t2.Mul(we, qk)
	fullQK.Mul(&t2, we.T())

	pairs, err := c.TopOV(context.Background(), 1, 2, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 10 {
		t.Fatalf("%d pairs, want 10", len(pairs))
	}
	// The 10th largest entry bounds every entry not listed.
	listed := map[[2]int]bool{}
	for i, p := range pairs {
		if d := relDiff(p.Value, fullOV.At(p.Source, p.Output)); d > 1e-9 {
			t.Errorf("pair %d: value %v, circuit %v", i, p.Value, fullOV.At(p.Source, p.Output))
		}
		if i > 0 && p.Value > pairs[i-1].Value {
			t.Errorf("pairs not in descending order at %d", i)
		}
		listed[[2]int{p.Source, p.Output}] = true
	}
	for i := 0; i < w.Vocab; i++ {
		for j := 0; j < w.Vocab; j++ {
			if !listed[[2]int{i, j}] && fullOV.At(i, j) > pairs[9].Value {
				t.Errorf("entry (%d,%d) = %v beats the listed %v", i, j, fullOV.At(i, j), pairs[9].Value)
			}
		}
	}

	tri, err := c.SkipTrigrams(1, 2, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tri {
		if d := relDiff(s.QK, fullQK.At(s.Dest, s.Source)); d > 1e-9 {
			t.Errorf("skip-trigram QK %v, circuit %v", s.QK, fullQK.At(s.Dest, s.Source))
		}
		for o := 0; o < w.Vocab; o++ {
			if fullOV.At(s.Source, o) > s.OV+1e-12 {
				t.Errorf("source %d: output %d (%v) beats the listed %d (%v)", s.Source, o, fullOV.At(s.Source, o), s.Output, s.OV)
			}
		}
	}
	if _, err := c.TopOV(context.Background(), 1, 9, 3, nil); err == nil {
		t.Error("head 9 of a 4-head layer accepted")
	}

	// Among a few tokens: the largest entries of that sub-matrix, named by token id.
	among := []int{2, 5, 11, 16}
	sub, err := c.TopOV(context.Background(), 1, 2, 3, among)
	if err != nil {
		t.Fatal(err)
	}
	var want []float64
	for _, i := range among {
		for _, j := range among {
			want = append(want, fullOV.At(i, j))
		}
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(want)))
	for i, p := range sub {
		if relDiff(p.Value, want[i]) > 1e-9 || relDiff(p.Value, fullOV.At(p.Source, p.Output)) > 1e-9 {
			t.Errorf("among %v, pair %d: %d→%d %v, want value %v", among, i, p.Source, p.Output, p.Value, want[i])
		}
	}
	tri, err = c.SkipTrigrams(1, 2, 4, among)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tri {
		if !slices.Contains(among, s.Dest) || !slices.Contains(among, s.Source) || !slices.Contains(among, s.Output) {
			t.Errorf("skip-trigram %+v leaves the tokens %v", s, among)
		}
	}
	if _, err := c.TopOV(context.Background(), 1, 2, 3, []int{3, 99}); err == nil {
		t.Error("a token outside the vocabulary accepted")
	}
	// A cancelled context stops the work with its error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.TopOV(ctx, 1, 2, 3, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("TopOV with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestUnavailable(t *testing.T) {
	w := randomWeights(5)
	w.Unembed = nil
	w.UnembedNote = "the logits come through a nonlinear head"
	w.PosEmbed = nil
	w.PosNote = "rotary"
	w.Layers[1].Rotary = "rope_1"
	c, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range c.HeadCircuits() {
		if !math.IsNaN(h.OVCopying) || !math.IsNaN(h.QKPrevToken) || !math.IsNaN(h.QKSelf) {
			t.Errorf("L%dH%d: %+v, want NaN scores", h.Layer, h.Head, h)
		}
	}
	for _, cp := range c.Compositions() {
		if !math.IsNaN(cp.Q) || !math.IsNaN(cp.K) || math.IsNaN(cp.V) {
			t.Errorf("rotary target: %+v, want only V", cp)
		}
	}
	if len(c.Notes()) < 2 {
		t.Errorf("notes %q, want the unembedding and rotary reasons", c.Notes())
	}
	if _, err := c.TopOV(context.Background(), 0, 0, 3, nil); err == nil {
		t.Error("TopOV without an unembedding succeeded")
	}
}

// TestBaseline checks the random baseline against its expectation: for independent
// standard-normal factors E‖L R‖²_F ≈ d_model³ d_head² and E‖L‖² E‖R‖² ≈ d_model⁴ d_head², so
// the score is close to 1/√d_model whatever the head widths.
func TestBaseline(t *testing.T) {
	for _, s := range []struct{ dm, from, to int }{{64, 16, 16}, {128, 16, 8}, {48, 24, 24}} {
		got := Baseline(s.dm, s.from, s.to, 200, 1)
		want := 1 / math.Sqrt(float64(s.dm))
		if relDiff(got, want) > 0.03 {
			t.Errorf("baseline for d_model %d, d_head %d→%d: %v, want ≈ %v", s.dm, s.from, s.to, got, want)
		}
	}
}
