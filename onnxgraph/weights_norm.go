package onnxgraph

import (
	"fmt"
	"math"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// normFor returns the normalisation whose output is x (looking through Cast and
// Identity), or nil when x is not a normalisation's output: LayerNormalization,
// RMSNormalization, SimplifiedLayerNormalization, com.microsoft's SkipLayerNormalization,
// SkipSimplifiedLayerNormalization and EmbedLayerNormalization, and the decomposed
// LayerNorm and RMSNorm torch writes (ReduceMean, Sub, Pow, Sqrt, Div, then Mul γ, Add β).
// It fails only when a normalisation's scale or bias cannot be read.
func (tr *tracer) normFor(ix *index, x string) (*Norm, error) {
	x = tr.throughCasts(ix, x)
	n := ix.producerOf(x)
	if n == nil {
		return nil, nil
	}
	in := func(k int) string {
		if k < len(n.GetInput()) {
			return n.GetInput()[k]
		}
		return ""
	}
	eps := func(def float64) float64 {
		for _, a := range n.GetAttribute() {
			if a.GetName() == "epsilon" {
				return float64(a.GetF())
			}
		}
		return def
	}
	switch opName(n) {
	case "LayerNormalization", "com.microsoft.LayerNormalization":
		if outIndex(n, x) != 0 {
			return nil, nil
		}
		return tr.makeNorm(ix, n, "layernorm", in(1), in(2), eps(1e-5))
	case "RMSNormalization", "SimplifiedLayerNormalization", "com.microsoft.SimplifiedLayerNormalization":
		if outIndex(n, x) != 0 {
			return nil, nil
		}
		return tr.makeNorm(ix, n, "rmsnorm", in(1), "", eps(1e-5))
	case "com.microsoft.SkipLayerNormalization":
		if outIndex(n, x) != 0 {
			return nil, nil // output 3 is the sum, the stream itself
		}
		return tr.makeNorm(ix, n, "layernorm", in(2), in(3), eps(1e-12))
	case "com.microsoft.SkipSimplifiedLayerNormalization":
		if outIndex(n, x) != 0 {
			return nil, nil
		}
		return tr.makeNorm(ix, n, "rmsnorm", in(2), "", eps(1e-12))
	case "com.microsoft.EmbedLayerNormalization":
		if outIndex(n, x) != 0 {
			return nil, nil
		}
		return tr.makeNorm(ix, n, "layernorm", in(5), in(6), eps(1e-12))
	}
	return tr.decomposedNorm(ix, x)
}

// throughCasts looks back from x through Cast and Identity, and through the layout ops
// that keep the feature axis last (Reshape, a Transpose whose perm ends with the last
// axis, Squeeze, Unsqueeze): a projection reading [T, B, d] or [B·T, d] reads the same
// features as the [B, T, d] normalisation output before them.
func (tr *tracer) throughCasts(ix *index, x string) string {
	for range 6 {
		p := ix.producerOf(x)
		if p == nil || len(p.GetInput()) == 0 {
			return x
		}
		switch p.GetOpType() {
		case "Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze":
		case "Transpose":
			perm, has := attrInts(p, "perm")
			if !has || len(perm) == 0 || perm[len(perm)-1] != int64(len(perm)-1) {
				return x
			}
		default:
			return x
		}
		x = p.GetInput()[0]
	}
	return x
}

func (tr *tracer) makeNorm(ix *index, n *pb.NodeProto, kind, scale, bias string, eps float64) (*Norm, error) {
	name := nameOf(n)
	if scale == "" {
		return nil, fmt.Errorf("the %s %s has no scale input", kind, name)
	}
	s, ok, err := tr.r.value(ix, scale)
	if err != nil || !ok {
		return nil, fmt.Errorf("the scale of the %s %s is not a readable constant", kind, name)
	}
	nm := &Norm{Kind: kind, Node: name, Scale: s.data, Epsilon: eps}
	if bias != "" {
		b, ok, err := tr.r.value(ix, bias)
		if err != nil || !ok || b.size() != s.size() {
			return nil, fmt.Errorf("the bias of the %s %s is not a readable constant of the scale's size", kind, name)
		}
		nm.Bias = b.data
	}
	return nm, nil
}

// decomposedNorm recognises [Add β](Mul γ(core)) where core normalises its input: a
// LayerNorm core is (a − mean a) / sqrt(mean((a − mean a)²) + ε), an RMSNorm core is
// a / sqrt(mean(a²) + ε) (or a × 1/sqrt(…), a × (…)^−½).
func (tr *tracer) decomposedNorm(ix *index, x string) (*Norm, error) {
	last := ix.producerOf(x)
	cur := x
	var beta, gamma *array
	// constOperand splits a binary node into its dynamic input and its constant's values.
	constOperand := func(n *pb.NodeProto) (string, *array) {
		if n == nil || len(n.GetInput()) != 2 {
			return "", nil
		}
		for k, in := range n.GetInput() {
			other := n.GetInput()[1-k]
			if ix.dynamic[in] && !ix.dynamic[other] {
				if c, ok, err := tr.r.value(ix, other); err == nil && ok {
					return in, c
				}
			}
		}
		return "", nil
	}
	if n := ix.producerOf(cur); n != nil && n.GetOpType() == "Add" {
		if d, c := constOperand(n); c != nil && c.size() > 1 {
			beta, cur = c, tr.throughCasts(ix, d)
		}
	}
	if n := ix.producerOf(cur); n != nil && n.GetOpType() == "Mul" {
		if d, c := constOperand(n); c != nil && c.size() > 1 {
			gamma, cur = c, tr.throughCasts(ix, d)
		}
	}
	if gamma == nil {
		return nil, nil
	}
	core := ix.producerOf(cur)
	if core == nil || len(core.GetInput()) != 2 {
		return nil, nil
	}
	var num, den string
	switch core.GetOpType() {
	case "Div":
		num, den = core.GetInput()[0], core.GetInput()[1]
	case "Mul":
		for k, in := range core.GetInput() {
			if p := ix.producerOf(tr.throughCasts(ix, in)); p != nil && (p.GetOpType() == "Reciprocal" || p.GetOpType() == "Pow" || p.GetOpType() == "Div") {
				num, den = core.GetInput()[1-k], in
			}
		}
	}
	if num == "" {
		return nil, nil
	}
	eps, reduces := tr.normDenominator(ix, den)
	if !reduces {
		return nil, nil
	}
	kind := "rmsnorm"
	if p := ix.producerOf(tr.throughCasts(ix, num)); p != nil && p.GetOpType() == "Sub" && len(p.GetInput()) == 2 {
		if q := ix.producerOf(p.GetInput()[1]); q != nil && q.GetOpType() == "ReduceMean" {
			kind = "layernorm"
		}
	}
	nm := &Norm{Kind: kind, Node: nameOf(last), Scale: gamma.data, Epsilon: eps}
	if beta != nil {
		if beta.size() != gamma.size() {
			return nil, fmt.Errorf("the decomposed %s ending at %s has a bias of %d values and a scale of %d", kind, nm.Node, beta.size(), gamma.size())
		}
		nm.Bias = beta.data
	}
	return nm, nil
}

// normDenominator looks a few ops up a normalisation's denominator for the ReduceMean
// that makes it a norm and the scalar constant added to it (ε).
func (tr *tracer) normDenominator(ix *index, den string) (float64, bool) {
	eps, reduces := 0.0, false
	frontier := []string{den}
	for hop := 0; hop < 6 && len(frontier) > 0; hop++ {
		var next []string
		for _, t := range frontier {
			p := ix.producerOf(t)
			if p == nil {
				continue
			}
			switch p.GetOpType() {
			case "ReduceMean":
				reduces = true
				continue
			case "Add":
				for _, in := range p.GetInput() {
					if c, ok, err := tr.r.value(ix, in); err == nil && ok {
						if v, scalar := c.scalar(); scalar && v >= 0 && v < 1 && !math.IsNaN(v) {
							eps = v
						}
					}
				}
			}
			for _, in := range p.GetInput() {
				if ix.dynamic[in] {
					next = append(next, in)
				}
			}
		}
		frontier = next
	}
	return eps, reduces
}

// causalMask reports whether the mask operand m of an op between the scores and the
// Softmax provably hides later keys, from what it is computed from: a Trilu; a constant
// whose last two axes form a square triangular pattern (keep j ≤ i, or block j > i); or
// a comparison of positions made by Range. The search does not go through the scores
// (scores) nor through Shape, whose input is not the mask's value.
func (tr *tracer) causalMask(ix *index, m, scores string) bool {
	seen := map[string]bool{scores: true}
	frontier := []string{m}
	sawRange, sawCompare := false, false
	visited := 0
	for len(frontier) > 0 && visited < 200 {
		t := frontier[len(frontier)-1]
		frontier = frontier[:len(frontier)-1]
		if seen[t] || t == "" {
			continue
		}
		seen[t] = true
		visited++
		p := ix.producerOf(t)
		if p == nil || p.GetOpType() == "Constant" {
			if !ix.dynamic[t] && tr.triangular(ix, t) {
				return true
			}
			continue
		}
		switch p.GetOpType() {
		case "Trilu":
			return true
		case "Range":
			sawRange = true
		case "Less", "Greater", "LessOrEqual", "GreaterOrEqual":
			sawCompare = true
		case "Shape", "Size":
			continue
		}
		if sawRange && sawCompare {
			return true
		}
		frontier = append(frontier, p.GetInput()...)
	}
	return false
}

// triangular reports whether constant t's last two axes form a square n×n (n ≥ 2)
// pattern that is non-zero exactly on and below the diagonal, or exactly above it.
func (tr *tracer) triangular(ix *index, t string) bool {
	key := fmt.Sprintf("%p/%s", ix.g, t)
	if v, ok := tr.tri[key]; ok {
		return v // every layer slices the same causal buffer
	}
	v := tr.isTriangular(ix, t)
	tr.tri[key] = v
	return v
}

func (tr *tracer) isTriangular(ix *index, t string) bool {
	dims, ok := ix.shapeOf(t)
	if p := ix.producerOf(t); p != nil {
		dims, ok = constantShape(p)
	}
	if !ok || len(dims) < 2 {
		return false
	}
	n := dims[len(dims)-1]
	if n < 2 || dims[len(dims)-2] != n || n > 8192 {
		return false
	}
	c, ok, err := tr.r.value(ix, t)
	if err != nil || !ok || int64(c.size()) < n*n {
		return false
	}
	lower, upper := true, true
	for i := int64(0); i < n && (lower || upper); i++ {
		for j := int64(0); j < n; j++ {
			nz := c.data[i*n+j] != 0
			if nz != (j <= i) {
				lower = false
			}
			if nz != (j > i) {
				upper = false
			}
		}
	}
	return lower || upper
}
