package onnxgraph

import (
	"fmt"
	"math"
	"strings"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// projTrace is a projection found behind Q, K or V: the full weight [dModel × n]
// (row-major) and the block of its columns this operand uses.
type projTrace struct {
	x      string // the activation the projection reads
	node   string // the projection node
	full   []float64
	n      int // columns of full
	dModel int
	// off and width place the operand's columns in full: column off + h·dh + j.
	off, width int
	// perHead is set for an Einsum with a per-head weight [heads, dModel, dh].
	perHead [][]float64
	biases  []biasAt
	dh      int // from the head-split Reshape; 0 if unknown
	scale   float64
	rotary  string
	heads   int // the site's own statement, 0 if none
	rsHeads int // the heads a head-split Reshape [.., H, -1] names, 0 if none
	// Results of split.
	w, b [][]float64
}

// biasAt is a bias added to the projection's output where the operand's chain had the
// columns [off, off+cur) of the projection's output.
type biasAt struct {
	vals     []float64
	off, cur int
}

// split cuts the traced block into heads of width dh.
func (p *projTrace) split(dh int) error {
	if p.perHead != nil {
		if p.dh != 0 && p.dh != dh {
			return fmt.Errorf("its per-head weights are %d wide where the other projections' heads are %d", p.dh, dh)
		}
		p.w = p.perHead
		p.heads = len(p.perHead)
		return p.splitBias(dh)
	}
	if dh <= 0 || p.width%dh != 0 || p.width == 0 {
		return fmt.Errorf("its block of %d columns does not split into heads of %d", p.width, dh)
	}
	if p.dh != 0 && p.dh != dh {
		return fmt.Errorf("its heads are %d wide where the other projections' heads are %d", p.dh, dh)
	}
	p.heads = p.width / dh
	p.w = make([][]float64, p.heads)
	for h := range p.w {
		wh := make([]float64, p.dModel*dh)
		for i := 0; i < p.dModel; i++ {
			copy(wh[i*dh:(i+1)*dh], p.full[i*p.n+p.off+h*dh:i*p.n+p.off+(h+1)*dh])
		}
		p.w[h] = wh
	}
	return p.splitBias(dh)
}

func (p *projTrace) splitBias(dh int) error {
	if len(p.biases) == 0 {
		return nil
	}
	total := make([]float64, p.heads*dh)
	for _, b := range p.biases {
		rel := p.off - b.off
		if len(b.vals) != b.cur || rel < 0 || rel+p.heads*dh > len(b.vals) {
			if len(b.vals) == 1 {
				for i := range total {
					total[i] += b.vals[0]
				}
				continue
			}
			return fmt.Errorf("its bias has %d values, which do not match the %d columns it is added to", len(b.vals), b.cur)
		}
		for i := range total {
			total[i] += b.vals[rel+i]
		}
	}
	p.b = make([][]float64, p.heads)
	for h := range p.b {
		p.b[h] = total[h*dh : (h+1)*dh]
	}
	return nil
}

// selStep is one op between a projection and an attention operand that picks part of
// the projection's columns, adds a bias or scales.
type selStep struct {
	kind     string // "split", "slice", "gather", "bias"
	last     bool   // on the feature (last) axis
	sizes    []int64
	count    int
	index    int
	start    int64
	end      int64
	axisSize int64
	bias     *array
}

// project walks from an attention operand back to the projection that produces it.
func (tr *tracer) project(ix *index, t string, headsHint int) (*projTrace, *stop) {
	var steps []selStep
	p := &projTrace{scale: 1, heads: headsHint}
	reshapeSeen := false
	for hop := 0; hop < 40; hop++ {
		n := ix.producerOf(t)
		if n == nil {
			if !ix.dynamic[t] {
				return nil, &stop{reason: fmt.Sprintf("its operand %s is a constant, not a projection of the residual stream", t)}
			}
			return nil, &stop{reason: fmt.Sprintf("the trace reaches the graph input %s without meeting a projection by a weight", t)}
		}
		if len(n.GetInput()) == 0 || len(n.GetOutput()) == 0 {
			return nil, stopAt(n, "the node has no inputs")
		}
		in0 := n.GetInput()[0]
		switch op := opName(n); op {
		case "Transpose", "Identity", "Cast", "Dropout", "Squeeze", "Unsqueeze", "Expand", "Flatten",
			"QuantizeLinear", "com.microsoft.QuantizeLinear", "DequantizeLinear", "com.microsoft.DequantizeLinear":
			// Layout ops, and an activation's quantize-dequantize pair (QDQ models).
			if !ix.dynamic[in0] {
				return nil, stopAt(n, "its input is a constant")
			}
			t = in0
		case "Reshape":
			if !reshapeSeen {
				reshapeSeen = true
				if len(n.GetInput()) > 1 {
					p.dh, p.rsHeads = tr.reshapeLast(ix, n)
				}
			}
			t = in0
		case "com.microsoft.RotaryEmbedding":
			p.rotary = nameOf(n)
			t = in0
		case "Add", "Sub", "Mul", "Div":
			if len(n.GetInput()) < 2 {
				return nil, stopAt(n, "the node has one input")
			}
			a, b := n.GetInput()[0], n.GetInput()[1]
			// A constant may be computed from sizes (a bias sliced by the stream's width),
			// which the graph marks dynamic: ask for values, not for dynamism.
			ca, aConst, _ := tr.r.value(ix, a)
			cb, bConst, _ := tr.r.value(ix, b)
			if !aConst && !bConst {
				if op == "Mul" {
					if mm := tr.quantizedProduct(ix, n); mm != nil {
						return tr.finishProjection(ix, p, steps, mm, n)
					}
				}
				if op == "Add" {
					if rot, src := tr.rotaryAdd(ix, n); rot {
						p.rotary = nameOf(n)
						t = src
						continue
					}
				}
				for _, in := range []string{a, b} {
					if _, input := ix.inputs[in]; input {
						return nil, stopAt(n, "its operand %q is a graph input, not a constant stored in the model", in)
					}
				}
				return nil, stopAt(n, "it combines two activations (%s), not an activation and a constant", op)
			}
			dyn, c := a, cb
			if aConst && !bConst {
				dyn, c = b, ca
			} else if aConst && bConst {
				return nil, stopAt(n, "both its operands are constants")
			}
			switch op {
			case "Add":
				steps = append(steps, selStep{kind: "bias", bias: c})
			case "Sub":
				if dyn != a {
					return nil, stopAt(n, "it subtracts the activation from a constant")
				}
				neg := &array{dims: c.dims, data: make([]float64, c.size())}
				for i, v := range c.data {
					neg.data[i] = -v
				}
				steps = append(steps, selStep{kind: "bias", bias: neg})
			case "Mul", "Div":
				v, scalar := c.scalar()
				if !scalar {
					return nil, stopAt(n, "it multiplies by a %v constant, not a scalar", c.dims)
				}
				if op == "Div" {
					if dyn != a || v == 0 {
						return nil, stopAt(n, "it divides a constant by the activation")
					}
					v = 1 / v
				}
				p.scale *= v
				// Biases already met lie after this scale: s·y + b = s·(y + b/s), so in
				// the projection's units they are b/s.
				for k := range steps {
					if steps[k].kind == "bias" {
						steps[k].bias = scaledArray(steps[k].bias, 1/v)
					}
				}
			}
			t = dyn
		case "Split":
			k := outIndex(n, t)
			axis := attrInt(n, "axis", 0)
			st := selStep{kind: "split", index: k, count: len(n.GetOutput()), last: tr.isLastAxis(ix, in0, axis)}
			if len(n.GetInput()) > 1 && n.GetInput()[1] != "" {
				c, ok, err := tr.r.value(ix, n.GetInput()[1])
				if err != nil || !ok {
					return nil, stopAt(n, "its split sizes are not a constant")
				}
				st.sizes = floatsToInts(c.data)
			} else if sz, has := attrInts(n, "split"); has {
				st.sizes = sz
			}
			if st.sizes != nil && len(st.sizes) != st.count {
				return nil, stopAt(n, "it has %d sizes for %d outputs", len(st.sizes), st.count)
			}
			steps = append(steps, st)
			t = in0
		case "Slice":
			st, bad := tr.sliceStep(ix, n)
			if bad != "" {
				return nil, stopAt(n, "%s", bad)
			}
			steps = append(steps, st)
			t = in0
		case "Gather":
			if len(n.GetInput()) < 2 || !ix.dynamic[in0] {
				return nil, stopAt(n, "it gathers from a constant")
			}
			c, ok, err := tr.r.value(ix, n.GetInput()[1])
			if err != nil || !ok || c.size() != 1 {
				return nil, stopAt(n, "its index is not a constant single index")
			}
			axis := attrInt(n, "axis", 0)
			st := selStep{kind: "gather", index: int(c.data[0]), last: tr.isLastAxis(ix, in0, axis), axisSize: -1}
			st.axisSize = axisSize(ix, in0, axis)
			if st.index < 0 && st.axisSize > 0 {
				st.index += int(st.axisSize)
			}
			steps = append(steps, st)
			t = in0
		case "Concat":
			// A cache: the past keys or values joined to the new ones along the sequence.
			var fresh []string
			for _, in := range n.GetInput() {
				if in != "" && !tr.pastLike(ix, in) {
					fresh = append(fresh, in)
				}
			}
			if len(fresh) != 1 {
				return nil, stopAt(n, "it joins %d computed tensors, not a cache and the new keys or values", len(fresh))
			}
			t = fresh[0]
		case "MatMul", "Gemm", "Einsum", "com.microsoft.FusedMatMul", "MatMulInteger":
			return tr.finishProjection(ix, p, steps, n, n)
		default:
			return nil, stopAt(n, "the trace meets %s, which is neither a projection by a weight nor an op attnscope follows (Transpose, Reshape, Add, Mul, Split, Slice, Gather, Cast, DequantizeLinear)", op)
		}
	}
	return nil, &stop{reason: "the operand is more than 40 ops away from any projection"}
}

// pastLike reports whether t is read, through a few layout ops, straight from a graph
// input (a past key/value cache) rather than computed.
func (tr *tracer) pastLike(ix *index, t string) bool {
	for range 10 {
		p := ix.producerOf(t)
		if p == nil {
			return ix.dynamic[t]
		}
		switch p.GetOpType() {
		case "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Gather", "Split", "Slice":
			if len(p.GetInput()) == 0 {
				return false
			}
			t = p.GetInput()[0]
		default:
			return false
		}
	}
	return false
}

func scaledArray(a *array, c float64) *array {
	out := &array{dims: a.dims, data: make([]float64, a.size())}
	for i, v := range a.data {
		out.data[i] = v * c
	}
	return out
}

func floatsToInts(xs []float64) []int64 {
	out := make([]int64, len(xs))
	for i, v := range xs {
		out[i] = int64(v)
	}
	return out
}

func outIndex(n *pb.NodeProto, t string) int {
	for k, o := range n.GetOutput() {
		if o == t {
			return k
		}
	}
	return 0
}

// isLastAxis reports whether axis is the last axis of t (a negative -1, or rank − 1 when
// the rank is known).
func (tr *tracer) isLastAxis(ix *index, t string, axis int64) bool {
	if axis == -1 {
		return true
	}
	r := ix.rank(t)
	return r > 0 && axis == int64(r-1)
}

// reshapeLast returns the last size of a head-split Reshape's target when the graph fixes
// it (d_head), or else, for a target [.., H, -1], the head count H; 0 where it cannot tell.
// It reads a constant target, the constant tail of a Concat target, or a declared shape.
func (tr *tracer) reshapeLast(ix *index, n *pb.NodeProto) (dh, heads int) {
	target := n.GetInput()[1]
	var vals []float64 // NaN where the graph leaves a size to run time
	if c, ok, err := tr.r.valueHop(ix, target, 0); err == nil && ok {
		vals = c.data
	} else if cat := ix.producerOf(target); cat != nil && cat.GetOpType() == "Concat" {
		for _, in := range cat.GetInput() {
			if c, ok, err := tr.r.valueHop(ix, in, 0); err == nil && ok && len(c.dims) <= 1 {
				vals = append(vals, c.data...)
			} else {
				vals = append(vals, math.NaN())
			}
		}
	}
	if len(vals) > 0 {
		last := vals[len(vals)-1]
		switch {
		case last > 0:
			return int(last), 0
		case (last == -1 || math.IsNaN(last)) && len(vals) > 1 && vals[len(vals)-2] > 0:
			return 0, int(vals[len(vals)-2])
		}
	}
	if dims, ok := ix.shape(n.GetOutput()[0]); ok && len(dims) > 0 && dims[len(dims)-1] > 0 {
		return int(dims[len(dims)-1]), 0
	}
	return 0, 0
}

// sliceStep reads a Slice node's constant starts, ends and axes (one axis, step 1).
func (tr *tracer) sliceStep(ix *index, n *pb.NodeProto) (selStep, string) {
	var starts, ends, axes, steps []int64
	if len(n.GetInput()) >= 3 {
		read := func(k int) ([]int64, bool) {
			if k >= len(n.GetInput()) || n.GetInput()[k] == "" {
				return nil, true
			}
			c, ok, err := tr.r.value(ix, n.GetInput()[k])
			if err != nil || !ok {
				return nil, false
			}
			return floatsToInts(c.data), true
		}
		var ok1, ok2, ok3, ok4 bool
		starts, ok1 = read(1)
		ends, ok2 = read(2)
		axes, ok3 = read(3)
		steps, ok4 = read(4)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return selStep{}, "its starts, ends, axes or steps are not constants"
		}
	} else {
		starts, _ = attrInts(n, "starts")
		ends, _ = attrInts(n, "ends")
		axes, _ = attrInts(n, "axes")
	}
	if len(starts) != 1 || len(ends) != 1 || len(axes) > 1 || len(steps) > 1 || (len(steps) == 1 && steps[0] != 1) {
		return selStep{}, "it slices more than one axis, or with a step"
	}
	axis := int64(0)
	if len(axes) == 1 {
		axis = axes[0]
	}
	in0 := n.GetInput()[0]
	st := selStep{kind: "slice", start: starts[0], end: ends[0], last: tr.isLastAxis(ix, in0, axis), axisSize: -1}
	st.axisSize = axisSize(ix, in0, axis)
	return st, ""
}

// quantizedProduct recognises the dequantising Mul of a dynamically quantized projection
// (export/quantize.py, onnxruntime's dynamic quantization): Mul(Cast(MatMulInteger(x_q,
// w_q, x_zero, w_zero)), Mul(x_scale, w_scale)) where DynamicQuantizeLinear(x) gives x_q,
// x_scale and x_zero. It returns the MatMulInteger, or nil.
func (tr *tracer) quantizedProduct(ix *index, mul *pb.NodeProto) *pb.NodeProto {
	for _, in := range mul.GetInput() {
		c := ix.producerOf(in)
		if c == nil || c.GetOpType() != "Cast" || len(c.GetInput()) == 0 {
			continue
		}
		mm := ix.producerOf(c.GetInput()[0])
		if mm != nil && mm.GetOpType() == "MatMulInteger" {
			return mm
		}
	}
	return nil
}

// finishProjection reads the projection node proj (for a quantized one, deq is the Mul
// that dequantizes its output) and replays the steps met on the way back to place the
// operand's columns in the projection's output.
func (tr *tracer) finishProjection(ix *index, p *projTrace, steps []selStep, proj, deq *pb.NodeProto) (*projTrace, *stop) {
	x, w, perHead, bias, st := tr.weightOf(ix, proj, deq)
	if st != nil {
		return nil, st
	}
	p.x, p.node = x, nameOf(proj)
	if bias != nil {
		steps = append(steps, selStep{kind: "bias", bias: bias})
	}
	if perHead != nil {
		if len(perHead.heads) == 0 || perHead.dh <= 0 {
			return nil, stopAt(proj, "its per-head weight has no heads")
		}
		for _, s := range steps {
			if s.kind != "bias" {
				return nil, stopAt(proj, "its per-head weights are followed by a %s, which attnscope does not follow", s.kind)
			}
		}
		p.perHead = perHead.heads
		p.dModel, p.dh = perHead.dModel, perHead.dh
		for k := len(steps) - 1; k >= 0; k-- {
			p.biases = append(p.biases, biasAt{vals: steps[k].bias.data, off: 0, cur: len(perHead.heads) * perHead.dh})
		}
		return p, nil
	}
	p.full, p.dModel, p.n = w.data, int(w.dims[0]), int(w.dims[1])
	cur, off := p.n, 0
	for k := len(steps) - 1; k >= 0; k-- {
		s := steps[k]
		switch s.kind {
		case "bias":
			p.biases = append(p.biases, biasAt{vals: s.bias.data, off: off, cur: cur})
		case "split":
			sizes := s.sizes
			if sizes == nil {
				if s.count <= 0 || cur%s.count != 0 {
					return nil, stopAt(proj, "a Split into %d equal parts of %d columns does not divide", s.count, cur)
				}
				sizes = make([]int64, s.count)
				for i := range sizes {
					sizes[i] = 1
				}
			}
			total := int64(0)
			for _, v := range sizes {
				total += v
			}
			if s.index >= len(sizes) || total <= 0 {
				return nil, stopAt(proj, "a Split's sizes %v do not place its output %d", sizes, s.index)
			}
			unit := 1
			if !s.last || s.sizes == nil {
				if int64(cur)%total != 0 {
					return nil, stopAt(proj, "a Split's sizes %v do not divide %d columns", sizes, cur)
				}
				unit = cur / int(total)
			} else if total != int64(cur) {
				return nil, stopAt(proj, "a Split's sizes %v do not add up to the %d columns it splits", sizes, cur)
			}
			before := int64(0)
			for _, v := range sizes[:s.index] {
				before += v
			}
			off += int(before) * unit
			cur = int(sizes[s.index]) * unit
		case "slice":
			size := int64(cur)
			unit := 1
			if !s.last {
				if s.axisSize <= 0 || int64(cur)%s.axisSize != 0 {
					return nil, stopAt(proj, "a Slice on an axis of unknown size picks part of the projection")
				}
				size, unit = s.axisSize, cur/int(s.axisSize)
			}
			a, b := clampSlice(s.start, size), clampSlice(s.end, size)
			if b <= a {
				return nil, stopAt(proj, "a Slice picks nothing of the projection")
			}
			off += int(a) * unit
			cur = int(b-a) * unit
		case "gather":
			if s.last || s.axisSize <= 0 || int64(cur)%s.axisSize != 0 || s.index < 0 || int64(s.index) >= s.axisSize {
				return nil, stopAt(proj, "a Gather picks part of the projection on an axis whose size the graph does not tell")
			}
			unit := cur / int(s.axisSize)
			off += s.index * unit
			cur = unit
		}
	}
	if off < 0 || cur <= 0 || off+cur > p.n {
		return nil, stopAt(proj, "the parts picked from the projection (columns %d to %d) lie outside its %d columns", off, off+cur, p.n)
	}
	p.off, p.width = off, cur
	if p.dh == 0 && p.heads > 0 && cur%p.heads == 0 {
		p.dh = cur / p.heads
	}
	return p, nil
}

func clampSlice(v, size int64) int64 {
	if v < 0 {
		v += size
	}
	return min(max(v, 0), size)
}

// perHeadWeight is an Einsum projection's weight [heads, dModel, dh], split by head.
type perHeadWeight struct {
	heads      [][]float64 // [dModel × dh] each
	dModel, dh int
}

// weightOf reads a projection node: the activation it reads, its weight as [dModel × n]
// (or per head for an Einsum with a 3-D weight), and the bias it adds itself (Gemm's C).
func (tr *tracer) weightOf(ix *index, n, deq *pb.NodeProto) (string, *array, *perHeadWeight, *array, *stop) {
	in := n.GetInput()
	if len(in) < 2 {
		return "", nil, nil, nil, stopAt(n, "the product has one input")
	}
	val := func(name string) (*array, *stop) {
		c, ok, err := tr.r.value(ix, name)
		if err != nil {
			return nil, stopAt(n, "%v", err)
		}
		if !ok {
			if _, input := ix.inputs[name]; input {
				return nil, stopAt(n, "its weight %q is a graph input, not a constant stored in the model", name)
			}
			return nil, stopAt(n, "it multiplies two activations, not an activation by a weight")
		}
		return c, nil
	}
	switch opName(n) {
	case "MatMul", "com.microsoft.FusedMatMul":
		if !ix.dynamic[in[0]] {
			return "", nil, nil, nil, stopAt(n, "its weight is the left operand")
		}
		w, st := val(in[1])
		if st != nil {
			return "", nil, nil, nil, st
		}
		if attrInt(n, "transA", 0) != 0 {
			return "", nil, nil, nil, stopAt(n, "it transposes the activation")
		}
		if attrInt(n, "transB", 0) != 0 && len(w.dims) == 2 {
			var err error
			if w, err = transposeArray(w, nil, false); err != nil {
				return "", nil, nil, nil, stopAt(n, "%v", err)
			}
		}
		if len(w.dims) != 2 {
			return "", nil, nil, nil, stopAt(n, "its weight has shape %v, not [d_model, columns]", w.dims)
		}
		for _, a := range n.GetAttribute() {
			if a.GetName() == "alpha" && a.GetF() != 1 {
				w = scaledArray(w, float64(a.GetF()))
			}
		}
		return in[0], w, nil, nil, nil
	case "Gemm":
		if !ix.dynamic[in[0]] || attrInt(n, "transA", 0) != 0 {
			return "", nil, nil, nil, stopAt(n, "the Gemm does not multiply the activation by a weight on the right")
		}
		w, st := val(in[1])
		if st != nil {
			return "", nil, nil, nil, st
		}
		if len(w.dims) != 2 {
			return "", nil, nil, nil, stopAt(n, "its weight has shape %v", w.dims)
		}
		if attrInt(n, "transB", 0) != 0 {
			var err error
			if w, err = transposeArray(w, nil, false); err != nil {
				return "", nil, nil, nil, stopAt(n, "%v", err)
			}
		}
		alpha, beta := 1.0, 1.0
		for _, a := range n.GetAttribute() {
			switch a.GetName() {
			case "alpha":
				alpha = float64(a.GetF())
			case "beta":
				beta = float64(a.GetF())
			}
		}
		if alpha != 1 {
			w = scaledArray(w, alpha)
		}
		var bias *array
		if len(in) > 2 && in[2] != "" {
			b, st := val(in[2])
			if st != nil {
				return "", nil, nil, nil, st
			}
			bias = scaledArray(b, beta)
		}
		return in[0], w, nil, bias, nil
	case "MatMulInteger":
		if deq == n {
			return "", nil, nil, nil, stopAt(n, "its integer output is used without the Mul that dequantizes it")
		}
		return tr.integerWeight(ix, n, deq)
	case "Einsum":
		return tr.einsumWeight(ix, n)
	}
	return "", nil, nil, nil, stopAt(n, "it is not a projection attnscope reads")
}

// integerWeight reads MatMulInteger(DynamicQuantizeLinear(x), w_q, x_zero, w_zero)
// dequantized by deq = Mul(Cast(·), x_scale × w_scale): W = (w_q − w_zero) × w_scale.
func (tr *tracer) integerWeight(ix *index, n, deq *pb.NodeProto) (string, *array, *perHeadWeight, *array, *stop) {
	in := n.GetInput()
	dql := ix.producerOf(in[0])
	if dql == nil || dql.GetOpType() != "DynamicQuantizeLinear" || len(dql.GetInput()) == 0 || len(dql.GetOutput()) < 3 {
		return "", nil, nil, nil, stopAt(n, "its activation is not quantized by DynamicQuantizeLinear")
	}
	wq, ok, err := tr.r.value(ix, in[1])
	if err != nil || !ok || len(wq.dims) != 2 {
		return "", nil, nil, nil, stopAt(n, "its integer weight is not a readable 2-D constant")
	}
	zero := 0.0
	if len(in) > 3 && in[3] != "" {
		z, ok, err := tr.r.value(ix, in[3])
		if err != nil || !ok || z.size() != 1 {
			return "", nil, nil, nil, stopAt(n, "its weight zero point is not a scalar constant (per-column zero points are not read)")
		}
		zero = z.data[0]
	}
	// The scale: deq multiplies the cast product by Mul(x_scale, w_scale).
	scale := 0.0
	for _, s := range deq.GetInput() {
		sm := ix.producerOf(s)
		if sm == nil || sm.GetOpType() != "Mul" || len(sm.GetInput()) != 2 {
			continue
		}
		for k, si := range sm.GetInput() {
			if si != dql.GetOutput()[1] {
				continue
			}
			c, ok, err := tr.r.value(ix, sm.GetInput()[1-k])
			if err == nil && ok && c.size() == 1 {
				scale = c.data[0]
			}
		}
	}
	if scale == 0 {
		return "", nil, nil, nil, stopAt(deq, "the dequantizing Mul's weight scale is not a scalar constant")
	}
	w := &array{dims: wq.dims, data: make([]float64, wq.size())}
	for i, v := range wq.data {
		w.data[i] = (v - zero) * scale
	}
	return dql.GetInput()[0], w, nil, nil, nil
}

// einsumWeight reads an Einsum projection: "…d,de->…e" (2-D weight) or "…d,hde->…he"
// (TransformerLens's per-head [heads, d_model, d_head]); the weight may be either operand.
func (tr *tracer) einsumWeight(ix *index, n *pb.NodeProto) (string, *array, *perHeadWeight, *array, *stop) {
	eq := attrString(n, "equation")
	ins, out, ok := einsumTerms(eq)
	if !ok || len(ins) != 2 || len(n.GetInput()) != 2 {
		return "", nil, nil, nil, stopAt(n, "its equation %q is not a product of two operands", eq)
	}
	xi, wi := 0, 1
	if !ix.dynamic[n.GetInput()[0]] {
		xi, wi = 1, 0
	}
	x, wname := n.GetInput()[xi], n.GetInput()[wi]
	if !ix.dynamic[x] {
		return "", nil, nil, nil, stopAt(n, "both operands are constants")
	}
	w, ok, err := tr.r.value(ix, wname)
	if err != nil || !ok {
		return "", nil, nil, nil, stopAt(n, "it multiplies two activations, not an activation by a weight")
	}
	xt, wt := ins[xi], ins[wi]
	if strings.Contains(wt, "...") || len(wt) != len(w.dims) || strings.HasSuffix(xt, "...") || len(xt) == 0 {
		return "", nil, nil, nil, stopAt(n, "its equation %q does not contract the activation's last axis with a weight", eq)
	}
	d := rune(xt[len(xt)-1])
	dAt := strings.IndexRune(wt, d)
	if dAt < 0 || strings.ContainsRune(out, d) {
		return "", nil, nil, nil, stopAt(n, "its equation %q does not contract the activation's last axis with a weight", eq)
	}
	var rest []int // weight axes other than d, in weight order
	for i, c := range wt {
		if i != dAt {
			if !strings.ContainsRune(out, c) || strings.ContainsRune(xt, c) {
				return "", nil, nil, nil, stopAt(n, "its equation %q uses the weight's axis %q other than as an output axis", eq, c)
			}
			rest = append(rest, i)
		}
	}
	dModel := int(w.dims[dAt])
	switch len(rest) {
	case 1:
		perm := []int64{int64(dAt), int64(rest[0])}
		m, err := transposeArray(w, perm, true)
		if err != nil {
			return "", nil, nil, nil, stopAt(n, "%v", err)
		}
		return x, m, nil, nil, nil
	case 2:
		// Head axis first, then d_head, whichever order the output lists them in.
		h, e := rest[0], rest[1]
		if strings.IndexRune(out, rune(wt[h])) > strings.IndexRune(out, rune(wt[e])) {
			return "", nil, nil, nil, stopAt(n, "its equation %q puts the per-head weight's last axis before its head axis", eq)
		}
		m, err := transposeArray(w, []int64{int64(h), int64(dAt), int64(e)}, true)
		if err != nil {
			return "", nil, nil, nil, stopAt(n, "%v", err)
		}
		heads, dh := int(m.dims[0]), int(m.dims[2])
		ph := &perHeadWeight{dModel: dModel, dh: dh}
		for k := 0; k < heads; k++ {
			ph.heads = append(ph.heads, append([]float64{}, m.data[k*dModel*dh:(k+1)*dModel*dh]...))
		}
		return x, nil, ph, nil, nil
	}
	return "", nil, nil, nil, stopAt(n, "its weight has %d axes", len(w.dims))
}

// rotaryAdd recognises q·cos + rotate_half(q)·sin: an Add of two Muls, one by a tensor
// computed from Cos and one by a tensor computed from Sin. It returns the rotated
// activation (the Cos Mul's other operand).
func (tr *tracer) rotaryAdd(ix *index, n *pb.NodeProto) (bool, string) {
	var cosSrc string
	var sawSin bool
	for _, in := range n.GetInput() {
		m := ix.producerOf(in)
		if m == nil || m.GetOpType() != "Mul" || len(m.GetInput()) != 2 {
			return false, ""
		}
		for k, mi := range m.GetInput() {
			switch tr.trigOf(ix, mi) {
			case "Cos":
				cosSrc = m.GetInput()[1-k]
			case "Sin":
				sawSin = true
			}
		}
	}
	return cosSrc != "" && sawSin, cosSrc
}

// trigOf says whether tensor t is computed (within a few ops) from a Cos or Sin node, or
// from a constant named like a cos or sin cache.
func (tr *tracer) trigOf(ix *index, t string) string {
	for hop := 0; hop < 6 && t != ""; hop++ {
		lower := strings.ToLower(t)
		if !ix.dynamic[t] && ix.producerOf(t) == nil {
			switch {
			case strings.Contains(lower, "cos"):
				return "Cos"
			case strings.Contains(lower, "sin"):
				return "Sin"
			}
			return ""
		}
		p := ix.producerOf(t)
		if p == nil || len(p.GetInput()) == 0 {
			return ""
		}
		switch p.GetOpType() {
		case "Cos", "Sin":
			return p.GetOpType()
		case "Gather", "Slice":
			t = p.GetInput()[0]
		case "Cast", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Identity", "Transpose", "Mul":
			t = p.GetInput()[0]
		default:
			return ""
		}
	}
	return ""
}

// axisSize is the declared size of axis (negative: from the end) of tensor t, or -1 when the
// graph does not say.
func axisSize(ix *index, t string, axis int64) int64 {
	dims, ok := ix.shape(t)
	if !ok {
		return -1
	}
	if axis < 0 {
		axis += int64(len(dims))
	}
	if axis < 0 || axis >= int64(len(dims)) {
		return -1
	}
	return dims[axis]
}
