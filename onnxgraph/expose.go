package onnxgraph

import (
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Expose returns the bytes of a model in which every site's probabilities are an extra
// graph output named attn.L{layer} (see OutputName), for onnxruntime to load with the
// model's folder as its external-data folder (weights are read from the original file,
// see Model). Neither the model's file nor its Model value is modified.
//
// When every site is a Softmax, the result is the model's compact encoding followed by a
// small serialized ModelProto{graph{node, output}}: protobuf merges a message field that
// occurs twice, so this appends one node and one output per site without re-encoding
// anything. Sites that need a node changed (the ONNX Attention operator) are rewritten on
// the decoded compact encoding instead.
func Expose(m *Model, att *Attention) ([]byte, error) {
	if err := checkSites(m, att); err != nil {
		return nil, err
	}
	if needsRewrite(att) {
		return rewrite(m.compact, att)
	}
	tail, err := outputsTail(att)
	if err != nil {
		return nil, err
	}
	return append(m.compact[:len(m.compact):len(m.compact)], tail...), nil
}

// Save writes a self-contained exposed model (weights inline, as in the original file)
// to w: the form to hand to other tools.
func Save(m *Model, att *Attention, w io.Writer) error {
	if err := checkSites(m, att); err != nil {
		return err
	}
	if needsRewrite(att) {
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
	tail, err := outputsTail(att)
	if err != nil {
		return err
	}
	if m.inMemory {
		if _, err := w.Write(m.compact); err != nil {
			return err
		}
	} else {
		f, err := os.Open(m.Path)
		if err != nil {
			return fmt.Errorf("reading model: %w", err)
		}
		defer f.Close()
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
	}
	_, err = w.Write(tail)
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

func needsRewrite(att *Attention) bool {
	for _, s := range att.Sites {
		if s.Form != FormSoftmax {
			return true
		}
	}
	return false
}

// outputsTail is the serialized ModelProto that, appended to a model, adds one naming
// node and one graph output per site.
func outputsTail(att *Attention) ([]byte, error) {
	suffix := &pb.GraphProto{}
	for _, s := range att.Sites {
		suffix.Node = append(suffix.Node, identity(s))
		suffix.Output = append(suffix.Output, outputInfo(s))
	}
	tail, err := proto.Marshal(&pb.ModelProto{Graph: suffix})
	if err != nil {
		return nil, fmt.Errorf("encoding the extra outputs: %w", err)
	}
	return tail, nil
}

// rewrite decodes data, gives ONNX Attention nodes qk_matmul_output_mode=3 and a 4th
// output, adds every site's output, and re-encodes.
func rewrite(data []byte, att *Attention) ([]byte, error) {
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		return nil, fmt.Errorf("decoding model: %w", err)
	}
	g := mp.GetGraph()
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
		g.Node = append(g.Node, identity(s))
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
