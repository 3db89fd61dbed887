package testutil

import "math"

// MaxAbsDiff is the largest |a[i] − b[i]| (see Diff), so that `MaxAbsDiff(a, b) > tol`
// fails a comparison exactly when it should: +Inf when the lengths differ, or when any
// value is NaN (in either slice, even at the same index), or when an infinity meets a
// different value. Equal infinities at the same index differ by 0.
func MaxAbsDiff[F float32 | float64](a, b []F) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		if e := Diff(float64(a[i]), float64(b[i])); e > d {
			d = e
		}
	}
	return d
}

// Diff is |a − b| for one pair of values, made safe for `Diff(a, b) > tol`: +Inf when a or
// b is NaN (a NaN never equals anything, itself included), 0 when a == b (equal
// infinities included), +Inf when an infinity meets any other value.
func Diff(a, b float64) float64 {
	switch {
	case math.IsNaN(a) || math.IsNaN(b):
		return math.Inf(1)
	case a == b:
		return 0
	}
	return math.Abs(a - b) // +Inf when either is infinite
}

// Flatten lays one layer's [head][query][key] attention out row-major, as in reference.json.
func Flatten(heads [][][]float32) []float32 {
	var out []float32
	for _, rows := range heads {
		for _, row := range rows {
			out = append(out, row...)
		}
	}
	return out
}
