package session_test

import (
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// bertHidden writes the committed BERT cut before its masked-LM head: its only output,
// named out, is the final hidden state [batch, sequence, 48] (declared with that shape when
// declare, with none otherwise). hideEmbedding routes the token embedding through an
// Identity, so that the vocabulary size cannot be read from the graph.
func bertHidden(t *testing.T, out string, declare, hideEmbedding bool) string {
	t.Helper()
	m, err := onnxgraph.Load(filepath.Join(testutil.Root(), "testdata", "models", "bert", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	g := mp.Graph
	const hidden = "/model/mlm_ln/Add_1_output_0" // the LayerNorm before the LM head's MatMul
	for _, n := range g.Node {
		if len(n.Output) == 1 && n.Output[0] == "logits" {
			n.Output[0] = "mlm_scores_unused" // out may be named logits too
		}
	}
	g.Node = append(g.Node, &pb.NodeProto{OpType: proto.String("Identity"), Name: proto.String("hidden_out"), Input: []string{hidden}, Output: []string{out}})
	tt := &pb.TypeProto_Tensor{ElemType: proto.Int32(int32(pb.TensorProto_FLOAT))}
	if declare {
		dim := func(d *pb.TensorShapeProto_Dimension) *pb.TensorShapeProto_Dimension { return d }
		tt.Shape = &pb.TensorShapeProto{Dim: []*pb.TensorShapeProto_Dimension{
			dim(&pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}}),
			dim(&pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "sequence"}}),
			dim(&pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: 48}}),
		}}
	}
	g.Output = []*pb.ValueInfoProto{{Name: proto.String(out), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: tt}}}}
	if hideEmbedding {
		g.Node = append([]*pb.NodeProto{{OpType: proto.String("Identity"), Name: proto.String("hide"), Input: []string{"model.word_embeddings.weight"}, Output: []string{"hidden_embedding"}}}, g.Node...)
		for _, n := range g.Node {
			if n.GetName() == "/model/word_embeddings/Gather" {
				n.Input[0] = "hidden_embedding"
			}
		}
	}
	return testutil.WriteModel(t, mp)
}

// A run's logits are an output whose last axis is the vocabulary (or, where the graph does
// not tell the vocabulary, an output named as a language-model head); an encoder's hidden
// state or a classifier's scores give no logits. Before, every [1,T,N] main output was taken
// for logits: a sentence-transformers encoder's last_hidden_state (384 wide) gave confident
// "predictions".
func TestLogitsAreVocabularyWide(t *testing.T) {
	models := filepath.Join(testutil.Root(), "testdata", "models")
	cases := []struct {
		name  string
		path  func(t *testing.T) string
		vocab int // Limits.Vocab the graph must give (0: unknown)
		want  int // Result.Vocab; 0: no logits
	}{
		{"gpt2tiny: an LM head", func(*testing.T) string { return filepath.Join(models, "gpt2tiny", "model.onnx") }, 128, 128},
		{"bert: its masked-LM head", func(*testing.T) string { return filepath.Join(models, "bert", "model.onnx") }, 128, 128},
		{"bert's hidden state, declared 48 wide", func(t *testing.T) string { return bertHidden(t, "last_hidden_state", true, false) }, 128, 0},
		{"bert's hidden state, no declared shape", func(t *testing.T) string { return bertHidden(t, "last_hidden_state", false, false) }, 128, 0},
		{"bert's hidden state named logits", func(t *testing.T) string { return bertHidden(t, "logits", false, false) }, 128, 0},
		{"hidden state, vocabulary unknown", func(t *testing.T) string { return bertHidden(t, "last_hidden_state", false, true) }, 0, 0},
		{"output named logits, vocabulary unknown", func(t *testing.T) string { return bertHidden(t, "logits", false, true) }, 0, 48},
		{"distilbert: a classifier", func(t *testing.T) string {
			return filepath.Join(testutil.Shared(t, "fixtures"), "optimum-tiny-distilbert", "model.onnx")
		}, 30522, 0},
		{"vespa encoder: last_hidden_state 8 wide", func(t *testing.T) string {
			return filepath.Join(testutil.Shared(t, "fixtures"), "vespa-random-enc-dec", "random_encoder.onnx")
		}, 10000, 0},
		{"toy bert: prediction_scores", func(t *testing.T) string {
			return filepath.Join(testutil.Shared(t, "fixtures"), "ort-bert-toy-torch11", "bert_toy_optimized.onnx")
		}, 99, 99},
		{"gpt2 with past: last_state, fed step by step", func(t *testing.T) string {
			return filepath.Join(testutil.Shared(t, "fixtures"), gpt2Past)
		}, 20, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := testutil.OpenSession(t, c.path(t))
			if s.Limits.Vocab != c.vocab {
				t.Fatalf("the graph gives a vocabulary of %d, want %d", s.Limits.Vocab, c.vocab)
			}
			ids := []int64{1, 5, 2, 7}
			res, err := s.Run(ids)
			if err != nil {
				t.Fatal(err)
			}
			if res.Vocab != c.want || len(res.Logits) != c.want*len(ids) {
				t.Errorf("logits of width %d (%d values), want %d", res.Vocab, len(res.Logits), c.want)
			}
			if c.want == 0 && res.Logits != nil {
				t.Errorf("Logits is not nil")
			}
		})
	}
}
