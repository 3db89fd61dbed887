package tableio

import (
	"io"
	"strconv"
	"testing"
)

// benchAttention is a causal dump of layers × heads maps over T tokens, the shape of a
// GPT-2-small-sized model's, with GPT-2-like labels.
func benchAttention(layers, heads, T int) *Attention {
	ids := make([]int64, T)
	toks := make([]string, T)
	for i := range ids {
		ids[i] = int64(i*7919) % 50257
		toks[i] = "Ġtok" + strconv.Itoa(i%500)
	}
	a := &Attention{IDs: ids, Tokens: toks}
	for l := range layers {
		L := Layer{Layer: l, Kind: Self, QueryIDs: ids, KeyIDs: ids, QueryTokens: toks, KeyTokens: toks, Causal: true}
		for h := range heads {
			rows := make([][]float32, T)
			for q := range rows {
				rows[q] = make([]float32, T)
				for k := 0; k <= q; k++ {
					rows[q][k] = 1 / float32(q+1)
				}
			}
			L.Heads = append(L.Heads, h)
			L.Maps = append(L.Maps, rows)
		}
		a.Layers = append(a.Layers, L)
	}
	return a
}

// go test ./tableio -run '^$' -bench Attention -benchtime 1x
func BenchmarkAttention(b *testing.B) {
	a := benchAttention(12, 12, 256)
	for _, f := range Formats {
		b.Run(string(f), func(b *testing.B) {
			var n countWriter
			for b.Loop() {
				n = 0
				if err := WriteAttention(&n, f, a, Filter{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/1e6, "MB")
			b.SetBytes(int64(n))
		})
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

var _ io.Writer = (*countWriter)(nil)
