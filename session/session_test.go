package session_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
	"github.com/attnscope/attnscope/session"
)

// The attention onnxruntime returns through the rewritten graph equals PyTorch's own, at
// two sequence lengths in one session, for every committed model; so do the logits.
func TestAttentionMatchesPyTorch(t *testing.T) {
	for _, dir := range testutil.Models(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			ref := testutil.ReadReference(t, dir)
			s := testutil.OpenSession(t, filepath.Join(dir, "model.onnx"))
			runs := ref.PlainRuns()
			switch {
			case len(runs) == 0:
				t.Fatal("the reference has no run without a prefix")
			case len(runs) == 1 && len(ref.Runs) == 1, len(runs) > 1 && len(runs[0].IDs) == len(runs[1].IDs):
				t.Fatal("the reference needs runs at two sequence lengths")
			}
			// Run each length twice: the second pass writes into the buffers the first pass
			// recycled, which must give the same numbers.
			for pass := 0; pass < 2; pass++ {
				for _, run := range runs {
					res, err := s.Run(run.IDs)
					if run.DecoderIDs != nil { // an encoder–decoder: source and target
						res, err = s.RunPair(run.IDs, run.DecoderIDs)
					}
					if err != nil {
						t.Fatal(err)
					}
					if len(res.Attn) != ref.NLayers {
						t.Fatalf("%d layers, want %d", len(res.Attn), ref.NLayers)
					}
					for l, want := range run.Attention {
						if res.Heads(l) != ref.NHeads {
							t.Fatalf("layer %d has %d heads, want %d", l, res.Heads(l), ref.NHeads)
						}
						if d, tol := testutil.MaxAbsDiff(testutil.Flatten(res.Attn[l]), want.Data), ref.AttentionTolerance(); d > tol {
							t.Errorf("T=%d layer %d: max abs diff %.3g > %g", len(run.IDs), l, d, tol)
						}
					}
					if res.Vocab != ref.VocabSize {
						t.Fatalf("logits vocabulary %d, want %d", res.Vocab, ref.VocabSize)
					}
					if d, tol := testutil.MaxAbsDiff(res.Logits, run.Logits.Data), ref.LogitsTolerance(); d > tol {
						t.Errorf("T=%d logits: max abs diff %.3g > %g", len(run.IDs), d, tol)
					}
					if pass == 0 {
						s.Recycle(res)
					}
				}
			}
		})
	}
}

// A model decoded and re-encoded by our protobuf types gives bit-identical logits and
// attention: the subset schema loses nothing onnxruntime uses.
func TestRoundTripRunsIdentically(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "gpt2tiny")
	ref := testutil.ReadReference(t, dir)
	orig := testutil.OpenSession(t, filepath.Join(dir, "model.onnx"))
	m, err := onnxgraph.Load(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	again := testutil.OpenSession(t, testutil.WriteModel(t, mp))
	ids := ref.Runs[1].IDs
	a, err := orig.Run(ids)
	if err != nil {
		t.Fatal(err)
	}
	b, err := again.Run(ids)
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.MaxAbsDiff(a.Logits, b.Logits); d != 0 {
		t.Fatalf("logits differ after a round trip (max abs diff %g)", d)
	}
	for l := range a.Attn {
		if d := testutil.MaxAbsDiff(testutil.Flatten(a.Attn[l]), testutil.Flatten(b.Attn[l])); d != 0 {
			t.Fatalf("layer %d attention differs after a round trip", l)
		}
	}
}

// onnxruntime's optimiser must keep every exposed Softmax: the optimised graph still has
// them, and the attention outputs come from them.
func TestOptimiserKeepsSoftmax(t *testing.T) {
	testutil.RequireORT(t)
	for _, name := range []string{"gpt2tiny", "bert"} {
		t.Run(name, func(t *testing.T) {
			m, err := onnxgraph.Load(filepath.Join(testutil.Root(), "testdata", "models", name, "model.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			optimized := filepath.Join(t.TempDir(), "optimized.onnx")
			s, err := session.Open(m, session.Options{Device: "cpu", OptimizedModelPath: optimized})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			// The optimised graph points at the weights in the original file; only its
			// structure matters here.
			data, err := os.ReadFile(optimized)
			if err != nil {
				t.Fatal(err)
			}
			om, err := onnxgraph.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			att, err := onnxgraph.FindAttention(om)
			if err != nil {
				t.Fatalf("the optimised graph lost its attention: %v", err)
			}
			if len(att.Sites) != len(s.Attention.Sites) {
				t.Fatalf("optimised graph has %d softmax sites, want %d", len(att.Sites), len(s.Attention.Sites))
			}
		})
	}
}

// Every model of ../shared/fixtures/MANIFEST.md runs from token ids and gives the
// manifest's layer and head counts with rows that sum to 1 — decomposed, fused by
// onnxruntime's optimizer (com.microsoft.Attention, rewritten), built by the model builder
// (MultiHeadAttention, float16, external data, 1 head), single-step with past (run token by
// token) — or is refused with the sentence its trap calls for. (The ONNX Attention test
// cases, which take Q, K, V rather than ids, are in TestONNXAttentionFixtures; the
// Vespa decoder with its encoder in TestVespaEncoderDecoderPair.)
func TestSharedFixturesRun(t *testing.T) {
	root := testutil.Shared(t, "fixtures")
	cases := []struct {
		path    string
		ids     []int64
		layers  int
		heads   int
		wantErr string
	}{
		{path: "ort-bert-toy-torch11/bert_toy_optimized.onnx", ids: []int64{1, 5, 9, 33, 2, 98}, layers: 5, heads: 4},
		{path: "optimum-tiny-distilbert/model.onnx", ids: []int64{101, 7592, 2088, 102}, layers: 2, heads: 2},
		{path: "ezkl-nanogpt/network.onnx", ids: seq(64, 65), layers: 4, heads: 4},
		{path: "ort-gpt2-past-torch16/gpt2_past.onnx", ids: []int64{7}, layers: 12, heads: 2},
		{path: "ort-gpt2-past-torch16/gpt2_past.onnx", ids: []int64{7, 3, 19, 0, 5, 5, 11, 2}, layers: 12, heads: 2},
		{path: "ort-gpt2-past-torch16/gpt2_past.onnx", ids: seq(9, 20), wantErr: "position table holds 8"},
		{path: "genai-tiny-gpt2-msattn/past.onnx", ids: seq(12, 1000), layers: 5, heads: 4},
		{path: "genai-tiny-gpt2-msattn/past.onnx", ids: []int64{50256}, wantErr: "outside the model's vocabulary of 1000"},
		{path: "genai-tiny-llama-fp16-mha-extdata/model.onnx", ids: seq(10, 32000), layers: 2, heads: 1},
		{path: "ort-attn-past-u8s8-quant/attention_past_state.u8s8.onnx", ids: []int64{1}, wantErr: "weight (int8[768 2304])"},
		{path: "vespa-random-enc-dec/random_encoder.onnx", ids: []int64{3, 14, 15, 92, 65}, layers: 1, heads: 1},
		{path: "ezkl-nanogpt/network.onnx", ids: seq(10, 65), wantErr: "exactly 64 tokens"},
		{path: "ort-attn-past-u8s8-quant/attention_past_state.onnx", ids: []int64{1}, wantErr: "weight (float[768 2304])"},
		{path: "vespa-random-enc-dec/random_decoder.onnx", ids: []int64{1, 2}, wantErr: "encoder_hidden_states"},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			s := testutil.OpenSession(t, filepath.Join(root, c.path))
			res, err := s.Run(c.ids)
			if testutil.ExpectError(t, err, c.wantErr) {
				return
			}
			if len(res.Attn) != c.layers {
				t.Fatalf("%d layers, want %d", len(res.Attn), c.layers)
			}
			for l := range res.Attn {
				if res.Heads(l) != c.heads {
					t.Fatalf("layer %d: %d heads, want %d", l, res.Heads(l), c.heads)
				}
				checkRows(t, res.Attn[l], 1e-5)
			}
		})
	}
}

func seq(n int, vocab int64) []int64 {
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(i*7+3) % vocab
	}
	return ids
}

func checkRows(t *testing.T, heads [][][]float32, tol float64) {
	t.Helper()
	for h, rows := range heads {
		for q, row := range rows {
			sum := 0.0
			for _, v := range row {
				sum += float64(v)
			}
			if testutil.Diff(sum, 1) > tol {
				t.Fatalf("head %d row %d sums to %g", h, q, sum)
			}
		}
	}
}

// The ONNX Attention test cases give their expected probabilities once rewritten to
// qk_matmul_output_mode 3 (they hold scores, or nothing, in the other modes).
func TestONNXAttentionFixtures(t *testing.T) {
	root := testutil.Shared(t, "fixtures")
	cases := []struct {
		dir      string
		expected int // index of the expected output holding probabilities; -1 when none
		tol      float64
	}{
		{"onnx23-4d-qk-softmax", 1, 1e-5},
		{"onnx23-4d-qk-softmax/expanded", 1, 1e-5},
		{"onnx23-4d-qk-matmul-mode0", -1, 1e-5},
		{"onnx23-3d-causal", -1, 1e-5},
		{"onnx23-4d-fp16", -1, 1e-2},
	}
	for _, c := range cases {
		t.Run(c.dir, func(t *testing.T) {
			dir := filepath.Join(root, c.dir)
			s := testutil.OpenSession(t, filepath.Join(dir, "model.onnx"))
			data := filepath.Join(dir, "test_data_set_0")
			if _, err := os.Stat(data); err != nil {
				data = filepath.Join(dir, "..", "test_data_set_0")
			}
			inputs := map[string]*pb.TensorProto{}
			for i, in := range onnxgraph.Inputs(s.Model) {
				inputs[in.Name] = readTensor(t, filepath.Join(data, "input_"+strconv.Itoa(i)+".pb"))
			}
			res, _, err := s.RunTensors(inputs, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Attn) != 1 || res.Heads(0) != 3 {
				t.Fatalf("got %d layers / %d heads, want 1 / 3", len(res.Attn), res.Heads(0))
			}
			// Batch 2 in these test cases: the first batch element's heads come back.
			checkRows(t, res.Attn[0], c.tol)
			if c.expected >= 0 {
				want := readTensor(t, filepath.Join(data, "output_"+strconv.Itoa(c.expected)+".pb"))
				got := testutil.Flatten(res.Attn[0])
				if d := testutil.MaxAbsDiff(got, floats(want)[:len(got)]); d > c.tol {
					t.Fatalf("max abs diff %g from the expected qk_matmul_output", d)
				}
			}
		})
	}
}

func readTensor(t *testing.T, path string) *pb.TensorProto {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tp := &pb.TensorProto{}
	if err := proto.Unmarshal(b, tp); err != nil {
		t.Fatal(err)
	}
	return tp
}

func floats(tp *pb.TensorProto) []float32 {
	if raw := tp.GetRawData(); raw != nil {
		out := make([]float32, len(raw)/4)
		for i := range out {
			out[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		return out
	}
	return tp.GetFloatData()
}

// Bad prompts are refused before running, by every way of running ids (Run, RunPair,
// RunBatch, a single-step decoder's steps), each with an *IDsError whose one sentence states
// the limit and names no flag.
func TestRunsRefuseBadIDs(t *testing.T) {
	models := filepath.Join(testutil.Root(), "testdata", "models")
	gpt2 := testutil.OpenSession(t, filepath.Join(models, "gpt2tiny", "model.onnx"))                                // 128 ids, 64 positions
	encdec := testutil.OpenSession(t, filepath.Join(models, "encdec", "model.onnx"))                                // 64 ids, 32 positions
	step := testutil.OpenSession(t, filepath.Join(models, "fp16step", "model.onnx"))                                // 64 ids, 32 positions
	fixed := testutil.OpenSession(t, filepath.Join(testutil.Shared(t, "fixtures"), "ezkl-nanogpt", "network.onnx")) // exactly 64 tokens
	n := func(k int) []int64 { return make([]int64, k) }
	cases := []struct {
		name    string
		run     func() error
		problem session.IDsProblem
		limit   int
		want    string
	}{
		{"Run: empty", func() error { _, err := gpt2.Run(nil); return err }, session.NoIDs, 0, "no tokens to run: the prompt is empty"},
		{"Run: id past the vocabulary", func() error { _, err := gpt2.Run([]int64{1, 2, 128}); return err }, session.OutOfVocab, 128, "token id 128 at position 2 is outside the model's vocabulary of 128 ids (0…127)"},
		{"Run: negative id", func() error { _, err := gpt2.Run([]int64{-1}); return err }, session.OutOfVocab, 128, "token id -1 at position 0 is outside"},
		{"Run: past the positions", func() error { _, err := gpt2.Run(n(65)); return err }, session.TooLong, 64, "the prompt has 65 tokens but the model's position table holds 64"},
		{"Run: not the fixed length", func() error { _, err := fixed.Run(n(10)); return err }, session.WrongLength, 64, "the model takes exactly 64 tokens (its input has a fixed length), but the prompt has 10"},
		{"RunBatch: one sequence past the positions", func() error { _, err := gpt2.RunBatch([][]int64{n(65), n(65)}); return err }, session.TooLong, 64, "the prompt has 65 tokens but the model's position table holds 64"},
		{"RunBatch: an id past the vocabulary", func() error { _, err := gpt2.RunBatch([][]int64{{1, 2}, {3, 200}}); return err }, session.OutOfVocab, 128, "token id 200 at position 1"},
		{"RunPair: source past the positions", func() error { _, err := encdec.RunPair(n(33), n(3)); return err }, session.TooLong, 32, "the source has 33 tokens but the model's position table holds 32"},
		{"RunPair: target past the positions", func() error { _, err := encdec.RunPair(n(3), n(40)); return err }, session.TooLong, 32, "the target has 40 tokens but the model's position table holds 32"},
		{"Run on an encoder–decoder: past the positions", func() error { _, err := encdec.Run(n(33)); return err }, session.TooLong, 32, "the source has 33 tokens"},
		{"RunBatch on an encoder–decoder", func() error { _, err := encdec.RunBatch([][]int64{n(33)}); return err }, session.TooLong, 32, "the source has 33 tokens"},
		{"steps: past the positions", func() error { _, err := step.Run(n(33)); return err }, session.TooLong, 32, "the prompt has 33 tokens but the model's position table holds 32"},
		{"steps in a batch: past the positions", func() error { _, err := step.RunBatch([][]int64{n(33), n(33)}); return err }, session.TooLong, 32, "the prompt has 33 tokens"},
		{"steps: id past the vocabulary", func() error { _, err := step.Run([]int64{5, 64}); return err }, session.OutOfVocab, 64, "token id 64 at position 1 is outside the model's vocabulary of 64 ids"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			var ie *session.IDsError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v, want an *IDsError", err)
			}
			msg := err.Error()
			if ie.Problem != c.problem || ie.Limit != c.limit || !strings.Contains(msg, c.want) {
				t.Errorf("error %q (problem %d, limit %d), want problem %d, limit %d and a message containing %q", msg, ie.Problem, ie.Limit, c.problem, c.limit, c.want)
			}
			if strings.Contains(msg, "--") || strings.Contains(msg, "\n") {
				t.Errorf("error %q names a flag or runs over lines", msg)
			}
		})
	}
}

func TestDeviceCUDAWithoutCUDA(t *testing.T) {
	testutil.RequireORT(t)
	if ok, _ := session.CUDAStatus(); ok {
		// legitimate skip: this machine has CUDA, so there is no "CUDA unavailable" error to check
		t.Skip("skipping: this machine has CUDA")
	}
	m, err := onnxgraph.Load(filepath.Join(testutil.Root(), "testdata", "models", "attn1l", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = session.Open(m, session.Options{Device: "cuda"})
	var de *session.DeviceError
	if !errors.As(err, &de) || de.Device != "cuda" || de.Reason == "" || !strings.HasPrefix(err.Error(), "the cuda device was asked for but CUDA is not available (") || strings.Contains(err.Error(), "--") {
		t.Fatalf("error %v", err)
	}
	s, err := session.Open(m, session.Options{Device: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Device != "CPU" {
		t.Fatalf("auto picked %s on a machine without CUDA", s.Device)
	}
}

// A model whose weights live in an external-data file runs from another working directory,
// and gives the same attention as the single-file model.
func TestExternalData(t *testing.T) {
	testutil.RequireORT(t)
	dir := filepath.Join(testutil.Root(), "testdata", "models", "attn2l")
	ref := testutil.ReadReference(t, dir)
	m, err := onnxgraph.Load(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	var blob []byte
	for _, init := range mp.Graph.Initializer {
		raw := init.GetRawData()
		if len(raw) < 1024 {
			continue
		}
		init.ExternalData = []*pb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String("model.onnx.data")},
			{Key: proto.String("offset"), Value: proto.String(strconv.Itoa(len(blob)))},
			{Key: proto.String("length"), Value: proto.String(strconv.Itoa(len(raw)))},
		}
		init.DataLocation = pb.TensorProto_EXTERNAL.Enum()
		init.RawData = nil
		blob = append(blob, raw...)
	}
	if len(blob) == 0 {
		t.Fatal("no initializer moved out")
	}
	out := t.TempDir()
	data, _ := proto.Marshal(mp)
	os.WriteFile(filepath.Join(out, "model.onnx"), data, 0o644)
	os.WriteFile(filepath.Join(out, "model.onnx.data"), blob, 0o644)
	s := testutil.OpenSession(t, filepath.Join(out, "model.onnx"))
	res, err := s.Run(ref.Runs[0].IDs)
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.MaxAbsDiff(testutil.Flatten(res.Attn[1]), ref.Runs[0].Attention[1].Data); d > 1e-5 {
		t.Fatalf("max abs diff %g", d)
	}
	os.Remove(filepath.Join(out, "model.onnx.data"))
	if _, err := onnxgraph.Load(filepath.Join(out, "model.onnx")); err == nil || !strings.Contains(err.Error(), "model.onnx.data, which is missing") {
		t.Fatalf("error %v for a missing data file", err)
	}
}

// A library that is not there is a *LibraryError whose sentence names no flag: the path
// given, or every place the search looked.
func TestMissingLibrary(t *testing.T) {
	_, err := session.FindLibrary("/nonexistent/libonnxruntime.so")
	var le *session.LibraryError
	if !errors.As(err, &le) || !le.Given || le.Path != "/nonexistent/libonnxruntime.so" || err.Error() != "the onnxruntime library /nonexistent/libonnxruntime.so does not exist" {
		t.Fatalf("error %v", err)
	}
	t.Setenv(session.LibraryEnv, "/nonexistent/env/libonnxruntime.so")
	t.Chdir(t.TempDir()) // no ./lib
	_, err = session.FindLibrary("")
	if err == nil {
		// legitimate skip: a system-wide onnxruntime is found by the search and cannot be removed by the test; the given-path half above still ran
		t.Skip("skipping: an onnxruntime library is installed system-wide")
	}
	if !errors.As(err, &le) || le.Given || len(le.Tried) == 0 || le.Tried[0] != "/nonexistent/env/libonnxruntime.so" {
		t.Fatalf("error %v (%#v)", err, le)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "no onnxruntime library found (looked at /nonexistent/env/libonnxruntime.so, ") || strings.Contains(msg, "--") || strings.Contains(msg, "make setup") {
		t.Errorf("error %q", msg)
	}
}
