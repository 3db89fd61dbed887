package session_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// maskedModel writes a one-head attention whose only mask is a Megatron-style float
// input [batch,1,T,T] added to the scores.
func maskedModel(t *testing.T, maskType pb.TensorProto_DataType) string {
	t.Helper()
	dims := func(ds ...any) *pb.TensorShapeProto {
		sh := &pb.TensorShapeProto{}
		for _, d := range ds {
			switch v := d.(type) {
			case int:
				sh.Dim = append(sh.Dim, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: int64(v)}})
			case string:
				sh.Dim = append(sh.Dim, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: v}})
			}
		}
		return sh
	}
	vi := func(name string, et pb.TensorProto_DataType, sh *pb.TensorShapeProto) *pb.ValueInfoProto {
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(int32(et)), Shape: sh}}}}
	}
	n := func(op string, out string, in ...string) *pb.NodeProto {
		return &pb.NodeProto{OpType: proto.String(op), Name: proto.String(out), Input: in, Output: []string{out}}
	}
	const vocab, d = 8, 4
	emb := make([]float32, vocab*d)
	for i := range emb {
		emb[i] = float32((i*7)%5) - 2
	}
	transpose := n("Transpose", "xt", "x")
	transpose.Attribute = []*pb.AttributeProto{{Name: proto.String("perm"), Ints: []int64{0, 2, 1}, Type: pb.AttributeProto_INTS.Enum()}}
	mask := "attention_mask"
	var cast []*pb.NodeProto
	if maskType != pb.TensorProto_FLOAT {
		c := n("Cast", "mask_f", mask)
		c.Attribute = []*pb.AttributeProto{{Name: proto.String("to"), I: proto.Int64(int64(pb.TensorProto_FLOAT)), Type: pb.AttributeProto_INT.Enum()}}
		cast, mask = []*pb.NodeProto{c}, "mask_f"
	}
	mp := &pb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*pb.OperatorSetIdProto{{Version: proto.Int64(17)}},
		Graph: &pb.GraphProto{
			Name: proto.String("masked"),
			Node: append(cast,
				n("Gather", "x", "E", "input_ids"),
				transpose,
				n("MatMul", "scores", "x", "xt"),
				n("Add", "masked", "scores", mask),
				n("Softmax", "probs", "masked"),
				n("MatMul", "out", "probs", "x"),
			),
			Input: []*pb.ValueInfoProto{
				vi("input_ids", pb.TensorProto_INT64, dims("batch", "T")),
				vi("attention_mask", maskType, dims("batch", 1, "T", "T")),
			},
			Initializer: []*pb.TensorProto{{Name: proto.String("E"), DataType: proto.Int32(int32(pb.TensorProto_FLOAT)), Dims: []int64{vocab, d}, FloatData: emb}},
			Output:      []*pb.ValueInfoProto{vi("out", pb.TensorProto_FLOAT, nil)},
		},
	}
	return testutil.WriteModel(t, mp)
}

// A float [batch,1,T,T] mask (Megatron style) is filled causally: no query sees a later
// key, and rows still sum to 1. A bool one is refused: exporters disagree on what true means.
func TestFourDimensionalMask(t *testing.T) {
	s := testutil.OpenSession(t, maskedModel(t, pb.TensorProto_FLOAT))
	res, err := s.Run([]int64{1, 2, 3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, res.Attn[0], 1e-5)
	for q, row := range res.Attn[0][0] {
		for k, p := range row {
			if k > q && !(p <= 1e-4) {
				t.Fatalf("query %d sees later key %d (weight %g)", q, k, p)
			}
		}
	}
	b := testutil.OpenSession(t, maskedModel(t, pb.TensorProto_BOOL))
	if _, err := b.Run([]int64{1, 2}); err == nil || !strings.Contains(err.Error(), "cannot tell") {
		t.Fatalf("a bool 4-D mask: error %v, want a refusal", err)
	}
}
