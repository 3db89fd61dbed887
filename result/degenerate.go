package result

import (
	"fmt"
	"math"
)

// Degenerate says, in one sentence, why a run's attention maps cannot show what the model
// looks at, or returns "" when they may: every map is 1×1 although the prompt has more
// than one token (the model attends over a single position), or every map has more than
// one row and all its rows are the same within 1e-6 (the sign of a model exported with
// batch_first=False but fed batch-major, which attends over the batch axis). A run
// without attention maps is not degenerate.
func (r *Result) Degenerate() string {
	maps, single, identical := 0, 0, 0
	for _, heads := range r.Attn {
		for _, rows := range heads {
			maps++
			switch {
			case len(rows) == 1 && len(rows[0]) == 1:
				single++
			case len(rows) > 1 && identicalRows(rows, 1e-6):
				identical++
			}
		}
	}
	switch {
	case maps == 0:
		return ""
	case single == maps && len(r.Tokens) != 1:
		n := "the prompt has several tokens"
		if len(r.Tokens) > 1 {
			n = fmt.Sprintf("the prompt has %d tokens", len(r.Tokens))
		}
		return fmt.Sprintf("every attention map is 1×1 although %s: the model attends over a single position, so the maps show nothing; check that it is fed (batch, sequence) as it was exported", n)
	case identical == maps:
		return "every attention map has all its rows identical, so no query looks anywhere different from the others: a model exported with batch_first=False but fed batch-major attends over the batch axis; re-export it with batch_first=True"
	}
	return ""
}

// identicalRows reports whether every row of a equals the first within tol.
func identicalRows(a [][]float32, tol float64) bool {
	first := a[0]
	for _, row := range a[1:] {
		if len(row) != len(first) {
			return false
		}
		for k, v := range row {
			if math.Abs(float64(v)-float64(first[k])) > tol {
				return false
			}
		}
	}
	return true
}
