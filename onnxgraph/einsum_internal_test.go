package onnxgraph

import "testing"

// Einsum equations from damaged or hostile files — two ellipses in a term, non-ASCII
// letters, terms longer than their operand's rank — give an unknown shape and no key
// axis, never a panic (two ellipses indexed the shape at a negative position); valid ones
// give their output shape (-1 where unknown) and the key axis counted from the end.
func TestEinsumEquationsNeverPanic(t *testing.T) {
	shapes := [][]int64{{2, 3}, {2, 3}}
	for _, eq := range []string{
		"a...b...,c->a", "a......,b->a", "...a...,b", "é...,b->é", "aé,bé->ab", "abcdef,ab->a", "...,...->...",
		"a,b,c->abc", "->", "", ",", "a->...", "...->a",
	} {
		t.Run(eq, func(t *testing.T) {
			einsumShape(eq, shapes)
			einsumKeyAxis(eq)
		})
	}
	for _, c := range []struct {
		eq   string
		want []int64
		key  int
	}{
		{"bhqd,bhkd->bhqk", []int64{2, 3, 2, 2}, 0},
		{"...qd,...kd->...qk", []int64{2, 3, 2, 2}, 0},
		{"bqhd,bkhd->bhqk", []int64{2, 2, 3, 3}, 0},
	} {
		got, ok := einsumShape(c.eq, [][]int64{{2, 3, 2, 5}, {2, 3, 2, 5}})
		if !ok || len(got) != len(c.want) {
			t.Errorf("%s: shape %v, want %v", c.eq, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] && got[i] != -1 {
				t.Errorf("%s: shape %v, want %v", c.eq, got, c.want)
			}
		}
		if k, ok := einsumKeyAxis(c.eq); !ok || k != c.key {
			t.Errorf("%s: key axis %d (%v), want %d", c.eq, k, ok, c.key)
		}
	}
}
