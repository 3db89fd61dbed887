package onnxgraph

import (
	"fmt"
	"sort"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// fusedSite describes a com.microsoft attention operator that attnscope can expose
// (GroupQueryAttention, MultiHeadAttention, Attention), or says why this node cannot be.
func (ix *index) fusedSite(n *pb.NodeProto, i int) (Site, string) {
	op := opName(n)
	site := Site{
		NodeIndex: i,
		Node:      nodeName(n, i),
		Op:        op,
		Rank:      4,
		Heads:     int(attrInt(n, "num_heads", 0)),
	}
	if len(n.GetInput()) > 0 {
		site.ElemType = ix.elemType(n.GetInput()[0])
	}
	switch op {
	case "com.microsoft.GroupQueryAttention":
		site.Form = FormGQA
		if attrInt(n, "qk_output", 0) == 2 && len(n.GetOutput()) > 3 {
			site.Tensor = n.GetOutput()[3]
		}
	case "com.microsoft.MultiHeadAttention":
		site.Form = FormMHA
	case "com.microsoft.Attention":
		site.Form = FormMSAttention
		if len(n.GetInput()) < 2 {
			return Site{}, "it has no packed QKV weights input"
		}
		if w, ok := ix.inits[n.GetInput()[1]]; ok && len(w.GetDims()) == 2 {
			site.ElemType = w.GetDataType() // the input's producer may be a contrib op
			site.qkvWidth = w.GetDims()[1]
		}
		if reason := ix.checkMSAttention(n, site.ElemType); reason != "" {
			return Site{}, reason
		}
	}
	return site, ""
}

// checkMSAttention says why a com.microsoft.Attention node cannot be rewritten into
// standard operators (see decomposeMSAttention), or returns "".
func (ix *index) checkMSAttention(n *pb.NodeProto, elem int32) string {
	in := func(k int) string {
		if k < len(n.GetInput()) {
			return n.GetInput()[k]
		}
		return ""
	}
	w, ok := ix.inits[in(1)]
	switch {
	case ix.opsets[""] < 11:
		return fmt.Sprintf("the rewrite needs opset 11 or later, and the model declares opset %d", ix.opsets[""])
	case elem != int32(pb.TensorProto_FLOAT) && elem != int32(pb.TensorProto_FLOAT16):
		return "its input is neither float32 nor float16"
	case !ok || len(w.GetDims()) != 2 || w.GetDims()[0] <= 0 || w.GetDims()[1] <= 0 || w.GetDims()[1]%3 != 0:
		return "its packed QKV weights are not a [hidden, 3·hidden] initializer"
	case attrInt(n, "num_heads", 0) <= 0 || (w.GetDims()[1]/3)%attrInt(n, "num_heads", 0) != 0:
		return "its num_heads does not divide the hidden size"
	case attrInt(n, "do_rotary", 0) != 0:
		return "it applies rotary embeddings inside the operator"
	case attrInt(n, "past_present_share_buffer", 0) != 0 || in(6) != "":
		return "it shares one buffer between past and present"
	}
	for _, a := range n.GetAttribute() {
		if a.GetName() == "qkv_hidden_sizes" && len(a.GetInts()) == 3 && (a.GetInts()[0] != a.GetInts()[1] || a.GetInts()[1] != a.GetInts()[2]) {
			return "its Q, K and V have different hidden sizes (qkv_hidden_sizes)"
		}
	}
	if mask := in(3); mask != "" {
		// The rank comes from the graph's operators when no shape is declared (ix.shape).
		switch r := ix.rank(mask); {
		case r < 0:
			return fmt.Sprintf("the graph does not tell the rank of its mask %s, and the rewrite handles only a 2-D [batch, total length] mask (declare the mask's shape, e.g. with ONNX shape inference)", mask)
		case r != 2:
			return fmt.Sprintf("its mask %s has rank %d, and the rewrite handles only a 2-D [batch, total length] mask", mask, r)
		}
	}
	return ""
}

// branchPath names a node inside an If branch for messages: "If-node › then_branch › node".
func branchPath(ifNode, branch, node string) string {
	return ifNode + " › " + branch + " › " + node
}

// ifSites finds the attention inside an If node's two branches (optimum's merged decoders
// hold a whole decoder in each) and pairs the branches' sites by layer: layer l is the l-th
// site of the then branch and the l-th of the else branch. It returns the sites, and what
// the branches rejected.
func (ix *index) ifSites(n *pb.NodeProto, i int) ([]Site, *scanResult) {
	name := nodeName(n, i)
	rej := &scanResult{}
	branch := map[string][]Site{}
	for _, a := range n.GetAttribute() {
		if a.GetG() == nil || (a.GetName() != "then_branch" && a.GetName() != "else_branch") {
			continue
		}
		sc := ix.subIndex(a.GetG()).scan(false)
		for _, list := range []struct {
			from []Rejection
			to   *[]Rejection
		}{{sc.fused, &rej.fused}, {sc.nested, &rej.nested}, {sc.rejected, &rej.rejected}, {sc.malformed, &rej.malformed}} {
			for _, r := range list.from {
				r.Node = branchPath(name, a.GetName(), r.Node)
				*list.to = append(*list.to, r)
			}
		}
		sortFound(sc.sites)
		for _, f := range sc.sites {
			branch[a.GetName()] = append(branch[a.GetName()], f.site)
		}
	}
	then, els := branch["then_branch"], branch["else_branch"]
	var sites []Site
	for l := 0; l < len(then) || l < len(els); l++ {
		in := &IfSite{Node: name}
		var base Site
		if l < len(els) {
			in.Else = &els[l]
			base = els[l]
		}
		if l < len(then) {
			in.Then = &then[l]
			base = then[l]
		}
		base.NodeIndex = i
		base.Tensor = ""
		base.If = in
		sites = append(sites, base)
	}
	return sites, rej
}

// sortFound puts sites in topological order (stable: sites of one node keep theirs).
func sortFound(fs []found) {
	sort.SliceStable(fs, func(a, b int) bool { return fs[a].pos < fs[b].pos })
}

// markInputs sets, on every site of the main graph, Inputs (the graph inputs its
// probabilities are computed from) and Cross: whether its queries depend on a graph input
// that its keys do not (a decoder's queries see the target tokens; cross-attention keys
// come from the encoder alone). Self-attention takes queries and keys from one hidden
// state; with a past, the keys depend on more inputs than the queries, never fewer.
func (ix *index) markInputs(sites []Site) {
	names, deps := ix.valueInputs()
	for k := range sites {
		s := &sites[k]
		if s.If != nil {
			ix.markIfSite(s, names, deps)
			continue
		}
		var all inputSet
		for _, in := range ix.node(s.NodeIndex).GetInput() {
			if in != "" {
				all = all.or(deps(in))
			}
		}
		s.Inputs = all.names(names)
		n := ix.node(s.NodeIndex)
		var q, key string
		switch s.Form {
		case FormSoftmax:
			prod, _ := ix.fromScores(n.GetInput()[0])
			if prod == nil || len(prod.GetInput()) < 2 {
				continue
			}
			q, key = prod.GetInput()[0], prod.GetInput()[1]
		case FormONNXAttention, FormMHA:
			if len(n.GetInput()) < 2 || n.GetInput()[1] == "" {
				continue
			}
			q, key = n.GetInput()[0], n.GetInput()[1]
		default:
			continue
		}
		s.Cross = deps(q).hasOutside(deps(key))
	}
}
