package session_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
	"github.com/attnscope/attnscope/session"
	"google.golang.org/protobuf/proto"
)

// openAblation opens a CPU session with ablation inputs (and mean ablation's with mean).
func openAblation(t *testing.T, path string, mean bool) *session.Session {
	t.Helper()
	testutil.RequireORT(t)
	m, err := onnxgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Open(m, session.Options{Device: "cpu", Ablation: true, Mean: mean})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// With nothing off, a session with ablation inputs gives what a plain session gives; a
// head switched off keeps the layers before it and its own map (the exposed map is the
// head's pattern before the mask) and changes the logits; a batch of ablations equals the
// same ablations run one by one.
func TestAblationMechanics(t *testing.T) {
	for _, name := range []string{"attn1l", "attn2l", "gpt2tiny", "gpt2tiny-op14", "bert", "encdec", "fp16"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(testutil.Root(), "testdata", "models", name, "model.onnx")
			plain := testutil.OpenSession(t, path)
			s := openAblation(t, path, true)
			ids := seq(9, int64(s.Limits.Vocab))
			want, err := plain.Run(ids)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Run(ids)
			if err != nil {
				t.Fatal(err)
			}
			if d := testutil.MaxAbsDiff(got.Logits, want.Logits); d > 1e-6 {
				t.Fatalf("nothing off: logits differ from a plain session's by %.3g", d)
			}
			last := len(s.Attention.Sites) - 1
			for l := range s.Attention.Sites {
				if err := s.CanAblate(l, ablate.Mean); err != nil {
					t.Fatalf("layer %d: %v", l, err)
				}
			}
			if len(got.Z) != len(got.Attn) {
				t.Fatalf("%d z outputs for %d layers", len(got.Z), len(got.Attn))
			}
			off := &ablate.Ablation{Off: []ablate.Head{{Layer: 0, Head: 1}}}
			abl, err := s.RunAblations(ids, []*ablate.Ablation{nil, off, {Off: []ablate.Head{{Layer: last, Head: 0}}}})
			if err != nil {
				t.Fatal(err)
			}
			if d := testutil.MaxAbsDiff(abl[0].Logits, want.Logits); d > 1e-5 {
				t.Errorf("the batch's plain run differs from a plain run by %.3g", d)
			}
			if d := testutil.MaxAbsDiff(testutil.Flatten(abl[1].Attn[0]), testutil.Flatten(want.Attn[0])); d > 1e-5 {
				t.Errorf("ablating L0H1 changed layer 0's exposed maps by %.3g", d)
			}
			if d := testutil.MaxAbsDiff(abl[1].Logits, want.Logits); d < 1e-4 {
				t.Errorf("ablating L0H1 changed the logits by only %.3g", d)
			}
			if err := s.SetAblation(off); err != nil {
				t.Fatal(err)
			}
			one, err := s.Run(ids)
			if err != nil {
				t.Fatal(err)
			}
			if d := testutil.MaxAbsDiff(one.Logits, abl[1].Logits); d > 1e-5 {
				t.Errorf("SetAblation + Run differs from the batch's run by %.3g", d)
			}
			if err := s.SetAblation(nil); err != nil {
				t.Fatal(err)
			}
			again, err := s.Run(ids)
			if err != nil {
				t.Fatal(err)
			}
			if d := testutil.MaxAbsDiff(again.Logits, want.Logits); d > 1e-6 {
				t.Errorf("after SetAblation(nil) the logits differ from a plain run's by %.3g", d)
			}
		})
	}
}

// Mean ablation replaces a head's z by its mean over the positions: on a one-token prompt
// that mean is z itself, so nothing changes; on a longer prompt the ablated head's z is the
// same at every position.
func TestMeanAblationReplacesZ(t *testing.T) {
	path := filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx")
	s := openAblation(t, path, true)
	for _, T := range []int{1, 7} {
		ids := seq(T, int64(s.Limits.Vocab))
		clean, err := s.Run(ids)
		if err != nil {
			t.Fatal(err)
		}
		means, err := ablate.MeanZ(clean)
		if err != nil {
			t.Fatal(err)
		}
		a := &ablate.Ablation{Off: []ablate.Head{{Layer: 1, Head: 2}}, Mode: ablate.Mean, ZMean: means}
		res, err := s.RunAblations(ids, []*ablate.Ablation{a})
		if err != nil {
			t.Fatal(err)
		}
		d := testutil.MaxAbsDiff(res[0].Logits, clean.Logits)
		if T == 1 && d > 1e-5 {
			t.Errorf("T=1: mean ablation changed the logits by %.3g", d)
		}
		if T > 1 && d < 1e-4 {
			t.Errorf("T=%d: mean ablation changed the logits by only %.3g", T, d)
		}
		z := res[0].Z[1]
		dh := len(z) / (res[0].Heads(1) * T)
		for q := 0; q < T; q++ {
			row := z[(2*T+q)*dh : (2*T+q+1)*dh]
			if d := testutil.MaxAbsDiff(row, means[1][2*dh:3*dh]); d > 1e-6 {
				t.Fatalf("T=%d: the ablated head's z at position %d differs from its mean by %.3g", T, q, d)
			}
		}
	}
}

// Heads that cannot be switched off get one sentence: a head the layer lacks, a fused
// kernel, a session opened without ablation inputs, mean ablation without the means.
func TestAblationRefusals(t *testing.T) {
	path := filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx")
	s := openAblation(t, path, false)
	cases := []struct {
		name string
		a    *ablate.Ablation
		want string
	}{
		{"head out of range", &ablate.Ablation{Off: []ablate.Head{{Layer: 0, Head: 9}}}, "layer 0 has 4 heads"},
		{"layer out of range", &ablate.Ablation{Off: []ablate.Head{{Layer: 5, Head: 0}}}, "no layer 5"},
		{"mean in a zero session", &ablate.Ablation{Off: []ablate.Head{{Layer: 0, Head: 0}}, Mode: ablate.Mean}, "zero ablation only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			testutil.ExpectError(t, s.SetAblation(c.a), c.want)
		})
	}
	plain := testutil.OpenSession(t, path)
	testutil.ExpectError(t, plain.CanAblate(0, ablate.Zero), "without ablation inputs")
	mean := openAblation(t, path, true)
	testutil.ExpectError(t, mean.SetAblation(&ablate.Ablation{Off: []ablate.Head{{Layer: 0, Head: 0}}, Mode: ablate.Mean}), "needs the layer's mean outputs")
	gqa := openAblation(t, filepath.Join(testutil.Root(), "testdata", "models", "gqa", "model.onnx"), false)
	err := gqa.CanAblate(0, ablate.Zero)
	if err == nil || !strings.Contains(err.Error(), "GQA") {
		t.Errorf("GQA layer: %v, want a refusal naming the fused form", err)
	}
}

// With every head off, an attention-only model without LayerNorm or attention biases is
// its direct path: logits = (W_E[ids] + W_pos[0…T−1]) · W_U, computed here from the
// weights in the ONNX file (the unembedding is the MatMul that writes the logits).
func TestAblateAllIsTheDirectPath(t *testing.T) {
	for _, name := range []string{"attn1l", "attn2l"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(testutil.Root(), "testdata", "models", name, "model.onnx")
			m, err := onnxgraph.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			data, err := m.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			mp := &pb.ModelProto{}
			if err := proto.Unmarshal(data, mp); err != nil {
				t.Fatal(err)
			}
			inits := map[string]*pb.TensorProto{}
			for _, in := range mp.GetGraph().GetInitializer() {
				inits[in.GetName()] = in
			}
			var unembed *pb.TensorProto
			for _, n := range mp.GetGraph().GetNode() {
				if n.GetOpType() == "Add" && len(n.GetInput()) == 2 && (inits[n.GetInput()[0]] != nil || inits[n.GetInput()[1]] != nil) {
					t.Fatalf("the model has a bias (%s): the direct path would need it", n.GetName())
				}
				if n.GetOpType() == "MatMul" && n.GetOutput()[0] == "logits" {
					unembed = inits[n.GetInput()[1]]
				}
			}
			embed, pos := inits["model.embed.weight"], inits["model.pos_embed.weight"]
			if unembed == nil || embed == nil || pos == nil {
				t.Fatal("cannot find W_E, W_pos and W_U in the model")
			}
			WE, WP, WU := floats(embed), floats(pos), floats(unembed)
			d, V := int(embed.GetDims()[1]), int(unembed.GetDims()[1])

			s := openAblation(t, path, false)
			ids := seq(11, int64(s.Limits.Vocab))
			heads, err := ablate.ParseHeads("all", s.HeadCounts())
			if err != nil {
				t.Fatal(err)
			}
			rs, err := s.RunAblations(ids, []*ablate.Ablation{{Off: heads}, nil})
			if err != nil {
				t.Fatal(err)
			}
			want := make([]float32, len(ids)*V)
			for p, id := range ids {
				for v := 0; v < V; v++ {
					sum := 0.0
					for k := 0; k < d; k++ {
						sum += float64(WE[int(id)*d+k]+WP[p*d+k]) * float64(WU[k*V+v])
					}
					want[p*V+v] = float32(sum)
				}
			}
			if d := testutil.MaxAbsDiff(rs[0].Logits, want); d > 1e-5 {
				t.Errorf("every head off: logits differ from the direct path by %.3g", d)
			}
			if d := testutil.MaxAbsDiff(rs[1].Logits, want); d < 1e-3 {
				t.Errorf("nothing off: logits equal the direct path (%.3g): the check cannot fail", d)
			}
		})
	}
}

// readProto decodes the model file at path.
func readProto(t *testing.T, path string) *pb.ModelProto {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		t.Fatal(err)
	}
	return mp
}

// meanAblated runs ids with head L{l}H0 mean-ablated (its clean mean over ids).
func meanAblated(t *testing.T, s *session.Session, ids []int64, l int) []float32 {
	t.Helper()
	clean, err := s.RunAblations(ids, []*ablate.Ablation{nil})
	if err != nil {
		t.Fatal(err)
	}
	means, err := ablate.MeanZ(clean[0])
	if err != nil {
		t.Fatal(err)
	}
	rs, err := s.RunAblations(ids, []*ablate.Ablation{{Off: []ablate.Head{{Layer: l, Head: 0}}, Mode: ablate.Mean, ZMean: means}})
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.MaxAbsDiff(rs[0].Logits, clean[0].Logits); d < 1e-4 {
		t.Errorf("mean-ablating L%dH0 changed the logits by only %.3g", l, d)
	}
	return rs[0].Logits
}

// Mean ablation on graphs the committed exports do not have: z in another type than the
// probabilities (a float32 softmax between Casts in a float16 model, as transformers
// exports it), one layer whose z is out of reach among layers whose z is not, and the
// decomposed com.microsoft.Attention (whose nodes are named after their outputs).
func TestMeanAblationOnUnusualGraphs(t *testing.T) {
	fp16 := filepath.Join(testutil.Root(), "testdata", "models", "fp16", "model.onnx")
	ids := []int64{1, 2, 3, 4, 5, 6}

	t.Run("float32 softmax in a float16 model", func(t *testing.T) {
		mp := readProto(t, fp16)
		g := mp.GetGraph()
		var nodes []*pb.NodeProto
		for _, n := range g.GetNode() {
			if n.GetOpType() != "Softmax" {
				nodes = append(nodes, n)
				continue
			}
			in, out := n.Input[0], n.Output[0]
			cast := func(name, from, to string, elem int64) *pb.NodeProto {
				return &pb.NodeProto{Name: proto.String(name), OpType: proto.String("Cast"), Input: []string{from}, Output: []string{to},
					Attribute: []*pb.AttributeProto{{Name: proto.String("to"), I: proto.Int64(elem), Type: pb.AttributeProto_INT.Enum()}}}
			}
			n.Input[0], n.Output[0] = in+"_f32", out+"_f32"
			nodes = append(nodes, cast(n.GetName()+"_up", in, in+"_f32", 1), n, cast(n.GetName()+"_down", out+"_f32", out, 10))
		}
		g.Node, g.ValueInfo = nodes, nil
		mixed := openAblation(t, testutil.WriteModel(t, mp), true)
		want := meanAblated(t, openAblation(t, fp16, true), ids, 0)
		if d := testutil.MaxAbsDiff(meanAblated(t, mixed, ids, 0), want); d > 5e-3 {
			t.Errorf("differs from the float16 model's mean ablation by %.3g", d)
		}
	})

	t.Run("one layer without z", func(t *testing.T) {
		mp := readProto(t, filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"))
		g := mp.GetGraph()
		var nodes []*pb.NodeProto
		done := false
		for _, n := range g.GetNode() {
			nodes = append(nodes, n)
			if n.GetOpType() == "Softmax" && !done { // layer 0's probabilities get a second reader
				done = true
				nodes = append(nodes, &pb.NodeProto{Name: proto.String("extra_copy"), OpType: proto.String("Identity"), Input: []string{n.Output[0]}, Output: []string{"extra_probs"}})
				g.Output = append(g.Output, &pb.ValueInfoProto{Name: proto.String("extra_probs")})
			}
		}
		g.Node = nodes
		s := openAblation(t, testutil.WriteModel(t, mp), true)
		if heads := s.HeadCounts(); heads[0] != 4 || heads[1] != 4 {
			t.Fatalf("head counts %v", heads)
		}
		testutil.ExpectError(t, s.CanAblate(0, ablate.Mean), "do not reach ×V through a MatMul")
		meanAblated(t, s, ids, 1)
	})

	t.Run("decomposed com.microsoft.Attention", func(t *testing.T) {
		s := openAblation(t, testutil.Shared(t, "fixtures/genai-tiny-gpt2-msattn/past.onnx"), true)
		meanAblated(t, s, ids, 1)
	})
}

// RunTensors runs with SetAblation's heads off, as Run does.
func TestRunTensorsFollowsSetAblation(t *testing.T) {
	s := openAblation(t, filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"), false)
	ids := []int64{1, 2, 3, 4, 5}
	in := map[string]*pb.TensorProto{"input_ids": int64Tensor([]int64{1, 5}, ids)}
	clean, _, err := s.RunTensors(in, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	heads, _ := ablate.ParseHeads("L0", s.HeadCounts())
	if err := s.SetAblation(&ablate.Ablation{Off: heads}); err != nil {
		t.Fatal(err)
	}
	want, err := s.Run(ids)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := s.RunTensors(in, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.MaxAbsDiff(got.Logits, want.Logits); d > 1e-6 {
		t.Errorf("RunTensors differs from Run under the same ablation by %.3g", d)
	}
	if d := testutil.MaxAbsDiff(got.Logits, clean.Logits); d < 1e-4 {
		t.Errorf("RunTensors ignored the ablation (%.3g from the clean run)", d)
	}
}
