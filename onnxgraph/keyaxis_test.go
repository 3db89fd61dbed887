package onnxgraph_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// g builds small graphs for the key-axis tests: no value_info anywhere, so every rank
// and axis must come from the graph's operators.
type g struct {
	nodes []*pb.NodeProto
	inits []*pb.TensorProto
	n     int
}

func (b *g) op(op string, in []string, attrs ...*pb.AttributeProto) string {
	b.n++
	out := op + "_" + string(rune('a'+b.n))
	b.nodes = append(b.nodes, &pb.NodeProto{Name: proto.String(out), OpType: proto.String(op), Input: in, Output: []string{out}, Attribute: attrs})
	return out
}

// constInts is a Constant node holding int64 values (a shape, axes).
func (b *g) constInts(v ...int64) string {
	t := &pb.TensorProto{DataType: proto.Int32(int32(pb.TensorProto_INT64)), Dims: []int64{int64(len(v))}, Int64Data: v}
	return b.op("Constant", nil, &pb.AttributeProto{Name: proto.String("value"), T: t, Type: pb.AttributeProto_TENSOR.Enum()})
}

func (b *g) weight(name string) string {
	b.inits = append(b.inits, &pb.TensorProto{Name: proto.String(name), DataType: proto.Int32(1), Dims: []int64{8, 8}, FloatData: make([]float32, 64)})
	return name
}

func ints(name string, v ...int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Ints: v, Type: pb.AttributeProto_INTS.Enum()}
}

func str(name, v string) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), S: []byte(v), Type: pb.AttributeProto_STRING.Enum()}
}

// heads splits a [B,T,8] projection of x into [B,2,T,4] heads (perm 0,2,1,3), or, for
// keys, [B,2,4,T] (perm 0,2,3,1): torch's view + transpose.
func (b *g) heads(w string, perm ...int64) string {
	return b.op("Transpose", []string{b.op("Reshape", []string{b.op("MatMul", []string{"x", b.weight(w)}), b.constInts(0, 0, 2, 4)})}, ints("perm", perm...))
}

// model wraps the graph with float inputs x, q and k that declare no shape, so neither
// value_info nor input shapes tell any rank.
func (b *g) model(t *testing.T) *onnxgraph.Model {
	t.Helper()
	in := func(name string) *pb.ValueInfoProto {
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(1)}}}}
	}
	last := b.nodes[len(b.nodes)-1].Output[0]
	mp := &pb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*pb.OperatorSetIdProto{{Version: proto.Int64(17)}},
		Graph: &pb.GraphProto{
			Node: b.nodes, Initializer: b.inits,
			Input:  []*pb.ValueInfoProto{in("x"), in("q"), in("k")},
			Output: []*pb.ValueInfoProto{{Name: proto.String(last)}},
		},
	}
	m := testutil.ParseModel(t, mp)
	return m
}

// The Softmax's axis is checked against the key axis the graph computes — the axis Q·Kᵀ's
// right operand contributes, followed through elementwise ops, Transpose and Reshape —
// with no shapes declared. Before, a Softmax over axis 2 of these rank-4 scores (the query
// axis) was accepted as [B·H,Q,K] attention, as was one over the transposed scores' last
// axis; and Transpose between the scores and the Softmax was not followed at all.
func TestSoftmaxKeyAxis(t *testing.T) {
	type scores func(b *g) (s, v string) // the Softmax's input and the values it is applied to
	// Rank 4 from the heads' Reshape to a constant shape: scores [B,2,T,T].
	rank4 := func(b *g) (string, string) {
		s := b.op("MatMul", []string{b.heads("Wq", 0, 2, 1, 3), b.heads("Wk", 0, 2, 3, 1)})
		return b.op("Div", []string{s, b.constInts(2)}), b.heads("Wv", 0, 2, 1, 3)
	}
	// Graph inputs q and k of unknown rank.
	unknown := func(b *g) (string, string) { return b.op("MatMul", []string{"q", "k"}), "q" }
	transposed := func(b *g) (string, string) { // [B,2,K,Q]
		s, v := rank4(b)
		return b.op("Transpose", []string{s}, ints("perm", 0, 1, 3, 2)), v
	}
	swapHeads := func(b *g) (string, string) { // [B,Q,2,K]: heads and queries swapped, keys last
		s, v := rank4(b)
		return b.op("Transpose", []string{s}, ints("perm", 0, 2, 1, 3)), v
	}
	einsum := func(eq string) scores {
		return func(b *g) (string, string) {
			return b.op("Einsum", []string{b.heads("Wq", 0, 2, 1, 3), b.heads("Wk", 0, 2, 1, 3)}, str("equation", eq)), b.heads("Wv", 0, 2, 1, 3)
		}
	}
	reshapeTo := func(shape func(b *g, s string) string) scores {
		return func(b *g) (string, string) {
			s, v := rank4(b)
			return b.op("Reshape", []string{s, shape(b, s)}), v
		}
	}
	copyLast := func(b *g, s string) string { return b.constInts(0, 0, -1, 0) } // 0 copies the size at its index
	copyQuery := func(b *g, s string) string { return b.constInts(-1, 0, 0) }   // the last size is the queries'
	lastOfShape := func(b *g, s string) string {
		last := b.op("Unsqueeze", []string{b.op("Gather", []string{b.op("Shape", []string{s}), b.op("Constant", nil, &pb.AttributeProto{Name: proto.String("value"), T: &pb.TensorProto{DataType: proto.Int32(7), Int64Data: []int64{-1}}, Type: pb.AttributeProto_TENSOR.Enum()})}), b.constInts(0)})
		return b.op("Concat", []string{b.constInts(-1), b.constInts(8), last}, &pb.AttributeProto{Name: proto.String("axis"), I: proto.Int64(0), Type: pb.AttributeProto_INT.Enum()})
	}
	guessedShape := func(b *g, s string) string { return b.constInts(-1, 8, 8) }
	// torch's older nn.MultiheadAttention: [B·H,T,d] heads, scores viewed as [B,H,T,S] to
	// add a padding mask and back to [B·H,T,S], the sizes read from the heads' shapes
	// (S = k.size(1)); keyAt is the axis of k whose size the views take as the last one.
	mhaViews := func(keyAt int64) scores {
		return func(b *g) (string, string) {
			heads3 := func(w string) string {
				return b.op("Reshape", []string{b.op("MatMul", []string{"x", b.weight(w)}), b.constInts(-1, 5, 4)})
			}
			size := func(t string, axis int64) string {
				idx := b.op("Constant", nil, &pb.AttributeProto{Name: proto.String("value"), T: &pb.TensorProto{DataType: proto.Int32(7), Int64Data: []int64{axis}}, Type: pb.AttributeProto_TENSOR.Enum()})
				return b.op("Unsqueeze", []string{b.op("Gather", []string{b.op("Shape", []string{t}), idx}), b.constInts(0)})
			}
			concat := func(in ...string) string {
				return b.op("Concat", in, &pb.AttributeProto{Name: proto.String("axis"), I: proto.Int64(0), Type: pb.AttributeProto_INT.Enum()})
			}
			q, k, v := heads3("Wq"), heads3("Wk"), heads3("Wv")
			s := b.op("MatMul", []string{q, b.op("Transpose", []string{k}, ints("perm", 0, 2, 1))})
			s = b.op("Reshape", []string{s, concat(b.constInts(-1), b.constInts(2), size(q, 1), size(k, keyAt))})
			s = b.op("Add", []string{s, "q"})
			return b.op("Reshape", []string{s, concat(b.constInts(-1), size(q, 1), size(k, keyAt))}), v
		}
	}
	cases := []struct {
		name   string
		scores scores
		axis   *int64
		rank   int    // of the site, when taken
		reason string // of the rejection; "" when taken
	}{
		{"axis 2 of rank-4 scores", rank4, proto.Int64(2), 0, "normalises over the query axis (axis 2 of its rank-4 scores), not over the key axis, axis 3, which the right operand of MatMul (Q·Kᵀ) contributes"},
		{"axis -1 of rank-4 scores", rank4, proto.Int64(-1), 4, ""},
		{"default axis of rank-4 scores", rank4, nil, 4, ""},
		{"axis 3 of rank-4 scores", rank4, proto.Int64(3), 4, ""},
		{"axis 1 of rank-4 scores", rank4, proto.Int64(1), 0, "not over the key axis, axis 3"},
		{"axis 4 of rank-4 scores", rank4, proto.Int64(4), 0, "which its rank-4 input does not have"},
		{"axis 3 of unknown rank", unknown, proto.Int64(3), 4, ""},
		{"axis -1 of unknown rank", unknown, proto.Int64(-1), 0, ""},
		{"axis 2 of unknown rank", unknown, proto.Int64(2), 0, "does not tell the rank of its input"},
		{"axis -2 of unknown rank", unknown, proto.Int64(-2), 0, "normalises over the query axis (axis -2 of its scores), not over the key axis, axis -1"},
		{"axis 4 of unknown rank", unknown, proto.Int64(4), 0, "rank 5 or more"},
		{"last axis of transposed scores", transposed, proto.Int64(-1), 0, "not over the key axis, axis 2"},
		{"key axis of transposed scores", transposed, proto.Int64(2), 0, "(they would come out transposed)"},
		{"heads and queries swapped", swapHeads, proto.Int64(-1), 4, ""},
		{"Einsum bhqd,bhkd->bhqk", einsum("bhqd,bhkd->bhqk"), proto.Int64(-1), 4, ""},
		{"Einsum bhqd,bhkd->bhkq", einsum("bhqd,bhkd->bhkq"), proto.Int64(-1), 0, "not over the key axis, axis 2, which the right operand of Einsum"},
		{"Einsum implicit output", einsum("bhqd,bhkd"), proto.Int64(-1), 0, "rank-2"},
		{"Einsum without a key axis", einsum("bhqd,bhkd->bhq"), proto.Int64(-1), 0, "no single axis from the right operand"},
		{"Einsum with ellipsis", einsum("...qd,...kd->...qk"), proto.Int64(-1), 4, ""},
		{"Reshape whose shape copies the last size", reshapeTo(copyLast), proto.Int64(-1), 4, ""},
		{"Reshape whose shape copies the query size last", reshapeTo(copyQuery), proto.Int64(-1), 0, "does not show that it keeps the key axis"},
		{"Reshape to the last size of its input's Shape", reshapeTo(lastOfShape), proto.Int64(-1), 3, ""},
		{"Reshape with a guessed last size", reshapeTo(guessedShape), proto.Int64(-1), 0, "does not show that it keeps the key axis"},
		{"views sized by the keys' sequence axis", mhaViews(1), proto.Int64(-1), 3, ""},
		{"views sized by the keys' sequence axis, counted from the end", mhaViews(-2), proto.Int64(2), 3, ""},
		{"views sized by the keys' head size", mhaViews(2), proto.Int64(-1), 0, "does not show that it keeps the key axis"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &g{}
			s, v := c.scores(b)
			sm := b.op("Softmax", []string{s})
			if c.axis != nil {
				b.nodes[len(b.nodes)-1].Attribute = []*pb.AttributeProto{{Name: proto.String("axis"), I: c.axis, Type: pb.AttributeProto_INT.Enum()}}
			}
			b.op("MatMul", []string{sm, v})
			att, err := onnxgraph.FindAttention(b.model(t))
			if c.reason != "" {
				if err == nil || len(att.Rejected) != 1 || !strings.Contains(att.Rejected[0].Reason, c.reason) {
					t.Fatalf("sites %+v, rejections %+v: want the Softmax rejected because it %q", att.Sites, att.Rejected, c.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(att.Sites) != 1 || att.Sites[0].Rank != c.rank {
				t.Fatalf("sites %+v, want one of rank %d", att.Sites, c.rank)
			}
		})
	}
}
