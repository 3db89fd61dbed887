package onnxgraph

import (
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// markIfSite sets Inputs and Cross (see markInputs) of a site inside an If node's branches,
// following the tensors a branch reads from the graph around it (a merged decoder's
// encoder_hidden_states, its ids): Inputs are the main graph's inputs either branch's site
// is computed from, Cross whether either branch's queries depend on an input its keys do
// not. Without it a split encoder–decoder joined with a merged decoder would label its
// decoder layers by their shapes alone.
func (ix *index) markIfSite(s *Site, names []string, outer func(string) inputSet) {
	n := ix.node(s.NodeIndex)
	var all inputSet
	for _, a := range n.GetAttribute() {
		site := s.If.Then
		if a.GetName() == "else_branch" {
			site = s.If.Else
		}
		if a.GetG() == nil || site == nil || (a.GetName() != "then_branch" && a.GetName() != "else_branch") {
			continue
		}
		sub := ix.subIndex(a.GetG())
		memo := map[string]inputSet{}
		var deps func(t string) inputSet
		deps = func(t string) inputSet {
			if d, ok := memo[t]; ok {
				return d
			}
			memo[t] = nil // the cycle guard
			p, ok := sub.producer[t]
			if !ok {
				if _, local := sub.inits[t]; local {
					return nil
				}
				d := outer(t) // a name from the main graph (or a weight: nothing)
				memo[t] = d
				return d
			}
			if isShapeOp(sub.node(p).GetOpType()) {
				return nil
			}
			var d inputSet
			for _, in := range sub.node(p).GetInput() {
				if in != "" {
					d = d.or(deps(in))
				}
			}
			memo[t] = d
			return d
		}
		if site.NodeIndex < 0 || site.NodeIndex >= len(sub.g.GetNode()) {
			continue
		}
		bn := sub.node(site.NodeIndex)
		for _, in := range bn.GetInput() {
			if in != "" {
				all = all.or(deps(in))
			}
		}
		if q, key, ok := sub.queryKey(*site, bn); ok && deps(q).hasOutside(deps(key)) {
			s.Cross = true
		}
	}
	s.Inputs = all.names(names)
}

// queryKey are the tensors a site's queries and keys come from, as markInputs reads them.
func (ix *index) queryKey(s Site, n *pb.NodeProto) (q, key string, ok bool) {
	switch s.Form {
	case FormSoftmax:
		prod, _ := ix.fromScores(n.GetInput()[0])
		if prod == nil || len(prod.GetInput()) < 2 {
			return "", "", false
		}
		return prod.GetInput()[0], prod.GetInput()[1], true
	case FormONNXAttention, FormMHA:
		if len(n.GetInput()) < 2 || n.GetInput()[1] == "" {
			return "", "", false
		}
		return n.GetInput()[0], n.GetInput()[1], true
	}
	return "", "", false
}
