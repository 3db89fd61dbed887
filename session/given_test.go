package session_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
	"github.com/attnscope/attnscope/session"
)

// openDecoderAlone opens the split fixture's decoder_model.onnx by itself (copied into a
// folder without its encoder) with the given input tensors.
func openDecoderAlone(t *testing.T, dir string, given map[string]*pb.TensorProto) (*session.Session, error) {
	t.Helper()
	testutil.RequireORT(t)
	b, err := os.ReadFile(filepath.Join(dir, "decoder_model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "decoder_model.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := onnxgraph.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Open(m, session.Options{Device: "cpu", Inputs: given})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// A decoder whose encoder_hidden_states (a float input attnscope cannot build) is given
// runs on the target ids alone, and its self- and cross-attention equal PyTorch's for the
// source the hidden state came from; another hidden state changes the cross-attention.
func TestGivenFloatInput(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "split-encdec")
	ref := testutil.ReadReference(t, dir)
	run := ref.Runs[0]
	S := int64(len(run.IDs))
	if _, err := openDecoderAlone(t, dir, nil); err != nil {
		t.Fatal(err)
	}
	plain, _ := openDecoderAlone(t, dir, nil)
	if _, err := plain.Run(run.DecoderIDs); err == nil || !strings.Contains(err.Error(), "encoder_hidden_states") {
		t.Fatalf("the decoder ran without its hidden state: %v", err)
	}
	hidden := encoderHidden(t, filepath.Join(dir, "encoder_model.onnx"), run.IDs, 16)
	given := map[string]*pb.TensorProto{
		"encoder_hidden_states":  floatTensor([]int64{1, S, 16}, hidden),
		"encoder_attention_mask": int64Tensor([]int64{1, S}, slices.Repeat([]int64{1}, int(S))),
	}
	s, err := openDecoderAlone(t, dir, given)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(run.DecoderIDs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Attn) != len(run.Attention)-1 {
		t.Fatalf("%d layers, want the reference's %d decoder layers", len(res.Attn), len(run.Attention)-1)
	}
	for l := range res.Attn {
		if d := testutil.MaxAbsDiff(testutil.Flatten(res.Attn[l]), run.Attention[l+1].Data); d > 1e-5 {
			t.Errorf("layer %d: max abs diff %.3g from PyTorch", l, d)
		}
	}
	if d := testutil.MaxAbsDiff(res.Logits, run.Logits.Data); d > 1e-4 {
		t.Errorf("logits differ by %.3g", d)
	}
	// A batch runs its sequences one at a time, each with the given tensors.
	rs, err := s.RunBatch([][]int64{run.DecoderIDs, run.DecoderIDs})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if d := testutil.MaxAbsDiff(testutil.Flatten(r.Attn[1]), run.Attention[2].Data); d > 1e-5 {
			t.Errorf("RunBatch: the cross-attention differs from PyTorch's by %.3g", d)
		}
	}
	// Another hidden state: the self-attention of the first layer stays, its cross-attention moves.
	other := slices.Clone(hidden)
	for i := range other {
		other[i] = -other[i]
	}
	given["encoder_hidden_states"] = floatTensor([]int64{1, S, 16}, other)
	s2, err := openDecoderAlone(t, dir, given)
	if err != nil {
		t.Fatal(err)
	}
	res2, err := s2.Run(run.DecoderIDs)
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.MaxAbsDiff(testutil.Flatten(res2.Attn[0]), run.Attention[1].Data); d > 1e-5 {
		t.Errorf("the first self-attention moved by %g with another hidden state", d)
	}
	if d := testutil.MaxAbsDiff(testutil.Flatten(res2.Attn[1]), run.Attention[2].Data); d < 1e-3 {
		t.Errorf("the cross-attention moved only %g with another hidden state", d)
	}
}

// A given tensor of the wrong name, type or shape is refused naming the input and what it
// takes.
func TestGivenInputErrors(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "split-encdec")
	cases := []struct {
		name  string
		given map[string]*pb.TensorProto
		ids   []int64
		want  string
	}{
		{"no such input", map[string]*pb.TensorProto{"input_features": floatTensor([]int64{1, 2}, []float32{1, 2})}, nil,
			"input input_features: the model has no such input (its inputs: input_ids, encoder_attention_mask, encoder_hidden_states)"},
		{"wrong type", map[string]*pb.TensorProto{"encoder_hidden_states": int64Tensor([]int64{1, 2, 16}, make([]int64, 32))}, nil,
			"input encoder_hidden_states: the array is int64 but the model takes float [batch_size, encoder_sequence_length, 16]"},
		{"wrong rank", map[string]*pb.TensorProto{"encoder_hidden_states": floatTensor([]int64{2, 16}, make([]float32, 32))}, nil,
			"input encoder_hidden_states: the array has shape [2, 16] but the model takes float [batch_size, encoder_sequence_length, 16]"},
		{"wrong fixed axis", map[string]*pb.TensorProto{"encoder_hidden_states": floatTensor([]int64{1, 2, 8}, make([]float32, 16))}, nil,
			"the array has shape [1, 2, 8] but the model takes float [batch_size, encoder_sequence_length, 16]"},
		{"batch of two", map[string]*pb.TensorProto{
			"encoder_hidden_states":  floatTensor([]int64{2, 2, 16}, make([]float32, 64)),
			"encoder_attention_mask": int64Tensor([]int64{2, 2}, []int64{1, 1, 1, 1}),
		}, []int64{5, 6}, "input encoder_attention_mask: the array has shape [2, 2] but this run needs [1, 2] (axis 0 is batch_size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := openDecoderAlone(t, dir, c.given)
			if err == nil && c.ids != nil {
				_, err = s.Run(c.ids)
			}
			var g *session.GivenInputError
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &g) {
				t.Fatalf("error %v, want a GivenInputError containing %q", err, c.want)
			}
		})
	}
}
