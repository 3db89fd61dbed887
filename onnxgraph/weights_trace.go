package onnxgraph

import (
	"errors"
	"fmt"
	"math"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// TraceWeights finds, for every attention site of att (as FindAttention returned it for
// m), the per-head W_Q, W_K, W_V and W_O with their biases among m's constants, by
// following the graph from the site: Q·Kᵀ and P·V back through Transpose, Reshape,
// Squeeze/Unsqueeze/Expand, Cast, Add (a bias), Mul/Div (a scalar scale), Split, Slice and
// Gather (a fused QKV projection's parts), Concat with a past cache, an activation's
// Quantize/DequantizeLinear pair, and rotary embeddings (com.microsoft.RotaryEmbedding, or
// q·cos + rotate_half(q)·sin) to the MatMul, Gemm, Einsum or dequantized MatMulInteger
// that multiplies the residual stream (or its normalised copy) by a weight; and P·V's
// output forward to the output projection. Fused operators are read from their inputs and
// attributes: com.microsoft.Attention's packed [hidden, 3·hidden] weight,
// MultiHeadAttention's packed bias, GroupQueryAttention's packed QKV input, ONNX
// Attention. Weights stored as float16, bfloat16 or int8/uint8 (DequantizeLinear, or
// MatMulInteger after DynamicQuantizeLinear) are converted to float64. It also finds the
// normalisations feeding the projections, the score scale, the causal mask, rotary
// embeddings, the token and learned position embeddings and the unembedding (see
// Weights).
//
// A head-split Reshape is taken to lay the projection's columns out as h·d_head + j (the
// layout of every PyTorch and Hugging Face export); a fused projection's parts (Split,
// Slice, or Gather on a [.., 3, E] view) are taken to be blocks of that layout, in order.
//
// The trace is all or nothing: when one site cannot be traced, TraceWeights returns a
// *TraceError naming the first such site and the node where the trace stopped (circuits
// need every layer: composition pairs span them). Problems with the model-level tensors
// (embedding, positions, unembedding) are not errors: the tensor is nil and its note says
// why. TraceWeights reads weights from the model's file (and external-data files) but
// never writes; it never panics, whatever the graph holds.
func TraceWeights(m *Model, att *Attention) (*Weights, error) {
	if m == nil || m.Proto == nil || att == nil || len(att.Sites) == 0 {
		return nil, errors.New("no attention sites to trace weights for")
	}
	r, err := newValueReader(m)
	if err != nil {
		return nil, err
	}
	defer r.close()
	tr := &tracer{m: m, r: r, top: newIndex(m.Proto), subs: map[*pb.GraphProto]*index{}, tri: map[string]bool{}}
	w, links, err := tr.layers(att)
	if err != nil && tr.hasIf(att) {
		// A merged decoder's two branches hold the same weights; the branch with the cache
		// may read cross-attention keys from the past alone. Try the other one.
		tr.preferElse = true
		if w2, links2, err2 := tr.layers(att); err2 == nil {
			w, links, err = w2, links2, nil
		}
	}
	if err != nil {
		return nil, err
	}
	tr.reads(w, links)
	tr.modelLevel(w, links)
	return w, nil
}

// layers traces every site, in order.
func (tr *tracer) layers(att *Attention) (*Weights, []siteLinks, error) {
	w := &Weights{}
	links := make([]siteLinks, len(att.Sites))
	for k, s := range att.Sites {
		lw, ln, terr := tr.site(s)
		if terr != nil {
			return nil, nil, terr
		}
		if w.DModel == 0 {
			w.DModel = ln.dModel
		} else if ln.dModel != w.DModel {
			return nil, nil, &TraceError{Layer: s.Layer, Site: s.Node, Reason: fmt.Sprintf("its projections read a %d-wide stream, where earlier layers read %d", ln.dModel, w.DModel)}
		}
		w.Layers = append(w.Layers, *lw)
		links[k] = ln
	}
	return w, links, nil
}

func (tr *tracer) hasIf(att *Attention) bool {
	for _, s := range att.Sites {
		if s.If != nil {
			return true
		}
	}
	return false
}

// siteLinks is what the model-level passes need to know of one traced site.
type siteLinks struct {
	ix         *index
	xq, xk, xv string // the tensors the Q, K and V projections read
	out        string // the output projection's output (after its bias)
	dModel     int
}

type tracer struct {
	m    *Model
	r    *valueReader
	top  *index
	subs map[*pb.GraphProto]*index
	tri  map[string]bool // constants already checked for a triangular pattern
	// preferElse reads sites inside an If from its else branch (the then branch is the
	// default).
	preferElse bool
}

// stop is where a trace stopped and why.
type stop struct {
	at, reason string
}

func stopAt(n *pb.NodeProto, format string, args ...any) *stop {
	at := ""
	if n != nil {
		at = nameOf(n)
	}
	return &stop{at: at, reason: fmt.Sprintf(format, args...)}
}

// nameOf names a node for messages: its name, or its operator when the file leaves the
// name empty (a node index would mean nothing to a reader of a branch or a message).
func nameOf(n *pb.NodeProto) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	return "(unnamed " + n.GetOpType() + ")"
}

func (tr *tracer) fail(s Site, st *stop) *TraceError {
	site := s.Node
	if s.If != nil {
		site = s.Node + " " + s.Where()
	}
	return &TraceError{Layer: s.Layer, Site: site, At: st.at, Reason: st.reason}
}

// scope returns the index of the graph a site lives in and the site as that graph numbers
// it (an If branch's own site for sites inside an If).
func (tr *tracer) scope(s Site) (*index, Site, *stop) {
	if s.If == nil {
		return tr.top, s, nil
	}
	if s.NodeIndex < 0 || s.NodeIndex >= len(tr.top.g.GetNode()) {
		return nil, s, &stop{reason: "the site's If node is not in the graph"}
	}
	n := tr.top.node(s.NodeIndex)
	bs, branch := s.If.Then, "then_branch"
	if bs == nil || tr.preferElse && s.If.Else != nil {
		bs, branch = s.If.Else, "else_branch"
	}
	if bs == nil {
		return nil, s, &stop{reason: "the site is in neither branch of its If node"}
	}
	for _, a := range n.GetAttribute() {
		if a.GetName() == branch && a.GetG() != nil {
			ix, ok := tr.subs[a.GetG()]
			if !ok {
				ix = tr.top.subIndex(a.GetG())
				tr.subs[a.GetG()] = ix
			}
			return ix, *bs, nil
		}
	}
	return nil, s, &stop{reason: "its If node has no " + branch}
}

// site traces one attention site.
func (tr *tracer) site(s0 Site) (*LayerWeights, siteLinks, *TraceError) {
	ix, s, st := tr.scope(s0)
	if st != nil {
		return nil, siteLinks{}, tr.fail(s0, st)
	}
	if s.NodeIndex < 0 || s.NodeIndex >= len(ix.g.GetNode()) {
		return nil, siteLinks{}, tr.fail(s0, &stop{reason: "the site's node is not in the graph"})
	}
	n := ix.node(s.NodeIndex)
	lw := &LayerWeights{Layer: s0.Layer, Cross: s0.Cross, Scale: 1}
	var at attnTensors
	switch s.Form {
	case FormSoftmax:
		at, st = tr.softmaxTensors(ix, n, lw)
	case FormMSAttention:
		return tr.msAttention(ix, n, s0, lw)
	case FormMHA, FormGQA, FormONNXAttention:
		at, st = tr.fusedTensors(ix, n, s.Form, lw)
	default:
		st = &stop{reason: "attnscope cannot trace weights through this form of attention"}
	}
	if st != nil {
		return nil, siteLinks{}, tr.fail(s0, st)
	}
	return tr.finish(ix, s0, lw, at)
}

// attnTensors are the activations of one attention layer that tracing starts from.
type attnTensors struct {
	q, k, v string // the operands of Q·Kᵀ and P·V (or a fused node's Q, K, V inputs)
	z       string // P·V's output (or the fused node's output)
	hint    headHint
	packed  *pb.NodeProto // a fused node whose query input packs Q, K and V (GQA)
	bias    string        // a fused node's packed Q/K/V bias input (MultiHeadAttention)
	scaleOf func(dHead int) float64
}

// headHint is what the site itself says of its heads: 0 where it does not tell.
type headHint struct {
	heads, kvHeads int
}

func (tr *tracer) softmaxTensors(ix *index, n *pb.NodeProto, lw *LayerWeights) (attnTensors, *stop) {
	if len(n.GetInput()) == 0 || len(n.GetOutput()) == 0 {
		return attnTensors{}, stopAt(n, "the Softmax has no input or output")
	}
	path, reason := ix.scoresPath(n.GetInput()[0])
	if reason != "" {
		return attnTensors{}, stopAt(n, "%s", reason)
	}
	prod := path.prod
	if len(prod.GetInput()) < 2 {
		return attnTensors{}, stopAt(prod, "the scores product has fewer than two inputs")
	}
	if opName(prod) == "com.microsoft.FusedMatMul" {
		if attrInt(prod, "transA", 0) != 0 {
			return attnTensors{}, stopAt(prod, "the scores product transposes its left operand")
		}
		for _, a := range prod.GetAttribute() {
			if a.GetName() == "alpha" {
				lw.Scale *= float64(a.GetF())
			}
		}
	}
	at := attnTensors{q: prod.GetInput()[0], k: prod.GetInput()[1]}
	for k, i := range path.nodes {
		pn := ix.node(i)
		other := ""
		for _, in := range pn.GetInput() {
			if in != path.from[k] && in != "" {
				other = in
			}
		}
		switch pn.GetOpType() {
		case "Mul", "Div":
			c, ok, err := tr.r.value(ix, other)
			if err != nil {
				return attnTensors{}, stopAt(pn, "%v", err)
			}
			v, scalar := c.scalar()
			if !ok || !scalar {
				continue // a mask multiplied in, not a scale
			}
			if pn.GetOpType() == "Div" {
				if len(pn.GetInput()) < 2 || pn.GetInput()[1] != other || v == 0 {
					return attnTensors{}, stopAt(pn, "the scores divide a constant, which is not a scale")
				}
				v = 1 / v
			}
			lw.Scale *= v
		case "Where", "Add", "Sub":
			if !lw.Causal {
				for _, in := range pn.GetInput() {
					if in != path.from[k] && in != "" && tr.causalMask(ix, in, path.out) {
						lw.Causal = true
					}
				}
			}
		}
	}
	pv, probsFirst := tr.valueProduct(ix, n.GetOutput()[0])
	if pv == nil {
		return attnTensors{}, stopAt(n, "its probabilities do not reach a P·V MatMul or Einsum")
	}
	at.v = pv.GetInput()[1]
	if !probsFirst {
		at.v = pv.GetInput()[0]
	}
	at.z = pv.GetOutput()[0]
	return at, nil
}

// valueProduct follows the probabilities p through Cast, Dropout, Identity, Where and
// Reshape (one consumer each) to the MatMul or Einsum that multiplies them by V; it says
// whether p is that product's first operand.
func (tr *tracer) valueProduct(ix *index, p string) (*pb.NodeProto, bool) {
	cur := p
	for range 8 {
		cs := ix.consumers[cur]
		var use []*pb.NodeProto
		for _, c := range cs {
			n := ix.node(c)
			if !isShapeOp(n.GetOpType()) && n.GetOpType() != "Identity" || len(cs) == 1 {
				use = append(use, n)
			}
		}
		if len(use) != 1 {
			// A graph output copy (Identity) beside the product is fine: take the product.
			for _, n := range use {
				if (n.GetOpType() == "MatMul" || n.GetOpType() == "Einsum") && len(n.GetInput()) == 2 && len(n.GetOutput()) > 0 {
					return n, n.GetInput()[0] == cur
				}
			}
			return nil, false
		}
		n := use[0]
		if len(n.GetOutput()) == 0 {
			return nil, false
		}
		switch opName(n) {
		case "MatMul", "Einsum":
			if len(n.GetInput()) != 2 {
				return nil, false
			}
			return n, n.GetInput()[0] == cur
		case "Cast", "Dropout", "Identity", "Where", "Reshape":
			cur = n.GetOutput()[0]
		default:
			return nil, false
		}
	}
	return nil, false
}

// fusedTensors reads the Q, K, V inputs of a fused attention node (com.microsoft's
// MultiHeadAttention and GroupQueryAttention, ONNX Attention) and sets the scale, causal
// and rotary facts its attributes state.
func (tr *tracer) fusedTensors(ix *index, n *pb.NodeProto, form Form, lw *LayerWeights) (attnTensors, *stop) {
	in := func(k int) string {
		if k < len(n.GetInput()) {
			return n.GetInput()[k]
		}
		return ""
	}
	at := attnTensors{q: in(0), k: in(1), v: in(2)}
	if len(n.GetOutput()) > 0 {
		at.z = n.GetOutput()[0]
	}
	var scale float32
	hasScale := false
	for _, a := range n.GetAttribute() {
		if a.GetName() == "scale" {
			scale, hasScale = a.GetF(), a.GetF() != 0
		}
	}
	switch form {
	case FormMHA:
		at.hint.heads = int(attrInt(n, "num_heads", 0))
		lw.Causal = attrInt(n, "unidirectional", 0) != 0
		for _, mask := range []string{in(4), in(5)} {
			if mask != "" && !lw.Causal {
				lw.Causal = tr.causalMask(ix, mask, "")
			}
		}
		at.hint.kvHeads = at.hint.heads
		at.bias = in(3)
	case FormGQA:
		at.hint = headHint{int(attrInt(n, "num_heads", 0)), int(attrInt(n, "kv_num_heads", 0))}
		lw.Causal = true // GroupQueryAttention masks later keys itself
		if attrInt(n, "do_rotary", 0) != 0 {
			lw.Rotary = nameOf(n)
		}
		if at.k == "" {
			at.packed = n
		}
	case FormONNXAttention:
		at.hint = headHint{int(attrInt(n, "q_num_heads", 0)), int(attrInt(n, "kv_num_heads", 0))}
		lw.Causal = attrInt(n, "is_causal", 0) != 0
	}
	if at.k == "" && at.packed == nil || at.v == "" && at.packed == nil || at.z == "" {
		return at, stopAt(n, "it has no separate key and value inputs")
	}
	at.scaleOf = func(dh int) float64 {
		if hasScale {
			return float64(scale)
		}
		return 1 / math.Sqrt(float64(dh))
	}
	return at, nil
}

// finish traces the projections of a layer from its attention tensors.
func (tr *tracer) finish(ix *index, s Site, lw *LayerWeights, at attnTensors) (*LayerWeights, siteLinks, *TraceError) {
	ln := siteLinks{ix: ix}
	var q, k, v *projTrace
	if at.packed != nil {
		// GroupQueryAttention with one packed input: columns q | k | v, heads, kv heads,
		// kv heads wide.
		p, st := tr.project(ix, at.q, 0)
		if st != nil {
			return nil, ln, tr.fail(s, st)
		}
		h, kvh := at.hint.heads, at.hint.kvHeads
		if h <= 0 || kvh <= 0 || p.perHead != nil || p.width%(h+2*kvh) != 0 {
			return nil, ln, tr.fail(s, stopAt(at.packed, "its query input packs Q, K and V together, and its num_heads and kv_num_heads do not split its %d columns", p.width))
		}
		dh := p.width / (h + 2*kvh)
		part := func(from, heads int) *projTrace {
			c := *p
			c.off, c.width, c.dh, c.rsHeads = p.off+from*dh, heads*dh, dh, 0
			return &c
		}
		q, k, v = part(0, h), part(h, kvh), part(h+kvh, kvh)
	} else {
		var st *stop
		if q, st = tr.project(ix, at.q, at.hint.heads); st != nil {
			return nil, ln, tr.fail(s, st)
		}
		if k, st = tr.project(ix, at.k, at.hint.kvHeads); st != nil {
			return nil, ln, tr.fail(s, st)
		}
		if v, st = tr.project(ix, at.v, at.hint.kvHeads); st != nil {
			return nil, ln, tr.fail(s, st)
		}
	}
	if at.bias != "" {
		// MultiHeadAttention adds a packed bias [q | k | v] to its inputs itself.
		b, ok, err := tr.r.value(ix, at.bias)
		if err != nil || !ok || b.size() != q.width+k.width+v.width {
			return nil, ln, tr.fail(s, &stop{at: at.bias, reason: fmt.Sprintf("the operator's packed Q/K/V bias is not a readable constant of %d values", q.width+k.width+v.width)})
		}
		from := 0
		for _, p := range []*projTrace{q, k, v} {
			p.biases = append(p.biases, biasAt{vals: b.data[from : from+p.width], off: p.off, cur: p.width})
			from += p.width
		}
	}
	// Settle d_head where one side could not tell it alone.
	dh := q.dh
	for _, p := range []*projTrace{k, v} {
		if dh == 0 {
			dh = p.dh
		}
	}
	for _, h := range []int{at.hint.heads, q.rsHeads} {
		if dh == 0 && h > 0 && q.perHead == nil && q.width%h == 0 {
			dh = q.width / h
		}
	}
	if dh == 0 {
		return nil, ln, tr.fail(s, &stop{reason: "the graph does not tell the width of a head (no head-split Reshape with a constant last size, no head count)"})
	}
	for _, p := range []*projTrace{q, k, v} {
		if err := p.split(dh); err != nil {
			return nil, ln, tr.fail(s, &stop{at: p.node, reason: err.Error()})
		}
	}
	if q.dModel != k.dModel && !s.Cross || q.dModel != v.dModel && !s.Cross || k.dModel != v.dModel {
		return nil, ln, tr.fail(s, &stop{reason: fmt.Sprintf("its Q, K and V projections read streams of different widths (%d, %d, %d)", q.dModel, k.dModel, v.dModel)})
	}
	if k.heads == 0 || q.heads == 0 || k.heads != v.heads || q.heads%k.heads != 0 {
		return nil, ln, tr.fail(s, &stop{reason: fmt.Sprintf("it has %d query heads, %d key heads and %d value heads, which do not group", q.heads, k.heads, v.heads)})
	}
	lw.Heads, lw.KVHeads, lw.DHead = q.heads, k.heads, dh
	lw.WQ, lw.WK, lw.WV = q.w, k.w, v.w
	lw.BQ, lw.BK, lw.BV = q.b, k.b, v.b
	if at.scaleOf != nil {
		lw.Scale *= at.scaleOf(dh)
	}
	lw.Scale *= q.scale * k.scale
	if v.scale != 1 {
		for h := range lw.WV {
			scaleSlice(lw.WV[h], v.scale)
			if lw.BV != nil {
				scaleSlice(lw.BV[h], v.scale)
			}
		}
	}
	for _, rot := range []string{q.rotary, k.rotary} {
		if lw.Rotary == "" {
			lw.Rotary = rot
		}
	}
	var err error
	if lw.Norm, err = tr.normFor(ix, q.x); err != nil {
		return nil, ln, tr.fail(s, &stop{reason: err.Error()})
	}
	lw.KVNorm = lw.Norm
	if k.x != q.x {
		if lw.KVNorm, err = tr.normFor(ix, k.x); err != nil {
			return nil, ln, tr.fail(s, &stop{reason: err.Error()})
		}
		if lw.KVNorm != nil && lw.Norm != nil && lw.KVNorm.Node == lw.Norm.Node {
			lw.KVNorm = lw.Norm // one norm read through different layouts
		}
	}
	wo, bo, out, st := tr.outProjection(ix, at.z, q.heads, dh)
	if st != nil {
		return nil, ln, tr.fail(s, st)
	}
	if len(wo) > 0 && len(wo[0])/dh != q.dModel {
		return nil, ln, tr.fail(s, &stop{reason: fmt.Sprintf("its output projection writes %d features, not the %d its projections read", len(wo[0])/dh, q.dModel)})
	}
	lw.WO, lw.BO = wo, bo
	ln.xq, ln.xk, ln.xv, ln.out, ln.dModel = q.x, k.x, v.x, out, q.dModel
	return lw, ln, nil
}

func scaleSlice(xs []float64, c float64) {
	for i := range xs {
		xs[i] *= c
	}
}

// msAttention traces a com.microsoft.Attention node: packed weights [hidden, 3·hidden]
// (q | k | v, each h·d_head + j), packed bias [3·hidden], num_heads.
func (tr *tracer) msAttention(ix *index, n *pb.NodeProto, s Site, lw *LayerWeights) (*LayerWeights, siteLinks, *TraceError) {
	ln := siteLinks{ix: ix}
	if len(n.GetInput()) < 2 || len(n.GetOutput()) == 0 {
		return nil, ln, tr.fail(s, stopAt(n, "the node lacks its input or weights"))
	}
	wt, ok, err := tr.r.value(ix, n.GetInput()[1])
	if err != nil || !ok || len(wt.dims) != 2 || wt.dims[1]%3 != 0 {
		return nil, ln, tr.fail(s, stopAt(n, "its packed QKV weights are not a readable [hidden, 3·hidden] constant"))
	}
	heads := int(attrInt(n, "num_heads", 0))
	dModel, width := int(wt.dims[0]), int(wt.dims[1])/3
	if heads <= 0 || width%heads != 0 {
		return nil, ln, tr.fail(s, stopAt(n, "its num_heads does not divide the hidden size"))
	}
	if qkv, has := attrInts(n, "qkv_hidden_sizes"); has && len(qkv) == 3 && (qkv[0] != qkv[1] || qkv[1] != qkv[2]) {
		return nil, ln, tr.fail(s, stopAt(n, "its Q, K and V have different hidden sizes (qkv_hidden_sizes)"))
	}
	if attrInt(n, "do_rotary", 0) != 0 {
		lw.Rotary = nameOf(n)
	}
	dh := width / heads
	var bias *array
	if len(n.GetInput()) > 2 && n.GetInput()[2] != "" {
		b, ok, err := tr.r.value(ix, n.GetInput()[2])
		if err != nil || !ok || b.size() != 3*width {
			return nil, ln, tr.fail(s, stopAt(n, "its packed QKV bias is not a readable [3·hidden] constant"))
		}
		bias = b
	}
	parts := make([]*projTrace, 3)
	for p := range parts {
		parts[p] = &projTrace{full: wt.data, n: 3 * width, off: p * width, width: width, dModel: dModel, x: n.GetInput()[0], node: nameOf(n), scale: 1}
		if bias != nil {
			parts[p].biases = []biasAt{{vals: bias.data, off: 0, cur: 3 * width}}
		}
		if err := parts[p].split(dh); err != nil {
			return nil, ln, tr.fail(s, &stop{at: nameOf(n), reason: err.Error()})
		}
	}
	lw.Heads, lw.KVHeads, lw.DHead = heads, heads, dh
	lw.WQ, lw.WK, lw.WV = parts[0].w, parts[1].w, parts[2].w
	lw.BQ, lw.BK, lw.BV = parts[0].b, parts[1].b, parts[2].b
	lw.Scale = 1 / math.Sqrt(float64(dh))
	for _, a := range n.GetAttribute() {
		if a.GetName() == "scale" && a.GetF() != 0 {
			lw.Scale = float64(a.GetF())
		}
	}
	lw.Causal = attrInt(n, "unidirectional", 0) != 0
	if lw.Norm, err = tr.normFor(ix, n.GetInput()[0]); err != nil {
		return nil, ln, tr.fail(s, &stop{reason: err.Error()})
	}
	lw.KVNorm = lw.Norm
	wo, bo, out, st := tr.outProjection(ix, n.GetOutput()[0], heads, dh)
	if st != nil {
		return nil, ln, tr.fail(s, st)
	}
	lw.WO, lw.BO = wo, bo
	x := n.GetInput()[0]
	ln.xq, ln.xk, ln.xv, ln.out, ln.dModel = x, x, x, out, dModel
	return lw, ln, nil
}
