package result_test

import (
	"strings"
	"testing"

	"github.com/attnscope/attnscope/result"
)

func TestDegenerate(t *testing.T) {
	causal := [][]float32{{1, 0, 0}, {0.5, 0.5, 0}, {0.2, 0.3, 0.5}}
	same := [][]float32{{0.2, 0.3, 0.5}, {0.2, 0.3, 0.5}, {0.2, 0.3, 0.5 + 1e-7}}
	one := [][]float32{{1}}
	cases := []struct {
		name   string
		tokens []int64
		attn   [][][][]float32
		want   string // "" for none, else a part of the sentence
	}{
		{"normal", []int64{1, 2, 3}, [][][][]float32{{causal, same}, {same, causal}}, ""},
		{"no attention", []int64{1, 2, 3}, nil, ""},
		{"every map 1x1", []int64{1, 2, 3}, [][][][]float32{{one, one}, {one}}, "1×1 although the prompt has 3 tokens: the model attends over a single position"},
		{"1x1 from given tensors", nil, [][][][]float32{{one}}, "the model attends over a single position"},
		{"one token", []int64{7}, [][][][]float32{{one, one}}, ""},
		{"every map identical rows", []int64{1, 2, 3}, [][][][]float32{{same, same}, {same}}, "batch_first=False but fed batch-major attends over the batch axis"},
		{"one map differs", []int64{1, 2, 3}, [][][][]float32{{same, same}, {causal}}, ""},
		{"rows differ by more than 1e-6", []int64{1, 2}, [][][][]float32{{{{0.5, 0.5}, {0.5 + 2e-6, 0.5 - 2e-6}}}}, ""},
		{"mixed 1x1 and identical", []int64{1, 2, 3}, [][][][]float32{{one, same}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := (&result.Result{Tokens: c.tokens, Attn: c.attn}).Degenerate()
			switch {
			case c.want == "" && got != "":
				t.Fatalf("warned %q", got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Fatalf("got %q, want it to contain %q", got, c.want)
			case strings.Contains(got, "\n"):
				t.Fatalf("%q is more than one line", got)
			}
		})
	}
}
