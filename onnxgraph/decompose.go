package onnxgraph

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// builder appends standard-ONNX nodes and small constant initializers to a graph, naming
// everything under one prefix so that nothing clashes with the model's own names.
type builder struct {
	g      *pb.GraphProto
	prefix string
	opset  int64 // of the default domain
	elem   int32 // float element type of the computation (float32 or float16)
	nodes  []*pb.NodeProto
	count  int
}

func (b *builder) name(what string) string {
	b.count++
	return fmt.Sprintf("%s/%s_%d", b.prefix, what, b.count)
}

// op appends a node with one output and returns the output's name.
func (b *builder) op(opType string, inputs []string, attrs ...*pb.AttributeProto) string {
	out := b.name(opType)
	b.opTo(out, opType, inputs, attrs...)
	return out
}

// opTo appends a node that writes the named output(s).
func (b *builder) opTo(out string, opType string, inputs []string, attrs ...*pb.AttributeProto) {
	b.nodes = append(b.nodes, &pb.NodeProto{
		Name:      proto.String(out),
		OpType:    proto.String(opType),
		Input:     inputs,
		Output:    []string{out},
		Attribute: attrs,
	})
}

func intsAttr(name string, v ...int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Ints: v, Type: pb.AttributeProto_INTS.Enum()}
}

func intAttr(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), I: proto.Int64(v), Type: pb.AttributeProto_INT.Enum()}
}

// ints adds an int64 initializer: a scalar when dims is nil.
func (b *builder) ints(dims []int64, v ...int64) string {
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
	}
	return b.init(int32(pb.TensorProto_INT64), dims, raw)
}

// scalar adds a scalar initializer of the computation's float type. float16 values
// beyond its range are clamped to ±65504 (its largest finite value).
func (b *builder) scalar(v float32) string {
	if b.elem == int32(pb.TensorProto_FLOAT16) {
		raw := make([]byte, 2)
		binary.LittleEndian.PutUint16(raw, floatToHalf(v))
		return b.init(b.elem, nil, raw)
	}
	raw := make([]byte, 4)
	binary.LittleEndian.PutUint32(raw, math.Float32bits(v))
	return b.init(int32(pb.TensorProto_FLOAT), nil, raw)
}

func (b *builder) init(elem int32, dims []int64, raw []byte) string {
	name := b.name("const")
	b.g.Initializer = append(b.g.Initializer, &pb.TensorProto{Name: proto.String(name), DataType: proto.Int32(elem), Dims: dims, RawData: raw})
	return name
}

// unsqueeze0 inserts a leading axis, in the spelling of the model's opset.
func (b *builder) unsqueeze0(x string) string {
	if b.opset >= 13 {
		return b.op("Unsqueeze", []string{x, b.ints([]int64{1}, 0)})
	}
	return b.op("Unsqueeze", []string{x}, intsAttr("axes", 0))
}

// floatToHalf rounds a float32 to the nearest IEEE 754 binary16, clamping to ±65504.
func floatToHalf(f float32) uint16 {
	if f > 65504 {
		f = 65504
	} else if f < -65504 {
		f = -65504
	}
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int32(bits>>23&0xff) - 127 + 15
	mant := bits & 0x7fffff
	switch {
	case f == 0:
		return sign
	case exp <= 0: // subnormal half
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		h := uint16(mant >> shift)
		if mant>>(shift-1)&1 != 0 {
			h++
		}
		return sign | h
	}
	h := uint16(exp)<<10 | uint16(mant>>13)
	if mant&0x1000 != 0 { // round half up on the dropped bits
		h++
	}
	return sign | h
}

// decomposeMSAttention returns standard-ONNX nodes that compute what the com.microsoft.
// Attention node n computes — the packed QKV projection, heads, optional past and
// present, scale, 2-D key mask, causal mask (unidirectional), optional additive bias,
// Softmax, ×V, merged heads — with onnxruntime's semantics (masked scores get
// mask_filter_value added). The Softmax writes the tensor probs. Constants are added to g
// as initializers. checkMSAttention has accepted n; a node it would not have accepted
// (no output, a head count that does not divide hidden3) gets an error, never a panic.
func decomposeMSAttention(g *pb.GraphProto, n *pb.NodeProto, opset int64, elem int32, hidden3 int64, prefix, probs string) ([]*pb.NodeProto, error) {
	b := &builder{g: g, prefix: prefix, opset: opset, elem: elem}
	in := func(k int) string {
		if k < len(n.GetInput()) {
			return n.GetInput()[k]
		}
		return ""
	}
	heads := attrInt(n, "num_heads", 1)
	switch {
	case len(n.GetOutput()) == 0 || n.GetOutput()[0] == "" || in(0) == "" || in(1) == "":
		return nil, fmt.Errorf("it lacks its input, weights or output")
	case heads <= 0 || hidden3 <= 0 || hidden3%(3*heads) != 0:
		return nil, fmt.Errorf("its %d heads do not divide its packed QKV width %d into three", heads, hidden3)
	}
	headSize := hidden3 / 3 / heads
	scale := float32(1 / math.Sqrt(float64(headSize)))
	for _, a := range n.GetAttribute() {
		if a.GetName() == "scale" && a.GetF() != 0 {
			scale = a.GetF()
		}
	}
	filter := float32(-10000)
	for _, a := range n.GetAttribute() {
		if a.GetName() == "mask_filter_value" {
			filter = a.GetF()
		}
	}

	qkv := b.op("MatMul", []string{in(0), in(1)})
	if in(2) != "" {
		qkv = b.op("Add", []string{qkv, in(2)})
	}
	// [B,S,3·N·h] → [B,S,3,N,h] → [3,B,N,S,h], then q, k, v = [B,N,S,h] each.
	qkv = b.op("Reshape", []string{qkv, b.ints([]int64{5}, 0, 0, 3, heads, headSize)})
	qkv = b.op("Transpose", []string{qkv}, intsAttr("perm", 2, 0, 3, 1, 4))
	part := func(x string, k int64) string { return b.op("Gather", []string{x, b.ints(nil, k)}, intAttr("axis", 0)) }
	q, k, v := part(qkv, 0), part(qkv, 1), part(qkv, 2)
	if past := in(4); past != "" { // [2,B,N,P,h]
		k = b.op("Concat", []string{part(past, 0), k}, intAttr("axis", 2))
		v = b.op("Concat", []string{part(past, 1), v}, intAttr("axis", 2))
	}
	if len(n.GetOutput()) > 1 && n.GetOutput()[1] != "" {
		b.opTo(n.GetOutput()[1], "Concat", []string{b.unsqueeze0(k), b.unsqueeze0(v)}, intAttr("axis", 0))
	}
	scores := b.op("MatMul", []string{q, b.op("Transpose", []string{k}, intsAttr("perm", 0, 1, 3, 2))})
	scores = b.op("Mul", []string{scores, b.scalar(scale)})
	zero, masked := b.scalar(0), b.scalar(filter)
	if mask := in(3); mask != "" { // [B,L]: 0 masks a key
		keep := b.op("Cast", []string{mask}, intAttr("to", int64(pb.TensorProto_BOOL)))
		keep = b.op("Reshape", []string{keep, b.ints([]int64{4}, 0, 1, 1, -1)})
		scores = b.op("Add", []string{scores, b.op("Where", []string{keep, zero, masked})})
	}
	if attrInt(n, "unidirectional", 0) != 0 {
		// Query i (of S, after P past positions) sees keys j ≤ P+i of L = P+S.
		seq := func(x string) string {
			return b.op("Gather", []string{b.op("Shape", []string{x}), b.ints(nil, 2)}, intAttr("axis", 0))
		}
		S, L := seq(q), seq(k)
		rows := b.op("Range", []string{b.ints(nil, 0), S, b.ints(nil, 1)})
		rows = b.op("Add", []string{rows, b.op("Sub", []string{L, S})})
		rows = b.op("Reshape", []string{rows, b.ints([]int64{2}, -1, 1)})
		cols := b.op("Range", []string{b.ints(nil, 0), L, b.ints(nil, 1)})
		future := b.op("Greater", []string{cols, rows})
		scores = b.op("Add", []string{scores, b.op("Where", []string{future, masked, zero})})
	}
	if bias := in(5); bias != "" {
		scores = b.op("Add", []string{scores, bias})
	}
	b.opTo(probs, "Softmax", []string{scores}, intAttr("axis", -1))
	ctx := b.op("MatMul", []string{probs, v})
	ctx = b.op("Transpose", []string{ctx}, intsAttr("perm", 0, 2, 1, 3))
	b.opTo(n.GetOutput()[0], "Reshape", []string{ctx, b.ints([]int64{3}, 0, 0, -1)})
	return b.nodes, nil
}
