package testutil

import (
	"math"
	"testing"
)

var (
	nan  = float32(math.NaN())
	inf  = float32(math.Inf(1))
	ninf = float32(math.Inf(-1))
)

// Every way a result can be wrong makes `MaxAbsDiff(got, want) > tol` true for any finite
// tol, and equal slices give 0. Before NaN was handled, math.Max turned the first NaN into a
// NaN result, and `NaN > tol` is false: an all-NaN attention map passed every comparison.
func TestMaxAbsDiff(t *testing.T) {
	cases := []struct {
		name string
		a, b []float32
		want float64
	}{
		{"equal", []float32{0.25, 0.75}, []float32{0.25, 0.75}, 0},
		{"empty", nil, []float32{}, 0},
		{"largest difference", []float32{0, 1, 2}, []float32{0.5, 1, 4}, 2},
		{"negative difference", []float32{3}, []float32{5}, 2},
		{"NaN in a", []float32{0.5, nan}, []float32{0.5, 0.5}, math.Inf(1)},
		{"NaN in b", []float32{0.5, 0.5}, []float32{nan, 0.5}, math.Inf(1)},
		{"NaN in both at the same index", []float32{nan}, []float32{nan}, math.Inf(1)},
		{"all NaN", []float32{nan, nan, nan}, []float32{0.1, 0.2, 0.7}, math.Inf(1)},
		{"NaN after a large difference", []float32{9, nan}, []float32{0, 0}, math.Inf(1)},
		{"+Inf against a finite value", []float32{inf}, []float32{1}, math.Inf(1)},
		{"finite against -Inf", []float32{1}, []float32{ninf}, math.Inf(1)},
		{"+Inf against -Inf", []float32{inf}, []float32{ninf}, math.Inf(1)},
		{"equal infinities", []float32{inf, ninf, 1}, []float32{inf, ninf, 1}, 0},
		{"a longer", []float32{1, 2}, []float32{1}, math.Inf(1)},
		{"b longer", []float32{1}, []float32{1, 2}, math.Inf(1)},
		{"one empty", nil, []float32{0}, math.Inf(1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := MaxAbsDiff(c.a, c.b)
			if got != c.want {
				t.Fatalf("MaxAbsDiff(%v, %v) = %g, want %g", c.a, c.b, got, c.want)
			}
			if got != MaxAbsDiff(c.b, c.a) {
				t.Errorf("not symmetric: %g one way, %g the other", got, MaxAbsDiff(c.b, c.a))
			}
			a64, b64 := widen(c.a), widen(c.b)
			if g := MaxAbsDiff(a64, b64); g != got {
				t.Errorf("float64 version gives %g, float32 %g", g, got)
			}
		})
	}
}

func widen(a []float32) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

func TestDiff(t *testing.T) {
	n, p := math.NaN(), math.Inf(1)
	cases := []struct {
		a, b, want float64
	}{
		{1, 1, 0}, {1, 1.5, 0.5}, {-2, 2, 4}, {0, math.Copysign(0, -1), 0},
		{n, 1, p}, {1, n, p}, {n, n, p}, {n, p, p},
		{p, p, 0}, {-p, -p, 0}, {p, -p, p}, {p, 0, p}, {0, -p, p},
	}
	for _, c := range cases {
		if got := Diff(c.a, c.b); got != c.want {
			t.Errorf("Diff(%g, %g) = %g, want %g", c.a, c.b, got, c.want)
		}
	}
}

// Flatten lays [head][query][key] out row-major: a transposed map flattens differently.
func TestFlatten(t *testing.T) {
	heads := [][][]float32{{{1, 2, 3}, {4, 5, 6}}, {{7, 8, 9}, {10, 11, 12}}}
	got := Flatten(heads)
	want := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if MaxAbsDiff(got, want) != 0 {
		t.Fatalf("Flatten = %v, want %v", got, want)
	}
	transposed := [][][]float32{{{1, 4}, {2, 5}, {3, 6}}, {{7, 10}, {8, 11}, {9, 12}}}
	if MaxAbsDiff(Flatten(transposed), want) == 0 {
		t.Fatal("a transposed map flattens to the same values")
	}
}
