package onnxgraph

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Expose returns the bytes of a new model in which every site's probabilities are an extra
// graph output named attn.L{layer} (see OutputName). The model's own bytes and file are
// not modified.
//
// When every site is a Softmax, the new model is the original bytes followed by a small
// serialized ModelProto{graph{node, output}}: protobuf merges a repeated message field
// that occurs twice, so this appends one Identity node and one output per site without
// decoding the weights (milliseconds for a 650 MB model instead of seconds and a second
// copy in memory). Sites that need a node changed (the ONNX Attention operator) are
// rewritten on the decoded model instead.
func Expose(m *Model, att *Attention) ([]byte, error) {
	if len(att.Sites) == 0 {
		return nil, fmt.Errorf("no attention sites to expose")
	}
	for _, s := range att.Sites {
		if m.hasTensor(s.Output) {
			return nil, fmt.Errorf("the model already has a tensor named %s, which attnscope needs for its own output; rename it", s.Output)
		}
	}
	for _, s := range att.Sites {
		if s.Form != FormSoftmax {
			return exposeDecoded(m, att)
		}
	}
	suffix := &pb.GraphProto{}
	for _, s := range att.Sites {
		suffix.Node = append(suffix.Node, identity(s))
		suffix.Output = append(suffix.Output, outputInfo(s))
	}
	tail, err := proto.Marshal(&pb.ModelProto{Graph: suffix})
	if err != nil {
		return nil, fmt.Errorf("encoding the extra outputs: %w", err)
	}
	out := make([]byte, 0, len(m.Bytes)+len(tail))
	out = append(out, m.Bytes...)
	return append(out, tail...), nil
}

// exposeDecoded rewrites the decoded model: ONNX Attention nodes get
// qk_matmul_output_mode=3 and a 4th output; every site gets its graph output.
func exposeDecoded(m *Model, att *Attention) ([]byte, error) {
	mp, err := m.Decode()
	if err != nil {
		return nil, err
	}
	g := mp.GetGraph()
	for _, s := range att.Sites {
		switch s.Form {
		case FormSoftmax:
			g.Node = append(g.Node, identity(s))
		case FormONNXAttention:
			n := g.GetNode()[s.NodeIndex]
			setAttrInt(n, "qk_matmul_output_mode", 3)
			for len(n.Output) < 4 {
				n.Output = append(n.Output, "")
			}
			if n.Output[3] == "" {
				n.Output[3] = s.Output + ".probs"
			}
			s.Tensor = n.Output[3]
			g.Node = append(g.Node, identity(s))
		}
		g.Output = append(g.Output, outputInfo(s))
	}
	return proto.Marshal(mp)
}

// identity is the node that names a site's probabilities attn.L{layer}: an Identity for
// float32 probabilities, a Cast to float32 for float16, bfloat16 or double ones, so that
// every exposed output is float32 whatever the model computes in.
func identity(s Site) *pb.NodeProto {
	n := &pb.NodeProto{
		Name:   proto.String("attnscope/" + s.Output),
		OpType: proto.String("Identity"),
		Input:  []string{s.Tensor},
		Output: []string{s.Output},
	}
	if s.ElemType != 0 && s.ElemType != int32(pb.TensorProto_FLOAT) {
		n.OpType = proto.String("Cast")
		n.Attribute = []*pb.AttributeProto{{Name: proto.String("to"), I: proto.Int64(int64(pb.TensorProto_FLOAT)), Type: pb.AttributeProto_INT.Enum()}}
	}
	return n
}

// outputInfo declares a site's output with its element type only (float32, see identity):
// a wrong shape would corrupt onnxruntime's shape information, and a missing one costs
// nothing. When the type could not be inferred the output is declared by name alone,
// which onnxruntime accepts, since a wrong type would be a hard error.
func outputInfo(s Site) *pb.ValueInfoProto {
	v := &pb.ValueInfoProto{Name: proto.String(s.Output)}
	if s.ElemType != 0 {
		v.Type = &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(int32(pb.TensorProto_FLOAT))}}}
	}
	return v
}

func setAttrInt(n *pb.NodeProto, name string, v int64) {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			a.I = proto.Int64(v)
			a.Type = pb.AttributeProto_INT.Enum()
			return
		}
	}
	n.Attribute = append(n.Attribute, &pb.AttributeProto{Name: proto.String(name), I: proto.Int64(v), Type: pb.AttributeProto_INT.Enum()})
}

// hasTensor reports whether any node output, input or initializer has the given name.
func (m *Model) hasTensor(name string) bool {
	g := m.Graph()
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			if o == name {
				return true
			}
		}
	}
	for _, v := range g.GetInput() {
		if v.GetName() == name {
			return true
		}
	}
	for _, t := range g.GetInitializer() {
		if t.GetName() == name {
			return true
		}
	}
	return false
}
