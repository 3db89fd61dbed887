package onnxgraph

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// AblateInput is the mask input ExposeWith adds for the site of layer l: float32
// [batch, heads], multiplied into the probabilities just before ×V (1 keeps a head, 0
// zero-ablates it). A [1,1] tensor of ones broadcasts: a plain run.
func AblateInput(l int) string { return fmt.Sprintf("attnscope.ablate.L%d", l) }

// ZMeanInput is the input ExposeWith adds with ExposeOptions.Mean for layer l: float32
// [batch, heads, d_head], added to each head's output z (the probabilities × V, before the
// heads are merged) scaled by 1 − mask, so that a head with mask 0 outputs it at every
// position: mean ablation. A [1,1,1] tensor of zeros broadcasts.
func ZMeanInput(l int) string { return fmt.Sprintf("attnscope.zmean.L%d", l) }

// ZOutput is the output ExposeWith adds with ExposeOptions.Mean for layer l: the heads'
// outputs z as the run computed them (after the mask and mean), float32, [batch, heads,
// T, d_head] or [batch·heads, T, d_head] like the probabilities.
func ZOutput(l int) string { return fmt.Sprintf("attnscope.z.L%d", l) }

// ExposeOptions say which attention outputs ExposeWith adds, and what it adds besides.
type ExposeOptions struct {
	// Layers are the layers (Site.Layer) whose probabilities become outputs; nil exposes
	// every site. The others are left as the model computes them: no output, no rename, no
	// fused kernel asked for its probabilities (a com.microsoft.Attention is decomposed all
	// the same when Ablate needs its probabilities), so onnxruntime keeps none of their maps
	// and a run's memory follows the selection. A layer the model does not have is an error.
	Layers []int
	// Ablate adds AblateInput for every site that AblationError allows, exposed or not.
	Ablate bool
	// Mean adds, with Ablate, ZMeanInput and ZOutput for those sites.
	Mean bool
}

// Exposed is a rewritten model and, with ExposeOptions.Ablate, per site (in the order of
// Attention.Sites) nil when its inputs were added, or why the site cannot be ablated.
type Exposed struct {
	Bytes    []byte
	Ablation []error
}

// ExposeWith is Expose with options; Expose(m, att) is ExposeWith(m, att, ExposeOptions{}).
func ExposeWith(m *Model, att *Attention, o ExposeOptions) (*Exposed, error) {
	if err := checkSites(m, att); err != nil {
		return nil, err
	}
	return rewriteWith(m.compact, att, o)
}

// AblationError says why site s of m cannot have its heads switched off by a mask input
// (with mean, also why its z, the probabilities × V, cannot be reached), or returns nil.
// A mask needs the probabilities as a tensor of known rank in the main graph, on their way
// to ×V: fused kernels (ONNX Attention, GroupQueryAttention, MultiHeadAttention) keep them
// inside; com.microsoft.Attention is decomposed by the rewrite, so it can be masked.
func AblationError(m *Model, s Site, mean bool) error {
	if err := siteAblatable(s); err != nil || s.Form == FormMSAttention {
		return err // the decomposition's Softmax feeds a MatMul with V
	}
	consumers := consumersOf(m.Graph(), s.Tensor)
	if len(consumers) == 0 {
		return fmt.Errorf("layer %d: no node uses its probabilities (%s), so there is nothing to switch off", s.Layer, s.Tensor)
	}
	if mean {
		if _, ok := valueMatMul(m.Graph(), s.Tensor, consumers); !ok {
			return fmt.Errorf("layer %d: its probabilities (%s) do not reach ×V through a MatMul, so the heads' outputs z are not a tensor attnscope can replace by their mean; use zero ablation", s.Layer, s.Tensor)
		}
	}
	return nil
}

// siteAblatable is the part of AblationError that needs only the site.
func siteAblatable(s Site) error {
	switch {
	case s.If != nil:
		return fmt.Errorf("layer %d lives inside the If node %s (a merged decoder), where attnscope cannot add mask inputs; export the decoder without the cache branch", s.Layer, s.If.Node)
	case s.Form != FormSoftmax && s.Form != FormMSAttention:
		return fmt.Errorf("layer %d is a fused %s node (%s) whose probabilities never leave the kernel, so its heads cannot be switched off; export the model with decomposed attention", s.Layer, s.Form, s.Node)
	case s.Rank != 3 && s.Rank != 4:
		return fmt.Errorf("layer %d: the rank of its probabilities (%s) is not known, so a per-head mask cannot be shaped for it", s.Layer, s.Node)
	}
	return nil
}

// consumersOf lists the nodes of g that read tensor t.
func consumersOf(g *pb.GraphProto, t string) []*pb.NodeProto {
	var out []*pb.NodeProto
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			if in == t {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// valueMatMul follows the probabilities p from its consumers through Cast, Dropout and
// Identity (one consumer each) to the MatMul that multiplies them by V (p as its first
// operand), and returns that MatMul.
func valueMatMul(g *pb.GraphProto, p string, consumers []*pb.NodeProto) (*pb.NodeProto, bool) {
	n, _, ok := valueMatMulType(g, p, consumers)
	return n, ok
}

// valueMatMulType is valueMatMul that also returns the element type the last Cast on the
// way gave the probabilities (0: no Cast, they keep their own): z has that type.
func valueMatMulType(g *pb.GraphProto, p string, consumers []*pb.NodeProto) (*pb.NodeProto, int32, bool) {
	cur := p
	castTo := int32(0)
	for range 8 {
		if len(consumers) != 1 {
			return nil, 0, false
		}
		n := consumers[0]
		switch n.GetOpType() {
		case "MatMul":
			if defaultDomain(n.GetDomain()) == "" && len(n.GetInput()) == 2 && n.GetInput()[0] == cur && len(n.GetOutput()) > 0 {
				return n, castTo, true
			}
			return nil, 0, false
		case "Cast", "Dropout", "Identity":
			if len(n.GetOutput()) == 0 || len(n.GetInput()) == 0 || n.GetInput()[0] != cur {
				return nil, 0, false
			}
			if n.GetOpType() == "Cast" {
				castTo = int32(attrInt(n, "to", 0))
			}
			cur = n.GetOutput()[0]
			consumers = consumersOf(g, cur)
		default:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// ablateSite adds site s's mask (and with mean its z mean and z output) to g, where its
// probabilities are the tensor probs and its exposed copy is the output named out.
func ablateSite(g *pb.GraphProto, opset int64, s Site, probs, out string, mean bool) error {
	var consumers []*pb.NodeProto
	for _, n := range consumersOf(g, probs) {
		if len(n.GetOutput()) == 1 && n.GetOutput()[0] == out {
			continue // the copy that exposes them
		}
		consumers = append(consumers, n)
	}
	if len(consumers) == 0 {
		return fmt.Errorf("layer %d: no node uses its probabilities, so there is nothing to switch off", s.Layer)
	}
	var z *pb.NodeProto
	elem := s.ElemType
	if elem == 0 {
		elem = int32(pb.TensorProto_FLOAT)
	}
	zElem := elem // z's type: the probabilities', or what a Cast on the way to ×V made them
	if mean {
		var ok bool
		var castTo int32
		if z, castTo, ok = valueMatMulType(g, probs, consumers); !ok {
			return fmt.Errorf("layer %d: its probabilities do not reach ×V through a MatMul, so its heads' outputs z cannot be replaced by their mean; use zero ablation", s.Layer)
		}
		if castTo != 0 {
			zElem = castTo
		}
	}
	producer := producerOf(g, probs)
	if producer == nil {
		return fmt.Errorf("layer %d: no node writes its probabilities %s", s.Layer, probs)
	}
	prefix := fmt.Sprintf("attnscope/ablate.L%d", s.Layer)
	b := &builder{g: g, prefix: prefix, opset: opset, elem: elem}
	maskShape := b.ints([]int64{4}, 0, 0, 1, 1) // [batch, heads] → [batch, heads, 1, 1]
	zShape := b.ints([]int64{4}, 0, 0, 1, -1)   // [batch, heads, d] → [batch, heads, 1, d]
	if s.Rank == 3 {
		maskShape = b.ints([]int64{3}, -1, 1, 1) // → [batch·heads, 1, 1]
		zShape = b.ints([]int64{3}, -1, 1, 0)    // → [batch·heads, 1, d]
	}
	mask := b.op("Reshape", []string{AblateInput(s.Layer), maskShape})
	if elem != int32(pb.TensorProto_FLOAT) {
		mask = b.op("Cast", []string{mask}, intAttr("to", int64(elem)))
	}
	masked := b.op("Mul", []string{probs, mask})
	for _, n := range consumers {
		for i, in := range n.Input {
			if in == probs {
				n.Input[i] = masked
			}
		}
	}
	after := map[*pb.NodeProto][]*pb.NodeProto{}
	after[producer] = b.nodes
	g.Input = append(g.Input, inputInfo(AblateInput(s.Layer), "attnscope_batch", fmt.Sprintf("attnscope_heads_L%d", s.Layer)))
	if mean {
		zb := &builder{g: g, prefix: prefix + "/z", opset: opset, elem: zElem}
		zName := z.Output[0]
		raw := zName + ".attnscope_raw"
		z.Output[0] = raw
		one := (&builder{g: g, prefix: prefix + "/one", elem: int32(pb.TensorProto_FLOAT)}).scalar(1)
		keep := zb.op("Sub", []string{one, AblateInput(s.Layer)})
		keep = zb.op("Reshape", []string{keep, maskShape})
		means := zb.op("Reshape", []string{ZMeanInput(s.Layer), zShape})
		add := zb.op("Mul", []string{keep, means})
		if zElem != int32(pb.TensorProto_FLOAT) {
			add = zb.op("Cast", []string{add}, intAttr("to", int64(zElem)))
		}
		zb.opTo(zName, "Add", []string{raw, add})
		// The node gets a name of its own: graphs whose nodes are named after their outputs
		// (the com.microsoft.Attention decomposition) already have a node called zName.
		zb.nodes[len(zb.nodes)-1].Name = proto.String(zb.name("Add"))
		copyOut := &pb.NodeProto{Name: proto.String("attnscope/" + ZOutput(s.Layer)), OpType: proto.String("Identity"), Input: []string{zName}, Output: []string{ZOutput(s.Layer)}}
		if zElem != int32(pb.TensorProto_FLOAT) {
			copyOut.OpType = proto.String("Cast")
			copyOut.Attribute = []*pb.AttributeProto{intAttr("to", int64(pb.TensorProto_FLOAT))}
		}
		after[z] = append(zb.nodes, copyOut)
		g.Input = append(g.Input, inputInfo(ZMeanInput(s.Layer), "attnscope_batch", fmt.Sprintf("attnscope_heads_L%d", s.Layer), fmt.Sprintf("attnscope_dhead_L%d", s.Layer)))
		g.Output = append(g.Output, outputInfo(ZOutput(s.Layer), true))
	}
	var nodes []*pb.NodeProto
	for _, n := range g.GetNode() {
		nodes = append(nodes, n)
		nodes = append(nodes, after[n]...)
	}
	g.Node = nodes
	return nil
}

// producerOf is the node of g that writes tensor t, or nil.
func producerOf(g *pb.GraphProto, t string) *pb.NodeProto {
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			if o == t {
				return n
			}
		}
	}
	return nil
}

// inputInfo declares a float32 graph input whose dimensions are named (symbolic).
func inputInfo(name string, dims ...string) *pb.ValueInfoProto {
	shape := &pb.TensorShapeProto{}
	for _, d := range dims {
		shape.Dim = append(shape.Dim, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: d}})
	}
	t := tensorType(int32(pb.TensorProto_FLOAT))
	t.GetTensorType().Shape = shape
	return &pb.ValueInfoProto{Name: proto.String(name), Type: t}
}
