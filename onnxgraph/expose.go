package onnxgraph

import (
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Expose returns the bytes of a model in which every site's probabilities are an extra
// graph output named attn.L{layer} (see OutputName), for onnxruntime to load with the
// model's folder as its external-data folder (the weights are read from the original
// file, see Model). Neither the model's file nor its Model value is modified.
//
// The probability tensor itself is renamed attn.L{layer} and declared an output, rather
// than copied into one by an added node: onnxruntime then writes it straight into the
// caller's pre-allocated buffer (an Identity copy cost 6 % of a GPT-2-small forward at
// T = 1024 and 1.2 GB more peak memory; see BENCHMARKS.md). Re-encoding is cheap because
// the compact encoding holds no weights.
func Expose(m *Model, att *Attention) ([]byte, error) {
	if err := checkSites(m, att); err != nil {
		return nil, err
	}
	return rewrite(m.compact, att)
}

// Save writes a self-contained exposed model (weights inline, as in the original file)
// to w: the form to hand to other tools. It decodes the whole model.
func Save(m *Model, att *Attention, w io.Writer) error {
	if err := checkSites(m, att); err != nil {
		return err
	}
	data, err := m.ReadAll()
	if err != nil {
		return err
	}
	out, err := rewrite(data, att)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

func checkSites(m *Model, att *Attention) error {
	if len(att.Sites) == 0 {
		return fmt.Errorf("no attention sites to expose")
	}
	for _, s := range att.Sites {
		if m.hasTensor(s.Output) {
			return fmt.Errorf("the model already has a tensor named %s, which attnscope needs for its own output; rename it", s.Output)
		}
	}
	return nil
}

// rewrite decodes data, makes every site's probabilities the graph output attn.L{layer}
// (ONNX Attention nodes get qk_matmul_output_mode=3 and a 4th output), and re-encodes.
func rewrite(data []byte, att *Attention) ([]byte, error) {
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		return nil, fmt.Errorf("decoding model: %w", err)
	}
	g := mp.GetGraph()
	outputs := map[string]bool{}
	for _, o := range g.GetOutput() {
		outputs[o.GetName()] = true
	}
	for _, s := range att.Sites {
		if s.Form == FormONNXAttention {
			n := g.GetNode()[s.NodeIndex]
			setAttrInt(n, "qk_matmul_output_mode", 3)
			for len(n.Output) < 4 {
				n.Output = append(n.Output, "")
			}
			if n.Output[3] == "" {
				n.Output[3] = s.Output + ".probs"
			}
			s.Tensor = n.Output[3]
		}
		float32Probs := s.ElemType == 0 || s.ElemType == int32(pb.TensorProto_FLOAT)
		if float32Probs && !outputs[s.Tensor] {
			renameTensor(g, s.Tensor, s.Output)
		} else {
			// A model output already, or not float32: a node makes the float32 copy.
			g.Node = append(g.Node, identity(s))
		}
		g.Output = append(g.Output, outputInfo(s))
	}
	return proto.Marshal(mp)
}

// renameTensor renames a tensor wherever g refers to it: node outputs and inputs,
// value_info, and subgraphs that use it from the outer scope.
func renameTensor(g *pb.GraphProto, from, to string) {
	for _, n := range g.GetNode() {
		for i, o := range n.GetOutput() {
			if o == from {
				n.Output[i] = to
			}
		}
		for i, in := range n.GetInput() {
			if in == from {
				n.Input[i] = to
			}
		}
		for _, a := range n.GetAttribute() {
			if a.GetG() != nil {
				renameTensor(a.GetG(), from, to)
			}
			for _, sg := range a.GetGraphs() {
				renameTensor(sg, from, to)
			}
		}
	}
	for _, v := range g.GetValueInfo() {
		if v.GetName() == from {
			v.Name = proto.String(to)
		}
	}
}

// identity is the node that copies a site's probabilities into attn.L{layer} where they
// cannot simply be renamed: an Identity when they already are a model output, a Cast to
// float32 when they are float16, bfloat16 or double, so that every exposed output is
// float32 whatever the model computes in.
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
