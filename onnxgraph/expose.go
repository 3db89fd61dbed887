package onnxgraph

import (
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Expose returns the bytes of a model in which every site's probabilities are an extra
// graph output named attn.L{layer} (see OutputName), for onnxruntime to load with
// m.DataDir() as its external-data folder (the weights are read from the original file,
// see Model). Neither the model's file nor its Model value is modified.
//
// The probability tensor itself is renamed attn.L{layer} and declared an output, rather
// than copied into one by an added node: onnxruntime then writes it straight into the
// caller's pre-allocated buffer (an Identity copy cost 6 % of a GPT-2-small forward at
// T = 1024 and 1.2 GB more peak memory; see BENCHMARKS.md). Re-encoding is cheap because
// the compact encoding holds no weights. ExposeWith with ExposeOptions.Layers exposes some
// layers only.
func Expose(m *Model, att *Attention) ([]byte, error) {
	if err := checkSites(m, att); err != nil {
		return nil, err
	}
	e, err := rewriteWith(m.compact, att, ExposeOptions{})
	if err != nil {
		return nil, err
	}
	return e.Bytes, nil
}

// Save writes a self-contained exposed model (weights inline, as in the original file)
// to w: the form to hand to other tools. It decodes the whole model.
func Save(m *Model, att *Attention, w io.Writer) error {
	if err := checkSites(m, att); err != nil {
		return err
	}
	data, err := m.ReadAll()
	if err != nil {
		return err
	}
	out, err := rewriteWith(data, att, ExposeOptions{})
	if err != nil {
		return err
	}
	_, err = w.Write(out.Bytes)
	return err
}

// formOps is the operator each form of site is found at.
var formOps = map[Form]string{
	FormSoftmax:       "Softmax",
	FormONNXAttention: "Attention",
	FormGQA:           "com.microsoft.GroupQueryAttention",
	FormMHA:           "com.microsoft.MultiHeadAttention",
	FormMSAttention:   "com.microsoft.Attention",
}

// checkSites makes sure att describes m: every site names a node of m (inside the If it
// names, for a nested site) that has the site's operator and is well-formed, and every
// output name is new to the model and used once. Sites that FindAttention returned for m
// pass; sites made by hand or found in another model get an error instead of a panic.
func checkSites(m *Model, att *Attention) error {
	if att == nil || len(att.Sites) == 0 {
		return fmt.Errorf("no attention sites to expose")
	}
	nodes := m.Graph().GetNode()
	outputs := map[string]bool{}
	for _, s := range att.Sites {
		if s.Output == "" || outputs[s.Output] {
			return fmt.Errorf("attention site %d has the output name %q, which is empty or taken by another site; find the model's attention again", s.Layer, s.Output)
		}
		outputs[s.Output] = true
		if m.hasTensor(s.Output) {
			return fmt.Errorf("the model already has a tensor named %s, which attnscope needs for its own output; rename it", s.Output)
		}
		if s.NodeIndex < 0 || s.NodeIndex >= len(nodes) {
			return fmt.Errorf("attention site %s names node %d, and the model has %d nodes: the sites were found in another model", s.Output, s.NodeIndex, len(nodes))
		}
		n := nodes[s.NodeIndex]
		if s.If == nil {
			if err := checkSiteNode(s, n); err != nil {
				return err
			}
			continue
		}
		if n.GetOpType() != "If" {
			return fmt.Errorf("attention site %s is placed inside an If, and node %d is a %s: the sites were found in another model", s.Output, s.NodeIndex, opName(n))
		}
		for _, b := range []struct {
			name string
			site *Site
		}{{"then_branch", s.If.Then}, {"else_branch", s.If.Else}} {
			if b.site == nil {
				continue
			}
			var g *pb.GraphProto
			for _, a := range n.GetAttribute() {
				if a.GetName() == b.name {
					g = a.GetG()
				}
			}
			if b.site.NodeIndex < 0 || b.site.NodeIndex >= len(g.GetNode()) {
				return fmt.Errorf("attention site %s names node %d of the If's %s, which has %d nodes: the sites were found in another model", s.Output, b.site.NodeIndex, b.name, len(g.GetNode()))
			}
			bs := *b.site
			bs.Output = s.Output
			if err := checkSiteNode(bs, g.GetNode()[bs.NodeIndex]); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkSiteNode says why node n is not where site s can be exposed, or returns nil.
func checkSiteNode(s Site, n *pb.NodeProto) error {
	if op := opName(n); formOps[s.Form] != op {
		return fmt.Errorf("attention site %s (%s) names node %s, a %s: the sites were found in another model", s.Output, s.Form, nodeName(n, s.NodeIndex), op)
	}
	if bad := malformedReason(n); bad != "" {
		return &MalformedError{Node: nodeName(n, s.NodeIndex), Op: opName(n), Reason: bad, Count: 1}
	}
	return nil
}

// rewriteWith decodes data, makes every site's probabilities the float32 graph output
// attn.L{layer}, adds what o asks for, and re-encodes.
func rewriteWith(data []byte, att *Attention, o ExposeOptions) (*Exposed, error) {
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		return nil, fmt.Errorf("decoding model: %w", err)
	}
	opset := int64(0)
	for _, o := range mp.GetOpsetImport() {
		if defaultDomain(o.GetDomain()) == "" {
			opset = o.GetVersion()
		}
	}
	g := mp.GetGraph()
	selected, err := selectedSites(att, o.Layers)
	if err != nil {
		return nil, err
	}
	var top []placed
	inIf := map[int][]Site{}
	for i, s := range att.Sites {
		switch {
		case s.If == nil && selected[i]:
			top = append(top, placed{site: s, name: s.Output})
		case s.If == nil && o.Ablate && s.Form == FormMSAttention && siteAblatable(s) == nil:
			// Not exposed, but its mask needs the probabilities the decomposition makes.
			top = append(top, placed{site: s, name: s.Output, hidden: true})
		case s.If != nil && selected[i]:
			inIf[s.NodeIndex] = append(inIf[s.NodeIndex], s)
		}
	}
	for i, sites := range inIf {
		if err := exposeIf(g, g.GetNode()[i], opset, sites); err != nil {
			return nil, err
		}
	}
	probs, err := exposeIn(g, opset, top)
	if err != nil {
		return nil, err
	}
	var ablation []error
	if o.Ablate {
		ablation = make([]error, len(att.Sites))
		for i, s := range att.Sites {
			if ablation[i] = siteAblatable(s); ablation[i] == nil {
				p, ok := probs[s.Output]
				if !ok {
					p = s.Tensor // a softmax site left unexposed: its own output
				}
				ablation[i] = ablateSite(g, opset, s, p, s.Output, o.Mean)
			}
		}
	}
	if main := mainOutputInfo(g); main != nil && NeedsFloat32Copy(main.GetType().GetTensorType().GetElemType()) {
		g.Node = append(g.Node, &pb.NodeProto{
			Name:      proto.String("attnscope/" + LogitsOutput),
			OpType:    proto.String("Cast"),
			Input:     []string{main.GetName()},
			Output:    []string{LogitsOutput},
			Attribute: []*pb.AttributeProto{intAttr("to", int64(pb.TensorProto_FLOAT))},
		})
		g.Output = append(g.Output, outputInfo(LogitsOutput, true))
	}
	b, err := proto.Marshal(mp)
	if err != nil {
		return nil, err
	}
	return &Exposed{Bytes: b, Ablation: ablation}, nil
}

// LogitsOutput is the float32 copy of the model's main output that Expose adds when that
// output is float16, bfloat16 or double.
const LogitsOutput = "attnscope.logits"

// MainOutput is the name of the model output that holds its logits: the one whose name
// contains "logits", else the first; "" when the model has no outputs.
func MainOutput(m *Model) string {
	if v := mainOutputInfo(m.Graph()); v != nil {
		return v.GetName()
	}
	return ""
}

// MainOutputType is the element type of MainOutput (a TensorProto.DataType; 0 if unknown).
func MainOutputType(m *Model) int32 {
	return mainOutputInfo(m.Graph()).GetType().GetTensorType().GetElemType()
}

func mainOutputInfo(g *pb.GraphProto) *pb.ValueInfoProto {
	outs := g.GetOutput()
	if len(outs) == 0 {
		return nil
	}
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o.GetName()), "logits") {
			return o
		}
	}
	return outs[0]
}

// NeedsFloat32Copy reports whether a tensor of this element type (a TensorProto.DataType)
// reaches attnscope through a Cast to float32: float16, bfloat16 and double do.
func NeedsFloat32Copy(elem int32) bool {
	switch pb.TensorProto_DataType(elem) {
	case pb.TensorProto_FLOAT16, pb.TensorProto_BFLOAT16, pb.TensorProto_DOUBLE:
		return true
	}
	return false
}

// BatchDependentOp names an operator that makes a sequence's results depend on the other
// sequences of its batch (DynamicQuantizeLinear picks one scale for the whole batch), or
// returns "" when batching is exact.
func BatchDependentOp(m *Model) string {
	for _, n := range m.Graph().GetNode() {
		if n.GetOpType() == "DynamicQuantizeLinear" || opName(n) == "com.microsoft.DynamicQuantizeMatMul" {
			return opName(n)
		}
	}
	return ""
}

// placed is a site and the name its float32 probabilities get in the graph it lives in.
// A hidden site is rewritten (a com.microsoft.Attention decomposed) but not exposed: its
// probabilities get no output and no float32 copy.
type placed struct {
	site   Site
	name   string
	hidden bool
}

// selectedSites marks, by index in att.Sites, the sites whose layer is in layers (every
// site when layers is nil), or says which layer the model does not have.
func selectedSites(att *Attention, layers []int) ([]bool, error) {
	sel := make([]bool, len(att.Sites))
	if layers == nil {
		for i := range sel {
			sel[i] = true
		}
		return sel, nil
	}
	byLayer := map[int]int{}
	for i, s := range att.Sites {
		byLayer[s.Layer] = i
	}
	for _, l := range layers {
		i, ok := byLayer[l]
		if !ok {
			return nil, &LayerError{Layer: l, Layers: len(att.Sites)}
		}
		sel[i] = true
	}
	return sel, nil
}

// LayerError is a layer asked for in ExposeOptions.Layers that the model does not have.
type LayerError struct {
	// Layer is the one asked for; Layers the model's count of attention layers.
	Layer, Layers int
}

func (e *LayerError) Error() string {
	return fmt.Sprintf("layer %d is not one of the model's %d attention layers (0…%d)", e.Layer, e.Layers, e.Layers-1)
}

// exposeIn makes each site's probabilities a float32 output of g under its name:
// ONNX Attention gets qk_matmul_output_mode=3, GQA qk_output=2, MHA a Softmax over its
// scores output, com.microsoft.Attention is replaced by standard operators; float16
// probabilities get a Cast. Nodes keep their order (replacements take the replaced
// node's place), so a sorted graph stays sorted. It returns, by output name, the tensor
// that holds each site's probabilities in the rewritten g (the output itself, or the
// tensor it is copied from).
func exposeIn(g *pb.GraphProto, opset int64, sites []placed) (map[string]string, error) {
	probs := map[string]string{}
	outputs := map[string]bool{}
	for _, o := range g.GetOutput() {
		outputs[o.GetName()] = true
	}
	nodes := g.GetNode()
	replaced := map[int][]*pb.NodeProto{}
	var added []*pb.NodeProto
	for _, p := range sites {
		s, out := p.site, p.name
		if s.NodeIndex < 0 || s.NodeIndex >= len(nodes) {
			return nil, fmt.Errorf("attention site %s names node %d, and its graph has %d nodes: the sites were found in another model", out, s.NodeIndex, len(nodes))
		}
		n := nodes[s.NodeIndex]
		if err := checkSiteNode(s, n); err != nil {
			return nil, err
		}
		tensor := s.Tensor
		switch s.Form {
		case FormONNXAttention:
			setAttrInt(n, "qk_matmul_output_mode", 3)
			tensor = ensureOutput(n, 3, out+".probs")
		case FormGQA:
			setAttrInt(n, "qk_output", 2)
			tensor = ensureOutput(n, 3, out+".probs")
		case FormMHA:
			// qk holds scaled, masked scores (masked keys at the type's lowest value):
			// the softmax is done here in float32, like onnxruntime's own kernel.
			scores := ensureOutput(n, 3, out+".scores")
			// onnxruntime cannot infer qk's type (a type parameter of its own): declare it.
			g.ValueInfo = append(g.ValueInfo, &pb.ValueInfoProto{Name: proto.String(scores), Type: tensorType(s.ElemType)})
			b := &builder{g: g, prefix: "attnscope/" + out, opset: opset}
			scores = b.op("Cast", []string{scores}, intAttr("to", int64(pb.TensorProto_FLOAT)))
			b.opTo(out, "Softmax", []string{scores}, intAttr("axis", -1))
			added = append(added, b.nodes...)
			tensor = out
		case FormMSAttention:
			tensor = out
			if s.ElemType != int32(pb.TensorProto_FLOAT) {
				tensor = out + ".probs"
			}
			decomposed, err := decomposeMSAttention(g, n, opset, s.ElemType, s.qkvWidth, "attnscope/"+out, tensor)
			if err != nil {
				return nil, fmt.Errorf("cannot rewrite com.microsoft.Attention node %s: %w", s.Node, err)
			}
			replaced[s.NodeIndex] = decomposed
		}
		float32Probs := s.ElemType == 0 || s.ElemType == int32(pb.TensorProto_FLOAT)
		probs[out] = tensor
		if p.hidden {
			continue
		}
		switch {
		case tensor == out:
		case float32Probs && !outputs[tensor]:
			renameTensor(g, tensor, out)
			probs[out] = out
		default:
			// A model output already, or not float32: a node makes the float32 copy.
			added = append(added, identity(s, tensor, out))
		}
		g.Output = append(g.Output, outputInfo(out, s.ElemType != 0))
	}
	if len(replaced) > 0 {
		var all []*pb.NodeProto
		for i, n := range nodes {
			if r, ok := replaced[i]; ok {
				all = append(all, r...)
			} else {
				all = append(all, n)
			}
		}
		nodes = all
	}
	g.Node = append(nodes, added...)
	return probs, nil
}

// ensureOutput gives n an output at index k, named name unless it already has one, and
// returns its name.
func ensureOutput(n *pb.NodeProto, k int, name string) string {
	for len(n.Output) <= k {
		n.Output = append(n.Output, "")
	}
	if n.Output[k] == "" {
		n.Output[k] = name
	}
	return n.Output[k]
}

// renameTensor renames a tensor wherever g refers to it: node outputs and inputs,
// value_info, and subgraphs that use it from the outer scope.
func renameTensor(g *pb.GraphProto, from, to string) {
	for _, n := range g.GetNode() {
		for i, o := range n.GetOutput() {
			if o == from {
				n.Output[i] = to
			}
		}
		for i, in := range n.GetInput() {
			if in == from {
				n.Input[i] = to
			}
		}
		for _, a := range n.GetAttribute() {
			if a.GetG() != nil {
				renameTensor(a.GetG(), from, to)
			}
			for _, sg := range a.GetGraphs() {
				renameTensor(sg, from, to)
			}
		}
	}
	for _, v := range g.GetValueInfo() {
		if v.GetName() == from {
			v.Name = proto.String(to)
		}
	}
}

// identity is the node that copies a site's probabilities (tensor) into out where they
// cannot simply be renamed: an Identity when they already are a graph output, a Cast to
// float32 when they are float16, bfloat16 or double, so that every exposed output is
// float32 whatever the model computes in.
func identity(s Site, tensor, out string) *pb.NodeProto {
	n := &pb.NodeProto{
		Name:   proto.String("attnscope/" + out),
		OpType: proto.String("Identity"),
		Input:  []string{tensor},
		Output: []string{out},
	}
	if s.ElemType != 0 && s.ElemType != int32(pb.TensorProto_FLOAT) {
		n.OpType = proto.String("Cast")
		n.Attribute = []*pb.AttributeProto{intAttr("to", int64(pb.TensorProto_FLOAT))}
	}
	return n
}

// outputInfo declares an exposed output as float32 (see identity) when typed is true,
// with no shape: a wrong shape would corrupt onnxruntime's shape information, and a
// missing one costs nothing. When the type could not be inferred the output is declared
// by name alone, which onnxruntime accepts, since a wrong type would be a hard error.
func outputInfo(name string, typed bool) *pb.ValueInfoProto {
	v := &pb.ValueInfoProto{Name: proto.String(name)}
	if typed {
		v.Type = tensorType(int32(pb.TensorProto_FLOAT))
	}
	return v
}

func tensorType(elem int32) *pb.TypeProto {
	return &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(elem)}}}
}

func setAttrInt(n *pb.NodeProto, name string, v int64) {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			a.I = proto.Int64(v)
			a.Type = pb.AttributeProto_INT.Enum()
			return
		}
	}
	n.Attribute = append(n.Attribute, intAttr(name, v))
}

// hasTensor reports whether any node output, input or initializer has the given name.
func (m *Model) hasTensor(name string) bool {
	g := m.Graph()
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			if o == name {
				return true
			}
		}
	}
	for _, v := range g.GetInput() {
		if v.GetName() == name {
			return true
		}
	}
	for _, t := range g.GetInitializer() {
		if t.GetName() == name {
			return true
		}
	}
	return false
}
