package onnxgraph

import (
	"strings"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Role says what a model input holds, as far as its name and type tell.
type Role int

const (
	RoleUnknown Role = iota
	RoleIDs
	RoleAttentionMask
	RolePositionIDs
	RoleTokenTypeIDs
	RolePast
	// RoleDecoderIDs is an encoder–decoder's second sequence of token ids, the target the
	// decoder reads (decoder_input_ids, tgt_ids, target_ids…); RoleIDs is then the source.
	RoleDecoderIDs
	// RoleUseCacheBranch is the bool use_cache_branch of optimum's merged decoders, which
	// picks the branch that reads past state; attnscope runs without past and sets it false.
	RoleUseCacheBranch
)

func (r Role) String() string {
	return [...]string{"unknown", "token ids", "attention mask", "position ids", "token type ids", "past key/value", "decoder token ids", "use-cache branch"}[r]
}

// Input is one input the model needs at run time (graph inputs that are initializers in
// old IR versions are left out).
type Input struct {
	Name     string
	ElemType int32 // TensorProto.DataType
	// Dims are the declared dimensions: a value ≥ 0 when fixed, -1 when symbolic.
	Dims []int64
	// Params are the symbolic dimension names ("" where the dimension is fixed or unnamed).
	Params []string
	Role   Role
}

// Inputs lists the model's run-time inputs with the role attnscope gives each.
func Inputs(m *Model) []Input {
	g := m.Graph()
	inits := map[string]bool{}
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = true
	}
	var ins []Input
	haveIDs := false
	for _, v := range g.GetInput() {
		if inits[v.GetName()] {
			continue
		}
		tt := v.GetType().GetTensorType()
		in := Input{Name: v.GetName(), ElemType: tt.GetElemType()}
		for _, d := range tt.GetShape().GetDim() {
			if dv, ok := d.GetValue().(*pb.TensorShapeProto_Dimension_DimValue); ok {
				in.Dims = append(in.Dims, dv.DimValue)
				in.Params = append(in.Params, "")
			} else {
				in.Dims = append(in.Dims, -1)
				in.Params = append(in.Params, d.GetDimParam())
			}
		}
		in.Role = roleOf(in.Name, in.ElemType)
		if in.Role == RoleIDs {
			haveIDs = true
		}
		ins = append(ins, in)
	}
	if !haveIDs {
		// A model with one integer input of rank 2 takes token ids under another name
		// ("input", "x", "tokens"...).
		for i := range ins {
			if ins[i].Role == RoleUnknown && isInt(ins[i].ElemType) && len(ins[i].Dims) == 2 {
				ins[i].Role = RoleIDs
				break
			}
		}
	}
	return ins
}

func isInt(et int32) bool {
	return et == int32(pb.TensorProto_INT64) || et == int32(pb.TensorProto_INT32)
}

// decoderIDNames are the names, besides *decoder_input_ids, that exports give the
// target sequence of an encoder–decoder (fairseq calls it prev_output_tokens).
var decoderIDNames = map[string]bool{
	"decoder_ids": true, "tgt": true, "tgt_ids": true, "tgt_tokens": true, "tgt_input_ids": true,
	"target": true, "target_ids": true, "target_tokens": true, "target_input_ids": true,
	"prev_output_tokens": true,
}

func roleOf(name string, et int32) Role {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "use_cache") && et == int32(pb.TensorProto_BOOL):
		return RoleUseCacheBranch
	case (strings.Contains(n, "decoder_input_ids") || decoderIDNames[n]) && isInt(et):
		return RoleDecoderIDs
	case strings.HasPrefix(n, "past") || strings.Contains(n, "past_key") || strings.Contains(n, "cache"):
		return RolePast
	case strings.Contains(n, "input_ids") || n == "ids" || n == "tokens" || n == "src_tokens":
		if isInt(et) {
			return RoleIDs
		}
	case strings.Contains(n, "attention_mask") || strings.Contains(n, "input_mask") || n == "mask":
		return RoleAttentionMask
	case strings.Contains(n, "position_ids") || strings.Contains(n, "position"):
		if isInt(et) {
			return RolePositionIDs
		}
	case strings.Contains(n, "token_type") || strings.Contains(n, "segment_ids"):
		return RoleTokenTypeIDs
	}
	return RoleUnknown
}

// Limits are the bounds a prompt must respect, read from the graph; 0 means unknown.
type Limits struct {
	// Vocab is the number of rows of the token embedding.
	Vocab int
	// Positions is the number of rows of the learned position table.
	Positions int
	// FixedLen is the sequence length when the ids input has a fixed one.
	FixedLen int
}

// valuePreserving ops pass token ids through unchanged (up to shape), or pick, repeat or
// rearrange them (PyTorch's input_ids.view(-1, n) exports as a Slice): their outputs are
// still token ids of the same vocabulary.
var valuePreserving = map[string]bool{
	"Reshape": true, "Unsqueeze": true, "Squeeze": true, "Cast": true, "Identity": true, "Flatten": true,
	"Slice": true, "Expand": true, "Transpose": true, "Tile": true,
}

// ModelLimits finds the token embedding (a Gather of a rank-2 weight by the ids input or
// an encoder–decoder's target ids, possibly through reshapes and casts) and the learned
// position table (another Gather of a rank-2 weight of the same width whose indices do not
// come from token ids or token types), and the fixed sequence length of the ids input if it
// has one. Subgraphs (If branches) are searched too.
func ModelLimits(m *Model) Limits {
	var lim Limits
	roots := map[string]Role{}
	for _, in := range Inputs(m) {
		roots[in.Name] = in.Role
		if in.Role == RoleIDs && len(in.Dims) >= 2 && in.Dims[1] > 0 {
			lim.FixedLen = int(in.Dims[1])
		}
	}
	type table struct{ rows, width int64 }
	var others []table
	var tokenWidth int64
	// scan looks at the Gathers of one graph and, inside it, of the subgraphs of its
	// control-flow nodes (a merged decoder keeps its embeddings in If branches); producer
	// answers for the graph and every graph around it.
	var scan func(ix *index, producer func(string) *pb.NodeProto)
	scan = func(ix *index, producer func(string) *pb.NodeProto) {
		// root follows value-preserving ops back to a graph input.
		root := func(t string) (Role, bool) {
			for hop := 0; hop < 8; hop++ {
				if r, ok := roots[t]; ok {
					return r, true
				}
				p := producer(t)
				if p != nil && p.GetOpType() == "Mul" && len(p.GetInput()) == 2 {
					// ids × attention_mask (Vespa's exports) still indexes the vocabulary.
					if r, ok := roots[p.GetInput()[1]]; ok && r == RoleAttentionMask {
						t = p.GetInput()[0]
						continue
					}
					if r, ok := roots[p.GetInput()[0]]; ok && r == RoleAttentionMask {
						t = p.GetInput()[1]
						continue
					}
				}
				if p == nil || !valuePreserving[p.GetOpType()] || len(p.GetInput()) == 0 {
					return RoleUnknown, false
				}
				t = p.GetInput()[0]
			}
			return RoleUnknown, false
		}
		for _, i := range ix.order {
			n := ix.node(i)
			for _, a := range n.GetAttribute() {
				for _, g := range append([]*pb.GraphProto{a.GetG()}, a.GetGraphs()...) {
					if g == nil {
						continue
					}
					sub := ix.subIndex(g)
					scan(sub, func(t string) *pb.NodeProto {
						if p := sub.producerOf(t); p != nil {
							return p
						}
						return producer(t)
					})
				}
			}
			if opName(n) == "com.microsoft.EmbedLayerNormalization" {
				// onnxruntime's fused embedding: ids, segment ids, word, position and
				// segment tables.
				in := func(k int) string {
					if k < len(n.GetInput()) {
						return n.GetInput()[k]
					}
					return ""
				}
				if w, ok := ix.inits[in(2)]; ok && len(w.GetDims()) == 2 && lim.Vocab == 0 {
					lim.Vocab, tokenWidth = int(w.GetDims()[0]), w.GetDims()[1]
				}
				if p, ok := ix.inits[in(3)]; ok && len(p.GetDims()) == 2 {
					others = append(others, table{p.GetDims()[0], p.GetDims()[1]})
				}
				continue
			}
			if n.GetOpType() == "Slice" && len(n.GetInput()) > 0 {
				// A position table cut to the sequence's length (TransformerLens-style
				// W_pos[:T]) rather than gathered: its end is computed at run time, where
				// and it is added to the token embeddings, where a weight cut into parts (a
				// packed QKV) is multiplied.
				w, ok := ix.inits[n.GetInput()[0]]
				start, constStart := ix.constInts(n.GetInput()[1])
				dynamicEnd := len(n.GetInput()) > 2 && ix.dynamic[n.GetInput()[2]] &&
					constStart && len(start) == 1 && start[0] == 0 && addedOnly(ix.g, n.GetOutput())
				if ok && len(w.GetDims()) == 2 && dynamicEnd {
					others = append(others, table{w.GetDims()[0], w.GetDims()[1]})
				}
				continue
			}
			if n.GetOpType() != "Gather" || len(n.GetInput()) < 2 {
				continue
			}
			w, ok := ix.inits[n.GetInput()[0]]
			if !ok || len(w.GetDims()) != 2 {
				continue
			}
			t := table{w.GetDims()[0], w.GetDims()[1]}
			switch r, fromInput := root(n.GetInput()[1]); {
			case fromInput && (r == RoleIDs || r == RoleDecoderIDs):
				if lim.Vocab == 0 {
					lim.Vocab, tokenWidth = int(t.rows), t.width
				}
			case fromInput && r == RoleTokenTypeIDs:
			default:
				others = append(others, t)
			}
		}
	}
	ix := newIndex(m.Proto)
	scan(ix, ix.producerOf)
	for _, t := range others {
		if tokenWidth != 0 && t.width == tokenWidth && int(t.rows) > lim.Positions {
			lim.Positions = int(t.rows)
		}
	}
	return lim
}

// addedOnly reports whether the tensors are read, and only read, by Add nodes.
func addedOnly(g *pb.GraphProto, outs []string) bool {
	if len(outs) == 0 {
		return false
	}
	for _, o := range outs {
		cs := consumersOf(g, o)
		if len(cs) == 0 {
			return false
		}
		for _, c := range cs {
			if c.GetOpType() != "Add" {
				return false
			}
		}
	}
	return true
}
