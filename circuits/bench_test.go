package circuits

import (
	"math/rand/v2"
	"testing"

	"github.com/attnscope/attnscope/onnxgraph"
)

// gpt2SmallWeights are random weights of GPT-2 small's shapes: 12 layers × 12 heads of
// width 64, d_model 768, a 50,257-token vocabulary (the embedding only when vocab > 0).
func gpt2SmallWeights(vocab int) *onnxgraph.Weights {
	rng := rand.New(rand.NewPCG(1, 2))
	vec := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64() * 0.02
		}
		return v
	}
	const dm, dh, heads, layers = 768, 64, 12, 12
	w := &onnxgraph.Weights{DModel: dm, Vocab: vocab, NPos: 1024, PosEmbed: vec(1024 * dm)}
	if vocab > 0 {
		w.Embed, w.Unembed = vec(vocab*dm), vec(dm*vocab)
	}
	for l := 0; l < layers; l++ {
		lw := onnxgraph.LayerWeights{Layer: l, Heads: heads, KVHeads: heads, DHead: dh, Scale: 0.125, Causal: true}
		for h := 0; h < heads; h++ {
			lw.WQ, lw.WK = append(lw.WQ, vec(dm*dh)), append(lw.WK, vec(dm*dh))
			lw.WV, lw.WO = append(lw.WV, vec(dm*dh)), append(lw.WO, vec(dh*dm))
		}
		for e := 0; e < l; e++ {
			lw.QReads, lw.KReads, lw.VReads = append(lw.QReads, e), append(lw.KReads, e), append(lw.VReads, e)
		}
		w.Layers = append(w.Layers, lw)
	}
	return w
}

// BenchmarkCompositionGPT2Small: all 9,504 pairs × 3 modes of a GPT-2-small-shaped model.
func BenchmarkCompositionGPT2Small(b *testing.B) {
	c, err := New(gpt2SmallWeights(0))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n := len(c.Compositions()); n != 144*132/2 {
			b.Fatalf("%d pairs", n)
		}
	}
}

// BenchmarkHeadCircuitsGPT2Small: copying scores (a 50,257-token W_U W_E) and positional
// patterns for 144 heads.
func BenchmarkHeadCircuitsGPT2Small(b *testing.B) {
	w := gpt2SmallWeights(50257)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := New(w)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(c.HeadCircuits()); n != 144 {
			b.Fatalf("%d heads", n)
		}
	}
}
