package analysis

import (
	"math"
	"testing"
)

func TestLossSummary(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		losses         []float64
		mean, icl      float64
		iclOK, meanNaN bool
	}{
		{losses: []float64{1, 2, 3, 4, nan}, mean: 2.5, icl: 4 - 1, iclOK: true}, // T=5: late 3, early 0
		{losses: []float64{2, nan}, mean: 2, icl: nan},
		{losses: []float64{nan, nan, nan}, meanNaN: true, icl: nan, iclOK: true},
		{losses: nil, meanNaN: true, icl: nan},
	}
	for _, c := range cases {
		mean, icl, ok := LossSummary(c.losses)
		if ok != c.iclOK || (c.meanNaN != math.IsNaN(mean)) || (!c.meanNaN && !(math.Abs(mean-c.mean) < 1e-12)) {
			t.Errorf("LossSummary(%v) = %g, %g, %v; want mean %g, ok %v", c.losses, mean, icl, ok, c.mean, c.iclOK)
		}
		if math.IsNaN(c.icl) != math.IsNaN(icl) || (!math.IsNaN(icl) && !(math.Abs(icl-c.icl) < 1e-12)) {
			t.Errorf("LossSummary(%v): icl %g, want %g", c.losses, icl, c.icl)
		}
	}
}
