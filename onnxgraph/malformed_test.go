package onnxgraph_test

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// nodeOf is a node with the given domain, operator, inputs and outputs (any of them may be
// empty or missing, as in a damaged file).
func nodeOf(domain, op string, in, out []string, attrs ...*pb.AttributeProto) *pb.NodeProto {
	n := &pb.NodeProto{OpType: proto.String(op), Input: in, Output: out, Attribute: attrs}
	if domain != "" {
		n.Domain = proto.String(domain)
	}
	return n
}

func intAttribute(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), I: proto.Int64(v), Type: pb.AttributeProto_INT.Enum()}
}

// looseModel builds a model around nodes whatever their arity: float inputs x and y
// ([1,4,4], declared), packed QKV weights W [4,12], opset 17 and com.microsoft 1, and the
// output "out".
func looseModel(t *testing.T, nodes ...*pb.NodeProto) *onnxgraph.Model {
	t.Helper()
	f := func(name string) *pb.ValueInfoProto {
		dims := []*pb.TensorShapeProto_Dimension{{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: 1}}, {Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: 4}}, {Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: 4}}}
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(1), Shape: &pb.TensorShapeProto{Dim: dims}}}}}
	}
	mp := &pb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*pb.OperatorSetIdProto{{Version: proto.Int64(17)}, {Domain: proto.String("com.microsoft"), Version: proto.Int64(1)}},
		Graph: &pb.GraphProto{
			Node:        nodes,
			Input:       []*pb.ValueInfoProto{f("x"), f("y")},
			Initializer: []*pb.TensorProto{{Name: proto.String("W"), DataType: proto.Int32(1), Dims: []int64{4, 12}, FloatData: make([]float32, 48)}},
			Output:      []*pb.ValueInfoProto{{Name: proto.String("out")}},
		},
	}
	m := testutil.ParseModel(t, mp)
	return m
}

// Attention nodes and Softmaxes that lack an input or output their operator requires are
// refused by FindAttention with one sentence naming the node and what it lacks. Before,
// an ONNX Attention with no inputs and a com.microsoft.Attention with fewer than 2 inputs
// panicked in FindAttention (index out of range), and a com.microsoft.Attention without
// outputs was accepted and panicked in Expose.
func TestMalformedAttentionNodes(t *testing.T) {
	named := func(n *pb.NodeProto, name string) *pb.NodeProto { n.Name = proto.String(name); return n }
	ifWith := func(inner *pb.NodeProto) *pb.NodeProto {
		return withGraph(node("If", []string{"cond"}, "out"), "then_branch", &pb.GraphProto{Node: []*pb.NodeProto{inner}, Output: []*pb.ValueInfoProto{{Name: proto.String("out")}}})
	}
	heads := intAttribute("num_heads", 2)
	cases := []struct {
		name string
		n    *pb.NodeProto
		want string // in the error, besides "malformed"
	}{
		{"Attention without inputs", nodeOf("", "Attention", nil, []string{"out"}), "#0 Attention (Attention) has 0 input(s) and 1 output(s), without its required input Q, input K, input V"},
		{"Attention with Q only", named(nodeOf("", "Attention", []string{"x"}, []string{"out"}), "attn"), "attn (Attention) has 1 input(s) and 1 output(s), without its required input K, input V"},
		{"Attention with unnamed K", nodeOf("", "Attention", []string{"x", "", "y"}, []string{"out"}), "without its required input K"},
		{"Attention without outputs", nodeOf("", "Attention", []string{"x", "y", "y"}, nil), "without its required output Y"},
		{"ms Attention without inputs", nodeOf("com.microsoft", "Attention", nil, []string{"out"}, heads), "(com.microsoft.Attention) has 0 input(s) and 1 output(s), without its required input input, input weights"},
		{"ms Attention with one input", nodeOf("com.microsoft", "Attention", []string{"x"}, []string{"out"}, heads), "without its required input weights"},
		{"ms Attention without outputs", nodeOf("com.microsoft", "Attention", []string{"x", "W"}, nil, heads), "without its required output output"},
		{"ms Attention with only a present output", nodeOf("com.microsoft", "Attention", []string{"x", "W"}, []string{"", "present"}, heads), "without its required output output"},
		{"MultiHeadAttention without inputs", nodeOf("com.microsoft", "MultiHeadAttention", nil, []string{"out"}, heads), "(com.microsoft.MultiHeadAttention) has 0 input(s)"},
		{"GroupQueryAttention without outputs", nodeOf("com.microsoft", "GroupQueryAttention", []string{"x"}, nil, heads), "(com.microsoft.GroupQueryAttention) has 1 input(s) and 0 output(s)"},
		{"Softmax without inputs", nodeOf("", "Softmax", nil, []string{"out"}), "(Softmax) has 0 input(s) and 1 output(s), without its required input input"},
		{"Softmax without outputs", nodeOf("", "Softmax", []string{"x"}, nil), "without its required output output"},
		{"Softmax with two inputs", nodeOf("", "Softmax", []string{"x", "y"}, []string{"out"}), "has 2 inputs, where a Softmax takes one"},
		{"inside an If branch", ifWith(nodeOf("", "Attention", nil, []string{"out"})), "If_node › then_branch › #0 Attention (Attention) has 0 input(s)"},
		{"Softmax with two axes", nodeOf("", "Softmax", []string{"x"}, []string{"out"}, intAttribute("axis", -1), intAttribute("axis", 1)), `(Softmax) has two attributes named "axis"`},
		// Exposing threaded the first branch's sites through the second's nodes: index out
		// of range.
		{"If with two then branches", func() *pb.NodeProto {
			n := withGraph(node("If", []string{"cond"}, "out"), "then_branch", branch(attentionNodes("a/")))
			return withGraph(n, "then_branch", branch([]*pb.NodeProto{node("Identity", []string{"x"}, "out")}))
		}(), `If_node (If) has two attributes named "then_branch"`},
		{"If without a condition", withGraph(nodeOf("", "If", nil, []string{"out"}), "then_branch", branch(attentionNodes("a/"))), "If_node (If) has 0 input(s) and 1 output(s), without its required input cond"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := looseModel(t, c.n)
			_, err := onnxgraph.FindAttention(m)
			var bad *onnxgraph.MalformedError
			if !errors.As(err, &bad) {
				t.Fatalf("error %v, want a *MalformedError", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || !strings.HasPrefix(msg, "the model is malformed: node ") || strings.Contains(msg, "\n") {
				t.Fatalf("error %q, want one line naming the node and containing %q", msg, c.want)
			}
		})
	}
}

// Expose and Save check the sites they are given against the model: sites found in
// another model, of another form, or pointing outside the graph get an error, not a
// panic (index out of range, or a decomposition of the wrong node).
func TestExposeRefusesForeignSites(t *testing.T) {
	big, bigAtt := testutil.FindAttention(t, filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"))
	small, smallAtt := testutil.FindAttention(t, filepath.Join(testutil.Root(), "testdata", "models", "attn1l", "model.onnx"))
	edit := func(att *onnxgraph.Attention, f func(s *onnxgraph.Site)) *onnxgraph.Attention {
		out := &onnxgraph.Attention{Sites: append([]onnxgraph.Site(nil), att.Sites...)}
		f(&out.Sites[0])
		return out
	}
	msAtt, err := onnxgraph.FindAttention(looseModel(t, nodeOf("com.microsoft", "Attention", []string{"x", "W"}, []string{"out"}, intAttribute("num_heads", 2))))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		m    *onnxgraph.Model
		att  *onnxgraph.Attention
		want string
	}{
		{"nil", small, nil, "no attention sites"},
		{"another model's sites", small, bigAtt, "found in another model"},
		{"negative node index", big, edit(bigAtt, func(s *onnxgraph.Site) { s.NodeIndex = -1 }), "names node -1"},
		{"node of another operator", big, edit(bigAtt, func(s *onnxgraph.Site) { s.NodeIndex = 0 }), "found in another model"},
		{"wrong form", small, edit(smallAtt, func(s *onnxgraph.Site) { s.Form = onnxgraph.FormMSAttention }), "found in another model"},
		{"placed in an If that is not there", small, edit(smallAtt, func(s *onnxgraph.Site) { s.If = &onnxgraph.IfSite{Node: "if"} }), "placed inside an If"},
		{"two sites, one output", big, edit(bigAtt, func(s *onnxgraph.Site) { s.Output = bigAtt.Sites[1].Output }), "taken by another site"},
		// The node at the site's index is the right operator, but its head count (0) is one
		// FindAttention would have refused: the decomposition divided by it.
		{"another model's com.microsoft.Attention", looseModel(t, nodeOf("com.microsoft", "Attention", []string{"x", "W"}, []string{"out"}, intAttribute("num_heads", 0))), msAtt, "heads do not divide"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := onnxgraph.Expose(c.m, c.att)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Expose: error %v, want one containing %q", err, c.want)
			}
			if err := onnxgraph.Save(c.m, c.att, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Save: error %v, want one containing %q", err, c.want)
			}
		})
	}
}
