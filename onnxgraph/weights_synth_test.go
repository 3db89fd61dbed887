package onnxgraph_test

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// synth builds small graphs by hand for the forms no committed export has.
type synth struct {
	nodes []*pb.NodeProto
	inits []*pb.TensorProto
	n     int
}

func (s *synth) op(op string, in []string, attrs ...*pb.AttributeProto) string {
	s.n++
	out := op + "_" + string(rune('a'+s.n%26)) + strings.Repeat("x", s.n/26)
	domain := ""
	if strings.HasPrefix(op, "com.microsoft.") {
		domain, op = "com.microsoft", strings.TrimPrefix(op, "com.microsoft.")
	}
	n := nodeOf(domain, op, in, []string{out}, attrs...)
	n.Name = proto.String("/" + out)
	s.nodes = append(s.nodes, n)
	return out
}

func (s *synth) floats(name string, dims []int64, f func(i int) float64) string {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	t := &pb.TensorProto{Name: proto.String(name), DataType: proto.Int32(1), Dims: dims}
	for i := 0; i < int(n); i++ {
		t.FloatData = append(t.FloatData, float32(f(i)))
	}
	s.inits = append(s.inits, t)
	return name
}

func (s *synth) ints(name string, v ...int64) string {
	s.inits = append(s.inits, &pb.TensorProto{Name: proto.String(name), DataType: proto.Int32(7), Dims: []int64{int64(len(v))}, Int64Data: v})
	return name
}

func (s *synth) model(t *testing.T, out string) *onnxgraph.Model {
	t.Helper()
	dim := func(v int64, param string) *pb.TensorShapeProto_Dimension {
		if param != "" {
			return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: param}}
		}
		return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	shape := &pb.TensorShapeProto{Dim: []*pb.TensorShapeProto_Dimension{dim(1, ""), dim(0, "T"), dim(8, "")}}
	tt := &pb.TypeProto_Tensor{ElemType: proto.Int32(1), Shape: shape}
	x := &pb.ValueInfoProto{Name: proto.String("x"), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: tt}}}
	mp := &pb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*pb.OperatorSetIdProto{{Version: proto.Int64(17)}, {Domain: proto.String("com.microsoft"), Version: proto.Int64(1)}},
		Graph: &pb.GraphProto{
			Node: s.nodes, Initializer: s.inits,
			Input:  []*pb.ValueInfoProto{x},
			Output: []*pb.ValueInfoProto{{Name: proto.String(out)}},
		},
	}
	return testutil.ParseModel(t, mp)
}

func attrInts(name string, v ...int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Ints: v, Type: pb.AttributeProto_INTS.Enum()}
}

// llamaLike is one Llama-style attention layer written out in plain operators, d_model 8,
// 2 heads of 4: a decomposed RMSNorm (x · 1/sqrt(mean(x²) + ε) · γ), q/k/v MatMuls, a
// head-split Reshape [1, T, 2, 4], rotary embeddings as q·cos + rotate_half(q)·sin, the
// scores scaled by a constant and masked by Trilu, Softmax, P·V, heads merged, W_O.
func llamaLike(s *synth) string {
	const d, h, dh = 8, 2, 4
	x := "x"
	sq := s.op("Pow", []string{x, s.floats("two", nil, func(int) float64 { return 2 })})
	mean := s.op("ReduceMean", []string{sq}, attrInts("axes", -1))
	eps := s.op("Add", []string{mean, s.floats("eps", nil, func(int) float64 { return 1e-6 })})
	inv := s.op("Reciprocal", []string{s.op("Sqrt", []string{eps})})
	normed := s.op("Mul", []string{s.op("Mul", []string{x, inv}), s.floats("gamma", []int64{d}, func(i int) float64 { return 1 + float64(i)/10 })})
	heads := func(name string, off float64) string {
		p := s.op("MatMul", []string{normed, s.floats(name, []int64{d, h * dh}, func(i int) float64 { return off + float64(i)/64 })})
		r := s.op("Reshape", []string{p, s.ints(name+"_shape", 1, -1, h, dh)})
		return s.op("Transpose", []string{r}, attrInts("perm", 0, 2, 1, 3))
	}
	freqs := s.floats("freqs", []int64{16, dh}, func(i int) float64 { return float64(i) / 7 })
	cos, sin := s.op("Cos", []string{freqs}), s.op("Sin", []string{freqs})
	rotary := func(t string) string {
		lo := s.op("Slice", []string{t, s.ints(t+"_s0", 0), s.ints(t+"_e0", dh/2), s.ints(t+"_a0", -1)})
		hi := s.op("Slice", []string{t, s.ints(t+"_s1", dh/2), s.ints(t+"_e1", dh), s.ints(t+"_a1", -1)})
		rot := s.op("Concat", []string{s.op("Neg", []string{hi}), lo}, &pb.AttributeProto{Name: proto.String("axis"), I: proto.Int64(-1), Type: pb.AttributeProto_INT.Enum()})
		return s.op("Add", []string{s.op("Mul", []string{t, cos}), s.op("Mul", []string{rot, sin})})
	}
	q, k, v := rotary(heads("Wq", 0)), rotary(heads("Wk", 1)), heads("Wv", 2)
	kt := s.op("Transpose", []string{k}, attrInts("perm", 0, 1, 3, 2))
	scores := s.op("Mul", []string{s.op("MatMul", []string{q, kt}), s.floats("scale", nil, func(int) float64 { return 0.5 })})
	ones := s.floats("ones", []int64{16, 16}, func(int) float64 { return -1e9 })
	mask := s.op("Trilu", []string{ones, s.ints("one", 1)}, &pb.AttributeProto{Name: proto.String("upper"), I: proto.Int64(1), Type: pb.AttributeProto_INT.Enum()})
	probs := s.op("Softmax", []string{s.op("Add", []string{scores, mask})}, &pb.AttributeProto{Name: proto.String("axis"), I: proto.Int64(-1), Type: pb.AttributeProto_INT.Enum()})
	z := s.op("MatMul", []string{probs, v})
	merged := s.op("Reshape", []string{s.op("Transpose", []string{z}, attrInts("perm", 0, 2, 1, 3)), s.ints("merge", 1, -1, h*dh)})
	return s.op("MatMul", []string{merged, s.floats("Wo", []int64{h * dh, d}, func(i int) float64 { return 3 + float64(i)/64 })})
}

// TestTraceWeightsSynthetic checks, on a hand-built Llama-style layer, the decomposed RMSNorm
// (kind, ε, γ), the decomposed rotary (named), the Trilu causal mask, the score scale, and
// the per-head weight values (columns h·d_head + j of W_Q, rows of W_O).
func TestTraceWeightsSynthetic(t *testing.T) {
	s := &synth{}
	out := llamaLike(s)
	m := s.model(t, out)
	w := traceSynth(t, m)
	l := w.Layers[0]
	if l.Heads != 2 || l.KVHeads != 2 || l.DHead != 4 || l.Scale != 0.5 || !l.Causal {
		t.Errorf("heads %d kv %d d_head %d scale %g causal %v; want 2 2 4 0.5 true", l.Heads, l.KVHeads, l.DHead, l.Scale, l.Causal)
	}
	if l.Rotary == "" {
		t.Errorf("the Sin/Cos rotation of q and k was not reported as rotary")
	}
	if l.Norm == nil || l.Norm.Kind != "rmsnorm" || math.Abs(l.Norm.Epsilon-1e-6) > 1e-12 || len(l.Norm.Scale) != 8 || l.Norm.Scale[3] != float64(float32(1.3)) || l.Norm.Bias != nil {
		t.Errorf("norm %+v, want the decomposed rmsnorm with ε 1e-6 and γ[3] = 1.3", l.Norm)
	}
	for hd := 0; hd < 2; hd++ {
		for i := 0; i < 8; i++ {
			for j := 0; j < 4; j++ {
				if got, want := l.WQ[hd][i*4+j], float64(float32(float64(i*8+hd*4+j)/64)); got != want {
					t.Fatalf("W_Q[%d][%d,%d] = %g, want %g (column h·d_head + j of the weight)", hd, i, j, got, want)
				}
				if got, want := l.WO[hd][j*8+i], float64(float32(3+float64((hd*4+j)*8+i)/64)); got != want {
					t.Fatalf("W_O[%d][%d,%d] = %g, want %g (row h·d_head + j)", hd, j, i, got, want)
				}
			}
		}
	}
	if w.Embed != nil || w.EmbedNote == "" || w.PosNote == "" || !strings.Contains(w.PosNote, "rotary") {
		t.Errorf("model-level notes: embed %q, positions %q", w.EmbedNote, w.PosNote)
	}
}

// TestTraceWeightsStops checks the one-sentence errors where a graph leaves the forms
// TraceWeights follows: the Q projection replaced by an activation product, a
// non-scalar constant multiplied into q, a weight that is a graph input.
func TestTraceWeightsStops(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(s *synth)
		reason string
	}{
		{"weight replaced by an activation", func(s *synth) {
			for _, n := range s.nodes {
				if n.GetOpType() == "MatMul" && len(n.Input) == 2 && n.Input[1] == "Wq" {
					n.Input[1] = n.Input[0]
				}
			}
		}, "two activations"},
		{"weight fed as a graph input", func(s *synth) {
			for _, n := range s.nodes {
				if n.GetOpType() == "MatMul" && len(n.Input) == 2 && n.Input[1] == "Wq" {
					n.Input[1] = "x"
				}
			}
		}, "graph input"},
		{"per-feature scale on q", func(s *synth) {
			for _, n := range s.nodes {
				if n.GetOpType() == "MatMul" && len(n.Input) == 2 && n.Input[1] == "Wq" {
					out := n.Output[0]
					n.Output[0] = out + "_raw"
					s.nodes = append(s.nodes, nodeOf("", "Mul", []string{out + "_raw", s.floats("vec", []int64{8}, func(i int) float64 { return float64(i) })}, []string{out}))
				}
			}
		}, "not a scalar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &synth{}
			out := llamaLike(s)
			tc.edit(s)
			m := s.model(t, out)
			att, err := onnxgraph.FindAttention(m)
			if err != nil {
				t.Fatalf("FindAttention: %v", err)
			}
			_, err = onnxgraph.TraceWeights(m, att)
			var te *onnxgraph.TraceError
			if !errors.As(err, &te) || !strings.Contains(te.Reason, tc.reason) || te.At == "" {
				t.Fatalf("error %v, want a *TraceError at a node saying %q", err, tc.reason)
			}
		})
	}
}

// TestTraceWeightsStoredForms checks that weights stored as int8 behind DequantizeLinear,
// as float16 or bfloat16 behind a Cast, and transposed behind Gemm(transB=1) read back as
// the values the graph computes with.
func TestTraceWeightsStoredForms(t *testing.T) {
	s := &synth{}
	out := llamaLike(s)
	// W_Q: int8 q with scale 0.5 and zero point 3, per tensor.
	q := &pb.TensorProto{Name: proto.String("Wq_int8"), DataType: proto.Int32(3), Dims: []int64{8, 8}}
	for i := 0; i < 64; i++ {
		q.Int32Data = append(q.Int32Data, int32(i%17-8))
	}
	zp := &pb.TensorProto{Name: proto.String("Wq_zp"), DataType: proto.Int32(3), Int32Data: []int32{3}}
	// W_K: float16 raw bytes of i/8 (exact in float16).
	k := &pb.TensorProto{Name: proto.String("Wk_fp16"), DataType: proto.Int32(10), Dims: []int64{8, 8}}
	// W_V: bfloat16 in int32_data of i/4 (exact in bfloat16).
	v := &pb.TensorProto{Name: proto.String("Wv_bf16"), DataType: proto.Int32(16), Dims: []int64{8, 8}}
	for i := 0; i < 64; i++ {
		h := halfBits(float32(i) / 8)
		k.RawData = append(k.RawData, byte(h), byte(h>>8))
		v.Int32Data = append(v.Int32Data, int32(math.Float32bits(float32(i)/4)>>16))
	}
	s.inits = append(s.inits, q, zp, k, v)
	scale := s.floats("Wq_scale", nil, func(int) float64 { return 0.5 })
	deq := s.op("DequantizeLinear", []string{"Wq_int8", scale, "Wq_zp"})
	k16 := s.op("Cast", []string{"Wk_fp16"}, &pb.AttributeProto{Name: proto.String("to"), I: proto.Int64(1), Type: pb.AttributeProto_INT.Enum()})
	vbf := s.op("Cast", []string{"Wv_bf16"}, &pb.AttributeProto{Name: proto.String("to"), I: proto.Int64(1), Type: pb.AttributeProto_INT.Enum()})
	// W_O: a Gemm with transB=1 reading Wo stored as [d_model, heads·d_head].
	woT := s.floats("WoT", []int64{8, 8}, func(i int) float64 { return float64(i) / 16 })
	for _, n := range s.nodes {
		if n.GetOpType() == "MatMul" && len(n.Input) == 2 {
			switch n.Input[1] {
			case "Wq":
				n.Input[1] = deq
			case "Wk":
				n.Input[1] = k16
			case "Wv":
				n.Input[1] = vbf
			case "Wo":
				n.OpType = proto.String("Gemm")
				n.Input[1] = woT
				n.Attribute = append(n.Attribute, &pb.AttributeProto{Name: proto.String("transB"), I: proto.Int64(1), Type: pb.AttributeProto_INT.Enum()})
			}
		}
	}
	// The nodes must be in topological order for the model to be valid: the new
	// constants go first.
	var first, rest []*pb.NodeProto
	for _, n := range s.nodes {
		if op := n.GetOpType(); op == "DequantizeLinear" || (op == "Cast" && strings.HasPrefix(n.Input[0], "W")) {
			first = append(first, n)
		} else {
			rest = append(rest, n)
		}
	}
	s.nodes = append(first, rest...)
	l := traceSynth(t, s.model(t, out)).Layers[0]
	for h := 0; h < 2; h++ {
		for i := 0; i < 8; i++ {
			for j := 0; j < 4; j++ {
				c := i*8 + h*4 + j
				if got, want := l.WQ[h][i*4+j], float64(c%17-8-3)*0.5; got != want {
					t.Fatalf("int8 W_Q[%d][%d,%d] = %g, want %g", h, i, j, got, want)
				}
				if got, want := l.WK[h][i*4+j], float64(c)/8; got != want {
					t.Fatalf("float16 W_K[%d][%d,%d] = %g, want %g", h, i, j, got, want)
				}
				if got, want := l.WV[h][i*4+j], float64(c)/4; got != want {
					t.Fatalf("bfloat16 W_V[%d][%d,%d] = %g, want %g", h, i, j, got, want)
				}
				// Gemm(transB): W_O row h·4+j, column i is WoT[i, h·4+j].
				if got, want := l.WO[h][j*8+i], float64(i*8+h*4+j)/16; got != want {
					t.Fatalf("Gemm W_O[%d][%d,%d] = %g, want %g", h, j, i, got, want)
				}
			}
		}
	}
}

// halfBits is the IEEE half-precision encoding of a float32 that float16 holds exactly.
func halfBits(f float32) uint16 {
	if f == 0 {
		return 0
	}
	b := math.Float32bits(f)
	exp := int((b>>23)&0xff) - 127 + 15
	return uint16(b>>16&0x8000) | uint16(exp)<<10 | uint16(b>>13&0x3ff)
}

// TestTraceWeightsFusedOperators checks com.microsoft.MultiHeadAttention with its packed
// Q/K/V bias input, and GroupQueryAttention reading one packed QKV projection (2 query
// heads, 1 K/V head of 4): the biases and the column blocks land on the right heads.
func TestTraceWeightsFusedOperators(t *testing.T) {
	intAttr := func(name string, v int64) *pb.AttributeProto {
		return &pb.AttributeProto{Name: proto.String(name), I: proto.Int64(v), Type: pb.AttributeProto_INT.Enum()}
	}
	t.Run("MultiHeadAttention", func(t *testing.T) {
		s := &synth{}
		var proj []string
		for p, name := range []string{"Wq", "Wk", "Wv"} {
			proj = append(proj, s.op("MatMul", []string{"x", s.floats(name, []int64{8, 8}, func(i int) float64 { return float64(p*64+i) / 64 })}))
		}
		bias := s.floats("qkv_bias", []int64{24}, func(i int) float64 { return float64(i) })
		z := s.op("com.microsoft.MultiHeadAttention", append(proj, bias), intAttr("num_heads", 2), intAttr("unidirectional", 1))
		out := s.op("MatMul", []string{z, s.floats("Wo", []int64{8, 8}, func(i int) float64 { return float64(i) })})
		w := traceSynth(t, s.model(t, out))
		l := w.Layers[0]
		if l.Heads != 2 || l.KVHeads != 2 || l.DHead != 4 || !l.Causal || math.Abs(l.Scale-0.5) > 1e-12 {
			t.Fatalf("heads %d kv %d d_head %d causal %v scale %g; want 2 2 4 true 0.5", l.Heads, l.KVHeads, l.DHead, l.Causal, l.Scale)
		}
		for part, b := range [][][]float64{l.BQ, l.BK, l.BV} {
			for h := 0; h < 2; h++ {
				for j := 0; j < 4; j++ {
					if got, want := b[h][j], float64(part*8+h*4+j); got != want {
						t.Fatalf("bias %d of head %d [%d] = %g, want %g", part, h, j, got, want)
					}
				}
			}
		}
		if got, want := l.WV[1][2*4+3], float64(2*64+2*8+4+3)/64; got != want {
			t.Errorf("W_V[1][2,3] = %g, want %g", got, want)
		}
	})
	t.Run("GroupQueryAttention packed", func(t *testing.T) {
		s := &synth{}
		qkv := s.op("MatMul", []string{"x", s.floats("Wqkv", []int64{8, 16}, func(i int) float64 { return float64(i) })})
		z := s.op("com.microsoft.GroupQueryAttention", []string{qkv, "", ""}, intAttr("num_heads", 2), intAttr("kv_num_heads", 1))
		out := s.op("MatMul", []string{z, s.floats("Wo", []int64{8, 8}, func(i int) float64 { return float64(i) })})
		w := traceSynth(t, s.model(t, out))
		l := w.Layers[0]
		if l.Heads != 2 || l.KVHeads != 1 || l.DHead != 4 || !l.Causal {
			t.Fatalf("heads %d kv %d d_head %d causal %v; want 2 1 4 true", l.Heads, l.KVHeads, l.DHead, l.Causal)
		}
		// Row 1 of the packed weight: q head 1 is columns 4..7, k 8..11, v 12..15.
		if got := []float64{l.WQ[1][4], l.WK[0][4], l.WV[0][4]}; !reflect.DeepEqual(got, []float64{20, 24, 28}) {
			t.Errorf("row 1, first column of q head 1, k, v = %v, want [20 24 28]", got)
		}
	})
}

func traceSynth(t *testing.T, m *onnxgraph.Model) *onnxgraph.Weights {
	t.Helper()
	att, err := onnxgraph.FindAttention(m)
	if err != nil {
		t.Fatalf("FindAttention: %v", err)
	}
	w, err := onnxgraph.TraceWeights(m, att)
	if err != nil {
		t.Fatalf("TraceWeights: %v", err)
	}
	if len(w.Layers) != 1 || w.DModel != 8 {
		t.Fatalf("%d layers, d_model %d; want 1, 8", len(w.Layers), w.DModel)
	}
	return w
}
