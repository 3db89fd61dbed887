package onnxgraph

import (
	"fmt"
	"strings"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// outProjection follows a layer's output z (P·V, or a fused node's output) forward
// through Transpose, Reshape and casts to the output projection; it returns W_O per head
// [dh × dModel], b_O, and the tensor the layer adds to the stream.
func (tr *tracer) outProjection(ix *index, z string, heads, dh int) ([][]float64, []float64, string, *stop) {
	cur := z
	for hop := 0; hop < 16; hop++ {
		var use []*pb.NodeProto
		for _, c := range ix.consumers[cur] {
			if n := ix.node(c); !isShapeOp(n.GetOpType()) {
				use = append(use, n)
			}
		}
		if len(use) != 1 {
			return nil, nil, "", &stop{at: cur, reason: fmt.Sprintf("the heads' output %s is used by %d nodes, not by one output projection", cur, len(use))}
		}
		n := use[0]
		if len(n.GetOutput()) == 0 || len(n.GetInput()) == 0 {
			return nil, nil, "", stopAt(n, "the node has no output")
		}
		switch opName(n) {
		case "Transpose", "Reshape", "Cast", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Flatten", "QuantizeLinear", "DequantizeLinear":
			if n.GetInput()[0] != cur {
				return nil, nil, "", stopAt(n, "the heads' output is not its data input")
			}
			cur = n.GetOutput()[0]
		case "DynamicQuantizeLinear":
			mm := tr.singleConsumer(ix, n.GetOutput()[0], "MatMulInteger")
			if mm == nil || len(mm.GetOutput()) == 0 {
				return nil, nil, "", stopAt(n, "the quantized heads' output does not reach a MatMulInteger")
			}
			cast := tr.singleConsumer(ix, mm.GetOutput()[0], "Cast")
			if cast == nil || len(cast.GetOutput()) == 0 {
				return nil, nil, "", stopAt(mm, "the integer product is not cast back")
			}
			deq := tr.singleConsumer(ix, cast.GetOutput()[0], "Mul")
			if deq == nil || len(deq.GetOutput()) == 0 {
				return nil, nil, "", stopAt(cast, "the integer product is not dequantized by a Mul")
			}
			_, w, _, _, st := tr.integerWeight(ix, mm, deq)
			if st != nil {
				return nil, nil, "", st
			}
			return tr.finishOut(ix, w, nil, nil, deq.GetOutput()[0], heads, dh, deq)
		case "Einsum":
			if w, ok := tr.perHeadOut(ix, n, cur); ok {
				return tr.finishOut(ix, w, nil, n, n.GetOutput()[0], heads, dh, n)
			}
			_, w, per, bias, st := tr.weightOf(ix, n, n)
			if st != nil {
				return nil, nil, "", st
			}
			if per != nil {
				return nil, nil, "", stopAt(n, "its output weight is not [heads·d_head, d_model] nor [heads, d_head, d_model]")
			}
			return tr.finishOut(ix, w, bias, n, n.GetOutput()[0], heads, dh, n)
		case "MatMul", "Gemm", "com.microsoft.FusedMatMul":
			_, w, _, bias, st := tr.weightOf(ix, n, n)
			if st != nil {
				return nil, nil, "", st
			}
			return tr.finishOut(ix, w, bias, n, n.GetOutput()[0], heads, dh, n)
		default:
			return nil, nil, "", stopAt(n, "the heads' output meets %s before any output projection", opName(n))
		}
	}
	return nil, nil, "", &stop{at: cur, reason: "no output projection within 16 ops of the heads' output"}
}

// perHeadOut reads an Einsum output projection with a per-head weight, "…hd,hdm->…m"
// (TransformerLens's W_O [heads, d_head, d_model]), as [heads·d_head, d_model]; ok is
// false for any other Einsum.
func (tr *tracer) perHeadOut(ix *index, n *pb.NodeProto, z string) (*array, bool) {
	eq := attrString(n, "equation")
	ins, out, ok := einsumTerms(eq)
	if !ok || len(ins) != 2 || len(n.GetInput()) != 2 {
		return nil, false
	}
	xi := 0
	if n.GetInput()[1] == z {
		xi = 1
	}
	xt, wt := ins[xi], ins[1-xi]
	w, ok, err := tr.r.value(ix, n.GetInput()[1-xi])
	if err != nil || !ok || len(wt) != 3 || len(w.dims) != 3 || strings.Contains(wt, "...") {
		return nil, false
	}
	var m, h, e = -1, -1, -1
	for i, c := range wt {
		inX, inOut := strings.ContainsRune(xt, c), strings.ContainsRune(out, c)
		switch {
		case inOut && !inX:
			m = i
		case inX && !inOut && h < 0:
			h = i
		case inX && !inOut:
			e = i
		}
	}
	if m < 0 || h < 0 || e < 0 {
		return nil, false
	}
	if strings.IndexRune(xt, rune(wt[h])) > strings.IndexRune(xt, rune(wt[e])) {
		h, e = e, h // the head axis comes first in the activation
	}
	t, err := transposeArray(w, []int64{int64(h), int64(e), int64(m)}, true)
	if err != nil {
		return nil, false
	}
	t.dims = []int64{t.dims[0] * t.dims[1], t.dims[2]}
	return t, true
}

func (tr *tracer) singleConsumer(ix *index, t, op string) *pb.NodeProto {
	cs := ix.consumers[t]
	if len(cs) != 1 {
		return nil
	}
	n := ix.node(cs[0])
	if n.GetOpType() != op {
		return nil
	}
	return n
}

// finishOut splits W_O [heads·dh × dModel] by head and finds its bias: Gemm's C, an Add
// of a constant, or the bias input of the SkipLayerNormalization it feeds.
func (tr *tracer) finishOut(ix *index, w, bias *array, proj *pb.NodeProto, out string, heads, dh int, at *pb.NodeProto) ([][]float64, []float64, string, *stop) {
	if w == nil || len(w.dims) != 2 || int(w.dims[0]) != heads*dh {
		var dims []int64
		if w != nil {
			dims = w.dims
		}
		return nil, nil, "", stopAt(at, "the output projection's weight has shape %v, not [%d heads × %d, d_model]", dims, heads, dh)
	}
	dModel := int(w.dims[1])
	wo := make([][]float64, heads)
	for h := range wo {
		wo[h] = append([]float64{}, w.data[h*dh*dModel:(h+1)*dh*dModel]...)
	}
	var bo []float64
	if bias != nil {
		bo = bias.data
	}
	if cs := ix.consumers[out]; len(cs) == 1 {
		n := ix.node(cs[0])
		switch opName(n) {
		case "Add":
			if len(n.GetInput()) == 2 && len(n.GetOutput()) > 0 {
				other := n.GetInput()[0]
				if other == out {
					other = n.GetInput()[1]
				}
				if c, ok, err := tr.r.value(ix, other); err == nil && ok && c.size() == dModel {
					bo = addBias(bo, c.data)
					out = n.GetOutput()[0]
				}
			}
		case "com.microsoft.SkipLayerNormalization", "com.microsoft.SkipSimplifiedLayerNormalization":
			bi := 4
			if n.GetOpType() == "SkipSimplifiedLayerNormalization" {
				bi = 3
			}
			if len(n.GetInput()) > bi && n.GetInput()[bi] != "" {
				if c, ok, err := tr.r.value(ix, n.GetInput()[bi]); err == nil && ok && c.size() == dModel {
					bo = addBias(bo, c.data)
				}
			}
		}
	}
	if bo != nil && len(bo) != dModel {
		return nil, nil, "", stopAt(at, "the output projection's bias has %d values for %d features", len(bo), dModel)
	}
	return wo, bo, out, nil
}

func addBias(a, b []float64) []float64 {
	if a == nil {
		return append([]float64{}, b...)
	}
	out := append([]float64{}, a...)
	for i := range out {
		out[i] += b[i]
	}
	return out
}
