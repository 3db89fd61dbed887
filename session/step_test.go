package session_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

const gpt2Past = "ort-gpt2-past-torch16/gpt2_past.onnx"

// A single-step decoder (input_ids [batch, 1] plus past) runs on a whole prompt: token by
// token, with its maps assembled as a full-prompt run would give them.
func TestStepDecoderRunsPrompt(t *testing.T) {
	s := testutil.OpenSession(t, filepath.Join(testutil.Shared(t, "fixtures"), gpt2Past))
	ids := []int64{3, 17, 5, 5, 11, 0, 19}
	for _, T := range []int{1, 4, len(ids)} {
		res, err := s.Run(ids[:T])
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Attn) != 12 {
			t.Fatalf("T=%d: %d layers, want 12", T, len(res.Attn))
		}
		for l := range res.Attn {
			if res.Heads(l) != 2 {
				t.Fatalf("T=%d layer %d: %d heads, want 2", T, l, res.Heads(l))
			}
			checkRows(t, res.Attn[l], 1e-5)
			for h, rows := range res.Attn[l] {
				if len(rows) != T {
					t.Fatalf("T=%d L%dH%d: %d rows", T, l, h, len(rows))
				}
				for q, row := range rows {
					if len(row) != T {
						t.Fatalf("T=%d L%dH%d row %d has %d keys", T, l, h, q, len(row))
					}
					for k := q + 1; k < T; k++ {
						if row[k] != 0 {
							t.Fatalf("T=%d L%dH%d: [%d,%d] = %g right of the diagonal", T, l, h, q, k, row[k])
						}
					}
				}
			}
		}
		if res.Logits != nil || res.Vocab != 0 {
			// Its output, last_state, is the hidden state (width 4), not the vocabulary's 20.
			t.Fatalf("T=%d: %d logits of width %d from a model without logits", T, len(res.Logits), res.Vocab)
		}
		if len(res.Tokens) != T {
			t.Fatalf("T=%d: %d tokens", T, len(res.Tokens))
		}
		if msg := res.Degenerate(); msg != "" {
			t.Errorf("T=%d: %s", T, msg)
		}
		s.Recycle(res) // the next length reallocates; the same length reuses and must clear
	}
	// The first row of a longer run is a 1-token run.
	one, err := s.Run(ids[:1])
	if err != nil {
		t.Fatal(err)
	}
	oneAttn := make([]float32, 0)
	for l := range one.Attn {
		for h := range one.Attn[l] {
			oneAttn = append(oneAttn, one.Attn[l][h][0]...)
		}
	}
	full, err := s.Run(ids)
	if err != nil {
		t.Fatal(err)
	}
	var first []float32
	for l := range full.Attn {
		for h := range full.Attn[l] {
			first = append(first, full.Attn[l][h][0][:1]...)
		}
	}
	if d := testutil.MaxAbsDiff(first, oneAttn); d > 1e-6 {
		t.Errorf("first rows differ from a 1-token run by %g", d)
	}
}

// The last step of Run equals a RunTensors call on the last token with the past
// accumulated by hand, one RunTensors call per earlier token.
func TestStepDecoderMatchesManualPast(t *testing.T) {
	s := testutil.OpenSession(t, filepath.Join(testutil.Shared(t, "fixtures"), gpt2Past))
	ids := []int64{3, 17, 5, 5, 11, 0}
	T := len(ids)
	full, err := s.Run(ids)
	if err != nil {
		t.Fatal(err)
	}
	tensors := map[string]*pb.TensorProto{}
	for _, in := range onnxgraph.Inputs(s.Model) {
		if in.Role == onnxgraph.RolePast {
			// [2, batch, heads, 0, head size]: an empty past.
			tensors[in.Name] = &pb.TensorProto{Dims: []int64{2, 1, 2, 0, 2}, DataType: proto.Int32(int32(pb.TensorProto_FLOAT)), RawData: []byte{}}
		}
	}
	for step, id := range ids {
		tensors["input_ids"] = &pb.TensorProto{Dims: []int64{1, 1}, DataType: proto.Int32(int32(pb.TensorProto_INT64)), Int64Data: []int64{id}}
		res, present, err := s.RunTensors(tensors, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(present) != 12 {
			t.Fatalf("step %d: %d present outputs, want 12", step, len(present))
		}
		for name, p := range present {
			tensors[strings.Replace(name, "present_", "past_", 1)] = p
		}
		if step < T-1 {
			continue
		}
		for l := range res.Attn {
			for h := range res.Attn[l] {
				want := res.Attn[l][h][0]
				if len(want) != T {
					t.Fatalf("L%dH%d: last step attends over %d keys, want %d", l, h, len(want), T)
				}
				if d := testutil.MaxAbsDiff(full.Attn[l][h][T-1], want); d > 1e-6 {
					t.Errorf("L%dH%d: last row differs from the manual step by %g", l, h, d)
				}
			}
		}
		if full.Logits != nil || res.Logits != nil {
			t.Errorf("logits from a model whose output is its hidden state")
		}
	}
}

// RunBatch runs a single-step decoder's sequences one by one, with Run's results.
func TestStepDecoderBatch(t *testing.T) {
	s := testutil.OpenSession(t, filepath.Join(testutil.Shared(t, "fixtures"), gpt2Past))
	batch := [][]int64{{1, 2, 3}, {4, 5, 6}}
	rs, err := s.RunBatch(batch)
	if err != nil {
		t.Fatal(err)
	}
	for b, ids := range batch {
		one, err := s.Run(ids)
		if err != nil {
			t.Fatal(err)
		}
		for l := range one.Attn {
			if d := testutil.MaxAbsDiff(testutil.Flatten(rs[b].Attn[l]), testutil.Flatten(one.Attn[l])); d > 0 {
				t.Fatalf("sequence %d layer %d differs by %g", b, l, d)
			}
		}
	}
}

// Prompts a single-step decoder cannot take are refused with one sentence.
func TestStepDecoderRefusals(t *testing.T) {
	path := filepath.Join(testutil.Shared(t, "fixtures"), gpt2Past)
	s := testutil.OpenSession(t, path)
	// A past input without its present output: drop present_3 from the graph's outputs.
	m, err := onnxgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	var outs []*pb.ValueInfoProto
	for _, o := range mp.Graph.Output {
		if o.GetName() != "present_3" {
			outs = append(outs, o)
		}
	}
	mp.Graph.Output = outs
	noPresent := testutil.OpenSession(t, testutil.WriteModel(t, mp))
	// A past input whose head axis is open too: which axis grows cannot be told.
	mp.Graph.Output = append(mp.Graph.Output, &pb.ValueInfoProto{Name: proto.String("present_3")})
	for _, in := range mp.Graph.Input {
		if in.GetName() == "past_5" {
			in.GetType().GetTensorType().GetShape().GetDim()[2].Value = &pb.TensorShapeProto_Dimension_DimParam{DimParam: "heads"}
		}
	}
	twoOpen := testutil.OpenSession(t, testutil.WriteModel(t, mp))
	cases := []struct {
		name string
		run  func() error
		want string
	}{
		{"longer than the positions", func() error { _, err := s.Run(make([]int64, 9)); return err }, "the prompt has 9 tokens but the model's position table holds 8"},
		{"id past the vocabulary", func() error { _, err := s.Run([]int64{1, 20}); return err }, "token id 20 at position 1 is outside the model's vocabulary of 20 ids"},
		{"no present output", func() error { _, err := noPresent.Run([]int64{1, 2}); return err }, "its past input past_3 has no matching present output"},
		{"two open axes in a past", func() error { _, err := twoOpen.Run([]int64{1, 2}); return err }, "its past input past_5 has shape [2, batch_size, heads, seq_len, 2], with 2 axes of open length besides the batch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// fp16Step is a float16 single-step decoder (export/fixtures_fp16_step.py): float16 past and
// present state, a PyTorch float32 whole-prompt reference.
var fp16Step = filepath.Join(testutil.Root(), "testdata", "models", "fp16step")

// within reports whether every |a−b| ≤ tol, equal lengths; NaN fails.
func within(a, b []float32, tol float64) (float64, bool) {
	if len(a) != len(b) {
		return math.Inf(1), false
	}
	worst := 0.0
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if !(d <= tol) {
			return d, false
		}
		worst = max(worst, d)
	}
	return worst, true
}

// A float16 single-step decoder fed a prompt token by token gives PyTorch's whole-prompt
// attention and logits within float16 error. onnxruntime_go cannot return float16 outputs it
// allocates (it copies half their bytes and fails), so this failed at the second token
// before the session pre-allocated the present state.
func TestFloat16StepDecoderMatchesPyTorch(t *testing.T) {
	ref := testutil.ReadReference(t, fp16Step)
	s := testutil.OpenSession(t, filepath.Join(fp16Step, "model.onnx"))
	if s.Limits.Vocab != ref.VocabSize {
		t.Fatalf("vocabulary %d, want %d", s.Limits.Vocab, ref.VocabSize)
	}
	for _, run := range ref.Runs {
		res, err := s.Run(run.IDs)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Attn) != ref.NLayers {
			t.Fatalf("%d layers, want %d", len(res.Attn), ref.NLayers)
		}
		for l, want := range run.Attention {
			d, ok := within(testutil.Flatten(res.Attn[l]), want.Data, ref.AttentionTolerance())
			if !ok {
				t.Errorf("T=%d layer %d: attention differs from PyTorch's by %g > %g", len(run.IDs), l, d, ref.AttentionTolerance())
			}
			t.Logf("T=%d layer %d: attention max abs diff %.3g", len(run.IDs), l, d)
		}
		if res.Vocab != ref.VocabSize {
			t.Fatalf("T=%d: logits of width %d, want %d", len(run.IDs), res.Vocab, ref.VocabSize)
		}
		d, ok := within(res.Logits, run.Logits.Data, ref.LogitsTolerance())
		if !ok {
			t.Errorf("T=%d: logits differ from PyTorch's by %g > %g", len(run.IDs), d, ref.LogitsTolerance())
		}
		t.Logf("T=%d: logits max abs diff %.3g", len(run.IDs), d)
	}
}

// RunTensors returns a float16 decoder's present state whole (2 bytes per element), and
// feeding it back by hand gives Run's last row.
func TestFloat16StepDecoderPresentState(t *testing.T) {
	ref := testutil.ReadReference(t, fp16Step)
	s := testutil.OpenSession(t, filepath.Join(fp16Step, "model.onnx"))
	ids := ref.Runs[0].IDs
	T := len(ids)
	full, err := s.Run(ids)
	if err != nil {
		t.Fatal(err)
	}
	f16 := proto.Int32(int32(pb.TensorProto_FLOAT16))
	tensors := map[string]*pb.TensorProto{}
	for _, in := range onnxgraph.Inputs(s.Model) {
		if in.Role == onnxgraph.RolePast {
			// [batch, heads, 0, head size]: an empty past.
			tensors[in.Name] = &pb.TensorProto{Dims: []int64{1, 4, 0, 8}, DataType: f16, RawData: []byte{}}
		}
	}
	for step, id := range ids {
		tensors["input_ids"] = &pb.TensorProto{Dims: []int64{1, 1}, DataType: proto.Int32(int32(pb.TensorProto_INT64)), Int64Data: []int64{id}}
		mask := make([]int64, step+1)
		for i := range mask {
			mask[i] = 1
		}
		tensors["attention_mask"] = &pb.TensorProto{Dims: []int64{1, int64(step + 1)}, DataType: proto.Int32(int32(pb.TensorProto_INT64)), Int64Data: mask}
		res, present, err := s.RunTensors(tensors, 1)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if len(present) != 4 {
			t.Fatalf("step %d: %d present outputs, want 4", step, len(present))
		}
		for name, p := range present {
			if want := 2 * 4 * (step + 1) * 8; len(p.GetRawData()) != want || p.GetDataType() != int32(pb.TensorProto_FLOAT16) {
				t.Fatalf("step %d: %s holds %d bytes of type %d, want %d float16 bytes", step, name, len(p.GetRawData()), p.GetDataType(), want)
			}
			tensors[strings.Replace(name, "present", "past_key_values", 1)] = p
		}
		if step < T-1 {
			continue
		}
		for l := range res.Attn {
			for h := range res.Attn[l] {
				if d, ok := within(full.Attn[l][h][T-1], res.Attn[l][h][0], 0); !ok {
					t.Errorf("L%dH%d: last row differs from the manual step by %g", l, h, d)
				}
			}
		}
		if d, ok := within(full.Logits[(T-1)*res.Vocab:], res.Logits, 0); !ok {
			t.Errorf("last logits row differs from the manual step by %g", d)
		}
	}
}
