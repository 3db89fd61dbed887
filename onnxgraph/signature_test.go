package onnxgraph_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Inputs are given their roles by name and type.
func TestInputRoles(t *testing.T) {
	i64, f32, b := pb.TensorProto_INT64, pb.TensorProto_FLOAT, pb.TensorProto_BOOL
	cases := []struct {
		name string
		et   pb.TensorProto_DataType
		want onnxgraph.Role
	}{
		{"input_ids", i64, onnxgraph.RoleIDs},
		{"decoder_input_ids", i64, onnxgraph.RoleDecoderIDs},
		{"tgt_ids", i64, onnxgraph.RoleDecoderIDs},
		{"target_ids", i64, onnxgraph.RoleDecoderIDs},
		{"tgt", pb.TensorProto_INT32, onnxgraph.RoleDecoderIDs},
		{"prev_output_tokens", i64, onnxgraph.RoleDecoderIDs},
		{"decoder_input_ids", f32, onnxgraph.RoleUnknown},
		{"use_cache_branch", b, onnxgraph.RoleUseCacheBranch},
		{"past_key_values.0.key", f32, onnxgraph.RolePast},
		{"attention_mask", i64, onnxgraph.RoleAttentionMask},
		{"decoder_attention_mask", i64, onnxgraph.RoleAttentionMask},
		{"encoder_attention_mask", f32, onnxgraph.RoleAttentionMask},
		{"decoder_position_ids", i64, onnxgraph.RolePositionIDs},
		{"encoder_hidden_states", f32, onnxgraph.RoleUnknown},
	}
	for _, c := range cases {
		t.Run(c.name+"/"+c.et.String(), func(t *testing.T) {
			// input_ids comes first, so the rank-2 fallback does not take the input under test.
			g := &pb.GraphProto{Input: []*pb.ValueInfoProto{valueInfo("input_ids", i64), valueInfo(c.name, c.et)}}
			m := &onnxgraph.Model{Proto: &pb.ModelProto{Graph: g}}
			ins := onnxgraph.Inputs(m)
			if got := ins[len(ins)-1].Role; got != c.want {
				t.Fatalf("role %v, want %v", got, c.want)
			}
		})
	}
}

func valueInfo(name string, et pb.TensorProto_DataType) *pb.ValueInfoProto {
	dims := []*pb.TensorShapeProto_Dimension{
		{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}},
		{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "seq"}},
	}
	return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{
		TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(int32(et)), Shape: &pb.TensorShapeProto{Dim: dims}},
	}}}
}

// Site.Inputs tells a decoder's self-attention (target ids only) from its cross-attention
// (target ids and the encoder's states and mask).
func TestSiteInputs(t *testing.T) {
	path := filepath.Join(testutil.Shared(t, "fixtures"), "vespa-random-enc-dec", "random_decoder.onnx")
	_, att := testutil.FindAttention(t, path)
	if len(att.Sites) != 2 {
		t.Fatalf("%d sites", len(att.Sites))
	}
	for l, site := range att.Sites {
		want := []string{"input_ids"}
		if strings.Contains(site.Node, "multihead_attn") {
			want = []string{"input_ids", "encoder_attention_mask", "encoder_hidden_states"}
		}
		if !slices.Equal(site.Inputs, want) {
			t.Errorf("site %d (%s) depends on %v, want %v", l, site.Node, site.Inputs, want)
		}
	}
}

// The token embedding is found through a Slice (PyTorch's input_ids.view), a product with
// the mask, inside EmbedLayerNormalization and inside If branches (a merged decoder), and an encoder–decoder's target ids read the token
// embedding, not a position table.
func TestModelLimits(t *testing.T) {
	cases := []struct {
		path string
		want onnxgraph.Limits
	}{
		{filepath.Join(testutil.Root(), "..", "shared", "fixtures", "ort-gpt2-past-torch16", "gpt2_past.onnx"), onnxgraph.Limits{Vocab: 20, Positions: 8, FixedLen: 1}},
		{filepath.Join(testutil.Root(), "testdata", "models", "encdec", "model.onnx"), onnxgraph.Limits{Vocab: 64, Positions: 32}},
		{filepath.Join(testutil.Root(), "testdata", "models", "merged", "model.onnx"), onnxgraph.Limits{Vocab: 64, Positions: 32}},
		// ids × attention_mask before the embedding; sinusoidal positions (no table).
		{filepath.Join(testutil.Root(), "..", "shared", "fixtures", "vespa-random-enc-dec", "random_encoder.onnx"), onnxgraph.Limits{Vocab: 10000}},
		// onnxruntime's fused EmbedLayerNormalization holds both tables.
		{filepath.Join(testutil.Root(), "..", "shared", "fixtures", "genai-tiny-gpt2-msattn", "past.onnx"), onnxgraph.Limits{Vocab: 1000, Positions: 512}},
	}
	for _, c := range cases {
		t.Run(filepath.Base(filepath.Dir(c.path)), func(t *testing.T) {
			if _, err := os.Stat(c.path); err != nil {
				testutil.Skip(t, "%s is not present", c.path)
			}
			m, err := onnxgraph.Load(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := onnxgraph.ModelLimits(m); got != c.want {
				t.Fatalf("limits %+v, want %+v", got, c.want)
			}
		})
	}
}
