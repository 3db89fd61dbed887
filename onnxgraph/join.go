package onnxgraph

import (
	"fmt"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Names a split encoder–decoder's files use for what joins them (optimum's exports of T5,
// BART, Marian, Whisper).
const (
	// EncoderHiddenOutput is the encoder's output the decoder reads.
	EncoderHiddenOutput = "last_hidden_state"
	// DecoderHiddenInput is the decoder's input that reads it.
	DecoderHiddenInput = "encoder_hidden_states"
)

// Parts are the files a joined model was read from (encoder first, see
// JoinEncoderDecoder); nil for a model read from one file.
func (m *Model) Parts() []string { return m.parts }

// JoinEncoderDecoder makes one model of an encoder–decoder exported as two files (optimum's
// encoder_model.onnx and decoder_model.onnx or decoder_model_merged.onnx): the encoder's
// last_hidden_state (its only output, whatever its name, when it has one) feeds the
// decoder's encoder_hidden_states, so that the joined graph is the single-graph
// encoder–decoder attnscope already runs. The decoder's token ids become decoder_input_ids
// (its attention_mask decoder_attention_mask), and its encoder_attention_mask reads the
// encoder's attention_mask when both have the same type (else it stays an input of its
// own). Names the two graphs share (a tied embedding, exporter constants) are given the
// prefix "encoder/" on the encoder's side; the encoder's nodes come first, so its layers
// are numbered first. Neither model is modified; the joined model's Path is the decoder's,
// its weights are read from both files, and ReadAll joins the two files' whole bytes.
func JoinEncoderDecoder(enc, dec *Model) (*Model, error) {
	encName, decName := filepath.Base(enc.Path), filepath.Base(dec.Path)
	plan, err := planJoin(enc, dec)
	if err != nil {
		return nil, err
	}
	if enc.DataDir() != dec.DataDir() {
		return nil, fmt.Errorf("%s and %s are in different folders (%s and %s), and onnxruntime reads a model's weights from one; put them in one folder", encName, decName, enc.DataDir(), dec.DataDir())
	}
	decode := func(b []byte) (*pb.ModelProto, error) {
		mp := &pb.ModelProto{}
		if err := proto.Unmarshal(b, mp); err != nil {
			return nil, fmt.Errorf("decoding model: %w", err)
		}
		return mp, nil
	}
	join := func(encBytes, decBytes []byte) ([]byte, error) {
		e, err := decode(encBytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", encName, err)
		}
		d, err := decode(decBytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", decName, err)
		}
		return proto.Marshal(plan.apply(e, d))
	}
	data, err := join(enc.compact, dec.compact)
	if err != nil {
		return nil, err
	}
	m, err := fromCompact(data)
	if err != nil {
		return nil, fmt.Errorf("joining %s and %s: %w", encName, decName, err)
	}
	m.Path, m.Size, m.dataDir = dec.Path, enc.Size+dec.Size, dec.dataDir
	m.inMemory = enc.inMemory && dec.inMemory
	m.parts = []string{enc.Path, dec.Path}
	m.whole = func() ([]byte, error) {
		e, err := enc.ReadAll()
		if err != nil {
			return nil, err
		}
		d, err := dec.ReadAll()
		if err != nil {
			return nil, err
		}
		return join(e, d)
	}
	return m, nil
}

// joinPlan is how two graphs are joined: the renames on each side, the decoder inputs the
// encoder now feeds, and the encoder output that stays inside.
type joinPlan struct {
	encRename, decRename map[string]string
	// fed are the decoder's inputs (by their renamed names) that the joined graph does not
	// take any more: the hidden state, and a mask the encoder's mask now fills.
	fed map[string]bool
	// hidden is the encoder's output (renamed) the decoder reads.
	hidden string
	opsets []*pb.OperatorSetIdProto
	ir     int64
}

// planJoin checks that enc and dec fit together and works out the renames.
func planJoin(enc, dec *Model) (*joinPlan, error) {
	encName, decName := filepath.Base(enc.Path), filepath.Base(dec.Path)
	eg, dg := enc.Graph(), dec.Graph()
	for _, in := range eg.GetInput() {
		if in.GetName() == DecoderHiddenInput {
			return nil, fmt.Errorf("%s takes %s itself, so it is a decoder, not the encoder of %s", encName, DecoderHiddenInput, decName)
		}
	}
	// The encoder's output the decoder reads.
	var hiddenOut *pb.ValueInfoProto
	for _, o := range eg.GetOutput() {
		if o.GetName() == EncoderHiddenOutput {
			hiddenOut = o
		}
	}
	if hiddenOut == nil && len(eg.GetOutput()) == 1 {
		hiddenOut = eg.GetOutput()[0]
	}
	if hiddenOut == nil {
		return nil, fmt.Errorf("%s has no %s output (its outputs: %s), so attnscope cannot tell which one feeds %s", encName, EncoderHiddenOutput, valueNames(eg.GetOutput()), decName)
	}
	decIns := Inputs(dec)
	var hiddenIn *Input
	for i := range decIns {
		if decIns[i].Name == DecoderHiddenInput {
			hiddenIn = &decIns[i]
		}
	}
	if hiddenIn == nil {
		return nil, fmt.Errorf("%s has no %s input (its inputs: %s), so it is not the decoder of %s", decName, DecoderHiddenInput, inputList(decIns), encName)
	}
	if et := hiddenOut.GetType().GetTensorType().GetElemType(); et != hiddenIn.ElemType {
		return nil, fmt.Errorf("%s's %s is %s but %s's %s is %s; export both in the same precision", encName, hiddenOut.GetName(), elemName(et), decName, DecoderHiddenInput, elemName(hiddenIn.ElemType))
	}
	// Opsets must agree: an operator means different things in different versions.
	p := &joinPlan{ir: max(enc.Proto.GetIrVersion(), dec.Proto.GetIrVersion()), fed: map[string]bool{}}
	versions := map[string]int64{}
	for _, o := range enc.Proto.GetOpsetImport() {
		versions[defaultDomain(o.GetDomain())] = o.GetVersion()
		p.opsets = append(p.opsets, proto.Clone(o).(*pb.OperatorSetIdProto))
	}
	for _, o := range dec.Proto.GetOpsetImport() {
		d := defaultDomain(o.GetDomain())
		if v, ok := versions[d]; ok {
			if v != o.GetVersion() {
				return nil, fmt.Errorf("%s uses opset %s:%d but %s uses %s:%d, and attnscope joins them into one graph; export both with the same opset", encName, d, v, decName, d, o.GetVersion())
			}
			continue
		}
		p.opsets = append(p.opsets, proto.Clone(o).(*pb.OperatorSetIdProto))
	}
	encIns := Inputs(enc)
	encInput := map[string]Input{}
	var encMask *Input
	for i, in := range encIns {
		encInput[in.Name] = in
		if in.Role == RoleAttentionMask && encMask == nil {
			encMask = &encIns[i]
		}
	}
	// The decoder's side: its ids and mask are the target's; the hidden state and the
	// encoder mask come from the encoder.
	p.decRename = map[string]string{}
	decNames := graphNames(dg)
	taken := func(n string) bool { return decNames[n] || encInput[n].Name != "" }
	for _, in := range decIns {
		lower := strings.ToLower(in.Name)
		switch {
		case in.Name == DecoderHiddenInput:
		case in.Role == RoleIDs && !strings.Contains(lower, "decoder"):
			if !taken("decoder_input_ids") {
				p.decRename[in.Name] = "decoder_input_ids"
			}
		case in.Role == RoleAttentionMask && strings.Contains(lower, "encoder"):
			if encMask != nil && encMask.ElemType == in.ElemType && len(encMask.Dims) == len(in.Dims) {
				p.decRename[in.Name] = encMask.Name
				p.fed[encMask.Name] = true
			}
		case in.Role == RoleAttentionMask && !strings.Contains(lower, "decoder"):
			if !taken("decoder_attention_mask") {
				p.decRename[in.Name] = "decoder_attention_mask"
			}
		}
	}
	for _, in := range decIns {
		if to := applyRename(p.decRename, in.Name); !p.fed[to] && in.Name != DecoderHiddenInput && encInput[to].Name != "" {
			return nil, fmt.Errorf("%s and %s both take an input %s, and attnscope cannot tell the source's from the target's; re-export them with optimum's input names", encName, decName, to)
		}
	}
	// The encoder's side: names the decoder uses too get a prefix, inputs excepted.
	used := map[string]bool{}
	for n := range decNames {
		used[applyRename(p.decRename, n)] = true
	}
	p.encRename = map[string]string{}
	for n := range graphNames(eg) {
		if n == "" || !used[n] || encInput[n].Name != "" {
			continue
		}
		to := "encoder/" + n
		for i := 2; used[to] || p.encRename[to] != ""; i++ {
			to = fmt.Sprintf("encoder%d/%s", i, n)
		}
		p.encRename[n] = to
	}
	p.hidden = applyRename(p.encRename, hiddenOut.GetName())
	p.decRename[DecoderHiddenInput] = p.hidden
	p.fed[p.hidden] = true
	return p, nil
}

// apply joins e and d (decoded from the two files, in either form: compact or whole) by
// the plan, in place, and returns the joined model.
func (p *joinPlan) apply(e, d *pb.ModelProto) *pb.ModelProto {
	eg, dg := e.GetGraph(), d.GetGraph()
	renameGraph(eg, p.encRename)
	renameGraph(dg, p.decRename)
	g := &pb.GraphProto{
		Name:      dg.Name,
		DocString: dg.DocString,
	}
	g.Node = append(append(g.Node, eg.GetNode()...), dg.GetNode()...)
	g.Initializer = append(append(g.Initializer, eg.GetInitializer()...), dg.GetInitializer()...)
	g.SparseInitializer = append(append(g.SparseInitializer, eg.GetSparseInitializer()...), dg.GetSparseInitializer()...)
	g.ValueInfo = append(append(g.ValueInfo, eg.GetValueInfo()...), dg.GetValueInfo()...)
	g.QuantizationAnnotation = append(append(g.QuantizationAnnotation, eg.GetQuantizationAnnotation()...), dg.GetQuantizationAnnotation()...)
	g.Input = append(g.Input, eg.GetInput()...)
	for _, in := range dg.GetInput() {
		if !p.fed[in.GetName()] {
			g.Input = append(g.Input, in)
		}
	}
	for _, o := range eg.GetOutput() {
		if o.GetName() == p.hidden {
			g.ValueInfo = append(g.ValueInfo, o) // its shape, for the decoder's side
		}
	}
	g.Output = dg.GetOutput()
	d.Graph = g
	d.IrVersion = proto.Int64(p.ir)
	d.OpsetImport = p.opsets
	d.Functions = append(e.GetFunctions(), d.GetFunctions()...)
	return d
}

// graphNames are every name a graph and its subgraphs use: tensors, nodes, initializers.
func graphNames(g *pb.GraphProto) map[string]bool {
	names := map[string]bool{}
	var walk func(g *pb.GraphProto)
	walk = func(g *pb.GraphProto) {
		for _, n := range g.GetNode() {
			names[n.GetName()] = true
			for _, t := range n.GetInput() {
				names[t] = true
			}
			for _, t := range n.GetOutput() {
				names[t] = true
			}
			for _, a := range n.GetAttribute() {
				if a.GetG() != nil {
					walk(a.GetG())
				}
				for _, sg := range a.GetGraphs() {
					walk(sg)
				}
			}
		}
		for _, t := range g.GetInitializer() {
			names[t.GetName()] = true
		}
		for _, t := range g.GetSparseInitializer() {
			names[t.GetValues().GetName()] = true
		}
		for _, vs := range [][]*pb.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
			for _, v := range vs {
				names[v.GetName()] = true
			}
		}
	}
	walk(g)
	delete(names, "")
	return names
}

func applyRename(r map[string]string, n string) string {
	if to, ok := r[n]; ok {
		return to
	}
	return n
}

// renameGraph renames, by r, every name in g and its subgraphs (node names too).
func renameGraph(g *pb.GraphProto, r map[string]string) {
	if len(r) == 0 || g == nil {
		return
	}
	ren := func(s *string) *string {
		if s == nil {
			return nil
		}
		if to, ok := r[*s]; ok {
			return proto.String(to)
		}
		return s
	}
	for _, n := range g.GetNode() {
		n.Name = ren(n.Name)
		for i, t := range n.Input {
			n.Input[i] = applyRename(r, t)
		}
		for i, t := range n.Output {
			n.Output[i] = applyRename(r, t)
		}
		for _, a := range n.GetAttribute() {
			renameGraph(a.GetG(), r)
			for _, sg := range a.GetGraphs() {
				renameGraph(sg, r)
			}
		}
	}
	for _, t := range g.GetInitializer() {
		t.Name = ren(t.Name)
	}
	for _, t := range g.GetSparseInitializer() {
		if t.GetValues() != nil {
			t.Values.Name = ren(t.Values.Name)
		}
	}
	for _, vs := range [][]*pb.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
		for _, v := range vs {
			v.Name = ren(v.Name)
		}
	}
	for _, q := range g.GetQuantizationAnnotation() {
		q.TensorName = ren(q.TensorName)
	}
}

func valueNames(vs []*pb.ValueInfoProto) string {
	var n []string
	for _, v := range vs {
		n = append(n, v.GetName())
	}
	return strings.Join(n, ", ")
}

func inputList(ins []Input) string {
	var n []string
	for _, in := range ins {
		n = append(n, in.Name)
	}
	return strings.Join(n, ", ")
}

func elemName(et int32) string {
	if name, ok := pb.TensorProto_DataType_name[et]; ok {
		return strings.ToLower(name)
	}
	return fmt.Sprintf("type %d", et)
}
