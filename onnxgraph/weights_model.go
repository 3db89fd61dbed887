package onnxgraph

import (
	"fmt"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// reads fills QReads, KReads and VReads: layer e is read by layer l's Q (K, V) when e's
// output tensor is added into the stream l's Q (K, V) projection reads: it is among the
// values that input is computed from, found without passing through another attention
// layer's output (what an encoder layer writes reaches the decoder's stream only through
// a cross-attention, whose own output is what the decoder's stream holds). Shape and Size
// do not carry values, so a size read does not count.
func (tr *tracer) reads(w *Weights, links []siteLinks) {
	outs := map[string]bool{}
	for _, ln := range links {
		if ln.out != "" {
			outs[ln.out] = true
		}
	}
	memo := map[*index]map[string]map[string]bool{}
	// ancestors are the tensors x is computed from, in ix and, for a subgraph (an If
	// branch), in the graphs around it: a merged decoder inside an If reads the encoder's
	// output from the main graph.
	ancestors := func(ix *index, x string) map[string]bool {
		if memo[ix] == nil {
			memo[ix] = map[string]map[string]bool{}
		}
		if a, ok := memo[ix][x]; ok {
			return a
		}
		type item struct {
			ix *index
			t  string
		}
		a := map[string]bool{}
		stack := []item{{ix, x}}
		for len(stack) > 0 {
			it := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if a[it.t] || !it.ix.dynamic[it.t] {
				continue
			}
			a[it.t] = true
			p := it.ix.producerOf(it.t)
			if p == nil {
				if it.ix.outer != nil {
					a[it.t] = false
					stack = append(stack, item{it.ix.outer, it.t})
				}
				continue
			}
			if isShapeOp(p.GetOpType()) || outs[it.t] {
				continue
			}
			for _, in := range p.GetInput() {
				if in != "" && !a[in] {
					stack = append(stack, item{it.ix, in})
				}
			}
		}
		memo[ix][x] = a
		return a
	}
	// encloses reports whether outer is inner or a graph around it.
	encloses := func(outer, inner *index) bool {
		for ix := inner; ix != nil; ix = ix.outer {
			if ix == outer {
				return true
			}
		}
		return false
	}
	for l := range links {
		lw := &w.Layers[l]
		for e := 0; e < l; e++ {
			if !encloses(links[e].ix, links[l].ix) || links[e].out == "" {
				continue
			}
			if ancestors(links[l].ix, links[l].xq)[links[e].out] {
				lw.QReads = append(lw.QReads, e)
			}
			if ancestors(links[l].ix, links[l].xk)[links[e].out] {
				lw.KReads = append(lw.KReads, e)
			}
			if ancestors(links[l].ix, links[l].xv)[links[e].out] {
				lw.VReads = append(lw.VReads, e)
			}
		}
	}
}

// modelLevel finds the token embedding, the learned position embedding, the unembedding
// and the norm before it. What it cannot find it explains in the notes.
func (tr *tracer) modelLevel(w *Weights, links []siteLinks) {
	ix := tr.top
	names, deps := ix.valueInputs()
	roles := map[string]Role{}
	for _, in := range Inputs(tr.m) {
		roles[in.Name] = in.Role
	}
	depRoles := func(t string) map[Role]bool {
		out := map[Role]bool{}
		for _, name := range deps(t).names(names) {
			out[roles[name]] = true
		}
		return out
	}
	var embedName, posName string
	// posOffset is the row of the position table position 0 reads (BART and OPT add 2);
	// posTables counts further tables (an encoder–decoder's second stack).
	posOffset, posTables := 0, 0
	embedRole := Role(-1)
	rotary := false
	for _, l := range w.Layers {
		rotary = rotary || l.Rotary != ""
	}
	// The inputs a tensor's values come from, by role: by name through a few layout ops
	// (which also works inside an If branch, which reads the inputs by their outer names),
	// else by the main graph's value dependencies.
	rolesOf := func(ix *index, t string) map[Role]bool {
		for range 6 {
			if r, ok := roles[t]; ok && ix.producerOf(t) == nil {
				return map[Role]bool{r: true}
			}
			p := ix.producerOf(t)
			if p == nil || len(p.GetInput()) == 0 {
				break
			}
			switch p.GetOpType() {
			case "Cast", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten":
				t = p.GetInput()[0]
				continue
			}
			break
		}
		if ix != tr.top {
			return map[Role]bool{}
		}
		return depRoles(t)
	}
	// positionTable reports whether Gather n of scope sc, whose indices come from the
	// inputs rs, reads a learned position table: a [rows, d_model] table indexed by no
	// ids, token types or mask, added into the residual stream.
	positionTable := func(sc *index, n *pb.NodeProto, rs map[Role]bool) bool {
		dims, ok := sc.shapeOf(n.GetInput()[0])
		return ok && len(dims) == 2 && dims[1] == int64(w.DModel) &&
			!rs[RoleIDs] && !rs[RoleDecoderIDs] && !rs[RoleTokenTypeIDs] && !rs[RoleAttentionMask] &&
			tr.addedToStream(sc, n.GetOutput())
	}
	scopes := []*index{tr.top}
	if len(links) > 0 && links[0].ix != nil && links[0].ix != tr.top {
		scopes = append(scopes, links[0].ix)
	}
	ix = tr.top
	for _, sc := range scopes {
		if embedName != "" {
			break
		}
		ix = sc
		for _, i := range sc.order {
			n := sc.node(i)
			switch opName(n) {
			case "com.microsoft.EmbedLayerNormalization":
				if embedName == "" && len(n.GetInput()) > 3 {
					embedName, embedRole = n.GetInput()[2], RoleIDs
					if posName == "" {
						posName = n.GetInput()[3]
					}
				}
			case "Gather":
				if len(n.GetInput()) < 2 || sc.dynamic[n.GetInput()[0]] || !sc.dynamic[n.GetInput()[1]] {
					continue
				}
				dims, ok := sc.shapeOf(n.GetInput()[0])
				if !ok || len(dims) != 2 || attrInt(n, "axis", 0) != 0 {
					continue
				}
				rs := rolesOf(sc, n.GetInput()[1])
				switch {
				case rs[RoleDecoderIDs] && embedRole != RoleDecoderIDs:
					embedName, embedRole = n.GetInput()[0], RoleDecoderIDs
				case rs[RoleIDs] && embedName == "":
					embedName, embedRole = n.GetInput()[0], RoleIDs
				case positionTable(sc, n, rs):
					switch {
					case posName == "":
						posName, posOffset = n.GetInput()[0], tr.indexOffset(sc, n.GetInput()[1])
					case posName != n.GetInput()[0]:
						posTables++
					}
				}
			case "Slice":
				if posName != "" || len(n.GetInput()) < 3 || len(n.GetOutput()) == 0 || sc.dynamic[n.GetInput()[0]] || sc != tr.top {
					continue
				}
				dims, ok := sc.shapeOf(n.GetInput()[0])
				if ok && len(dims) >= 2 && dims[len(dims)-1] == int64(w.DModel) && product(dims[:len(dims)-1]) == dims[len(dims)-2] && len(deps(n.GetOutput()[0]).names(names)) == 0 && tr.addedToStream(sc, n.GetOutput()) {
					posName = n.GetInput()[0]
				}
			}
		}
	}
	// Position tables in the sites' other scopes (a merged decoder's If branch) count too.
	seen := map[*index]bool{}
	for _, sc := range scopes {
		seen[sc] = true
	}
	for _, ln := range links {
		sc := ln.ix
		if sc == nil || seen[sc] {
			continue
		}
		seen[sc] = true
		for _, i := range sc.order {
			n := sc.node(i)
			if n.GetOpType() != "Gather" || len(n.GetInput()) < 2 || sc.dynamic[n.GetInput()[0]] || !sc.dynamic[n.GetInput()[1]] || n.GetInput()[0] == embedName || n.GetInput()[0] == posName {
				continue
			}
			if positionTable(sc, n, rolesOf(sc, n.GetInput()[1])) {
				posTables++
			}
		}
	}
	if embedName == "" {
		w.EmbedNote = "no Gather of the token ids from an embedding table was found"
	} else if e, ok, err := tr.r.value(ix, embedName); err != nil || !ok || len(e.dims) != 2 {
		w.EmbedNote = fmt.Sprintf("the embedding table %s cannot be read: %v", embedName, err)
	} else if int(e.dims[1]) != w.DModel {
		w.EmbedNote = fmt.Sprintf("the embedding table %s is %d wide, not d_model = %d (a projected or factorised embedding)", embedName, e.dims[1], w.DModel)
	} else {
		w.Embed, w.Vocab = e.data, int(e.dims[0])
	}
	switch {
	case posName != "" && posTables > 0:
		w.PosNote = fmt.Sprintf("the model has %d position tables (an encoder's and a decoder's), and which one feeds each layer is not traced", posTables+1)
	case posName != "":
		if p, ok, err := tr.r.value(ix, posName); err != nil || !ok || p.size()%max(w.DModel, 1) != 0 {
			w.PosNote = fmt.Sprintf("the position table %s cannot be read: %v", posName, err)
		} else if rows := p.size() / w.DModel; posOffset < 0 || posOffset >= rows {
			w.PosNote = fmt.Sprintf("position 0 reads row %d of the %d-row position table %s", posOffset, rows, posName)
		} else {
			w.PosEmbed, w.NPos = p.data[posOffset*w.DModel:], rows-posOffset
			w.PosOffset = posOffset
		}
	case rotary:
		w.PosNote = "positions are rotary (applied to q and k), not a learned embedding"
	default:
		w.PosNote = "no learned position embedding was found (sinusoidal constants, rotary, or none)"
	}
	tr.unembed(w)
}

// addedToStream reports whether one of outs reaches, through shape-only ops, an Add of
// two activations (the sum of token and position embeddings).
func (tr *tracer) addedToStream(ix *index, outs []string) bool {
	frontier := append([]string{}, outs...)
	for hop := 0; hop < 4 && len(frontier) > 0; hop++ {
		var next []string
		for _, t := range frontier {
			for _, c := range ix.consumers[t] {
				n := ix.node(c)
				switch n.GetOpType() {
				case "Add":
					if ix.allDynamic(n.GetInput()) {
						return true
					}
				case "Cast", "Unsqueeze", "Reshape", "Expand", "Identity", "Squeeze":
					next = append(next, n.GetOutput()...)
				}
			}
		}
		frontier = next
	}
	return false
}

// unembed finds the projection that computes the logits (the main output) from the
// residual stream.
func (tr *tracer) unembed(w *Weights) {
	ix := tr.top
	t := MainOutput(tr.m)
	var proj, deq *pb.NodeProto
	for hop := 0; hop < 12 && proj == nil; hop++ {
		n := ix.producerOf(t)
		if n == nil || len(n.GetInput()) == 0 {
			w.UnembedNote = fmt.Sprintf("the logits %s are not computed by a projection attnscope can find", t)
			return
		}
		switch opName(n) {
		case "If":
			k := outIndex(n, t)
			var sub *index
			for _, a := range n.GetAttribute() {
				if a.GetName() == "else_branch" && a.GetG() != nil && k < len(a.GetG().GetOutput()) {
					if sub = tr.subs[a.GetG()]; sub == nil {
						sub = ix.subIndex(a.GetG())
						tr.subs[a.GetG()] = sub
					}
					t = a.GetG().GetOutput()[k].GetName()
				}
			}
			if sub == nil {
				w.UnembedNote = "the logits come out of an If node whose branches attnscope cannot read"
				return
			}
			ix = sub
		case "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten":
			t = n.GetInput()[0]
		case "Add":
			if len(n.GetInput()) == 2 && !ix.allDynamic(n.GetInput()) {
				t = n.GetInput()[0]
				if !ix.dynamic[t] {
					t = n.GetInput()[1]
				}
				continue
			}
			w.UnembedNote = fmt.Sprintf("the logits are a sum of activations (node %s), not one projection", nameOf(n))
			return
		case "Mul":
			if mm := tr.quantizedProduct(ix, n); mm != nil {
				proj, deq = mm, n
				continue
			}
			if nm, _ := tr.normFor(ix, t); nm != nil {
				w.UnembedNote = fmt.Sprintf("the model's main output %s is a normalised hidden state, not logits: the file has no unembedding", MainOutput(tr.m))
				return
			}
			w.UnembedNote = fmt.Sprintf("the logits are scaled by node %s, which attnscope does not follow", nameOf(n))
			return
		case "MatMul", "Gemm", "Einsum", "com.microsoft.FusedMatMul":
			proj, deq = n, n
		default:
			if nm, _ := tr.normFor(ix, t); nm != nil {
				w.UnembedNote = fmt.Sprintf("the model's main output %s is a normalised hidden state, not logits: the file has no unembedding", MainOutput(tr.m))
				return
			}
			w.UnembedNote = fmt.Sprintf("the logits come from %s (node %s), not a projection to the vocabulary", opName(n), nameOf(n))
			return
		}
	}
	if proj == nil {
		w.UnembedNote = "no projection to the vocabulary within 12 ops of the logits"
		return
	}
	x, wu, per, _, st := tr.weightOf(ix, proj, deq)
	if st != nil || per != nil || wu == nil {
		reason := "its weight is per-head"
		if st != nil {
			reason = st.reason
		}
		w.UnembedNote = fmt.Sprintf("the logits' projection %s cannot be read: %s", nameOf(proj), reason)
		return
	}
	if int(wu.dims[0]) != w.DModel {
		w.UnembedNote = fmt.Sprintf("the logits' projection %s reads %d features, not d_model = %d (a head between the stream and the vocabulary)", nameOf(proj), wu.dims[0], w.DModel)
		return
	}
	norm, err := tr.normFor(ix, x)
	if err != nil {
		w.UnembedNote = err.Error()
		return
	}
	stream := x
	if norm != nil {
		if p := ix.producerOf(tr.throughCasts(ix, x)); p != nil && len(p.GetInput()) > 0 {
			stream = tr.normInput(ix, p)
		}
	}
	if why := tr.nonlinearHead(ix, stream); stream != "" && why != "" {
		w.UnembedNote = why
		w.FinalNorm = norm
		return
	}
	w.Unembed, w.FinalNorm = wu.data, norm
	if w.Vocab == 0 {
		w.Vocab = int(wu.dims[1])
	}
	if w.Embed != nil && int(wu.dims[1]) == w.Vocab {
		tied := true
		for i := 0; i < w.Vocab && tied; i++ {
			for j := 0; j < w.DModel; j++ {
				if w.Embed[i*w.DModel+j] != wu.data[j*w.Vocab+i] {
					tied = false
					break
				}
			}
		}
		w.UnembedTied = tied
	} else if w.Embed != nil {
		w.UnembedNote = fmt.Sprintf("the unembedding has %d outputs and the embedding %d rows", wu.dims[1], w.Vocab)
	}
}

// normInput is the input of a normalisation node (for a decomposed one, the tensor its
// mean is taken of).
func (tr *tracer) normInput(ix *index, last *pb.NodeProto) string {
	switch last.GetOpType() {
	case "LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization":
		return last.GetInput()[0]
	case "SkipLayerNormalization", "SkipSimplifiedLayerNormalization":
		return "" // it normalises input + skip: the residual sum itself
	}
	if len(last.GetOutput()) == 0 {
		return ""
	}
	// Decomposed: find the ReduceMean among the few ops before and take its input.
	frontier := []string{last.GetOutput()[0]}
	for hop := 0; hop < 8 && len(frontier) > 0; hop++ {
		var next []string
		for _, t := range frontier {
			p := ix.producerOf(t)
			if p == nil {
				continue
			}
			if p.GetOpType() == "ReduceMean" && len(p.GetInput()) > 0 {
				return tr.throughCasts(ix, p.GetInput()[0])
			}
			for _, in := range p.GetInput() {
				if ix.dynamic[in] {
					next = append(next, in)
				}
			}
		}
		frontier = next
	}
	return last.GetOutput()[0]
}

// nonlinearHead says why the stream the unembedding reads is not the residual stream
// (an MLP or activation between them, as in BERT's masked-LM head), or returns "".
func (tr *tracer) nonlinearHead(ix *index, t string) string {
	for hop := 0; hop < 8; hop++ {
		p := ix.producerOf(t)
		if p == nil || len(p.GetInput()) == 0 {
			return "" // a graph input: the stream itself
		}
		switch op := opName(p); op {
		case "Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Slice", "Transpose":
			if !ix.dynamic[p.GetInput()[0]] {
				return "" // the embedding itself (a 0-layer stream)
			}
			t = p.GetInput()[0]
		case "Add", "Sum":
			if ix.allDynamic(p.GetInput()) || len(p.GetInput()) < 2 {
				return "" // the residual sum
			}
			q := ix.producerOf(p.GetInput()[0])
			if !ix.dynamic[p.GetInput()[0]] {
				q = ix.producerOf(p.GetInput()[1])
			}
			if q != nil && (q.GetOpType() == "MatMul" || q.GetOpType() == "Gemm") {
				return fmt.Sprintf("the logits read the output of a dense layer (%s) after the residual stream, not the stream itself (a nonlinear head such as BERT's masked-LM transform)", nameOf(q))
			}
			return ""
		case "LayerNormalization", "com.microsoft.SkipLayerNormalization", "com.microsoft.SkipSimplifiedLayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "com.microsoft.EmbedLayerNormalization":
			return "" // a post-norm stream
		default:
			return fmt.Sprintf("the logits are computed from the residual stream through %s (node %s), not read linearly from it (a nonlinear head such as BERT's masked-LM transform)", op, nameOf(p))
		}
	}
	return ""
}

// indexOffset is the constant added to the indices of a position-table Gather (BART's and
// OPT's learned positions start at row 2), or 0.
func (tr *tracer) indexOffset(ix *index, t string) int {
	for hop := 0; hop < 6; hop++ {
		p := ix.producerOf(t)
		if p == nil || len(p.GetInput()) == 0 {
			return 0
		}
		switch p.GetOpType() {
		case "Cast", "Unsqueeze", "Squeeze", "Reshape", "Identity", "Expand":
			t = p.GetInput()[0]
			continue
		case "Add":
			if len(p.GetInput()) != 2 {
				return 0
			}
			for k, in := range p.GetInput() {
				if ix.dynamic[in] {
					continue
				}
				if v, ok, err := tr.r.value(ix, in); err == nil && ok && v.size() == 1 && ix.dynamic[p.GetInput()[1-k]] {
					return int(v.data[0])
				}
			}
		}
		return 0
	}
	return 0
}
