package onnxgraph

import (
	"math"
	"sort"
	"strings"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// maxInferredRank bounds the ranks shape inference produces: larger ones (from damaged
// attributes) are reported as unknown rather than allocated.
const maxInferredRank = 64

// inferredShape is what the graph tells of one tensor's shape.
type inferredShape struct {
	dims []int64 // -1 where the size is unknown
	ok   bool    // the rank is known
}

// shape returns what the graph tells of tensor's shape: its rank, and its dimensions
// (-1 where unknown). ok is false when not even the rank can be told. A declared shape
// (value_info, graph inputs and outputs, initializers) wins; otherwise the shape is
// inferred from the producing operator and its inputs' shapes — a small shape inference
// over the operators transformer exports use for masks, scores and their reshapes, so
// that attnscope does not depend on the file carrying value_info. Unknown operators give
// unknown shapes, never wrong ones.
func (ix *index) shape(tensor string) ([]int64, bool) {
	if tensor == "" {
		return nil, false
	}
	if s, ok := ix.shapes[tensor]; ok {
		return s.dims, s.ok
	}
	ix.shapes[tensor] = inferredShape{} // the cycle guard of invalid graphs
	dims, ok := ix.inferShape(tensor)
	if ok && len(dims) > maxInferredRank {
		dims, ok = nil, false
	}
	ix.shapes[tensor] = inferredShape{dims, ok}
	return dims, ok
}

// rank is the rank of tensor, or -1 when the graph does not tell it.
func (ix *index) rank(tensor string) int {
	if dims, ok := ix.shape(tensor); ok {
		return len(dims)
	}
	return -1
}

// unknownDims is a shape of the given rank whose dimensions are all unknown.
func unknownDims(rank int) ([]int64, bool) {
	if rank < 0 || rank > maxInferredRank {
		return nil, false
	}
	d := make([]int64, rank)
	for i := range d {
		d[i] = -1
	}
	return d, true
}

// sameShapeOps produce an output (their first) of their first input's shape.
var sameShapeOps = map[string]bool{
	"Cast": true, "CastLike": true, "Identity": true, "Neg": true, "Not": true, "Abs": true, "Sqrt": true,
	"Exp": true, "Log": true, "Tanh": true, "Sigmoid": true, "Relu": true, "Erf": true, "Reciprocal": true,
	"Floor": true, "Ceil": true, "Round": true, "Sign": true, "IsNaN": true, "IsInf": true, "Softmax": true,
	"LogSoftmax": true, "Hardmax": true, "LayerNormalization": true, "Dropout": true, "Clip": true,
	"Gelu": true, "LeakyRelu": true, "Elu": true, "Selu": true, "Celu": true, "HardSigmoid": true,
	"Softplus": true, "Softsign": true, "Sin": true, "Cos": true, "Trilu": true, "CumSum": true,
	"BitwiseNot": true, "Mish": true, "ThresholdedRelu": true, "Shrink": true, "QuantizeLinear": true,
	"DequantizeLinear": true, "DynamicQuantizeLinear": true, "BatchNormalization": true,
	"InstanceNormalization": true, "RMSNormalization": true,
	// onnxruntime's contrib operators of the same kind.
	"com.microsoft.FastGelu": true, "com.microsoft.BiasGelu": true, "com.microsoft.Gelu": true,
	"com.microsoft.SkipLayerNormalization": true, "com.microsoft.SkipSimplifiedLayerNormalization": true,
	"com.microsoft.SimplifiedLayerNormalization": true, "com.microsoft.QuickGelu": true,
}

// broadcastOps produce the multidirectional (numpy) broadcast of their inputs' shapes.
var broadcastOps = map[string]bool{
	"Add": true, "Sub": true, "Mul": true, "Div": true, "Pow": true, "Mod": true, "Equal": true,
	"Less": true, "Greater": true, "LessOrEqual": true, "GreaterOrEqual": true, "And": true, "Or": true,
	"Xor": true, "Max": true, "Min": true, "Sum": true, "Mean": true, "Where": true, "PRelu": true,
	"BitwiseAnd": true, "BitwiseOr": true, "BitwiseXor": true, "BitShift": true,
}

// sameRankOps keep their first input's rank but may change any dimension.
var sameRankOps = map[string]bool{
	"Slice": true, "Pad": true, "Tile": true, "Resize": true, "TopK": true, "Split": true,
	"ReverseSequence": true, "ScatterND": true, "ScatterElements": true, "Scatter": true,
}

func (ix *index) inferShape(tensor string) ([]int64, bool) {
	if dims, ok := ix.shapeOf(tensor); ok {
		return dims, true
	}
	p := ix.producerOf(tensor)
	if p == nil {
		if _, local := ix.inits[tensor]; !local && ix.outer != nil {
			return ix.outer.shape(tensor) // a name a subgraph reads from the graph around it
		}
		return nil, false
	}
	in := func(k int) string {
		if k < len(p.GetInput()) {
			return p.GetInput()[k]
		}
		return ""
	}
	op := opName(p)
	opset := ix.opsetFor(p)
	switch {
	case sameShapeOps[op]:
		// Their other outputs (LayerNormalization's mean, DynamicQuantizeLinear's scale)
		// have other shapes; Dropout's mask has the data's.
		if len(p.GetOutput()) > 0 && p.GetOutput()[0] != tensor && op != "Dropout" {
			return nil, false
		}
		return ix.shape(in(0))
	case broadcastOps[op]:
		var shapes [][]int64
		for _, t := range p.GetInput() {
			d, ok := ix.shape(t)
			if !ok {
				return nil, false
			}
			shapes = append(shapes, d)
		}
		if len(shapes) == 0 {
			return nil, false
		}
		return broadcast(shapes...), true
	case sameRankOps[op]:
		d, ok := ix.shape(in(0))
		if !ok {
			return nil, false
		}
		return unknownDims(len(d))
	}
	switch op {
	case "Constant":
		return constantShape(p)
	case "Shape":
		d, ok := ix.shape(in(0))
		if !ok {
			return []int64{-1}, true
		}
		r := int64(len(d))
		start, end := clampAxis(attrInt(p, "start", 0), r), r
		if hasAttr(p, "end") {
			end = clampAxis(attrInt(p, "end", r), r)
		}
		return []int64{max(0, end-start)}, true
	case "Size":
		return []int64{}, true
	case "Range":
		return []int64{-1}, true
	case "NonZero":
		r := ix.rank(in(0))
		if r < 0 {
			return []int64{-1, -1}, true
		}
		return []int64{int64(r), -1}, true
	case "Flatten", "Gemm", "com.microsoft.Gemm":
		return unknownDims(2)
	case "MatMul", "MatMulInteger", "com.microsoft.FusedMatMul", "com.microsoft.MatMulIntegerToFloat", "com.microsoft.DynamicQuantizeMatMul":
		a, okA := ix.shape(in(0))
		b, okB := ix.shape(in(1))
		if !okA || !okB {
			return nil, false
		}
		if op == "com.microsoft.FusedMatMul" && (attrInt(p, "transA", 0) != 0 || attrInt(p, "transB", 0) != 0 || attrInt(p, "transBatchA", 0) != 0 || attrInt(p, "transBatchB", 0) != 0) {
			if len(a) < 2 || len(b) < 2 {
				return nil, false
			}
			return unknownDims(max(len(a), len(b)))
		}
		return matmulShape(a, b)
	case "Einsum":
		var shapes [][]int64
		for _, t := range p.GetInput() {
			d, ok := ix.shape(t)
			if !ok {
				return nil, false
			}
			shapes = append(shapes, d)
		}
		return einsumShape(attrString(p, "equation"), shapes)
	case "Transpose":
		d, ok := ix.shape(in(0))
		perm, hasPerm := attrInts(p, "perm")
		switch {
		case !ok && hasPerm:
			return unknownDims(len(perm))
		case !ok:
			return nil, false
		case !hasPerm:
			out := make([]int64, len(d))
			for i := range d {
				out[i] = d[len(d)-1-i]
			}
			return out, true
		case len(perm) != len(d):
			return nil, false
		}
		out := make([]int64, len(d))
		for i, a := range perm {
			if a < 0 || a >= int64(len(d)) {
				return nil, false
			}
			out[i] = d[a]
		}
		return out, true
	case "Unsqueeze", "Squeeze":
		d, ok := ix.shape(in(0))
		if !ok {
			return nil, false
		}
		axes, known, count := ix.axesOf(p, opset)
		if op == "Unsqueeze" {
			if count < 0 {
				return nil, false
			}
			if !known {
				return unknownDims(len(d) + count)
			}
			return unsqueezeShape(d, axes)
		}
		if count < 0 { // no axes: every dimension of size 1 goes
			var out []int64
			for _, x := range d {
				if x < 0 {
					return nil, false
				}
				if x != 1 {
					out = append(out, x)
				}
			}
			return append([]int64{}, out...), true
		}
		if !known {
			return unknownDims(len(d) - count)
		}
		drop := map[int64]bool{}
		for _, a := range axes {
			if a < 0 {
				a += int64(len(d))
			}
			if a < 0 || a >= int64(len(d)) {
				return nil, false
			}
			drop[a] = true
		}
		out := []int64{}
		for i, x := range d {
			if !drop[int64(i)] {
				out = append(out, x)
			}
		}
		return out, true
	case "Reshape":
		if vals, ok := ix.constInts(in(1)); ok {
			return reshapeShape(ix, in(0), vals, attrInt(p, "allowzero", 0) != 0)
		}
		if s, ok := ix.shape(in(1)); ok && len(s) == 1 && s[0] >= 0 {
			return unknownDims(int(s[0]))
		}
		return nil, false
	case "Expand":
		d, ok := ix.shape(in(0))
		if !ok {
			return nil, false
		}
		if vals, ok := ix.constInts(in(1)); ok {
			return broadcast(d, vals), true
		}
		if s, ok := ix.shape(in(1)); ok && len(s) == 1 && s[0] >= 0 {
			return unknownDims(max(len(d), int(s[0])))
		}
		return nil, false
	case "ConstantOfShape":
		if vals, ok := ix.constInts(in(0)); ok {
			return append([]int64{}, vals...), true
		}
		if s, ok := ix.shape(in(0)); ok && len(s) == 1 && s[0] >= 0 {
			return unknownDims(int(s[0]))
		}
		return nil, false
	case "Concat":
		axis := attrInt(p, "axis", 0)
		var out []int64
		for k, t := range p.GetInput() {
			d, ok := ix.shape(t)
			if !ok || (k > 0 && len(d) != len(out)) {
				return nil, false
			}
			if k == 0 {
				out = append([]int64{}, d...)
				if axis < 0 {
					axis += int64(len(d))
				}
				if axis < 0 || axis >= int64(len(d)) {
					return nil, false
				}
				continue
			}
			for i, x := range d {
				switch {
				case int64(i) == axis && (out[i] < 0 || x < 0):
					out[i] = -1
				case int64(i) == axis:
					out[i] += x
				case out[i] < 0:
					out[i] = x
				}
			}
		}
		if out == nil {
			return nil, false
		}
		return out, true
	case "Gather":
		data, okD := ix.shape(in(0))
		idx, okI := ix.shape(in(1))
		if !okD || !okI {
			return nil, false
		}
		axis := attrInt(p, "axis", 0)
		if axis < 0 {
			axis += int64(len(data))
		}
		if axis < 0 || axis >= int64(len(data)) {
			return nil, false
		}
		out := append(append(append([]int64{}, data[:axis]...), idx...), data[axis+1:]...)
		return out, true
	case "GatherElements":
		return ix.shape(in(1))
	case "ArgMax", "ArgMin":
		d, ok := ix.shape(in(0))
		if !ok {
			return nil, false
		}
		if attrInt(p, "keepdims", 1) != 0 {
			return unknownDims(len(d))
		}
		return unknownDims(len(d) - 1)
	case "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
		"ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare":
		d, ok := ix.shape(in(0))
		if !ok {
			return nil, false
		}
		if attrInt(p, "keepdims", 1) != 0 {
			return unknownDims(len(d))
		}
		if axes, ok := attrInts(p, "axes"); ok {
			return unknownDims(len(d) - len(axes))
		}
		return nil, false
	}
	return nil, false
}

// axesOf reads the axes of an Unsqueeze or Squeeze: from its attribute before opset 13,
// from its second input since. known says whether the values are known; count is their
// number, or -1 when there are no axes or their number cannot be told.
func (ix *index) axesOf(n *pb.NodeProto, opset int64) (axes []int64, known bool, count int) {
	if a, ok := attrInts(n, "axes"); ok {
		return a, true, len(a)
	}
	if opset > 0 && opset < 13 || len(n.GetInput()) < 2 || n.GetInput()[1] == "" {
		return nil, false, -1
	}
	if vals, ok := ix.constInts(n.GetInput()[1]); ok {
		return vals, true, len(vals)
	}
	if s, ok := ix.shape(n.GetInput()[1]); ok && len(s) <= 1 {
		if len(s) == 0 {
			return nil, false, 1
		}
		if s[0] >= 0 {
			return nil, false, int(s[0])
		}
	}
	return nil, false, -1
}

// constInts returns the values of a small integer tensor held by a Constant node (the
// structural view keeps no initializer payloads), or false.
func (ix *index) constInts(tensor string) ([]int64, bool) {
	p := ix.producerOf(tensor)
	if p == nil || p.GetOpType() != "Constant" || defaultDomain(p.GetDomain()) != "" {
		return nil, false
	}
	for _, a := range p.GetAttribute() {
		switch a.GetName() {
		case "value_int":
			return []int64{a.GetI()}, true
		case "value_ints":
			return a.GetInts(), true
		case "value":
			t := a.GetT()
			switch pb.TensorProto_DataType(t.GetDataType()) {
			case pb.TensorProto_INT64:
				if len(t.GetInt64Data()) > 0 {
					return t.GetInt64Data(), true
				}
				raw := t.GetRawData()
				if len(raw)%8 != 0 || len(raw) > 8*maxInferredRank {
					return nil, false
				}
				out := make([]int64, len(raw)/8)
				for i := range out {
					var v uint64
					for b := 7; b >= 0; b-- {
						v = v<<8 | uint64(raw[8*i+b])
					}
					out[i] = int64(v)
				}
				return out, true
			case pb.TensorProto_INT32:
				if len(t.GetInt32Data()) > 0 {
					out := make([]int64, len(t.GetInt32Data()))
					for i, v := range t.GetInt32Data() {
						out[i] = int64(v)
					}
					return out, true
				}
				raw := t.GetRawData()
				if len(raw)%4 != 0 || len(raw) > 4*maxInferredRank {
					return nil, false
				}
				out := make([]int64, len(raw)/4)
				for i := range out {
					out[i] = int64(int32(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24))
				}
				return out, true
			}
		}
	}
	return nil, false
}

// constantShape is the shape of a Constant node's output.
func constantShape(n *pb.NodeProto) ([]int64, bool) {
	for _, a := range n.GetAttribute() {
		switch a.GetName() {
		case "value":
			if a.GetT() == nil {
				return nil, false
			}
			return append([]int64{}, a.GetT().GetDims()...), true
		case "value_int", "value_float", "value_string":
			return []int64{}, true
		case "value_ints":
			return []int64{int64(len(a.GetInts()))}, true
		case "value_floats":
			return []int64{int64(len(a.GetFloats()))}, true
		case "value_strings":
			return []int64{int64(len(a.GetStrings()))}, true
		}
	}
	return nil, false
}

// broadcast is the numpy broadcast of shapes whose sizes may be unknown (-1).
func broadcast(shapes ...[]int64) []int64 {
	r := 0
	for _, s := range shapes {
		r = max(r, len(s))
	}
	out := make([]int64, r)
	for i := range out {
		out[i] = 1
	}
	for _, s := range shapes {
		off := r - len(s)
		for j, d := range s {
			cur := &out[off+j]
			switch {
			case d == 1:
			case *cur == 1, *cur == -1:
				if d != -1 || *cur == 1 {
					*cur = d
				}
			case d == -1:
			case d != *cur:
				*cur = -1 // incompatible: an invalid graph; say unknown
			}
		}
	}
	return out
}

// matmulShape is the shape of MatMul(a, b) (numpy matmul semantics).
func matmulShape(a, b []int64) ([]int64, bool) {
	switch {
	case len(a) == 0 || len(b) == 0:
		return nil, false
	case len(a) == 1 && len(b) == 1:
		return []int64{}, true
	case len(a) == 1:
		return append(append([]int64{}, b[:len(b)-2]...), b[len(b)-1]), true
	case len(b) == 1:
		return append([]int64{}, a[:len(a)-1]...), true
	}
	batch := broadcast(a[:len(a)-2], b[:len(b)-2])
	return append(batch, a[len(a)-2], b[len(b)-1]), true
}

// unsqueezeShape inserts axes of size 1 into d.
func unsqueezeShape(d, axes []int64) ([]int64, bool) {
	r := int64(len(d) + len(axes))
	if r > maxInferredRank {
		return nil, false
	}
	ones := map[int64]bool{}
	for _, a := range axes {
		if a < 0 {
			a += r
		}
		if a < 0 || a >= r || ones[a] {
			return nil, false
		}
		ones[a] = true
	}
	out := make([]int64, 0, r)
	k := 0
	for i := int64(0); i < r; i++ {
		if ones[i] {
			out = append(out, 1)
		} else {
			out = append(out, d[k])
			k++
		}
	}
	return out, true
}

// reshapeShape is the shape Reshape gives tensor with the constant shape vals.
func reshapeShape(ix *index, tensor string, vals []int64, allowZero bool) ([]int64, bool) {
	if len(vals) > maxInferredRank {
		return nil, false
	}
	in, inOK := ix.shape(tensor)
	out := make([]int64, len(vals))
	infer := -1
	for i, v := range vals {
		switch {
		case v == 0 && !allowZero:
			out[i] = -1
			if inOK && i < len(in) {
				out[i] = in[i]
			}
		case v == -1 && infer < 0:
			infer, out[i] = i, -1
		case v < 0:
			return nil, false
		default:
			out[i] = v
		}
	}
	if infer >= 0 && inOK {
		total, rest := int64(1), int64(1)
		for _, x := range in {
			if x < 0 || total > math.MaxInt32 {
				return out, true
			}
			total *= x
		}
		for i, x := range out {
			if i == infer {
				continue
			}
			if x <= 0 || rest > math.MaxInt32 {
				return out, true
			}
			rest *= x
		}
		if total%rest == 0 {
			out[infer] = total / rest
		}
	}
	return out, true
}

// einsumTerms splits an Einsum equation into its input terms and output term, spaces
// removed; explicit is false when the equation has no "->" (the output is then the
// letters used once, in alphabetical order, after any ellipsis). ok is false for an
// equation that is not well-formed: letters other than ASCII ones, a "." outside "...",
// more than one ellipsis in a term, more than one "->".
func einsumTerms(eq string) (ins []string, out string, ok bool) {
	eq = strings.ReplaceAll(eq, " ", "")
	if strings.Count(eq, "->") > 1 {
		return nil, "", false
	}
	for _, term := range strings.FieldsFunc(strings.ReplaceAll(eq, "->", ","), func(r rune) bool { return r == ',' }) {
		if strings.Count(term, "...") > 1 || strings.Contains(strings.Replace(term, "...", "", 1), ".") {
			return nil, "", false
		}
		for _, c := range strings.ReplaceAll(term, "...", "") {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return nil, "", false
			}
		}
	}
	lhs, rhs, explicit := strings.Cut(eq, "->")
	ins = strings.Split(lhs, ",")
	if explicit {
		return ins, rhs, true
	}
	count := map[rune]int{}
	ellipsis := false
	for _, term := range ins {
		if strings.Contains(term, "...") {
			ellipsis = true
		}
		for _, c := range strings.ReplaceAll(term, "...", "") {
			count[c]++
		}
	}
	var once []string
	for c, k := range count {
		if k == 1 {
			once = append(once, string(c))
		}
	}
	sort.Strings(once)
	out = strings.Join(once, "")
	if ellipsis {
		out = "..." + out
	}
	return ins, out, true
}

// einsumShape is the output shape of an Einsum with the given equation and input shapes.
func einsumShape(eq string, shapes [][]int64) ([]int64, bool) {
	ins, out, ok := einsumTerms(eq)
	if !ok || len(ins) != len(shapes) {
		return nil, false
	}
	size := map[rune]int64{}
	ellipsisRank := 0
	for k, term := range ins {
		letters := strings.ReplaceAll(term, "...", "")
		hasEllipsis := len(letters) != len(term)
		n := len([]rune(letters))
		if hasEllipsis {
			if len(shapes[k]) < n {
				return nil, false
			}
			ellipsisRank = max(ellipsisRank, len(shapes[k])-n)
		} else if len(shapes[k]) != n {
			return nil, false
		}
		// Letters before the ellipsis count from the front, after it from the back.
		before, after, _ := strings.Cut(term, "...")
		for i, c := range before {
			if i < len(shapes[k]) {
				size[c] = shapes[k][i]
			}
		}
		ra := []rune(after)
		for i := range ra {
			size[ra[i]] = shapes[k][len(shapes[k])-len(ra)+i]
		}
	}
	var dims []int64
	before, after, hasEllipsis := strings.Cut(out, "...")
	for _, c := range before {
		d, ok := size[c]
		if !ok {
			return nil, false
		}
		dims = append(dims, d)
	}
	if hasEllipsis {
		for range ellipsisRank {
			dims = append(dims, -1)
		}
		for _, c := range after {
			d, ok := size[c]
			if !ok {
				return nil, false
			}
			dims = append(dims, d)
		}
	}
	return dims, true
}

// clampAxis normalises a Shape start or end against rank r, as the operator does.
func clampAxis(a, r int64) int64 {
	if a < 0 {
		a += r
	}
	return min(max(a, 0), r)
}

// attrInts returns the named ints attribute of n and whether n has it.
func attrInts(n *pb.NodeProto, name string) ([]int64, bool) {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a.GetInts(), true
		}
	}
	return nil, false
}

// attrString returns the named string attribute of n ("" when absent).
func attrString(n *pb.NodeProto, name string) string {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return string(a.GetS())
		}
	}
	return ""
}
