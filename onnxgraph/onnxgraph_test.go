package onnxgraph_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

func TestFindAttentionCommittedModels(t *testing.T) {
	for _, dir := range testutil.Models(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			ref := testutil.ReadReference(t, dir)
			m, att := testutil.FindAttention(t, filepath.Join(dir, "model.onnx"))
			if len(att.Sites) != ref.NLayers {
				t.Fatalf("found %d sites, want %d layers", len(att.Sites), ref.NLayers)
			}
			for l, s := range att.Sites {
				if s.Layer != l || s.Output != onnxgraph.OutputName(l) {
					t.Errorf("site %d: layer %d output %s", l, s.Layer, s.Output)
				}
				if want := refSites(t, dir); want != nil {
					// export.forms names each site's node and kind.
					if s.Node != want[l].Node || s.Cross != (want[l].Kind == "cross") {
						t.Errorf("layer %d is node %s (cross %v), want %s (%s)", l, s.Node, s.Cross, want[l].Node, want[l].Kind)
					}
				} else if !strings.Contains(s.Node, "."+string(rune('0'+l))+"/") {
					// torch names the layer's modules in order; the site must be that layer's.
					t.Errorf("layer %d is node %s", l, s.Node)
				}
			}
			lim := onnxgraph.ModelLimits(m)
			if lim.Vocab != ref.VocabSize {
				t.Errorf("vocabulary %d, want %d", lim.Vocab, ref.VocabSize)
			}
			if lim.Positions != ref.NPositions {
				t.Errorf("positions %d, want %d", lim.Positions, ref.NPositions)
			}
		})
	}
}

// The manifest's entries, with the layer count each must yield or the error it must give.
var sharedCases = []struct {
	path    string
	layers  int
	form    onnxgraph.Form
	wantErr string
	first   string // node name of layer 0, where the order is worth checking
	cross   []int  // layers that are cross-attention
}{
	{path: "ezkl-nanogpt/network.onnx", layers: 4, first: "/h.0/attn/Softmax"},
	{path: "ort-gpt2-past-torch16/gpt2_past.onnx", layers: 12, first: "Softmax_175"},
	{path: "ort-bert-toy-torch11/bert_toy_optimized.onnx", layers: 5, first: "Softmax_85"},
	{path: "ort-attn-past-u8s8-quant/attention_past_state.onnx", layers: 1},
	{path: "ort-attn-past-u8s8-quant/attention_past_state.u8s8.onnx", layers: 1},
	{path: "optimum-tiny-distilbert/model.onnx", layers: 2, first: "Softmax_59"},
	{path: "vespa-random-enc-dec/random_encoder.onnx", layers: 1},
	{path: "vespa-random-enc-dec/random_decoder.onnx", layers: 2, first: "/transformer_decoder/layers.0/self_attn/Softmax", cross: []int{1}},
	// The ONNX node tests take Q, K and V as separate inputs: two sequences, as in
	// cross-attention (4 queries, 6 keys).
	{path: "onnx23-4d-qk-softmax/model.onnx", layers: 1, form: onnxgraph.FormONNXAttention, cross: []int{0}},
	{path: "onnx23-4d-qk-softmax/expanded/model.onnx", layers: 1, cross: []int{0}},
	{path: "onnx23-4d-qk-matmul-mode0/model.onnx", layers: 1, form: onnxgraph.FormONNXAttention, cross: []int{0}},
	{path: "onnx23-3d-causal/model.onnx", layers: 1, form: onnxgraph.FormONNXAttention, cross: []int{0}},
	{path: "onnx23-4d-fp16/model.onnx", layers: 1, form: onnxgraph.FormONNXAttention, cross: []int{0}},
	{path: "genai-tiny-gpt2-msattn/past.onnx", layers: 5, form: onnxgraph.FormMSAttention, first: "GptAttention_0"},
	{path: "genai-tiny-llama-fp16-mha-extdata/model.onnx", layers: 2, form: onnxgraph.FormMHA, first: "/model/layers.0/attn/MultiHeadAttention"},
}

func TestFindAttentionSharedFixtures(t *testing.T) {
	root := testutil.Shared(t, "fixtures")
	for _, c := range sharedCases {
		t.Run(c.path, func(t *testing.T) {
			m, err := onnxgraph.Load(filepath.Join(root, c.path))
			if err != nil {
				t.Fatal(err)
			}
			att, err := onnxgraph.FindAttention(m)
			if testutil.ExpectError(t, err, c.wantErr) {
				return
			}
			if len(att.Sites) != c.layers {
				t.Fatalf("%d sites, want %d", len(att.Sites), c.layers)
			}
			for _, s := range att.Sites {
				if s.Form != c.form {
					t.Errorf("site %d has form %s, want %s", s.Layer, s.Form, c.form)
				}
				if want := slices.Contains(c.cross, s.Layer); s.Cross != want {
					t.Errorf("site %d: Cross = %v, want %v", s.Layer, s.Cross, want)
				}
			}
			if c.first != "" && att.Sites[0].Node != c.first {
				t.Errorf("layer 0 is %s, want %s", att.Sites[0].Node, c.first)
			}
		})
	}
}

// A graph whose node list is shuffled must give the same layers in the same order.
func TestFindAttentionUnsortedGraph(t *testing.T) {
	dir := testutil.Models(t)[0]
	m, err := onnxgraph.Load(filepath.Join(dir, "..", "attn2l", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := onnxgraph.FindAttention(m)
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	nodes := mp.Graph.Node
	for i, j := 0, len(nodes)-1; i < j; i, j = i+1, j-1 {
		nodes[i], nodes[j] = nodes[j], nodes[i]
	}
	for _, n := range nodes {
		n.Name = nil // and nameless, as some exporters leave them
	}
	data, _ := proto.Marshal(mp)
	rev, err := onnxgraph.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := onnxgraph.FindAttention(rev)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Sites) != len(want.Sites) {
		t.Fatalf("%d sites after reversing, want %d", len(got.Sites), len(want.Sites))
	}
	for l := range got.Sites {
		if got.Sites[l].Tensor != want.Sites[l].Tensor {
			t.Errorf("layer %d is %s after reversing, want %s", l, got.Sites[l].Tensor, want.Sites[l].Tensor)
		}
		if !strings.HasPrefix(got.Sites[l].Node, "#") {
			t.Errorf("nameless node shown as %q", got.Sites[l].Node)
		}
	}
}

// Softmaxes that are not attention are rejected with a reason.
func TestFindAttentionRejects(t *testing.T) {
	cases := []struct {
		name   string
		nodes  []*pb.NodeProto
		reason string
	}{
		{
			name: "classifier",
			nodes: []*pb.NodeProto{
				node("MatMul", []string{"x", "W"}, "scores"),
				node("Softmax", []string{"scores"}, "p"),
			},
			reason: "with a weight",
		},
		{
			name: "axis 1",
			nodes: []*pb.NodeProto{
				node("MatMul", []string{"x", "y"}, "scores"),
				withAxis(node("Softmax", []string{"scores"}, "p"), 1),
				node("MatMul", []string{"p", "y"}, "out"),
			},
			reason: "axis 1",
		},
		{
			name: "no P×V",
			nodes: []*pb.NodeProto{
				node("MatMul", []string{"x", "y"}, "scores"),
				node("Softmax", []string{"scores"}, "p"),
				node("Add", []string{"p", "y"}, "out"),
			},
			reason: "probabilities×V",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := tinyModel(c.nodes)
			att, err := onnxgraph.FindAttention(m)
			if err == nil {
				t.Fatalf("found %d sites, want none", len(att.Sites))
			}
			if len(att.Rejected) != 1 || !strings.Contains(att.Rejected[0].Reason, c.reason) {
				t.Fatalf("rejections %+v, want one mentioning %q", att.Rejected, c.reason)
			}
			if !strings.Contains(err.Error(), c.reason) {
				t.Errorf("error %q does not give the reason", err)
			}
		})
	}
}

func node(op string, in []string, out string) *pb.NodeProto {
	return &pb.NodeProto{OpType: proto.String(op), Input: in, Output: []string{out}}
}

func withAxis(n *pb.NodeProto, axis int64) *pb.NodeProto {
	n.Attribute = append(n.Attribute, &pb.AttributeProto{Name: proto.String("axis"), I: proto.Int64(axis), Type: pb.AttributeProto_INT.Enum()})
	return n
}

// tinyModel builds a model with float inputs x, y and weight W around the given nodes.
func tinyModel(nodes []*pb.NodeProto) *onnxgraph.Model {
	f := func(name string) *pb.ValueInfoProto {
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(1)}}}}
	}
	mp := &pb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*pb.OperatorSetIdProto{{Version: proto.Int64(17)}},
		Graph: &pb.GraphProto{
			Node:        nodes,
			Input:       []*pb.ValueInfoProto{f("x"), f("y")},
			Initializer: []*pb.TensorProto{{Name: proto.String("W"), DataType: proto.Int32(1), Dims: []int64{2, 2}, FloatData: []float32{1, 2, 3, 4}}},
			Output:      []*pb.ValueInfoProto{f(nodes[len(nodes)-1].Output[0])},
		},
	}
	data, err := proto.Marshal(mp)
	if err != nil {
		panic(err)
	}
	m, err := onnxgraph.Parse(data)
	if err != nil {
		panic(err)
	}
	return m
}

// Decoding and re-encoding keeps every field, proved against references independent of
// this package's schema: on every committed and shared model the re-encoding is the file
// byte for byte (protobuf-go's encoding of a decoded message is canonical: fields in number
// order, unknown fields after them, which is how every exporter here writes); a file whose
// bytes are not canonical (fields out of order, a field no schema names) must decode, in
// Python's onnx package, to the same message as its re-encoding (compared by deterministic
// serialization); and that comparison is shown to fail on a re-encoding that lost the
// unknown field. Under CI=true a missing Python or onnx package fails the test.
func TestRoundTripLossless(t *testing.T) {
	var paths []string
	for _, s := range fuzzSeeds(t) {
		paths = append(paths, s.path)
	}
	tmp := t.TempDir()
	type pair struct {
		name, a, b string
		equal      bool // what Python must find
	}
	var pairs []pair
	for _, p := range paths {
		rel, _ := filepath.Rel(testutil.Root(), p)
		t.Run(rel, func(t *testing.T) {
			m, err := onnxgraph.Load(p)
			if err != nil {
				t.Fatal(err)
			}
			first, err := m.Decode()
			if err != nil {
				t.Fatal(err)
			}
			data, err := proto.Marshal(first)
			if err != nil {
				t.Fatal(err)
			}
			second := &pb.ModelProto{}
			if err := proto.Unmarshal(data, second); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(first, second) {
				t.Fatal("re-parsed model differs")
			}
			orig, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, orig) {
				// Not canonical: Python's onnx decides (below).
				out := filepath.Join(tmp, strings.NewReplacer("/", "_", ".", "_").Replace(rel)+".onnx")
				if err := os.WriteFile(out, data, 0o644); err != nil {
					t.Fatal(err)
				}
				pairs = append(pairs, pair{rel, p, out, true})
				t.Logf("re-encoded bytes differ from the file (%d vs %d bytes): compared through Python's onnx", len(data), len(orig))
			}
		})
	}
	// A file in no canonical order, with a field no schema names: top-level fields
	// reversed, and field 99 appended.
	canonical, err := proto.Marshal(tinyModel(attentionNodes("")).Proto)
	if err != nil {
		t.Fatal(err)
	}
	var fields [][]byte
	for rest := canonical; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if n < 0 || m < 0 {
			t.Fatal("cannot split the model's fields")
		}
		fields = append(fields, rest[:n+m])
		rest = rest[n+m:]
	}
	var scrambled []byte
	for k := len(fields) - 1; k >= 0; k-- {
		scrambled = append(scrambled, fields[k]...)
	}
	scrambled = protowire.AppendString(protowire.AppendTag(scrambled, 99, protowire.BytesType), "a field no schema names")
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(scrambled, mp); err != nil {
		t.Fatal(err)
	}
	again, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again, scrambled) {
		t.Fatal("the scrambled file re-encodes to its own bytes: it does not exercise the Python comparison")
	}
	mp.ProtoReflect().SetUnknown(nil)
	lossy, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	orig := write("scrambled.onnx", scrambled)
	pairs = append(pairs,
		pair{"scrambled, re-encoded", orig, write("scrambled-roundtrip.onnx", again), true},
		pair{"scrambled, re-encoded without its unknown field", orig, write("scrambled-lossy.onnx", lossy), false})

	py := testutil.Python(t, "onnx")
	args := []string{"-c", `
import sys, onnx
files = sys.argv[1:]
for a, b in zip(files[::2], files[1::2]):
    ma, mb = onnx.load(a, load_external_data=False), onnx.load(b, load_external_data=False)
    same = ma.SerializeToString(deterministic=True) == mb.SerializeToString(deterministic=True)
    print("equal" if same else "differ")
`}
	for _, p := range pairs {
		args = append(args, p.a, p.b)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Python's onnx could not compare the models: %v\n%s", err, stderr.Bytes())
	}
	verdicts := strings.Fields(string(out))
	if len(verdicts) != len(pairs) {
		t.Fatalf("Python gave %d verdicts for %d pairs: %s", len(verdicts), len(pairs), out)
	}
	for k, p := range pairs {
		if got := verdicts[k] == "equal"; got != p.equal {
			t.Errorf("%s: Python's onnx finds the models %s, want equal %v", p.name, verdicts[k], p.equal)
		}
	}
}

// Expose adds one output per site and leaves the model file untouched; the exposed model
// carries no weights (they stay in the file), and Save writes a self-contained model
// with the same outputs.
func TestExposeKeepsOriginal(t *testing.T) {
	for _, dir := range testutil.Models(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			path := filepath.Join(dir, "model.onnx")
			before, _ := os.ReadFile(path)
			m, att := testutil.FindAttention(t, path)
			data, err := onnxgraph.Expose(m, att)
			if err != nil {
				t.Fatal(err)
			}
			compact := &pb.ModelProto{}
			if err := proto.Unmarshal(data, compact); err != nil {
				t.Fatal(err)
			}
			for _, init := range compact.GetGraph().GetInitializer() {
				if len(init.GetRawData()) >= 1024 {
					t.Fatalf("initializer %s has its %d bytes in the exposed model: the weights were not left in the file", init.GetName(), len(init.GetRawData()))
				}
			}
			var saved bytes.Buffer
			if err := onnxgraph.Save(m, att, &saved); err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Fatal("the model file changed")
			}
			if saved.Len() < len(before)*9/10 {
				t.Errorf("Save wrote %d bytes, less than the %d-byte model: weights missing", saved.Len(), len(before))
			}
			for _, encoded := range [][]byte{data, saved.Bytes()} {
				exposed, err := onnxgraph.Parse(encoded)
				if err != nil {
					t.Fatal(err)
				}
				g := exposed.Graph()
				want := len(m.Graph().GetOutput()) + len(att.Sites)
				if onnxgraph.MainOutputType(m) == int32(pb.TensorProto_FLOAT16) {
					want++ // attnscope.logits, the float32 copy of float16 logits
					if last := g.GetOutput()[len(g.GetOutput())-1]; last.GetName() != onnxgraph.LogitsOutput {
						t.Errorf("last output %s, want %s", last.GetName(), onnxgraph.LogitsOutput)
					}
				}
				if got := len(g.GetOutput()); got != want {
					t.Fatalf("%d outputs, want %d", got, want)
				}
				for l := range att.Sites {
					o := g.GetOutput()[len(m.Graph().GetOutput())+l]
					if o.GetName() != onnxgraph.OutputName(l) || o.GetType().GetTensorType().GetElemType() != 1 {
						t.Errorf("output %d is %v", l, o)
					}
				}
				if len(g.GetInitializer()) != len(m.Graph().GetInitializer()) || g.GetName() != m.Graph().GetName() {
					t.Error("exposing changed the graph's initializers or name")
				}
				// The Softmax now writes attn.L{layer} itself (GQA its output 3; an If one
				// more output), and its consumers read it.
				for l, site := range att.Sites {
					n := g.GetNode()[site.NodeIndex]
					var ok bool
					switch {
					case site.If != nil:
						ok = slices.Contains(n.GetOutput(), onnxgraph.OutputName(l))
					case site.Form == onnxgraph.FormGQA:
						ok = n.GetOutput()[3] == onnxgraph.OutputName(l)
					default:
						ok = n.GetOpType() == "Softmax" && probsWrittenBy(g, n, onnxgraph.OutputName(l))
					}
					if !ok {
						t.Errorf("layer %d (%s): node %s writes %q", l, site.Form, n.GetOpType(), n.GetOutput())
					}
				}
				if again, err := onnxgraph.FindAttention(exposed); err != nil || len(again.Sites) != len(att.Sites) {
					t.Errorf("the exposed graph no longer shows its attention: %v", err)
				}
			}
		})
	}
}

// The ONNX Attention operator is rewritten to return probabilities (mode 3, 4th output).
func TestExposeONNXAttention(t *testing.T) {
	p := filepath.Join(testutil.Shared(t, "fixtures"), "onnx23-4d-qk-matmul-mode0", "model.onnx")
	m, att := testutil.FindAttention(t, p)
	data, err := onnxgraph.Expose(m, att)
	if err != nil {
		t.Fatal(err)
	}
	exposed, err := onnxgraph.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	n := exposed.Graph().GetNode()[0]
	if len(n.GetOutput()) != 4 || n.GetOutput()[3] == "" {
		t.Fatalf("outputs %q", n.GetOutput())
	}
	outs := exposed.Graph().GetOutput()
	if outs[len(outs)-1].GetName() != "attn.L0" {
		t.Fatalf("last graph output is %s, want attn.L0", outs[len(outs)-1].GetName())
	}
	mode := int64(-1)
	for _, a := range n.GetAttribute() {
		if a.GetName() == "qk_matmul_output_mode" {
			mode = a.GetI()
		}
	}
	if mode != 3 {
		t.Fatalf("qk_matmul_output_mode %d, want 3", mode)
	}
}

func TestLoadBadInput(t *testing.T) {
	dir := t.TempDir()
	realModel, err := os.ReadFile(filepath.Join(testutil.Models(t)[0], "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	external := externalModel(t)
	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.onnx"), "does not exist"},
		{"empty", write("empty.onnx", nil), "empty"},
		{"text", write("notes.onnx", []byte("these are not the weights you are looking for\n")), "not an ONNX model"},
		{"truncated", write("cut.onnx", realModel[:len(realModel)/2]), "truncated"},
		{"json", write("config.onnx", []byte(`{"model_type": "gpt2"}`)), "not an ONNX model"},
		{"missing external data", write("ext.onnx", external), "weights.bin, which is missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := onnxgraph.Load(c.path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

// externalModel is a small model whose one initializer lives in weights.bin.
func externalModel(t *testing.T) []byte {
	mp := &pb.ModelProto{
		IrVersion: proto.Int64(8),
		Graph: &pb.GraphProto{
			Node: []*pb.NodeProto{node("Identity", []string{"W"}, "out")},
			Initializer: []*pb.TensorProto{{
				Name: proto.String("W"), DataType: proto.Int32(1), Dims: []int64{2},
				DataLocation: pb.TensorProto_EXTERNAL.Enum(),
				ExternalData: []*pb.StringStringEntryProto{{Key: proto.String("location"), Value: proto.String("weights.bin")}},
			}},
		},
	}
	data, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// attentionNodes is a minimal decomposed attention over inputs x and y.
func attentionNodes(prefix string) []*pb.NodeProto {
	return []*pb.NodeProto{
		node("MatMul", []string{"x", "y"}, prefix+"scores"),
		node("Softmax", []string{prefix + "scores"}, prefix+"p"),
		node("MatMul", []string{prefix + "p", "y"}, prefix+"out"),
	}
}

func withGraph(n *pb.NodeProto, name string, g *pb.GraphProto) *pb.NodeProto {
	n.Name = proto.String(n.GetOpType() + "_node")
	n.Attribute = append(n.Attribute, &pb.AttributeProto{Name: proto.String(name), G: g, Type: pb.AttributeProto_GRAPH.Enum()})
	return n
}

func branch(nodes []*pb.NodeProto) *pb.GraphProto {
	return &pb.GraphProto{Node: nodes, Output: []*pb.ValueInfoProto{{Name: proto.String(nodes[len(nodes)-1].Output[0])}}}
}

// Attention inside subgraphs: If branches are opened (one site per layer, pairing the
// branches); Loop, Scan and generation operators are refused naming the node; so is an If
// nested in a branch.
func TestFindAttentionInSubgraphs(t *testing.T) {
	ifNode := func(then, els []*pb.NodeProto) *pb.NodeProto {
		n := node("If", []string{"cond"}, "out")
		withGraph(n, "then_branch", branch(then))
		n.Attribute = append(n.Attribute, &pb.AttributeProto{Name: proto.String("else_branch"), G: branch(els), Type: pb.AttributeProto_GRAPH.Enum()})
		return n
	}
	beam := withGraph(node("BeamSearch", []string{"x"}, "out"), "decoder", branch(attentionNodes("d/")))
	beam.Domain = proto.String("com.microsoft")
	cases := []struct {
		name    string
		n       *pb.NodeProto
		sites   int
		wantErr string
	}{
		{"If, both branches", ifNode(append(attentionNodes("t0/"), attentionNodes("t1/")...), append(attentionNodes("e0/"), attentionNodes("e1/")...)), 2, ""},
		{"If, one branch", ifNode(attentionNodes("t0/"), []*pb.NodeProto{node("Identity", []string{"x"}, "e")}), 1, ""},
		{"Loop", withGraph(node("Loop", []string{"", "cond"}, "out"), "body", branch(attentionNodes("b/"))), 0, "subgraph of Loop node Loop_node"},
		{"Scan", withGraph(node("Scan", []string{"x"}, "out"), "body", branch(attentionNodes("b/"))), 0, "subgraph of Scan node Scan_node"},
		{"BeamSearch", beam, 0, "subgraph of com.microsoft.BeamSearch node BeamSearch_node"},
		{"If inside If", ifNode([]*pb.NodeProto{ifNode(attentionNodes("i/"), attentionNodes("j/"))}, []*pb.NodeProto{node("Identity", []string{"x"}, "e")}), 0, "subgraph of If node If_node"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.n.GetName() == "" {
				c.n.Name = proto.String("If_node")
			}
			att, err := onnxgraph.FindAttention(tinyModel([]*pb.NodeProto{c.n}))
			if testutil.ExpectError(t, err, c.wantErr) {
				return
			}
			if len(att.Sites) != c.sites {
				t.Fatalf("%d sites, want %d", len(att.Sites), c.sites)
			}
			checkIfThreaded(t, tinyModel([]*pb.NodeProto{c.n}), att)
			for l, s := range att.Sites {
				if s.If == nil || s.If.Then == nil || s.Where() != "inside If If_node" {
					t.Fatalf("site %d is not placed in the If's then branch: %+v", l, s)
				}
				if s.Output != onnxgraph.OutputName(l) {
					t.Errorf("site %d output %s", l, s.Output)
				}
			}
		})
	}
}

// checkIfThreaded exposes a model whose sites are inside one If and checks the plumbing:
// each branch ends with the layers' outputs in order (a Constant where a branch has no
// such layer), and the If node and the graph gain attn.L{l}.
func checkIfThreaded(t *testing.T, m *onnxgraph.Model, att *onnxgraph.Attention) {
	t.Helper()
	data, err := onnxgraph.Expose(m, att)
	if err != nil {
		t.Fatal(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		t.Fatal(err)
	}
	ifn := mp.GetGraph().GetNode()[0]
	outs := ifn.GetOutput()
	for l, s := range att.Sites {
		if got := outs[len(outs)-len(att.Sites)+l]; got != s.Output {
			t.Errorf("If output %d is %s, want %s", l, got, s.Output)
		}
	}
	for _, a := range ifn.GetAttribute() {
		bo := a.GetG().GetOutput()
		if len(bo) != 1+len(att.Sites) {
			t.Fatalf("%s has outputs %v, want the original one and %d layers", a.GetName(), bo, len(att.Sites))
		}
		for l, s := range att.Sites {
			if want := s.Output + "." + a.GetName()[:4]; bo[1+l].GetName() != want {
				t.Errorf("%s output %d is %s, want %s", a.GetName(), 1+l, bo[1+l].GetName(), want)
			}
		}
	}
}

type refSite struct {
	Kind, Node, Branch string
}

// refSites reads the "sites" list of dir/reference.json (nil when it has none): the
// node and kind of each attention entry, in graph order. For a merged decoder only the
// then branch's entries are kept, as a site inside an If is named after that branch's node.
func refSites(t *testing.T, dir string) []refSite {
	data, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct{ Sites []refSite }
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	var out []refSite
	for _, s := range ref.Sites {
		if s.Branch == "" || s.Branch == "then_branch" {
			out = append(out, s)
		}
	}
	return out
}

// probsWrittenBy reports whether node n writes name, itself or through the Cast to
// float32 that Expose adds after a float16 Softmax.
func probsWrittenBy(g *pb.GraphProto, n *pb.NodeProto, name string) bool {
	if n.GetOutput()[0] == name {
		return true
	}
	for _, c := range g.GetNode() {
		if c.GetOpType() == "Cast" && len(c.GetInput()) == 1 && c.GetInput()[0] == n.GetOutput()[0] && c.GetOutput()[0] == name {
			return true
		}
	}
	return false
}
