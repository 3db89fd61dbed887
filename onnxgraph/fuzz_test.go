package onnxgraph_test

import (
	"bytes"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// seedModel is one whole model the fuzz targets start from.
type seedModel struct {
	name  string // path relative to the repository root ("../shared/…" for fixtures)
	path  string
	data  []byte
	proto *pb.ModelProto // decoded whole, weights included
	extra []string       // external-data files beside it
}

// fuzzSeeds reads every committed model (testdata/models, models/, testdata/hf) and every
// model of the shared fixtures, whole; models that are absent (no ../shared) are left out.
func fuzzSeeds(tb testing.TB) []seedModel {
	root := testutil.Root()
	var paths []string
	for _, pattern := range []string{
		"testdata/models/*/model.onnx", "models/*/model.onnx", "testdata/hf/*/model.onnx",
		"../shared/fixtures/*/*.onnx", "../shared/fixtures/*/*/*.onnx",
	} {
		found, _ := filepath.Glob(filepath.Join(root, pattern))
		paths = append(paths, found...)
	}
	sort.Strings(paths)
	var seeds []seedModel
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		mp := &pb.ModelProto{}
		if err := proto.Unmarshal(data, mp); err != nil {
			tb.Fatalf("seed %s does not decode: %v", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		s := seedModel{name: filepath.ToSlash(rel), path: p, data: data, proto: mp}
		m, err := onnxgraph.Load(p)
		if err != nil {
			tb.Fatalf("seed %s does not load: %v", p, err)
		}
		s.extra = m.ExternalDataFiles()
		seeds = append(seeds, s)
	}
	if len(seeds) == 0 {
		tb.Fatal("no seed models: testdata/models is empty")
	}
	return seeds
}

// pick returns the seed named name, or, for any other name (the fuzzer mutates it too), the
// seed its hash selects.
func pick(seeds []seedModel, name string) *seedModel {
	for i := range seeds {
		if seeds[i].name == name {
			return &seeds[i]
		}
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return &seeds[h.Sum32()%uint32(len(seeds))]
}

// pipeline runs what attnscope runs on a model before onnxruntime sees it: FindAttention,
// the signature, the limits, and TraceWeights, Expose and Save when there are sites.
// Errors are fine; panics are not, and neither is an exposed model that does not parse or
// lacks a site's output.
func pipeline(t *testing.T, m *onnxgraph.Model) {
	att, _ := onnxgraph.FindAttention(m)
	onnxgraph.Inputs(m)
	onnxgraph.ModelLimits(m)
	onnxgraph.MainOutput(m)
	onnxgraph.MainOutputType(m)
	onnxgraph.BatchDependentOp(m)
	m.ExternalDataFiles()
	if att == nil || len(att.Sites) == 0 {
		return
	}
	onnxgraph.TraceWeights(m, att)
	exposed, err := onnxgraph.Expose(m, att)
	if err != nil {
		return
	}
	em, err := onnxgraph.Parse(exposed)
	if err != nil {
		t.Fatalf("the exposed model does not parse: %v", err)
	}
	outs := map[string]bool{}
	for _, o := range em.Graph().GetOutput() {
		outs[o.GetName()] = true
	}
	for _, s := range att.Sites {
		if !outs[s.Output] {
			t.Fatalf("the exposed model has no output %s for site %+v", s.Output, s)
		}
	}
	onnxgraph.FindAttention(em)
	onnxgraph.Save(m, att, io.Discard)
	onnxgraph.RelabelOpset10(exposed)
}

// FuzzLoad feeds arbitrary bytes to the loader and the pipeline (FindAttention, Inputs,
// ModelLimits, Expose): errors are fine, panics are not. Its seeds are every committed
// and shared model, whole.
func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s.data)
	}
	f.Add([]byte{0x08, 0x07, 0x3a, 0x02, 0x0a, 0x00})
	f.Add([]byte("not a model"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := onnxgraph.Parse(data)
		if err != nil {
			return
		}
		pipeline(t, m)
	})
}

// FuzzPipeline is structure-aware: the input picks a seed model (by name) and a short
// program of edits to its decoded proto — inputs and outputs of nodes deleted, duplicated,
// swapped, emptied or wired into cycles; operators changed among the attention-related
// ones; attributes (axis, qk_matmul_output_mode, num_heads, perm, equation…) dropped or set
// to odd values; shapes and ranks set or removed; value_info removed; initializers, graph
// inputs, opsets and external-data locations changed; nodes wrapped in If — then
// re-encodes it and runs it through Parse and Load (from a file) and the pipeline. It must
// never panic.
func FuzzPipeline(f *testing.F) {
	seeds := fuzzSeeds(f)
	for i, s := range seeds {
		f.Add(s.name, []byte{})
		// Every edit once per seed, aimed at an attention-like node, and a program of
		// three, so that the corpus starts with each kind of edit in it (plain `go test`
		// runs these too: every edit on every seed, without a panic).
		for op := range 24 {
			f.Add(s.name, []byte{byte(op), 0, 0x80, byte(i), byte(op * 37), byte(op), byte(op * 3), 1, 2, 3, 4})
		}
		f.Add(s.name, []byte{6, 0, 0x80, 0, 1, 3, 8, 0, 0x80, 0, 2, 0, 3, 11, 0, 0, 0, 5, 2})
	}
	dir := f.TempDir()
	for _, s := range seeds {
		for _, e := range s.extra {
			data, err := os.ReadFile(filepath.Join(filepath.Dir(s.path), e))
			if err != nil {
				f.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(e)), data, 0o644); err != nil {
				f.Fatal(err)
			}
		}
	}
	modelPath := filepath.Join(dir, "model.onnx")
	f.Fuzz(func(t *testing.T, name string, prog []byte) {
		mp := proto.Clone(pick(seeds, name).proto).(*pb.ModelProto)
		mutate(mp, prog)
		data, err := proto.Marshal(mp)
		if err != nil {
			return
		}
		if m, err := onnxgraph.Parse(data); err == nil {
			pipeline(t, m)
		}
		if err := os.WriteFile(modelPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if m, err := onnxgraph.Load(modelPath); err == nil {
			pipeline(t, m)
		}
	})
}

// program reads a mutation program: bytes, then zeros once they run out.
type program struct {
	b []byte
	i int
}

func (p *program) more() bool { return p.i < len(p.b) }

func (p *program) next() int {
	if p.i >= len(p.b) {
		return 0
	}
	p.i++
	return int(p.b[p.i-1])
}

// index picks an index below n (0 when n is 0), from two bytes so that graphs of thousands
// of nodes are reachable.
func (p *program) index(n int) int {
	if n <= 0 {
		return 0
	}
	return (p.next()<<8 | p.next()) % n
}

// Values the mutations draw from.
var (
	fuzzOps = []struct{ domain, op string }{
		{"", "Softmax"}, {"", "MatMul"}, {"", "Einsum"}, {"", "Attention"}, {"com.microsoft", "Attention"},
		{"com.microsoft", "MultiHeadAttention"}, {"com.microsoft", "GroupQueryAttention"},
		{"com.microsoft", "PackedAttention"}, {"", "If"}, {"", "Loop"}, {"", "Transpose"}, {"", "Reshape"},
		{"", "Add"}, {"", "Mul"}, {"", "Div"}, {"", "Where"}, {"", "Cast"}, {"", "Identity"},
		{"", "Unsqueeze"}, {"", "Squeeze"}, {"", "Constant"}, {"", "Expand"}, {"", "Gather"}, {"", "Concat"},
		{"", "Shape"}, {"com.microsoft", "FusedMatMul"}, {"com.microsoft", "EmbedLayerNormalization"},
		{"", "DynamicQuantizeLinear"}, {"", "ConstantOfShape"}, {"", "Slice"}, {"", "Dropout"},
		{"", "LayerNormalization"}, {"", "Range"}, {"", "Flatten"}, {"ai.onnx", "Softmax"},
	}
	fuzzIntAttrs = []string{"axis", "qk_matmul_output_mode", "num_heads", "q_num_heads", "kv_num_heads",
		"unidirectional", "qk_output", "do_rotary", "past_present_share_buffer", "to", "keepdims",
		"allowzero", "transA", "transB", "start", "end", "is_causal"}
	fuzzIntsAttrs = []string{"perm", "axes", "qkv_hidden_sizes", "value_ints"}
	fuzzInts      = []int64{-5, -2, -1, 0, 1, 2, 3, 4, 5, 7, 12, 1 << 31, -1 << 40, 1 << 62, math.MinInt64, math.MaxInt64}
	fuzzEquations = []string{"bhqd,bhkd->bhqk", "bhqd,bhkd->bhkq", "...qd,...kd->...qk", "bqhd,bkhd->bhqk",
		"ij,jk", "a,b->", "->", "", ",,", "abc", "a...b...,c->a", "...,...->...", "bhqk,bhkd->bhqd", "ii->i"}
	fuzzLocations = []string{"", "/abs/w.bin", "../w.bin", "w.bin", "model.onnx", "model.onnx.data", "sub/../../x", "."}
	fuzzDims      = []int64{-3, 0, 1, 2, 4, 8, 1 << 40}
)

// graphs lists mp's main graph and every subgraph inside it, depth first.
func graphs(g *pb.GraphProto) []*pb.GraphProto {
	if g == nil {
		return nil
	}
	out := []*pb.GraphProto{g}
	for _, n := range g.GetNode() {
		for _, a := range n.GetAttribute() {
			out = append(out, graphs(a.GetG())...)
			for _, sg := range a.GetGraphs() {
				out = append(out, graphs(sg)...)
			}
		}
	}
	return out
}

// attentionLike are the operators a mutation aims at more often.
var attentionLike = map[string]bool{"Softmax": true, "MatMul": true, "Einsum": true, "Attention": true,
	"MultiHeadAttention": true, "GroupQueryAttention": true, "If": true, "Transpose": true, "Reshape": true}

// mutate applies the edit program prog to mp. It never panics, whatever the program.
func mutate(mp *pb.ModelProto, prog []byte) {
	p := &program{b: prog}
	for steps := 0; p.more() && steps < 16; steps++ {
		op := p.next()
		gs := graphs(mp.GetGraph())
		if len(gs) == 0 {
			return
		}
		g := gs[p.next()%len(gs)]
		var n *pb.NodeProto
		if len(g.Node) > 0 {
			if sel := p.next(); sel&0x80 != 0 {
				var hits []*pb.NodeProto
				for _, x := range g.Node {
					if attentionLike[x.GetOpType()] {
						hits = append(hits, x)
					}
				}
				if len(hits) > 0 {
					n = hits[p.index(len(hits))]
				}
			}
			if n == nil {
				n = g.Node[p.index(len(g.Node))]
			}
		}
		valueInfos := func() []*pb.ValueInfoProto {
			return append(append(append([]*pb.ValueInfoProto{}, g.Input...), g.Output...), g.ValueInfo...)
		}
		switch op % 24 {
		case 0: // delete a node input
			if n != nil && len(n.Input) > 0 {
				k := p.index(len(n.Input))
				n.Input = append(n.Input[:k], n.Input[k+1:]...)
			}
		case 1: // duplicate a node input
			if n != nil && len(n.Input) > 0 {
				n.Input = append(n.Input, n.Input[p.index(len(n.Input))])
			}
		case 2: // swap two node inputs
			if n != nil && len(n.Input) > 1 {
				a, b := p.index(len(n.Input)), p.index(len(n.Input))
				n.Input[a], n.Input[b] = n.Input[b], n.Input[a]
			}
		case 3: // delete a node output
			if n != nil && len(n.Output) > 0 {
				k := p.index(len(n.Output))
				n.Output = append(n.Output[:k], n.Output[k+1:]...)
			}
		case 4: // duplicate an output, or write another node's output (two producers)
			if n != nil && len(n.Output) > 0 {
				if other := g.Node[p.index(len(g.Node))]; p.next()%2 == 0 && len(other.Output) > 0 {
					n.Output[p.index(len(n.Output))] = other.Output[0]
				} else {
					n.Output = append(n.Output, n.Output[p.index(len(n.Output))])
				}
			}
		case 5: // empty names
			if n == nil {
				break
			}
			switch p.next() % 3 {
			case 0:
				n.Name = proto.String("")
			case 1:
				if len(n.Input) > 0 {
					n.Input[p.index(len(n.Input))] = ""
				}
			case 2:
				if len(n.Output) > 0 {
					n.Output[p.index(len(n.Output))] = ""
				}
			}
		case 6: // change the operator
			if n != nil {
				o := fuzzOps[p.next()%len(fuzzOps)]
				n.OpType = proto.String(o.op)
				n.Domain = nil
				if o.domain != "" {
					n.Domain = proto.String(o.domain)
				}
			}
		case 7: // drop an attribute, or repeat one (two attributes of one name)
			if n != nil && len(n.Attribute) > 0 {
				k := p.index(len(n.Attribute))
				if p.next()%2 == 0 {
					n.Attribute = append(n.Attribute[:k], n.Attribute[k+1:]...)
				} else {
					n.Attribute = append(n.Attribute, proto.Clone(n.Attribute[k]).(*pb.AttributeProto))
				}
			}
		case 8: // set an integer attribute
			if n != nil {
				setAttr(n, &pb.AttributeProto{Name: proto.String(fuzzIntAttrs[p.next()%len(fuzzIntAttrs)]), I: proto.Int64(fuzzInts[p.next()%len(fuzzInts)]), Type: pb.AttributeProto_INT.Enum()})
			}
		case 9: // set an ints attribute
			if n != nil {
				var v []int64
				for range p.next() % 6 {
					v = append(v, int64(int8(p.next()))%6)
				}
				setAttr(n, &pb.AttributeProto{Name: proto.String(fuzzIntsAttrs[p.next()%len(fuzzIntsAttrs)]), Ints: v, Type: pb.AttributeProto_INTS.Enum()})
			}
		case 10: // an equation, or an attribute of the wrong type
			if n == nil {
				break
			}
			if p.next()%2 == 0 {
				setAttr(n, &pb.AttributeProto{Name: proto.String("equation"), S: []byte(fuzzEquations[p.next()%len(fuzzEquations)]), Type: pb.AttributeProto_STRING.Enum()})
			} else if len(n.Attribute) > 0 {
				a := n.Attribute[p.index(len(n.Attribute))]
				a.I, a.Ints, a.T, a.G = nil, nil, nil, nil
				a.F = proto.Float32(1.5)
				a.Type = pb.AttributeProto_FLOAT.Enum()
			}
		case 11: // set or remove a declared shape
			vis := valueInfos()
			if len(vis) == 0 {
				break
			}
			v := vis[p.index(len(vis))]
			switch p.next() % 4 {
			case 0:
				v.Type = nil
			case 1:
				if tt := v.GetType().GetTensorType(); tt != nil {
					tt.Shape = nil
				}
			default:
				var dims []*pb.TensorShapeProto_Dimension
				for range p.next() % 7 {
					if b := p.next(); b%3 == 0 {
						dims = append(dims, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "d"}})
					} else {
						dims = append(dims, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: fuzzDims[b%len(fuzzDims)]}})
					}
				}
				v.Type = &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(int32(p.next() % 17)), Shape: &pb.TensorShapeProto{Dim: dims}}}}
			}
		case 12: // remove value_info
			if len(g.ValueInfo) > 0 && p.next()%2 == 0 {
				k := p.index(len(g.ValueInfo))
				g.ValueInfo = append(g.ValueInfo[:k], g.ValueInfo[k+1:]...)
			} else {
				g.ValueInfo = nil
			}
		case 13: // a cycle: read a later node's output, or one's own
			if n != nil && len(n.Input) > 0 {
				later := g.Node[p.index(len(g.Node))]
				if p.next()%2 == 0 {
					later = n
				}
				if len(later.Output) > 0 {
					n.Input[p.index(len(n.Input))] = later.Output[p.index(len(later.Output))]
				}
			}
		case 14: // delete a node
			if len(g.Node) > 0 {
				k := p.index(len(g.Node))
				g.Node = append(g.Node[:k], g.Node[k+1:]...)
			}
		case 15: // duplicate a node
			if n != nil {
				g.Node = append(g.Node, proto.Clone(n).(*pb.NodeProto))
			}
		case 16: // take attnscope's own names
			if n != nil && len(n.Output) > 0 {
				names := []string{"attn.L0", "attn.L1", onnxgraph.LogitsOutput, "attn.L0.probs"}
				n.Output[p.index(len(n.Output))] = names[p.next()%len(names)]
			}
		case 17: // initializers: dims, type, external data, removal, duplicates
			if len(g.Initializer) == 0 {
				break
			}
			k := p.index(len(g.Initializer))
			t := g.Initializer[k]
			switch p.next() % 5 {
			case 0:
				var dims []int64
				for range p.next() % 5 {
					dims = append(dims, fuzzDims[p.next()%len(fuzzDims)])
				}
				t.Dims = dims
			case 1:
				t.DataType = proto.Int32(int32(p.next() % 24))
			case 2:
				t.DataLocation = pb.TensorProto_EXTERNAL.Enum()
				t.ExternalData = []*pb.StringStringEntryProto{{Key: proto.String("location"), Value: proto.String(fuzzLocations[p.next()%len(fuzzLocations)])}}
			case 3:
				g.Initializer = append(g.Initializer[:k], g.Initializer[k+1:]...)
			case 4:
				g.Initializer = append(g.Initializer, proto.Clone(t).(*pb.TensorProto))
			}
		case 18: // graph inputs and outputs
			switch p.next() % 3 {
			case 0:
				if len(g.Input) > 0 {
					k := p.index(len(g.Input))
					g.Input = append(g.Input[:k], g.Input[k+1:]...)
				}
			case 1:
				if len(g.Output) > 0 {
					k := p.index(len(g.Output))
					g.Output = append(g.Output[:k], g.Output[k+1:]...)
				}
			case 2:
				if len(g.Initializer) > 0 {
					g.Input = append(g.Input, &pb.ValueInfoProto{Name: proto.String(g.Initializer[p.index(len(g.Initializer))].GetName())})
				}
			}
		case 19: // opsets
			versions := []int64{-1, 1, 10, 11, 12, 13, 17, 23, 100}
			switch p.next() % 3 {
			case 0:
				mp.OpsetImport = nil
			case 1:
				mp.OpsetImport = append(mp.OpsetImport, &pb.OperatorSetIdProto{Domain: proto.String("com.microsoft"), Version: proto.Int64(1)})
			case 2:
				for _, o := range mp.OpsetImport {
					if o.GetDomain() == "" || o.GetDomain() == "ai.onnx" {
						o.Version = proto.Int64(versions[p.next()%len(versions)])
					}
				}
			}
		case 20: // wrap a node in an If whose branches both hold it
			if n == nil || len(g.Input) == 0 {
				break
			}
			branch := func(name string) *pb.AttributeProto {
				bg := &pb.GraphProto{Name: proto.String(name), Node: []*pb.NodeProto{proto.Clone(n).(*pb.NodeProto)}}
				for _, o := range n.Output {
					bg.Output = append(bg.Output, &pb.ValueInfoProto{Name: proto.String(o)})
				}
				return &pb.AttributeProto{Name: proto.String(name), G: bg, Type: pb.AttributeProto_GRAPH.Enum()}
			}
			wrapped := &pb.NodeProto{Name: proto.String("fuzz::if"), OpType: proto.String("If"), Input: []string{g.Input[0].GetName()},
				Output: append([]string(nil), n.Output...), Attribute: []*pb.AttributeProto{branch("then_branch"), branch("else_branch")}}
			for k := range g.Node {
				if g.Node[k] == n {
					g.Node[k] = wrapped
				}
			}
		case 21: // a Constant's value: dims and data that disagree, odd raw bytes
			if n == nil {
				break
			}
			var dims []int64
			for range p.next() % 3 {
				dims = append(dims, fuzzDims[p.next()%len(fuzzDims)])
			}
			t := &pb.TensorProto{DataType: proto.Int32(int32(pb.TensorProto_INT64)), Dims: dims}
			if p.next()%2 == 0 {
				for range p.next() % 5 {
					t.Int64Data = append(t.Int64Data, fuzzInts[p.next()%len(fuzzInts)])
				}
			} else {
				t.RawData = bytes.Repeat([]byte{byte(p.next())}, p.next()%20)
			}
			if p.next()%2 == 0 {
				t.DataType = proto.Int32(int32(pb.TensorProto_INT32))
			}
			setAttr(n, &pb.AttributeProto{Name: proto.String("value"), T: t, Type: pb.AttributeProto_TENSOR.Enum()})
		case 22: // reorder two nodes
			if len(g.Node) > 1 {
				a, b := p.index(len(g.Node)), p.index(len(g.Node))
				g.Node[a], g.Node[b] = g.Node[b], g.Node[a]
			}
		case 23: // the IR version
			mp.IrVersion = proto.Int64(fuzzInts[p.next()%len(fuzzInts)])
		}
	}
}

// setAttr replaces n's attribute of a's name with a, or adds it.
func setAttr(n *pb.NodeProto, a *pb.AttributeProto) {
	for k, x := range n.Attribute {
		if x.GetName() == a.GetName() {
			n.Attribute[k] = a
			return
		}
	}
	n.Attribute = append(n.Attribute, a)
}
