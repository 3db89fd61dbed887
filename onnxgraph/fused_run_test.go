package onnxgraph_test

import (
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// rawSession runs model bytes with onnxruntime directly, asking for the named outputs, so
// that outputs the session package does not read (present_*) can be compared too.
func rawSession(t *testing.T, data []byte, dir string, inputs, outputs []string) *ort.DynamicAdvancedSession {
	t.Helper()
	so, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Destroy()
	if err := so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", dir); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(data, inputs, outputs, so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Destroy() })
	return s
}

// expose is onnxgraph.Expose for a test.
func expose(t *testing.T, m *onnxgraph.Model, att *onnxgraph.Attention) []byte {
	t.Helper()
	data, err := onnxgraph.Expose(m, att)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func runRaw(t *testing.T, s *ort.DynamicAdvancedSession, inputs []ort.Value, n int) [][]float32 {
	t.Helper()
	outs := make([]ort.Value, n)
	if err := s.Run(inputs, outs); err != nil {
		t.Fatal(err)
	}
	var data [][]float32
	for _, o := range outs {
		data = append(data, append([]float32(nil), o.(*ort.Tensor[float32]).GetData()...))
		o.Destroy()
	}
	return data
}

// genaiPastlessInputs are the inputs of genai-tiny-gpt2-msattn's past.onnx for one
// sequence with an empty past (5 layers, 4 heads of 8): ids, positions, mask and the
// pasts, destroyed when the test ends.
func genaiPastlessInputs(t *testing.T, ids, pos, mask []int32) []ort.Value {
	t.Helper()
	T := int64(len(ids))
	var vals []ort.Value
	t.Cleanup(func() {
		for _, v := range vals {
			v.Destroy()
		}
	})
	add := func(v ort.Value, err error) {
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	add(ort.NewTensor(ort.NewShape(1, T), ids))
	add(ort.NewTensor(ort.NewShape(1, T), pos))
	add(ort.NewTensor(ort.NewShape(1, T), mask))
	for range 5 {
		add(ort.NewTensor(ort.NewShape(2, 1, 4, 0, 8), []float32{}))
	}
	return vals
}

// The rewrite of com.microsoft.Attention into standard operators must compute what the
// fused operator computes: logits and present state within 1e-5 of the fused graph run by
// onnxruntime, with and without a past, with a masked key; only then are its Softmax
// outputs trusted as the operator's probabilities.
func TestMSAttentionRewriteMatchesFusedOperator(t *testing.T) {
	testutil.RequireORT(t)
	path := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-gpt2-msattn", "past.onnx")
	m, att := testutil.FindAttention(t, path)
	exposed := expose(t, m, att)
	const layers, heads, headSize = 5, 4, 8
	inputs := []string{"input_ids", "position_ids", "attention_mask"}
	outputs := []string{"logits"}
	for l := 0; l < layers; l++ {
		inputs = append(inputs, "past_"+string(rune('0'+l)))
		outputs = append(outputs, "present_"+string(rune('0'+l)))
	}
	fused := rawSession(t, m.RuntimeBytes(), m.DataDir(), inputs, outputs)
	var probOut []string
	for _, s := range att.Sites {
		probOut = append(probOut, s.Output)
	}
	rewritten := rawSession(t, exposed, m.DataDir(), inputs, append(append([]string(nil), outputs...), probOut...))

	rng := rand.New(rand.NewSource(1))
	for _, c := range []struct {
		name      string
		past, seq int
		maskedKey int // -1: none
	}{
		{"prompt", 0, 7, -1},
		{"one token", 0, 1, -1},
		{"past and masked key", 3, 4, 1},
		{"decode step", 5, 1, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			total := c.past + c.seq
			ids, pos, mask := make([]int32, c.seq), make([]int32, c.seq), make([]int32, total)
			for i := range ids {
				ids[i], pos[i] = int32(rng.Intn(1000)), int32(c.past+i)
			}
			for i := range mask {
				mask[i] = 1
			}
			if c.maskedKey >= 0 {
				mask[c.maskedKey] = 0
			}
			var vals []ort.Value
			add := func(v ort.Value, err error) {
				if err != nil {
					t.Fatal(err)
				}
				vals = append(vals, v)
			}
			add(ort.NewTensor(ort.NewShape(1, int64(c.seq)), ids))
			add(ort.NewTensor(ort.NewShape(1, int64(c.seq)), pos))
			add(ort.NewTensor(ort.NewShape(1, int64(total)), mask))
			for l := 0; l < layers; l++ {
				past := make([]float32, 2*heads*c.past*headSize)
				for i := range past {
					past[i] = float32(rng.NormFloat64())
				}
				add(ort.NewTensor(ort.NewShape(2, 1, heads, int64(c.past), headSize), past))
			}
			defer func() {
				for _, v := range vals {
					v.Destroy()
				}
			}()
			want := runRaw(t, fused, vals, len(outputs))
			got := runRaw(t, rewritten, vals, len(outputs)+len(probOut))
			for i, name := range outputs {
				if d := testutil.MaxAbsDiff(got[i], want[i]); d > 1e-5 {
					t.Errorf("%s differs from the fused operator's by %.3g", name, d)
				}
			}
			for l, probs := range got[len(outputs):] {
				if len(probs) != heads*c.seq*total {
					t.Fatalf("layer %d: %d probabilities, want %d×%d×%d", l, len(probs), heads, c.seq, total)
				}
				for r := 0; r < heads*c.seq; r++ {
					row, q := probs[r*total:(r+1)*total], r%c.seq
					sum := float32(0)
					for k, p := range row {
						sum += p
						if (k == c.maskedKey || k > c.past+q) && p != 0 {
							t.Fatalf("layer %d row %d: key %d is masked but has probability %g", l, r, k, p)
						}
					}
					if testutil.Diff(float64(sum), 1) > 1e-5 {
						t.Fatalf("layer %d row %d sums to %g", l, r, sum)
					}
				}
			}
		})
	}
}

// MultiHeadAttention's probabilities (its qk scores through the added Softmax) must be the
// weights of its own output: Y = P·V per head, within float16 precision, since the
// model computes in float16. Rows sum to 1 and future keys get 0.
func TestMHAProbabilitiesReproduceItsOutput(t *testing.T) {
	testutil.RequireORT(t)
	path := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-llama-fp16-mha-extdata", "model.onnx")
	m, att := testutil.FindAttention(t, path)
	exposed := expose(t, m, att)
	// Also return each MHA node's value input and output, cast to float32.
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(exposed, mp); err != nil {
		t.Fatal(err)
	}
	g := mp.GetGraph()
	var extra []string
	for _, s := range att.Sites {
		n := m.Graph().GetNode()[s.NodeIndex]
		for _, name := range []string{n.GetInput()[2], n.GetOutput()[0]} {
			out := name + ".f32"
			g.Node = append(g.Node, &pb.NodeProto{OpType: proto.String("Cast"), Input: []string{name}, Output: []string{out},
				Attribute: []*pb.AttributeProto{{Name: proto.String("to"), I: proto.Int64(1), Type: pb.AttributeProto_INT.Enum()}}})
			g.Output = append(g.Output, &pb.ValueInfoProto{Name: proto.String(out)})
			extra = append(extra, out)
		}
	}
	data, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	inputs := []string{"input_ids", "attention_mask", "position_ids"}
	pasts := []string{"past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"}
	outputs := append([]string{"attn.L0", "attn.L1"}, extra...)
	s := rawSession(t, data, m.DataDir(), append(inputs, pasts...), outputs)
	const T, headSize = 6, 16
	ids := []int64{1, 5, 9, 200, 7, 31}
	pos, mask := make([]int64, T), make([]int64, T)
	for i := range pos {
		pos[i], mask[i] = int64(i), 1
	}
	var vals []ort.Value
	for _, v := range [][]int64{ids, mask, pos} {
		tv, err := ort.NewTensor(ort.NewShape(1, T), v)
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, tv)
	}
	for range pasts {
		tv, err := ort.NewCustomDataTensor(ort.NewShape(1, 1, 0, headSize), make([]byte, 2), ort.TensorElementDataTypeFloat16) // the binding wants ≥ 1 byte even for 0 elements
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, tv)
	}
	defer func() {
		for _, v := range vals {
			v.Destroy()
		}
	}()
	got := runRaw(t, s, vals, len(outputs))
	for l := 0; l < 2; l++ {
		p, v, y := got[l], got[2+2*l], got[3+2*l]
		if len(p) != T*T || len(v) != T*headSize || len(y) != T*headSize {
			t.Fatalf("layer %d: sizes %d, %d, %d; want one head of %d×%d and %d×%d", l, len(p), len(v), len(y), T, T, T, headSize)
		}
		for q := 0; q < T; q++ {
			sum := float32(0)
			for k := 0; k < T; k++ {
				sum += p[q*T+k]
				if k > q && p[q*T+k] != 0 {
					t.Fatalf("layer %d: query %d attends to future key %d", l, q, k)
				}
			}
			if testutil.Diff(float64(sum), 1) > 1e-5 {
				t.Fatalf("layer %d row %d sums to %g", l, q, sum)
			}
			for d := 0; d < headSize; d++ {
				pv := float32(0)
				for k := 0; k < T; k++ {
					pv += p[q*T+k] * v[k*headSize+d]
				}
				if testutil.Diff(float64(pv), float64(y[q*headSize+d])) > 1e-3 {
					t.Fatalf("layer %d: (P·V)[%d,%d] = %g but the operator's output is %g", l, q, d, pv, y[q*headSize+d])
				}
			}
		}
	}
}

// A model whose external-data file is missing is refused with a sentence naming the file.
func TestMissingExternalDataIsNamed(t *testing.T) {
	src := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-llama-fp16-mha-extdata", "model.onnx")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = onnxgraph.Load(p)
	if err == nil || !strings.Contains(err.Error(), "model.onnx.data, which is missing") {
		t.Fatalf("error %v, want one naming the missing model.onnx.data", err)
	}
}

// jsonTensor is a tensor as export.forms writes a run's inputs.
type jsonTensor struct {
	Shape []int64 `json:"shape"`
	Dtype string  `json:"dtype"`
	Data  []any   `json:"data"` // numbers, or booleans for dtype bool
}

func num(v any) float64 {
	switch x := v.(type) {
	case bool:
		if x {
			return 1
		}
		return 0
	case float64:
		return x
	}
	return 0
}

func (j jsonTensor) proto(t *testing.T, name string) *pb.TensorProto {
	tp := &pb.TensorProto{Name: proto.String(name), Dims: j.Shape}
	switch j.Dtype {
	case "int64":
		tp.DataType = proto.Int32(int32(pb.TensorProto_INT64))
		for _, v := range j.Data {
			tp.Int64Data = append(tp.Int64Data, int64(num(v)))
		}
	case "float32":
		tp.DataType = proto.Int32(int32(pb.TensorProto_FLOAT))
		for _, v := range j.Data {
			tp.FloatData = append(tp.FloatData, float32(num(v)))
		}
	case "bool":
		tp.DataType = proto.Int32(int32(pb.TensorProto_BOOL))
		for _, v := range j.Data {
			tp.Int32Data = append(tp.Int32Data, int32(num(v)))
		}
	default:
		t.Fatalf("input %s: dtype %s", name, j.Dtype)
	}
	return tp
}

// The merged decoder (an If on use_cache_branch around a decoder without and one with a
// past, built by export.forms from two torch exports) gives PyTorch's attention through
// whichever branch runs: the prompt without a past, and 4 tokens after a 5-token past
// ([4, 9] maps).
func TestMergedDecoderBothBranches(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "merged")
	data, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Runs []struct {
			Branch    string                `json:"branch"`
			IDs       []int64               `json:"ids"`
			Inputs    map[string]jsonTensor `json:"inputs"`
			Attention []testutil.Tensor     `json:"attention"`
			Logits    testutil.Tensor       `json:"logits"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	s := testutil.OpenSession(t, filepath.Join(dir, "model.onnx"))
	branches := map[string]bool{}
	for _, run := range ref.Runs {
		branches[run.Branch] = true
		tensors := map[string]*pb.TensorProto{}
		for name, j := range run.Inputs {
			tensors[name] = j.proto(t, name)
		}
		res, _, err := s.RunTensors(tensors, len(run.IDs))
		if err != nil {
			t.Fatalf("%s: %v", run.Branch, err)
		}
		for l, want := range run.Attention {
			got := testutil.Flatten(res.Attn[l])
			if len(got) != len(want.Data) {
				t.Fatalf("%s layer %d: %d values, want %v", run.Branch, l, len(got), want.Shape)
			}
			if d := testutil.MaxAbsDiff(got, want.Data); d > 1e-5 {
				t.Errorf("%s layer %d: max abs diff %.3g from PyTorch", run.Branch, l, d)
			}
		}
		if d := testutil.MaxAbsDiff(res.Logits, run.Logits.Data); len(res.Logits) != len(run.Logits.Data) || d > 1e-4 {
			t.Errorf("%s logits: max abs diff %.3g (%d values, want %d)", run.Branch, d, len(res.Logits), len(run.Logits.Data))
		}
	}
	if !branches["then_branch"] || !branches["else_branch"] {
		t.Fatalf("the reference runs only %v", branches)
	}
}

// A com.microsoft.Attention inside an If branch, its weights in the main graph (as in a
// merged decoder made of optimized exports), is rewritten there and threaded out: with
// the condition true the If's attention equals the plain model's; false gives the other
// branch's empty tensor.
func TestMSAttentionInsideIf(t *testing.T) {
	testutil.RequireORT(t)
	path := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-gpt2-msattn", "past.onnx")
	plain, plainAtt := testutil.FindAttention(t, path)
	mp, err := plain.Decode()
	if err != nil {
		t.Fatal(err)
	}
	g := mp.GetGraph()
	then := &pb.GraphProto{Name: proto.String("then"), Node: g.Node, Output: []*pb.ValueInfoProto{{Name: proto.String("logits_then")}}}
	for _, n := range then.Node {
		for i, o := range n.Output {
			if o == "logits" {
				n.Output[i] = "logits_then"
			}
		}
	}
	zeros := &pb.TensorProto{Name: proto.String("z"), DataType: proto.Int32(int32(pb.TensorProto_FLOAT)), Dims: []int64{1, 1, 1000}, FloatData: make([]float32, 1000)}
	els := &pb.GraphProto{Name: proto.String("else"),
		Node:   []*pb.NodeProto{{OpType: proto.String("Constant"), Output: []string{"logits_else"}, Attribute: []*pb.AttributeProto{{Name: proto.String("value"), T: zeros, Type: pb.AttributeProto_TENSOR.Enum()}}}},
		Output: []*pb.ValueInfoProto{{Name: proto.String("logits_else")}}}
	ifNode := &pb.NodeProto{Name: proto.String("merged::if"), OpType: proto.String("If"), Input: []string{"cond"}, Output: []string{"logits"},
		Attribute: []*pb.AttributeProto{
			{Name: proto.String("then_branch"), G: then, Type: pb.AttributeProto_GRAPH.Enum()},
			{Name: proto.String("else_branch"), G: els, Type: pb.AttributeProto_GRAPH.Enum()},
		}}
	g.Node = []*pb.NodeProto{ifNode}
	g.Input = append(g.Input, &pb.ValueInfoProto{Name: proto.String("cond"), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(int32(pb.TensorProto_BOOL)), Shape: &pb.TensorShapeProto{Dim: []*pb.TensorShapeProto_Dimension{{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: 1}}}}}}}})
	g.Output = g.Output[:1] // logits
	merged := testutil.ParseModel(t, mp)
	att, err := onnxgraph.FindAttention(merged)
	if err != nil {
		t.Fatal(err)
	}
	if len(att.Sites) != 5 || att.Sites[0].Form != onnxgraph.FormMSAttention || att.Sites[0].If == nil || att.Sites[0].If.Else != nil {
		t.Fatalf("sites %+v: want 5 decomposed Attention sites in the then branch only", att.Sites)
	}
	var outs []string
	for _, s := range att.Sites {
		outs = append(outs, s.Output)
	}
	names := []string{"input_ids", "position_ids", "attention_mask", "past_0", "past_1", "past_2", "past_3", "past_4"}
	inside := rawSession(t, expose(t, merged, att), ".", append(append([]string(nil), names...), "cond"), append([]string{"logits"}, outs...))
	alone := rawSession(t, expose(t, plain, plainAtt), plain.DataDir(), names, append([]string{"logits"}, outs...))

	const T = 6
	ids, pos, mask := make([]int32, T), make([]int32, T), make([]int32, T)
	for i := range ids {
		ids[i], pos[i], mask[i] = int32(17*i+3), int32(i), 1
	}
	vals := genaiPastlessInputs(t, ids, pos, mask)
	want := runRaw(t, alone, vals, 1+len(outs))
	for _, cond := range []bool{true, false} {
		c, err := ort.NewTensor(ort.NewShape(1), []bool{cond})
		if err != nil {
			t.Fatal(err)
		}
		got := runRaw(t, inside, append(append([]ort.Value(nil), vals...), c), 1+len(outs))
		c.Destroy()
		for l := range outs {
			p := got[1+l]
			switch {
			case !cond && len(p) != 0:
				t.Errorf("else branch: layer %d has %d probabilities, want none", l, len(p))
			case cond && len(p) != len(want[1+l]):
				t.Errorf("then branch: layer %d has %d probabilities, want %d", l, len(p), len(want[1+l]))
			case cond && testutil.MaxAbsDiff(p, want[1+l]) > 1e-6:
				t.Errorf("then branch: layer %d differs from the model without If by %g", l, testutil.MaxAbsDiff(p, want[1+l]))
			}
		}
	}
}

// maskVariant is genai-tiny-gpt2-msattn/past.onnx with its Attention nodes reading the mask
// through the ops edit adds after the graph input attention_mask (edit returns the tensor
// the nodes then read); declare gives that tensor value_info [batch_size, total_seq_len],
// as ONNX shape inference would. Without declare no shape of the mask is recorded.
func maskVariant(t *testing.T, edit func(g *pb.GraphProto) string, declare bool) *onnxgraph.Model {
	t.Helper()
	path := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-gpt2-msattn", "past.onnx")
	m, err := onnxgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	g := mp.GetGraph()
	nodes := g.Node
	g.Node = nil
	mask := edit(g)
	for _, n := range nodes {
		if n.GetOpType() == "Attention" && len(n.Input) > 3 && n.Input[3] == "attention_mask" {
			n.Input[3] = mask
		}
	}
	g.Node = append(g.Node, nodes...)
	if declare {
		dims := []*pb.TensorShapeProto_Dimension{{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "batch_size"}}, {Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "total_seq_len"}}}
		g.ValueInfo = append(g.ValueInfo, &pb.ValueInfoProto{Name: proto.String(mask), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(int32(pb.TensorProto_INT32)), Shape: &pb.TensorShapeProto{Dim: dims}}}}})
	}
	v := testutil.ParseModel(t, mp)
	return v
}

// maskEdits route the mask through the ops onnxruntime's optimizer and exporters put
// before com.microsoft.Attention (a Cast to int32, squeeze and unsqueeze pairs, a Reshape
// to a constant shape), none of which records the mask's shape.
var maskEdits = []struct {
	name string
	edit func(g *pb.GraphProto) string
	rank int // the mask's rank
}{
	{"Cast", func(g *pb.GraphProto) string {
		g.Node = append(g.Node, castNode("attention_mask", "mask.cast"))
		return "mask.cast"
	}, 2},
	{"Unsqueeze then Squeeze", func(g *pb.GraphProto) string {
		g.Node = append(g.Node,
			&pb.NodeProto{OpType: proto.String("Unsqueeze"), Input: []string{"attention_mask"}, Output: []string{"mask.3d"}, Attribute: []*pb.AttributeProto{ints("axes", 1)}},
			&pb.NodeProto{OpType: proto.String("Squeeze"), Input: []string{"mask.3d"}, Output: []string{"mask.2d"}, Attribute: []*pb.AttributeProto{ints("axes", 1)}})
		return "mask.2d"
	}, 2},
	{"Cast, Reshape to a constant shape", func(g *pb.GraphProto) string {
		shape := &pb.TensorProto{DataType: proto.Int32(int32(pb.TensorProto_INT64)), Dims: []int64{2}, Int64Data: []int64{0, -1}}
		g.Node = append(g.Node, castNode("attention_mask", "mask.cast"),
			&pb.NodeProto{OpType: proto.String("Constant"), Output: []string{"mask.shape"}, Attribute: []*pb.AttributeProto{{Name: proto.String("value"), T: shape, Type: pb.AttributeProto_TENSOR.Enum()}}},
			&pb.NodeProto{OpType: proto.String("Reshape"), Input: []string{"mask.cast", "mask.shape"}, Output: []string{"mask.2d"}})
		return "mask.2d"
	}, 2},
	{"Unsqueeze", func(g *pb.GraphProto) string {
		g.Node = append(g.Node, &pb.NodeProto{OpType: proto.String("Unsqueeze"), Input: []string{"attention_mask"}, Output: []string{"mask.3d"}, Attribute: []*pb.AttributeProto{ints("axes", 1)}})
		return "mask.3d"
	}, 3},
	{"an operator of unknown shape", func(g *pb.GraphProto) string {
		g.Node = append(g.Node, &pb.NodeProto{OpType: proto.String("Custom"), Domain: proto.String("example"), Input: []string{"attention_mask"}, Output: []string{"mask.custom"}})
		return "mask.custom"
	}, -1},
}

func castNode(in, out string) *pb.NodeProto {
	return &pb.NodeProto{OpType: proto.String("Cast"), Input: []string{in}, Output: []string{out},
		Attribute: []*pb.AttributeProto{{Name: proto.String("to"), I: proto.Int64(int64(pb.TensorProto_INT32)), Type: pb.AttributeProto_INT.Enum()}}}
}

// A com.microsoft.Attention's mask needs no recorded shape: its rank comes from the ops
// that compute it. A 2-D mask is taken (before, it was refused as "not a 2-D mask" unless
// value_info declared it); a 3-D one, or one whose rank the graph does not tell, is refused
// saying which.
func TestMSAttentionMaskRankFromGraph(t *testing.T) {
	for _, c := range maskEdits {
		t.Run(c.name, func(t *testing.T) {
			att, err := onnxgraph.FindAttention(maskVariant(t, c.edit, false))
			switch c.rank {
			case 2:
				if err != nil || len(att.Sites) != 5 {
					t.Fatalf("error %v, %d sites: want the 5 layers", err, len(att.Sites))
				}
			case -1:
				testutil.ExpectError(t, err, "the graph does not tell the rank of its mask mask.custom")
			default:
				testutil.ExpectError(t, err, "its mask mask.3d has rank 3, and the rewrite handles only a 2-D")
			}
		})
	}
}

// The model whose mask has no recorded shape gives exactly the probabilities and logits of
// the same model with the mask's shape declared, and of the original model, on a prompt
// with a masked key.
func TestMSAttentionUndeclaredMaskRunsExactly(t *testing.T) {
	testutil.RequireORT(t)
	path := filepath.Join(testutil.Shared(t, "fixtures"), "genai-tiny-gpt2-msattn", "past.onnx")
	orig, origAtt := testutil.FindAttention(t, path)
	names := []string{"input_ids", "position_ids", "attention_mask", "past_0", "past_1", "past_2", "past_3", "past_4"}
	outs := []string{"logits"}
	for _, s := range origAtt.Sites {
		outs = append(outs, s.Output)
	}
	const T = 6
	ids, pos, mask := make([]int32, T), make([]int32, T), make([]int32, T)
	for i := range ids {
		ids[i], pos[i], mask[i] = int32(31*i+7), int32(i), 1
	}
	mask[2] = 0
	vals := genaiPastlessInputs(t, ids, pos, mask)
	run := func(m *onnxgraph.Model, dir string) [][]float32 {
		att, err := onnxgraph.FindAttention(m)
		if err != nil {
			t.Fatal(err)
		}
		return runRaw(t, rawSession(t, expose(t, m, att), dir, names, outs), vals, len(outs))
	}
	want := run(orig, orig.DataDir())
	for _, c := range maskEdits {
		if c.rank != 2 {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			undeclared := run(maskVariant(t, c.edit, false), ".")
			declared := run(maskVariant(t, c.edit, true), ".")
			for i, name := range outs {
				if d := testutil.MaxAbsDiff(undeclared[i], declared[i]); d != 0 {
					t.Errorf("%s differs from the declared-mask model's by %g", name, d)
				}
				if d := testutil.MaxAbsDiff(undeclared[i], want[i]); d != 0 {
					t.Errorf("%s differs from the original model's by %g", name, d)
				}
			}
		})
	}
}
