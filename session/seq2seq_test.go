package session_test

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/session"
)

const vespa = "vespa-random-enc-dec"

// encoderHidden runs the encoder at path (input_ids and attention_mask in,
// last_hidden_state out) on ids with onnxruntime itself (the library a session already
// loaded) and returns its last_hidden_state [1, len(ids), width].
func encoderHidden(t *testing.T, path string, ids []int64, width int64) []float32 {
	t.Helper()
	sess, err := ort.NewDynamicAdvancedSession(path, []string{"input_ids", "attention_mask"}, []string{"last_hidden_state"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Destroy()
	shape := ort.NewShape(1, int64(len(ids)))
	in, err := ort.NewTensor(shape, slices.Clone(ids))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	mask, err := ort.NewTensor(shape, slices.Repeat([]int64{1}, len(ids)))
	if err != nil {
		t.Fatal(err)
	}
	defer mask.Destroy()
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(1, int64(len(ids)), width))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Destroy()
	if err := sess.Run([]ort.Value{in, mask}, []ort.Value{out}); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(out.GetData())
}

// floatTensor is a float32 TensorProto of the given shape.
func floatTensor(dims []int64, vals []float32) *pb.TensorProto {
	raw := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	return &pb.TensorProto{Dims: dims, DataType: proto.Int32(int32(pb.TensorProto_FLOAT)), RawData: raw}
}

func int64Tensor(dims []int64, vals []int64) *pb.TensorProto {
	return &pb.TensorProto{Dims: dims, DataType: proto.Int32(int32(pb.TensorProto_INT64)), Int64Data: vals}
}

// vespaTwoStage runs Vespa's encoder on src with Run (its attention) and with onnxruntime
// directly (its last_hidden_state, which is not logits, so Run does not return it), and
// feeds that and an all-zero additive encoder_attention_mask to the decoder on tgt with
// RunTensors.
func vespaTwoStage(t *testing.T, src, tgt []int64) (enc, dec *result.Result, decSess *session.Session) {
	t.Helper()
	root := testutil.Shared(t, "fixtures")
	encPath := filepath.Join(root, vespa, "random_encoder.onnx")
	encSess := testutil.OpenSession(t, encPath)
	decSess = testutil.OpenSession(t, filepath.Join(root, vespa, "random_decoder.onnx"))
	enc, err := encSess.Run(src)
	if err != nil {
		t.Fatal(err)
	}
	S, T := int64(len(src)), int64(len(tgt))
	if enc.Logits != nil {
		t.Fatalf("the encoder's last_hidden_state came back as %d logits of width %d", len(enc.Logits), enc.Vocab)
	}
	hidden := encoderHidden(t, encPath, src, 8)
	dec, _, err = decSess.RunTensors(map[string]*pb.TensorProto{
		"input_ids":              int64Tensor([]int64{1, T}, tgt),
		"encoder_attention_mask": floatTensor([]int64{1, S}, make([]float32, S)),
		"encoder_hidden_states":  floatTensor([]int64{1, S, 8}, hidden),
	}, len(tgt))
	if err != nil {
		t.Fatal(err)
	}
	return enc, dec, decSess
}

// Vespa's encoder and decoder, run apart and joined by hand: every row sums to 1, the
// decoder's self-attention is [target, target] and its cross-attention [target, source].
func TestVespaEncoderDecoderPair(t *testing.T) {
	src, tgt := []int64{3, 14, 15, 92, 65}, []int64{2, 7, 1}
	enc, dec, decSess := vespaTwoStage(t, src, tgt)
	if len(enc.Attn) != 1 || len(dec.Attn) != 2 {
		t.Fatalf("%d encoder and %d decoder layers, want 1 and 2", len(enc.Attn), len(dec.Attn))
	}
	checkRows(t, enc.Attn[0], 1e-5)
	for l, site := range decSess.Attention.Sites {
		checkRows(t, dec.Attn[l], 1e-5)
		wantK := len(tgt)
		if strings.Contains(site.Node, "multihead_attn") {
			wantK = len(src)
			if !site.Cross {
				t.Errorf("layer %d (%s) is cross-attention but not marked Cross", l, site.Node)
			}
		} else if site.Cross {
			t.Errorf("layer %d (%s) is self-attention but marked Cross", l, site.Node)
		}
		for h, rows := range dec.Attn[l] {
			if len(rows) != len(tgt) || len(rows[0]) != wantK {
				t.Fatalf("layer %d head %d is [%d,%d], want [%d,%d]", l, h, len(rows), len(rows[0]), len(tgt), wantK)
			}
		}
	}
	if dec.Vocab != 10000 || len(dec.Logits) != len(tgt)*10000 {
		t.Fatalf("decoder logits: %d values of width %d", len(dec.Logits), dec.Vocab)
	}
}

// An encoder–decoder in one graph runs on a source and a target: its encoder layer is
// [source, source], its decoder's self-attention [target, target] and its cross-attention
// [target, source], each equal to the two-stage run.
func TestRunPair(t *testing.T) {
	s := testutil.OpenSession(t, testutil.MergedVespa(t))
	if !s.Seq2Seq() {
		t.Fatal("the merged encoder–decoder is not seen as one")
	}
	src, tgt := []int64{3, 14, 15, 92, 65}, []int64{2, 7, 1}
	_, dec, _ := vespaTwoStage(t, src, tgt)
	enc2, _, _ := vespaTwoStage(t, src, tgt)
	for round := 0; round < 2; round++ {
		res, err := s.RunPair(src, tgt)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Source, src) || !slices.Equal(res.Tokens, tgt) {
			t.Fatalf("source %v, tokens %v", res.Source, res.Tokens)
		}
		if len(res.Attn) != 3 {
			t.Fatalf("%d layers, want 3", len(res.Attn))
		}
		if msg := res.Degenerate(); msg != "" {
			t.Error(msg)
		}
		want := [][]float32{testutil.Flatten(enc2.Attn[0]), testutil.Flatten(dec.Attn[0]), testutil.Flatten(dec.Attn[1])}
		cases := []struct {
			q, k  []int64
			cross bool
		}{{src, src, false}, {tgt, tgt, false}, {tgt, src, true}}
		for l, c := range cases {
			if !slices.Equal(res.QueryTokens(l), c.q) || !slices.Equal(res.KeyTokens(l), c.k) || res.Cross(l) != c.cross {
				t.Errorf("layer %d: queries %v, keys %v, cross %v; want %v, %v, %v", l, res.QueryTokens(l), res.KeyTokens(l), res.Cross(l), c.q, c.k, c.cross)
			}
			rows := res.Attn[l][0]
			if len(rows) != len(c.q) || len(rows[0]) != len(c.k) {
				t.Fatalf("layer %d is [%d,%d], want [%d,%d]", l, len(rows), len(rows[0]), len(c.q), len(c.k))
			}
			checkRows(t, res.Attn[l], 1e-5)
			if d := testutil.MaxAbsDiff(testutil.Flatten(res.Attn[l]), want[l]); d > 1e-5 {
				t.Errorf("layer %d differs from the two-stage run by %g", l, d)
			}
		}
		if d := testutil.MaxAbsDiff(res.Logits, dec.Logits); d > 1e-4 {
			t.Errorf("logits differ from the two-stage run by %g", d)
		}
		s.Recycle(res)
	}
	// Run uses one sequence as both; so does RunBatch, sequence by sequence.
	one, err := s.Run(src)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(one.Source, src) || !slices.Equal(one.Tokens, src) || !one.Cross(2) {
		t.Fatalf("Run: source %v, tokens %v, cross %v", one.Source, one.Tokens, one.Cross(2))
	}
	pair, err := s.RunPair(src, src)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := s.RunBatch([][]int64{src, {1, 2, 3, 4, 5}})
	if err != nil {
		t.Fatal(err)
	}
	for l := range pair.Attn {
		if d := testutil.MaxAbsDiff(testutil.Flatten(one.Attn[l]), testutil.Flatten(pair.Attn[l])); d > 0 {
			t.Errorf("layer %d: Run differs from RunPair(ids, ids) by %g", l, d)
		}
		if d := testutil.MaxAbsDiff(testutil.Flatten(rs[0].Attn[l]), testutil.Flatten(pair.Attn[l])); d > 1e-5 {
			t.Errorf("layer %d: RunBatch differs from RunPair(ids, ids) by %g", l, d)
		}
	}
	if !slices.Equal(rs[1].Source, []int64{1, 2, 3, 4, 5}) || !rs[1].Cross(2) {
		t.Errorf("batch result: source %v, cross %v", rs[1].Source, rs[1].Cross(2))
	}
}

// Two sequences are refused, each with one sentence, where they do not fit.
func TestRunPairErrors(t *testing.T) {
	pair := testutil.OpenSession(t, testutil.MergedVespa(t))
	single := testutil.OpenSession(t, filepath.Join(testutil.Root(), "testdata", "models", "attn1l", "model.onnx"))
	cases := []struct {
		name string
		s    *session.Session
		src  []int64
		tgt  []int64
		want string
	}{
		{"one-sequence model", single, []int64{1}, []int64{2}, "takes one sequence of token ids"},
		{"empty target", pair, []int64{1}, nil, "no tokens to run: the target is empty"},
		{"negative source id", pair, []int64{1, -1}, []int64{1}, "token id -1 at position 1 of the source is outside"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.s.RunPair(c.src, c.tgt)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if single.Seq2Seq() {
		t.Error("a one-sequence model is seen as an encoder–decoder")
	}
}

// The committed encoder–decoder (testdata/models/encdec) matches PyTorch on source and
// target runs.
func TestEncDecMatchesPyTorch(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "encdec")
	ref := testutil.ReadReference(t, dir)
	s := testutil.OpenSession(t, filepath.Join(dir, "model.onnx"))
	if !s.Seq2Seq() {
		t.Fatal("encdec is not seen as an encoder–decoder")
	}
	for i, run := range ref.Runs {
		if run.DecoderIDs == nil {
			t.Fatalf("run %d has no decoder_ids", i)
		}
		res, err := s.RunPair(run.IDs, run.DecoderIDs)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Attn) != len(run.Attention) {
			t.Fatalf("run %d: %d layers, want %d", i, len(res.Attn), len(run.Attention))
		}
		for l, want := range run.Attention {
			if d := testutil.MaxAbsDiff(testutil.Flatten(res.Attn[l]), want.Data); d > 1e-5 {
				t.Errorf("run %d layer %d: max abs diff %.3g > 1e-5", i, l, d)
			}
			if res.Cross(l) && (len(res.Attn[l][0]) != len(run.DecoderIDs) || len(res.Attn[l][0][0]) != len(run.IDs)) {
				t.Errorf("run %d cross layer %d is not [target, source]", i, l)
			}
		}
	}
}
