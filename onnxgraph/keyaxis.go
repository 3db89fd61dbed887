package onnxgraph

import (
	"fmt"
	"strings"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// softmaxSite decides whether Softmax node n (index i) is attention: its input must come
// from a product of two activations (Q·Kᵀ) through a few elementwise ops, it must
// normalise over the key axis — the axis of the scores that the product's right operand
// contributes, followed through the ops in between, not guessed from the rank — and its
// output must feed a probabilities×V product. It returns the site, or a reason for
// rejecting it.
func (ix *index) softmaxSite(n *pb.NodeProto, i int) (Site, string) {
	if malformedReason(n) != "" {
		return Site{}, "malformed Softmax" // FindAttention reports it as malformed first
	}
	in, out := n.GetInput()[0], n.GetOutput()[0]
	opset := ix.opsetFor(n)
	legacy := opset > 0 && opset < 13 // Softmax-1 and -11 normalise over axis and every axis after it
	defAxis := int64(-1)
	if legacy {
		defAxis = 1
	}
	axis := attrInt(n, "axis", defAxis)
	rank := ix.rank(in)
	if rank < 0 {
		rank = ix.rank(out)
	}
	// over is the normalised axis counted from the last (0: the last); -1 while it cannot
	// be told.
	over := -1
	switch {
	case rank >= 0 && (axis < -int64(rank) || axis >= int64(rank)):
		return Site{}, fmt.Sprintf("normalises over axis %d, which its rank-%d input does not have", axis, rank)
	case rank >= 0:
		a := int(axis)
		if a < 0 {
			a += rank
		}
		if legacy && a != rank-1 {
			return Site{}, fmt.Sprintf("normalises over axes %d to %d of its rank-%d input together (a Softmax before opset 13 flattens them), not over the key axis alone", a, rank-1, rank)
		}
		over = rank - 1 - a
	case axis < 0 && legacy && axis != -1:
		return Site{}, fmt.Sprintf("normalises over its last %d axes together (a Softmax before opset 13 flattens them), not over the key axis alone", -axis)
	case axis < 0:
		over = int(-axis - 1)
	case axis == 3:
		// Axis 3 exists from rank 4 on, and attention probabilities have rank 3 or 4.
		over, rank = 0, 4
	case axis >= 4:
		return Site{}, fmt.Sprintf("normalises over axis %d, so its input has rank 5 or more; attention probabilities have rank 3 or 4", axis)
	case axis < 2:
		return Site{}, fmt.Sprintf("normalises over axis %d, not the key axis of a [B,H,Q,K] or [B·H,Q,K] tensor", axis)
	}
	if rank >= 0 && rank != 3 && rank != 4 {
		return Site{}, fmt.Sprintf("works on a rank-%d tensor; attention probabilities have rank 3 or 4", rank)
	}
	path, reason := ix.scoresPath(in)
	if reason != "" {
		return Site{}, reason
	}
	key, reason := ix.keyAxis(path)
	switch {
	case reason != "":
		return Site{}, reason
	case over < 0:
		return Site{}, fmt.Sprintf("normalises over axis %d, and the graph does not tell the rank of its input: axis 2 is the key axis of [B·H,Q,K] scores but the query axis of [B,H,Q,K] ones (declare the shapes, e.g. with ONNX shape inference)", axis)
	case over != key:
		return Site{}, axisMismatch(axis, rank, over, key, path.prod)
	case key != 0:
		return Site{}, fmt.Sprintf("normalises over the key axis, but that is axis %d, not the last one, and attnscope reads probabilities with the keys last (they would come out transposed)", -1-key)
	}
	if !ix.feedsValues(out, 0) {
		return Site{}, "its output does not feed a probabilities×V product (MatMul/Einsum with an activation)"
	}
	site := Site{
		NodeIndex: i,
		Node:      nodeName(n, i),
		Op:        "Softmax",
		Form:      FormSoftmax,
		Tensor:    out,
		Rank:      max(rank, 0),
		ElemType:  ix.elemType(out),
	}
	if dims, ok := ix.shapeOf(out); ok && len(dims) == 4 && dims[1] > 0 {
		site.Heads = int(dims[1])
	}
	return site, ""
}

// axisMismatch words the rejection of a Softmax over axis (over, counted from the last)
// when the key axis is key (counted from the last), given the input's rank (-1 unknown).
func axisMismatch(axis int64, rank, over, key int, prod *pb.NodeProto) string {
	keyAt := fmt.Sprintf("axis %d", -1-key)
	scores := "scores"
	if rank >= 0 {
		keyAt = fmt.Sprintf("axis %d", rank-1-key)
		scores = fmt.Sprintf("rank-%d scores", rank)
	}
	what := fmt.Sprintf("axis %d of its %s", axis, scores)
	if over == key+1 && isProduct(opName(prod)) && prod.GetOpType() != "Einsum" {
		what = fmt.Sprintf("the query axis (axis %d of its %s)", axis, scores)
	}
	return fmt.Sprintf("normalises over %s, not over the key axis, %s, which the right operand of %s (Q·Kᵀ) contributes", what, keyAt, opName(prod))
}

// scoresPath is how a Softmax's input is computed from the scores product.
type scoresPath struct {
	prod *pb.NodeProto // the MatMul/Einsum of two activations (Q·Kᵀ)
	// nodes are the indices of the ops from the product to the Softmax, in graph order;
	// nodes[k] reads the tensor from[k] on the way.
	nodes []int
	from  []string
	// out is the product's output the way starts from.
	out string
}

// scoresPath walks back from a Softmax input through elementwise ops (and reshapes and
// transposes, which keyAxis follows) to the MatMul/Einsum of two activations (Q·Kᵀ) that
// computes the scores, nearest first, or says why there is none.
func (ix *index) scoresPath(tensor string) (scoresPath, string) {
	reason := "its input does not come from a product of two activations (Q·Kᵀ)"
	seen := map[string]bool{}
	toward := map[string]string{} // tensor → the tensor computed from it, one step nearer the Softmax
	frontier := []string{tensor}
	for hop := 0; hop <= maxHops && len(frontier) > 0; hop++ {
		var next []string
		for _, t := range frontier {
			if seen[t] || !ix.dynamic[t] {
				continue
			}
			seen[t] = true
			p := ix.producerOf(t)
			if p == nil {
				continue
			}
			switch op := opName(p); {
			case isProduct(op):
				if ix.allDynamic(p.GetInput()) {
					path := scoresPath{prod: p, out: t}
					for cur := t; cur != tensor; {
						child, ok := toward[cur]
						if !ok {
							break
						}
						path.nodes = append(path.nodes, ix.producer[child])
						path.from = append(path.from, cur)
						cur = child
					}
					return path, ""
				}
				reason = fmt.Sprintf("its input comes from %s with a weight, as in a classifier or router, not from Q·Kᵀ", op)
			case scoreOps[op]:
				for _, in := range p.GetInput() {
					if in == "" || seen[in] {
						continue
					}
					if _, ok := toward[in]; !ok {
						toward[in] = t
					}
					next = append(next, in)
				}
			}
		}
		frontier = next
	}
	return scoresPath{}, reason
}

// fromScores returns the product of two activations (Q·Kᵀ) a Softmax's input is computed
// from, or says why there is none.
func (ix *index) fromScores(tensor string) (*pb.NodeProto, string) {
	path, reason := ix.scoresPath(tensor)
	return path.prod, reason
}

// keyAxis returns the key axis of the tensor a scores path ends in, counted from the last
// axis (0: the last): the axis of the product's output that its right operand contributes
// (for MatMul the last one; for Einsum the output letter only the right operand has),
// followed through the ops to the Softmax. Elementwise ops and Expand broadcast, which
// keeps axes counted from the end; Transpose moves it as its perm says; Reshape keeps it
// only where the graph shows that the last axis keeps its size. It says why when the key
// axis cannot be told.
func (ix *index) keyAxis(path scoresPath) (int, string) {
	var key int
	prod := path.prod
	// keySized maps tensors to one of their axes (counted from the last) whose size is the
	// number of keys: the scores' key axis on the way, and the axis of the right operand
	// (and of what it is transposed from) that becomes it. A Reshape whose target shape
	// takes its last size from one of them keeps the key axis.
	keySized := map[string]int{}
	switch opName(prod) {
	case "Einsum":
		k, ok := einsumKeyAxis(attrString(prod, "equation"))
		if !ok {
			return 0, fmt.Sprintf("its scores come from Einsum %q, whose output has no single axis from the right operand alone", attrString(prod, "equation"))
		}
		key = k
	default:
		if len(prod.GetInput()) > 1 && ix.rank(prod.GetInput()[1]) == 1 {
			return 0, fmt.Sprintf("its scores come from %s with a vector, which has no key axis", opName(prod))
		}
		if len(prod.GetInput()) > 1 {
			from := 0
			if attrInt(prod, "transB", 0) != 0 { // FusedMatMul: Bᵀ's last axis is B's second to last
				from = 1
			}
			ix.traceKeySize(prod.GetInput()[1], from, keySized)
		}
	}
	keySized[path.out] = key
	for k, i := range path.nodes {
		n := ix.node(i)
		switch opName(n) {
		case "Transpose":
			r := ix.rank(path.from[k])
			perm, hasPerm := attrInts(n, "perm")
			if r < 0 && hasPerm {
				r = len(perm)
			}
			if r < 0 || (hasPerm && len(perm) != r) || key >= r {
				return 0, fmt.Sprintf("its scores reach the Softmax through Transpose %s, and the graph does not tell the rank it permutes", nodeName(n, i))
			}
			from := r - 1 - key
			to := r - 1 - from // no perm: the axes are reversed
			if hasPerm {
				to = -1
				for j, a := range perm {
					if a == int64(from) {
						to = j
					}
				}
				if to < 0 {
					return 0, fmt.Sprintf("its scores reach the Softmax through Transpose %s, whose perm does not place the key axis", nodeName(n, i))
				}
			}
			key = r - 1 - to
		case "Reshape":
			if key != 0 || !ix.keepsLastAxis(n, keySized) {
				return 0, fmt.Sprintf("its scores reach the Softmax through Reshape %s, and the graph does not show that it keeps the key axis", nodeName(n, i))
			}
		}
		for _, out := range n.GetOutput() {
			if out != "" {
				keySized[out] = key
			}
		}
	}
	return key, ""
}

// traceKeySize records in keySized that axis from (counted from the last) of tensor t has
// the keys' size, and follows t back through Transposes and ops that keep shapes (casts,
// scaling) to the tensors that axis comes from: in torch's q·kᵀ, kᵀ's last axis is k's
// sequence axis, whose size an export reads with Gather(Shape(k), 1).
func (ix *index) traceKeySize(t string, from int, keySized map[string]int) {
	for hop := 0; hop < maxHops && t != ""; hop++ {
		if _, seen := keySized[t]; seen {
			return
		}
		keySized[t] = from
		p := ix.producerOf(t)
		if p == nil || len(p.GetInput()) == 0 {
			return
		}
		switch op := opName(p); {
		case op == "Transpose":
			r := ix.rank(p.GetInput()[0])
			perm, hasPerm := attrInts(p, "perm")
			if r < 0 || from >= r || hasPerm && len(perm) != r {
				return
			}
			a := r - 1 - from // the axis of t
			src := r - 1 - a  // no perm: reversed
			if hasPerm {
				if perm[a] < 0 || perm[a] >= int64(r) {
					return
				}
				src = int(perm[a])
			}
			from = r - 1 - src
		case sameShapeOps[op], op == "Div" || op == "Mul":
		default:
			return
		}
		t = p.GetInput()[0]
	}
}

// keepsLastAxis reports whether the graph shows that Reshape n keeps its input's last
// axis as its output's last axis: the output's last size is the input's last size (then
// every row of the last axis stays a row, in row-major order). The proof is a constant
// target shape whose last entry is that size, or copies it (0), or a target computed in
// the graph whose last entry is the size of an axis keySized lists (Gather(Shape(k), 1)
// for keys k of [B·H,S,d]), or declared shapes that agree.
func (ix *index) keepsLastAxis(n *pb.NodeProto, keySized map[string]int) bool {
	if len(n.GetInput()) < 2 || len(n.GetOutput()) == 0 {
		return false
	}
	x, target := n.GetInput()[0], n.GetInput()[1]
	inDims, inOK := ix.shape(x)
	if vals, ok := ix.constInts(target); ok && len(vals) > 0 {
		last := vals[len(vals)-1]
		switch {
		case last > 0:
			return inOK && len(inDims) > 0 && inDims[len(inDims)-1] == last
		case last == 0 && attrInt(n, "allowzero", 0) == 0:
			return inOK && len(inDims) == len(vals)
		}
		return false
	}
	if ix.lastSizeOf(target, keySized) {
		return true
	}
	outDims, outOK := ix.shape(n.GetOutput()[0])
	return inOK && outOK && len(inDims) > 0 && len(outDims) > 0 && inDims[len(inDims)-1] > 0 && inDims[len(inDims)-1] == outDims[len(outDims)-1]
}

// lastSizeOf reports whether the shape vector target ends with the size of an axis that
// keySized lists, as computed in the graph: Concat(…, Unsqueeze(Gather(Shape(t), i))).
func (ix *index) lastSizeOf(target string, keySized map[string]int) bool {
	p := ix.producerOf(target)
	if p == nil || p.GetOpType() != "Concat" || len(p.GetInput()) == 0 {
		return false
	}
	t := p.GetInput()[len(p.GetInput())-1]
	for hop := 0; hop < 4; hop++ {
		q := ix.producerOf(t)
		if q == nil || len(q.GetInput()) == 0 {
			return false
		}
		switch q.GetOpType() {
		case "Unsqueeze", "Cast", "Identity", "Squeeze", "Reshape":
			t = q.GetInput()[0]
			continue
		case "Gather":
			if len(q.GetInput()) < 2 || attrInt(q, "axis", 0) != 0 {
				return false
			}
			s := ix.producerOf(q.GetInput()[0])
			idx, ok := ix.constInts(q.GetInput()[1])
			if s == nil || s.GetOpType() != "Shape" || len(s.GetInput()) == 0 || !ok || len(idx) != 1 || hasAttr(s, "start") || hasAttr(s, "end") {
				return false
			}
			x := s.GetInput()[0]
			want, listed := keySized[x]
			if !listed {
				return false
			}
			if idx[0] < 0 {
				return -1-idx[0] == int64(want)
			}
			r := ix.rank(x)
			return r > 0 && int64(r)-1-idx[0] == int64(want)
		}
		return false
	}
	return false
}

// einsumKeyAxis returns, counted from the last, the axis of an Einsum's output that only
// its right operand has (in Q·Kᵀ, the keys); ok is false when there is not exactly one
// such axis, or it cannot be placed from the end.
func einsumKeyAxis(eq string) (int, bool) {
	ins, out, ok := einsumTerms(eq)
	if !ok || len(ins) != 2 {
		return 0, false
	}
	left := strings.ReplaceAll(ins[0], "...", "")
	right := strings.ReplaceAll(ins[1], "...", "")
	_, tail, hasEllipsis := strings.Cut(out, "...")
	if !hasEllipsis {
		tail = out
	}
	key := -1
	for _, c := range strings.ReplaceAll(out, "...", "") {
		if strings.ContainsRune(right, c) && !strings.ContainsRune(left, c) {
			if key >= 0 {
				return 0, false
			}
			pos := strings.IndexRune(tail, c)
			if pos < 0 {
				return 0, false // before the ellipsis: its place from the end is unknown
			}
			key = len(tail) - 1 - pos
		}
	}
	return key, key >= 0
}
