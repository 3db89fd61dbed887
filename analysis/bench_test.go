package analysis

import (
	"testing"

	"github.com/attnscope/attnscope/result"
)

// benchResult is a GPT-2-small-shaped result (12 layers × 12 heads) of uniform causal
// attention over T tokens.
func benchResult(T int) *result.Result {
	res := &result.Result{}
	u := uniformCausal(T)
	for l := 0; l < 12; l++ {
		var heads [][][]float32
		for h := 0; h < 12; h++ {
			heads = append(heads, u)
		}
		res.Attn = append(res.Attn, heads)
	}
	return res
}

// Scoring one corpus window of GPT-2-small at T = 128 (all 144 heads' text scores).
func BenchmarkAddText128(b *testing.B) {
	res := benchResult(128)
	acc := NewAccumulator()
	for b.Loop() {
		acc.AddText(res)
	}
}

// Scoring one probe sequence (BOS + 2 × 50) of GPT-2-small.
func BenchmarkAddProbe101(b *testing.B) {
	res := benchResult(101)
	acc := NewAccumulator()
	for b.Loop() {
		acc.AddProbe(res, 50, 1)
	}
}
