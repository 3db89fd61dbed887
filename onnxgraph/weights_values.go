package onnxgraph

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/attnscope/attnscope/internal/npy"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// maxTraceElems bounds the size of one tensor TraceWeights reads (float64 in memory):
// 2^28 elements, 2 GiB, more than any embedding a laptop can hold twice.
const maxTraceElems = 1 << 28

// maxMemoElems is the largest constant valueReader keeps once read (32 MiB as float64): a
// fused QKV weight read for Q, K and V is decoded once; an embedding is not kept twice.
const maxMemoElems = 1 << 22

// array is a constant tensor's values, row-major, as float64.
type array struct {
	dims []int64
	data []float64
	// isInt marks integer values (shape arithmetic: Div truncates).
	isInt bool
}

func (a *array) size() int { return len(a.data) }

// scalar returns the value of a one-element array.
func (a *array) scalar() (float64, bool) {
	if a == nil || len(a.data) != 1 {
		return 0, false
	}
	return a.data[0], true
}

// valueReader reads the values of a model's constants: initializers (inline, in the model
// file's own bytes or in external-data files) and Constant nodes.
type valueReader struct {
	m     *Model
	inits map[string]*pb.TensorProto // main-graph initializers with their inline payloads
	memo  map[string]*array
	files map[string]*os.File
}

// newValueReader decodes the model's compact encoding (whose large payloads are
// external-data references) to reach the main graph's initializer payloads.
func newValueReader(m *Model) (*valueReader, error) {
	r := &valueReader{m: m, inits: map[string]*pb.TensorProto{}, memo: map[string]*array{}, files: map[string]*os.File{}}
	full := &pb.ModelProto{}
	if err := proto.Unmarshal(m.compact, full); err != nil {
		return nil, fmt.Errorf("decoding the model's initializers: %w", err)
	}
	for _, t := range full.GetGraph().GetInitializer() {
		r.inits[t.GetName()] = t
	}
	return r, nil
}

func (r *valueReader) close() {
	for _, f := range r.files {
		f.Close()
	}
}

// value returns the values of tensor name as ix's graph sees it, when it is a constant:
// an initializer, a Constant node's output, or a chain of Cast, Identity, Transpose,
// Reshape, Squeeze, Unsqueeze, DequantizeLinear, Sqrt, Reciprocal, Neg and arithmetic on
// constants. ok is false (with a nil error) when the tensor is not a constant; err says
// why a constant could not be read.
func (r *valueReader) value(ix *index, name string) (*array, bool, error) {
	a, ok, err := r.valueHop(ix, name, 0)
	if !ok || err != nil {
		return nil, false, err
	}
	for _, v := range a.data {
		if math.IsNaN(v) {
			return nil, false, nil // a size the graph leaves to run time
		}
	}
	return a, true, nil
}

// shapeArith are the ops whose values valueHop computes from a Shape of an activation:
// the integer arithmetic exports do on sizes. Sizes the graph does not fix are NaN.
var shapeArith = map[string]bool{
	"Shape": true, "Gather": true, "Add": true, "Sub": true, "Mul": true, "Div": true,
	"Unsqueeze": true, "Squeeze": true, "Concat": true, "Cast": true, "Slice": true, "Identity": true,
	// A weight sliced by a computed size (nn.MultiheadAttention's in_proj_weight for
	// cross-attention) is then transposed or reshaped.
	"Transpose": true, "Reshape": true,
}

func (r *valueReader) valueHop(ix *index, name string, hop int) (*array, bool, error) {
	if name == "" || hop > 24 {
		return nil, false, nil
	}
	if ix.dynamic[name] {
		p := ix.producerOf(name)
		if p == nil || !shapeArith[p.GetOpType()] || defaultDomain(p.GetDomain()) != "" {
			return nil, false, nil
		}
	}
	key := fmt.Sprintf("%p/%s", ix.g, name)
	if a, ok := r.memo[key]; ok {
		return a, a != nil, nil
	}
	a, ok, err := r.compute(ix, name, hop)
	if err != nil {
		return nil, false, err
	}
	if ok && a.size() <= maxMemoElems {
		r.memo[key] = a // embeddings are read once: keeping them would double the peak
	}
	return a, ok, nil
}

func (r *valueReader) compute(ix *index, name string, hop int) (*array, bool, error) {
	if p := ix.producerOf(name); p != nil {
		return r.computeNode(ix, p, name, hop)
	}
	if t := r.initializer(ix, name); t != nil {
		a, err := r.decode(t)
		return a, err == nil, err
	}
	return nil, false, nil
}

// initializer finds the initializer name in ix's graph or the graphs around it, with its
// payload.
func (r *valueReader) initializer(ix *index, name string) *pb.TensorProto {
	for cur := ix; cur != nil; cur = cur.outer {
		if cur.outer == nil {
			if t, ok := r.inits[name]; ok {
				return t
			}
			return nil
		}
		for _, t := range cur.g.GetInitializer() {
			if t.GetName() == name {
				return t // subgraph initializers keep their payloads in the structural view
			}
		}
	}
	return nil
}

func (r *valueReader) computeNode(ix *index, p *pb.NodeProto, name string, hop int) (*array, bool, error) {
	op := opName(p)
	in := func(k int) (*array, bool, error) {
		if k >= len(p.GetInput()) || p.GetInput()[k] == "" {
			return nil, false, nil
		}
		return r.valueHop(ix, p.GetInput()[k], hop+1)
	}
	if op != "Constant" && (len(p.GetInput()) == 0 || len(p.GetOutput()) == 0 || p.GetOutput()[0] != name) {
		return nil, false, nil
	}
	switch op {
	case "Shape":
		dims, ok := ix.shape(p.GetInput()[0])
		if !ok {
			return nil, false, nil
		}
		if len(dims) > 0 && dims[len(dims)-1] < 0 {
			dims = append([]int64{}, dims...)
			dims[len(dims)-1] = r.lastDim(ix, p.GetInput()[0], hop)
		}
		r := int64(len(dims))
		start, end := clampAxis(attrInt(p, "start", 0), r), clampAxis(attrInt(p, "end", r), r)
		out := &array{dims: []int64{max(end-start, 0)}, isInt: true}
		for _, d := range dims[start:max(end, start)] {
			if d < 0 {
				out.data = append(out.data, math.NaN())
			} else {
				out.data = append(out.data, float64(d))
			}
		}
		return out, true, nil
	case "Gather":
		if dims, known := ix.shape(p.GetInput()[0]); !known || len(dims) != 1 {
			return nil, false, nil // only shape vectors: an embedding's Gather is no constant
		}
		a, ok, err := in(0)
		if !ok || err != nil || len(a.dims) != 1 {
			return nil, false, err
		}
		idx, ok, err := in(1)
		if !ok || err != nil {
			return nil, false, err
		}
		out := &array{dims: idx.dims, isInt: a.isInt}
		for _, v := range idx.data {
			k := int(v)
			if k < 0 {
				k += a.size()
			}
			if k < 0 || k >= a.size() {
				return nil, false, nil
			}
			out.data = append(out.data, a.data[k])
		}
		return out, true, nil
	case "Concat":
		out := &array{isInt: true}
		for k := range p.GetInput() {
			a, ok, err := in(k)
			if !ok || err != nil || len(a.dims) > 1 {
				return nil, false, err
			}
			out.data = append(out.data, a.data...)
			out.isInt = out.isInt && a.isInt
		}
		out.dims = []int64{int64(len(out.data))}
		return out, true, nil
	case "Slice":
		return r.sliceConst(ix, p, in)
	case "Constant":
		for _, at := range p.GetAttribute() {
			switch at.GetName() {
			case "value":
				if at.GetT() == nil {
					return nil, false, nil
				}
				a, err := r.decode(at.GetT())
				return a, err == nil, err
			case "value_float":
				return &array{data: []float64{float64(at.GetF())}}, true, nil
			case "value_floats":
				a := &array{dims: []int64{int64(len(at.GetFloats()))}}
				for _, f := range at.GetFloats() {
					a.data = append(a.data, float64(f))
				}
				return a, true, nil
			case "value_int":
				return &array{data: []float64{float64(at.GetI())}}, true, nil
			case "value_ints":
				a := &array{dims: []int64{int64(len(at.GetInts()))}}
				for _, v := range at.GetInts() {
					a.data = append(a.data, float64(v))
				}
				return a, true, nil
			}
		}
		return nil, false, nil
	case "Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten":
		a, ok, err := in(0)
		if !ok || err != nil {
			return nil, false, err
		}
		if op == "Identity" {
			return a, true, nil
		}
		if op == "Cast" {
			to := pb.TensorProto_DataType(attrInt(p, "to", 0))
			isInt := to == pb.TensorProto_INT64 || to == pb.TensorProto_INT32 || to == pb.TensorProto_INT8 || to == pb.TensorProto_UINT8 || to == pb.TensorProto_INT16 || to == pb.TensorProto_UINT16 || to == pb.TensorProto_UINT32 || to == pb.TensorProto_UINT64 || to == pb.TensorProto_BOOL
			return &array{dims: a.dims, data: a.data, isInt: isInt}, true, nil
		}
		if op == "Squeeze" || op == "Unsqueeze" {
			// Shape arithmetic squeezes scalars and vectors of one: the values stay.
			return &array{dims: a.dims, data: a.data, isInt: a.isInt}, true, nil
		}
		// Shape-only changes: the values keep their order; dims come from the graph when
		// it can tell, else they stay.
		out := &array{dims: a.dims, data: a.data}
		if dims, known := ix.shape(name); known && product(dims) == int64(a.size()) {
			out.dims = dims
		}
		return out, true, nil
	case "Transpose":
		a, ok, err := in(0)
		if !ok || err != nil {
			return nil, false, err
		}
		perm, has := attrInts(p, "perm")
		t, err := transposeArray(a, perm, has)
		return t, err == nil, err
	case "DequantizeLinear":
		return r.dequantize(p, in)
	case "Sqrt", "Reciprocal", "Neg":
		a, ok, err := in(0)
		if !ok || err != nil {
			return nil, false, err
		}
		out := &array{dims: a.dims, data: make([]float64, a.size())}
		for i, v := range a.data {
			switch op {
			case "Sqrt":
				out.data[i] = math.Sqrt(v)
			case "Reciprocal":
				out.data[i] = 1 / v
			default:
				out.data[i] = -v
			}
		}
		return out, true, nil
	case "Mul", "Div", "Add", "Sub", "Pow":
		a, ok, err := in(0)
		if !ok || err != nil {
			return nil, false, err
		}
		b, ok, err := in(1)
		if !ok || err != nil {
			return nil, false, err
		}
		return elementwise(op, a, b)
	}
	return nil, false, nil
}

// elementwise applies a binary arithmetic op where one operand is a scalar or both have
// the same number of elements (the only broadcasts TraceWeights meets on constants).
func elementwise(op string, a, b *array) (*array, bool, error) {
	n := max(a.size(), b.size())
	if (a.size() != n && a.size() != 1) || (b.size() != n && b.size() != 1) {
		return nil, false, nil
	}
	dims := a.dims
	if a.size() < n {
		dims = b.dims
	}
	out := &array{dims: dims, data: make([]float64, n), isInt: a.isInt && b.isInt}
	for i := range out.data {
		x, y := a.data[min(i, a.size()-1)], b.data[min(i, b.size()-1)]
		switch op {
		case "Mul":
			out.data[i] = x * y
		case "Div":
			out.data[i] = x / y
			if out.isInt {
				out.data[i] = math.Trunc(out.data[i])
			}
		case "Add":
			out.data[i] = x + y
		case "Sub":
			out.data[i] = x - y
		case "Pow":
			out.data[i] = math.Pow(x, y)
		}
	}
	return out, true, nil
}

// dequantize computes DequantizeLinear on constants: (x − zero_point) × scale, per tensor
// or per axis.
func (r *valueReader) dequantize(p *pb.NodeProto, in func(int) (*array, bool, error)) (*array, bool, error) {
	x, ok, err := in(0)
	if !ok || err != nil {
		return nil, false, err
	}
	scale, ok, err := in(1)
	if !ok || err != nil {
		return nil, false, err
	}
	zero, hasZero, err := in(2)
	if err != nil {
		return nil, false, err
	}
	out := &array{dims: x.dims, data: make([]float64, x.size())}
	if scale.size() == 1 {
		z := 0.0
		if hasZero && zero.size() >= 1 {
			z = zero.data[0]
		}
		for i, v := range x.data {
			out.data[i] = (v - z) * scale.data[0]
		}
		return out, true, nil
	}
	axis := int(attrInt(p, "axis", 1))
	if axis < 0 {
		axis += len(x.dims)
	}
	if axis < 0 || axis >= len(x.dims) || int64(scale.size()) != x.dims[axis] || (hasZero && zero.size() != scale.size()) {
		return nil, false, fmt.Errorf("DequantizeLinear %s: its scale has %d values, which do not match axis %d of its %v input", p.GetName(), scale.size(), axis, x.dims)
	}
	inner := int(product(x.dims[axis+1:]))
	n := int(x.dims[axis])
	for i, v := range x.data {
		k := (i / inner) % n
		z := 0.0
		if hasZero {
			z = zero.data[k]
		}
		out.data[i] = (v - z) * scale.data[k]
	}
	return out, true, nil
}

// transposeArray permutes a's axes (reversed when the node has no perm).
func transposeArray(a *array, perm []int64, has bool) (*array, error) {
	r := len(a.dims)
	if !has {
		perm = make([]int64, r)
		for i := range perm {
			perm[i] = int64(r - 1 - i)
		}
	}
	if len(perm) != r {
		return nil, fmt.Errorf("a Transpose's perm %v does not match its rank-%d constant", perm, r)
	}
	seen := make([]bool, r)
	for _, p := range perm {
		if p < 0 || int(p) >= r || seen[p] {
			return nil, fmt.Errorf("a Transpose's perm %v is not a permutation", perm)
		}
		seen[p] = true
	}
	dims := make([]int64, r)
	for i, p := range perm {
		dims[i] = a.dims[p]
	}
	strides := make([]int, r) // of the input
	s := 1
	for i := r - 1; i >= 0; i-- {
		strides[i] = s
		s *= int(a.dims[i])
	}
	out := &array{dims: dims, data: make([]float64, a.size())}
	idx := make([]int, r)
	for o := range out.data {
		src := 0
		for i := 0; i < r; i++ {
			src += idx[i] * strides[perm[i]]
		}
		out.data[o] = a.data[src]
		for i := r - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < int(dims[i]) {
				break
			}
			idx[i] = 0
		}
	}
	return out, nil
}

func product(dims []int64) int64 {
	p := int64(1)
	for _, d := range dims {
		p *= d
	}
	return p
}

// decode reads a TensorProto's values as float64, from its typed fields, raw_data or
// external data.
func (r *valueReader) decode(t *pb.TensorProto) (*array, error) {
	n := int64(1)
	for _, d := range t.GetDims() {
		if d < 0 || (d > 0 && n > maxTraceElems/d) {
			return nil, fmt.Errorf("tensor %s has dims %v, too large or invalid to read", t.GetName(), t.GetDims())
		}
		n *= d
	}
	a := &array{dims: append([]int64{}, t.GetDims()...), data: make([]float64, n)}
	dt := pb.TensorProto_DataType(t.GetDataType())
	switch dt {
	case pb.TensorProto_FLOAT, pb.TensorProto_DOUBLE, pb.TensorProto_FLOAT16, pb.TensorProto_BFLOAT16:
	default:
		a.isInt = true
	}
	raw := t.GetRawData()
	if t.GetDataLocation() == pb.TensorProto_EXTERNAL {
		var err error
		if raw, err = r.external(t); err != nil {
			return nil, err
		}
	}
	width := map[pb.TensorProto_DataType]int{
		pb.TensorProto_FLOAT: 4, pb.TensorProto_UINT8: 1, pb.TensorProto_INT8: 1, pb.TensorProto_UINT16: 2,
		pb.TensorProto_INT16: 2, pb.TensorProto_INT32: 4, pb.TensorProto_INT64: 8, pb.TensorProto_BOOL: 1,
		pb.TensorProto_FLOAT16: 2, pb.TensorProto_DOUBLE: 8, pb.TensorProto_UINT32: 4, pb.TensorProto_UINT64: 8,
		pb.TensorProto_BFLOAT16: 2,
	}[dt]
	if width == 0 {
		return nil, fmt.Errorf("tensor %s has element type %s, which attnscope cannot read as numbers", t.GetName(), dt)
	}
	if raw != nil || t.GetDataLocation() == pb.TensorProto_EXTERNAL {
		if int64(len(raw)) != n*int64(width) {
			return nil, fmt.Errorf("tensor %s holds %d bytes, not the %d its dims %v and type %s need", t.GetName(), len(raw), n*int64(width), t.GetDims(), dt)
		}
		for i := range a.data {
			b := raw[i*width : (i+1)*width]
			var v float64
			switch dt {
			case pb.TensorProto_FLOAT:
				v = float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
			case pb.TensorProto_DOUBLE:
				v = math.Float64frombits(binary.LittleEndian.Uint64(b))
			case pb.TensorProto_FLOAT16:
				v = halfToFloat(binary.LittleEndian.Uint16(b))
			case pb.TensorProto_BFLOAT16:
				v = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16))
			case pb.TensorProto_UINT8, pb.TensorProto_BOOL:
				v = float64(b[0])
			case pb.TensorProto_INT8:
				v = float64(int8(b[0]))
			case pb.TensorProto_UINT16:
				v = float64(binary.LittleEndian.Uint16(b))
			case pb.TensorProto_INT16:
				v = float64(int16(binary.LittleEndian.Uint16(b)))
			case pb.TensorProto_INT32:
				v = float64(int32(binary.LittleEndian.Uint32(b)))
			case pb.TensorProto_UINT32:
				v = float64(binary.LittleEndian.Uint32(b))
			case pb.TensorProto_INT64:
				v = float64(int64(binary.LittleEndian.Uint64(b)))
			case pb.TensorProto_UINT64:
				v = float64(binary.LittleEndian.Uint64(b))
			}
			a.data[i] = v
		}
		return a, nil
	}
	var count int
	switch dt {
	case pb.TensorProto_FLOAT:
		count = len(t.GetFloatData())
	case pb.TensorProto_DOUBLE:
		count = len(t.GetDoubleData())
	case pb.TensorProto_INT64:
		count = len(t.GetInt64Data())
	case pb.TensorProto_UINT32, pb.TensorProto_UINT64:
		count = len(t.GetUint64Data())
	default:
		count = len(t.GetInt32Data())
	}
	if int64(count) != n {
		return nil, fmt.Errorf("tensor %s holds %d values, not the %d its dims %v need", t.GetName(), count, n, t.GetDims())
	}
	for i := range a.data {
		switch dt {
		case pb.TensorProto_FLOAT:
			a.data[i] = float64(t.GetFloatData()[i])
		case pb.TensorProto_DOUBLE:
			a.data[i] = t.GetDoubleData()[i]
		case pb.TensorProto_INT64:
			a.data[i] = float64(t.GetInt64Data()[i])
		case pb.TensorProto_UINT32, pb.TensorProto_UINT64:
			a.data[i] = float64(t.GetUint64Data()[i])
		case pb.TensorProto_FLOAT16:
			a.data[i] = halfToFloat(uint16(t.GetInt32Data()[i]))
		case pb.TensorProto_BFLOAT16:
			a.data[i] = float64(math.Float32frombits(uint32(uint16(t.GetInt32Data()[i])) << 16))
		default:
			a.data[i] = float64(t.GetInt32Data()[i])
		}
	}
	return a, nil
}

// external reads an external-data payload from the model's data folder.
func (r *valueReader) external(t *pb.TensorProto) ([]byte, error) {
	var loc string
	offset, length := int64(0), int64(-1)
	for _, e := range t.GetExternalData() {
		switch e.GetKey() {
		case "location":
			loc = e.GetValue()
		case "offset":
			offset, _ = strconv.ParseInt(e.GetValue(), 10, 64)
		case "length":
			length, _ = strconv.ParseInt(e.GetValue(), 10, 64)
		}
	}
	if loc == "" || offset < 0 {
		return nil, fmt.Errorf("tensor %s names no external-data file", t.GetName())
	}
	f, ok := r.files[loc]
	if !ok {
		var err error
		if f, err = os.Open(filepath.Join(r.m.DataDir(), filepath.FromSlash(loc))); err != nil {
			return nil, fmt.Errorf("reading the weights of %s: %w", t.GetName(), err)
		}
		r.files[loc] = f
	}
	if length < 0 {
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("reading the weights of %s: %w", t.GetName(), err)
		}
		length = st.Size() - offset
	}
	if length < 0 || length > 8*maxTraceElems {
		return nil, fmt.Errorf("tensor %s: external data of %d bytes is out of range", t.GetName(), length)
	}
	buf := make([]byte, length)
	if _, err := f.ReadAt(buf, offset); err != nil {
		return nil, fmt.Errorf("reading the weights of %s from %s: %w", t.GetName(), loc, err)
	}
	return buf, nil
}

// halfToFloat converts an IEEE 754 half-precision number to float64.
func halfToFloat(h uint16) float64 { return float64(npy.Half(h).Float32()) }

// sliceConst computes a Slice of a constant along one axis, with step 1, where starts and
// ends may come from shape arithmetic.
func (r *valueReader) sliceConst(ix *index, p *pb.NodeProto, in func(int) (*array, bool, error)) (*array, bool, error) {
	if len(p.GetInput()) < 3 {
		return nil, false, nil
	}
	a, ok, err := in(0)
	if !ok || err != nil || len(a.dims) == 0 {
		return nil, false, err
	}
	st, ok1, _ := in(1)
	en, ok2, _ := in(2)
	if !ok1 || !ok2 || st.size() != 1 || en.size() != 1 || math.IsNaN(st.data[0]) || math.IsNaN(en.data[0]) {
		return nil, false, nil
	}
	axis := int64(0)
	if len(p.GetInput()) > 3 && p.GetInput()[3] != "" {
		ax, ok, _ := in(3)
		if !ok || ax.size() != 1 {
			return nil, false, nil
		}
		axis = int64(ax.data[0])
	}
	if len(p.GetInput()) > 4 && p.GetInput()[4] != "" {
		step, ok, _ := in(4)
		if !ok || step.size() != 1 || step.data[0] != 1 {
			return nil, false, nil
		}
	}
	rank := int64(len(a.dims))
	if axis < 0 {
		axis += rank
	}
	if axis < 0 || axis >= rank {
		return nil, false, nil
	}
	n := a.dims[axis]
	b := clampSlice(int64(max(min(st.data[0], float64(n)), -float64(n)-1)), n)
	e := clampSlice(int64(max(min(en.data[0], float64(n)), -float64(n)-1)), n)
	e = max(e, b)
	inner := int(product(a.dims[axis+1:]))
	outer := int(product(a.dims[:axis]))
	dims := append([]int64{}, a.dims...)
	dims[axis] = e - b
	out := &array{dims: dims, isInt: a.isInt, data: make([]float64, 0, outer*int(e-b)*inner)}
	for o := 0; o < outer; o++ {
		base := o * int(n) * inner
		out.data = append(out.data, a.data[base+int(b)*inner:base+int(e)*inner]...)
	}
	return out, true, nil
}

// lastDim is the size of activation t's last axis when a projection fixes it: t is (up to
// a bias Add) the output of a MatMul whose weight is a computable constant; -1 otherwise.
func (r *valueReader) lastDim(ix *index, t string, hop int) int64 {
	for range 3 {
		p := ix.producerOf(t)
		if p == nil || len(p.GetInput()) != 2 {
			return -1
		}
		switch p.GetOpType() {
		case "Add":
			t = p.GetInput()[0]
			if !ix.dynamic[t] || ix.producerOf(t) == nil {
				t = p.GetInput()[1]
			}
			if a := ix.producerOf(t); a != nil && a.GetOpType() == "Slice" {
				// bias + MatMul in either order: prefer the operand that is a product.
				t = p.GetInput()[0]
				if q := ix.producerOf(t); q == nil || q.GetOpType() != "MatMul" {
					t = p.GetInput()[1]
				}
			}
		case "MatMul":
			w, ok, err := r.valueHop(ix, p.GetInput()[1], hop+1)
			if err != nil || !ok || len(w.dims) < 2 {
				return -1
			}
			return w.dims[len(w.dims)-1]
		default:
			return -1
		}
	}
	return -1
}
