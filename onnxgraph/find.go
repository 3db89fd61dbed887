package onnxgraph

import (
	"fmt"
	"strings"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Form says how a site's probabilities are obtained.
type Form int

const (
	// FormSoftmax is a decomposed attention whose Softmax output is the probabilities.
	FormSoftmax Form = iota
	// FormONNXAttention is the ONNX Attention operator (opset 23+); its 4th output gives
	// post-softmax probabilities once qk_matmul_output_mode is 3.
	FormONNXAttention
	// FormGQA is com.microsoft.GroupQueryAttention; its 4th output, output_qk, gives
	// post-softmax probabilities per query head once qk_output is 2.
	FormGQA
	// FormMHA is com.microsoft.MultiHeadAttention; its 4th output, qk, gives the scaled,
	// masked scores, to which Expose adds the softmax over the key axis.
	FormMHA
	// FormMSAttention is com.microsoft.Attention (packed QKV weights), which has no
	// probability output: Expose rewrites the node into standard operators, one of them
	// the Softmax whose output is the probabilities.
	FormMSAttention
)

func (f Form) String() string {
	switch f {
	case FormSoftmax:
		return "softmax"
	case FormONNXAttention:
		return "ONNX Attention"
	case FormGQA:
		return "GQA"
	case FormMHA:
		return "MHA"
	case FormMSAttention:
		return "decomposed com.microsoft.Attention"
	}
	return "unknown"
}

// How says in a few words how the probabilities of a site of this form are obtained.
func (f Form) How() string {
	switch f {
	case FormSoftmax:
		return "the Softmax's own output"
	case FormONNXAttention:
		return "output 3 with qk_matmul_output_mode=3"
	case FormGQA:
		return "output_qk with qk_output=2"
	case FormMHA:
		return "output qk (scaled, masked scores) + Softmax"
	case FormMSAttention:
		return "node rewritten into standard ops; their Softmax"
	}
	return ""
}

// Site is one attention layer found in a graph.
type Site struct {
	// Layer is the 0-based position of the site in residual-stream (topological) order.
	Layer int
	// Node is the node's name, or "#<index> <op>" when the file leaves it empty.
	Node string
	// NodeIndex is the node's index in the graph's node list (for a site inside an If,
	// the If node's index in the main graph).
	NodeIndex int
	// Op is the node's operator, with its domain when that is not the default one.
	Op   string
	Form Form
	// Tensor is the tensor that holds the probabilities in the original graph ("" when
	// the probabilities only exist once Expose has rewritten the node).
	Tensor string
	// Output is the graph output Expose adds for this site: "attn.L{layer}".
	Output string
	// Heads is the number of (query) heads when the graph declares it; 0 when only a run
	// can tell.
	Heads int
	// Rank is the rank of the probability tensor when known (3 for [B·H,Q,K], 4 for
	// [B,H,Q,K]); 0 when only a run can tell.
	Rank int
	// ElemType is the probabilities' element type (a TensorProto.DataType), 0 if unknown.
	ElemType int32
	// Cross is true for encoder–decoder cross-attention: the queries come from the target
	// (decoder) sequence and the keys from the source (encoder) sequence, so its maps are
	// [target, source] rather than square.
	Cross bool
	// Inputs are the graph inputs the site's probabilities are computed from (values, not
	// shapes), in declaration order; in an encoder–decoder they tell the encoder's
	// self-attention (source ids only) from the decoder's (target ids). Empty for a site
	// inside an If, whose branches read the inputs from the outer scope.
	Inputs []string
	// If is set when the site lives inside the branches of an If node (optimum's merged
	// decoders): Expose threads the probabilities out as an extra output of the If.
	If *IfSite
	// qkvWidth is the width (3·hidden) of a com.microsoft.Attention node's packed weights,
	// which may live in an outer graph when the node is inside an If branch.
	qkvWidth int64
}

// IfSite places a site inside an If node's branches. Then and Else are the sites in the
// two branch graphs (their NodeIndex counts in the branch); one of them is nil when only
// the other branch has this layer, and that branch then yields an empty tensor.
type IfSite struct {
	Node       string
	Then, Else *Site
}

// Where says where a site lives: "" for the main graph, else "inside If <node>".
func (s Site) Where() string {
	if s.If == nil {
		return ""
	}
	return "inside If " + s.If.Node
}

// Rejection is a Softmax (or attention-like op) that was looked at and not taken.
type Rejection struct {
	Node   string
	Op     string
	Reason string
}

// Attention is what FindAttention learned about a graph.
type Attention struct {
	Sites    []Site
	Rejected []Rejection
}

// OutputName is the graph output that carries layer's probabilities after Expose.
func OutputName(layer int) string { return fmt.Sprintf("attn.L%d", layer) }

// NoAttentionError says that a graph has no attention whose probabilities can be exposed,
// and why: fused operators that hide them, or the softmaxes that were rejected.
type NoAttentionError struct {
	Fused    []Rejection
	Rejected []Rejection
	Nested   []Rejection
}

func (e *NoAttentionError) Error() string {
	switch {
	case len(e.Fused) > 0:
		f := e.Fused[0]
		return fmt.Sprintf("the model computes attention with the fused operator %s (node %s, %d such node(s)), which attnscope cannot expose: %s; re-export it without onnxruntime's transformer fusions (e.g. plain torch.onnx.export, or optimum's exporter with graph optimization off)", f.Op, f.Node, len(e.Fused), f.Reason)
	case len(e.Nested) > 0:
		f := e.Nested[0]
		return fmt.Sprintf("the model's attention is inside the subgraph of %s node %s (%s), which attnscope can only open inside If nodes; export the decoder on its own (e.g. optimum's decoder_model.onnx, or the model without generation loops)", f.Op, f.Node, f.Reason)
	case len(e.Rejected) == 0:
		return "the model has no Softmax and no attention operator, so there is no attention to show; check that this is a transformer export"
	default:
		var parts []string
		for i, r := range e.Rejected {
			if i == 3 {
				parts = append(parts, fmt.Sprintf("and %d more", len(e.Rejected)-3))
				break
			}
			parts = append(parts, fmt.Sprintf("%s: %s", r.Node, r.Reason))
		}
		return fmt.Sprintf("no attention found: the model's %d softmax(es) do not look like attention (%s)", len(e.Rejected), strings.Join(parts, "; "))
	}
}

// fusedAttentionOps are operators that compute attention internally with no way to
// return its probabilities. (GroupQueryAttention, MultiHeadAttention and Attention of
// com.microsoft are handled; see Form.)
var fusedAttentionOps = map[string]bool{
	"com.microsoft.PackedAttention":                  true,
	"com.microsoft.PackedMultiHeadAttention":         true,
	"com.microsoft.DecoderAttention":                 true,
	"com.microsoft.DecoderMaskedSelfAttention":       true,
	"com.microsoft.DecoderMaskedMultiHeadAttention":  true,
	"com.microsoft.DecoderMaskedMultiHeadAttention2": true,
	"com.microsoft.SparseAttention":                  true,
	"com.microsoft.PagedAttention":                   true,
	"com.microsoft.LongformerAttention":              true,
	"com.microsoft.QAttention":                       true,
	"com.microsoft.QOrderedAttention":                true,
	"com.microsoft.RelativePositionBiasAttention":    true,
}

// isAttentionOp reports whether op computes attention, fused or not: used to find
// attention inside subgraphs.
func isAttentionOp(op string) bool {
	switch op {
	case "Softmax", "Attention", "com.microsoft.Attention", "com.microsoft.MultiHeadAttention", "com.microsoft.GroupQueryAttention":
		return true
	}
	return fusedAttentionOps[op]
}

// elementwise ops that may sit between the scores product and the Softmax (scale, mask,
// bias, soft-capping, casts).
var scoreOps = map[string]bool{
	"Div": true, "Mul": true, "Add": true, "Sub": true, "Where": true, "Cast": true,
	"Identity": true, "Neg": true, "Clip": true, "Max": true, "Min": true, "Tanh": true,
	"Sum": true, "Reshape": true, "Expand": true, "Transpose": true,
}

// ops that may sit between the Softmax and the probabilities×V product.
var probOps = map[string]bool{
	"Cast": true, "Dropout": true, "Identity": true, "Where": true, "Reshape": true,
}

const maxHops = 8

// FindAttention returns the model's attention sites in residual-stream order, with a
// reason for every Softmax it rejected. Attention inside the branches of an If node is
// found too (one site per layer, pairing the branches' layers in order). When an
// attention node (or a Softmax) lacks an input or output its operator requires, it
// returns a *MalformedError naming the node. When there is no site, or a fused operator
// that cannot be exposed, it returns the Attention (for its rejections) and a
// *NoAttentionError that names the operator, the subgraph, or the rejected softmaxes. It
// never panics, whatever the graph holds.
func FindAttention(m *Model) (*Attention, error) {
	ix := newIndex(m.Proto)
	sc := ix.scan(true)
	res := &Attention{Rejected: sc.rejected}
	sortFound(sc.sites)
	for l, f := range sc.sites {
		f.site.Layer = l
		f.site.Output = OutputName(l)
		res.Sites = append(res.Sites, f.site)
	}
	ix.markInputs(res.Sites)
	if len(sc.malformed) > 0 {
		f := sc.malformed[0]
		return res, &MalformedError{Node: f.Node, Op: f.Op, Reason: f.Reason, Count: len(sc.malformed)}
	}
	if len(sc.fused) > 0 || len(res.Sites) == 0 {
		return res, &NoAttentionError{Fused: sc.fused, Nested: sc.nested, Rejected: sc.rejected}
	}
	return res, nil
}

type found struct {
	site Site
	pos  int
}

// scanResult is what one pass over a graph found.
type scanResult struct {
	sites                              []found
	fused, nested, rejected, malformed []Rejection
}

// scan looks at every node of ix's graph in topological order. Only the main graph
// (top) looks into If branches: attention nested deeper is reported as nested.
func (ix *index) scan(top bool) *scanResult {
	sc := &scanResult{}
	for _, i := range ix.order {
		n := ix.node(i)
		op := opName(n)
		name := nodeName(n, i)
		var site Site
		reason := ""
		if bad := malformedReason(n); bad != "" {
			sc.malformed = append(sc.malformed, Rejection{Node: name, Op: op, Reason: bad})
			continue
		}
		switch {
		case op == "Softmax":
			if site, reason = ix.softmaxSite(n, i); reason != "" {
				sc.rejected = append(sc.rejected, Rejection{Node: name, Op: op, Reason: reason})
				continue
			}
		case op == "Attention":
			site = ix.onnxAttentionSite(n, i)
		case op == "com.microsoft.GroupQueryAttention", op == "com.microsoft.MultiHeadAttention", op == "com.microsoft.Attention":
			if site, reason = ix.fusedSite(n, i); reason != "" {
				sc.fused = append(sc.fused, Rejection{Node: name, Op: op, Reason: reason})
				continue
			}
		case fusedAttentionOps[op]:
			sc.fused = append(sc.fused, Rejection{Node: name, Op: op, Reason: "it has no output that holds the probabilities"})
			continue
		case op == "If" && top:
			sites, rej := ix.ifSites(n, i)
			for _, s := range sites {
				sc.sites = append(sc.sites, found{s, ix.pos[i]})
			}
			sc.fused = append(sc.fused, rej.fused...)
			sc.nested = append(sc.nested, rej.nested...)
			sc.rejected = append(sc.rejected, rej.rejected...)
			sc.malformed = append(sc.malformed, rej.malformed...)
			continue
		default:
			if sub := nestedAttention(n); sub > 0 {
				sc.nested = append(sc.nested, Rejection{Node: name, Op: op, Reason: fmt.Sprintf("%d attention node(s) inside its subgraph", sub)})
			}
			continue
		}
		sc.sites = append(sc.sites, found{site, ix.pos[i]})
	}
	return sc
}

func opName(n *pb.NodeProto) string {
	if d := defaultDomain(n.GetDomain()); d != "" {
		return d + "." + n.GetOpType()
	}
	return n.GetOpType()
}

func nodeName(n *pb.NodeProto, i int) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	return fmt.Sprintf("#%d %s", i, n.GetOpType())
}

// nestedAttention counts Softmax and attention nodes inside the node's graph attributes,
// recursively.
func nestedAttention(n *pb.NodeProto) int {
	count := 0
	var walk func(g *pb.GraphProto)
	walk = func(g *pb.GraphProto) {
		for _, sn := range g.GetNode() {
			if isAttentionOp(opName(sn)) {
				count++
			}
			for _, a := range sn.GetAttribute() {
				walk(a.GetG())
				for _, sg := range a.GetGraphs() {
					walk(sg)
				}
			}
		}
	}
	for _, a := range n.GetAttribute() {
		walk(a.GetG())
		for _, g := range a.GetGraphs() {
			walk(g)
		}
	}
	return count
}

// feedsValues reports whether tensor reaches, through a few pass-through ops, a
// MatMul/Einsum whose other operand is an activation.
func (ix *index) feedsValues(tensor string, hop int) bool {
	if hop > 4 {
		return false
	}
	for _, c := range ix.consumers[tensor] {
		n := ix.node(c)
		op := opName(n)
		if isProduct(op) && ix.allDynamic(n.GetInput()) {
			return true
		}
		if probOps[op] {
			for _, out := range n.GetOutput() {
				if out != "" && ix.feedsValues(out, hop+1) {
					return true
				}
			}
		}
	}
	return false
}

func isProduct(op string) bool {
	return op == "MatMul" || op == "Einsum" || op == "com.microsoft.FusedMatMul"
}

func (ix *index) allDynamic(inputs []string) bool {
	n := 0
	for _, in := range inputs {
		if in == "" {
			continue
		}
		if !ix.dynamic[in] {
			return false
		}
		n++
	}
	return n >= 2
}

// onnxAttentionSite describes an ONNX Attention node (opset 23+). Its probabilities come
// from output 3 with qk_matmul_output_mode=3, which Expose sets.
func (ix *index) onnxAttentionSite(n *pb.NodeProto, i int) Site {
	site := Site{
		NodeIndex: i,
		Node:      nodeName(n, i),
		Op:        "Attention",
		Form:      FormONNXAttention,
		Rank:      4,
	}
	if len(n.GetOutput()) > 3 && n.GetOutput()[3] != "" && attrInt(n, "qk_matmul_output_mode", 0) == 3 {
		site.Tensor = n.GetOutput()[3]
	}
	if len(n.GetInput()) == 0 {
		return site // malformed: FindAttention reports it before asking for a site
	}
	if h := attrInt(n, "q_num_heads", 0); h > 0 {
		site.Heads = int(h)
	} else if dims, ok := ix.shapeOf(n.GetInput()[0]); ok && len(dims) == 4 && dims[1] > 0 {
		site.Heads = int(dims[1])
	}
	site.ElemType = ix.elemType(n.GetInput()[0])
	return site
}
