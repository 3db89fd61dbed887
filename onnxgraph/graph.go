package onnxgraph

import (
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// index answers structural questions about one graph: who produces and who consumes a
// tensor, which tensors are constants, and the nodes in topological order (ONNX files in
// the wild are not always sorted).
type index struct {
	g         *pb.GraphProto
	opsets    map[string]int64 // domain ("" for the default domain) → version
	producer  map[string]int   // tensor → node index
	consumers map[string][]int // tensor → node indices
	inits     map[string]*pb.TensorProto
	inputs    map[string]*pb.ValueInfoProto // graph inputs that are not initializers
	valueInfo map[string]*pb.ValueInfoProto // value_info, inputs and outputs
	order     []int                         // node indices in topological order
	pos       []int                         // node index → position in order
	dynamic   map[string]bool               // tensors that depend on a graph input
	types     map[string]int32              // memo for elemType
	shapes    map[string]inferredShape      // memo for shape
	outer     *index                        // the graph around a subgraph, or nil
}

// defaultDomain normalises the two spellings of the default operator domain.
func defaultDomain(d string) string {
	if d == "ai.onnx" {
		return ""
	}
	return d
}

func newIndex(m *pb.ModelProto) *index {
	opsets := map[string]int64{}
	for _, o := range m.GetOpsetImport() {
		opsets[defaultDomain(o.GetDomain())] = o.GetVersion()
	}
	return newGraphIndex(m.GetGraph(), opsets, nil)
}

// subIndex indexes a subgraph (an If branch) of the graph ix indexes. Names the subgraph
// uses from the outer scope keep what the outer graph knows of them: weights stay weights,
// activations stay activations, and their declared shapes and types still answer.
func (ix *index) subIndex(g *pb.GraphProto) *index {
	return newGraphIndex(g, ix.opsets, ix)
}

func newGraphIndex(g *pb.GraphProto, opsets map[string]int64, outer *index) *index {
	ix := &index{
		g:         g,
		opsets:    opsets,
		producer:  map[string]int{},
		consumers: map[string][]int{},
		inits:     map[string]*pb.TensorProto{},
		inputs:    map[string]*pb.ValueInfoProto{},
		valueInfo: map[string]*pb.ValueInfoProto{},
		dynamic:   map[string]bool{},
		types:     map[string]int32{},
		shapes:    map[string]inferredShape{},
		outer:     outer,
	}
	if outer != nil {
		for name, t := range outer.inits {
			ix.inits[name] = t
		}
		for name, v := range outer.valueInfo {
			ix.valueInfo[name] = v
		}
		for name := range outer.dynamic {
			ix.dynamic[name] = true
		}
	}
	for _, t := range g.GetInitializer() {
		ix.inits[t.GetName()] = t
	}
	for _, v := range g.GetValueInfo() {
		ix.valueInfo[v.GetName()] = v
	}
	for _, v := range g.GetOutput() {
		ix.valueInfo[v.GetName()] = v
	}
	for _, v := range g.GetInput() {
		ix.valueInfo[v.GetName()] = v
		if _, isInit := ix.inits[v.GetName()]; !isInit {
			ix.inputs[v.GetName()] = v
		}
	}
	for i, n := range g.GetNode() {
		for _, out := range n.GetOutput() {
			if out != "" {
				ix.producer[out] = i
			}
		}
		for _, in := range n.GetInput() {
			if in != "" {
				ix.consumers[in] = append(ix.consumers[in], i)
			}
		}
	}
	ix.sort()
	ix.markDynamic()
	return ix
}

// sort fills order and pos with a topological order (Kahn's algorithm, stable with respect
// to the file's order). Nodes on a cycle, which a valid model does not have, keep their
// file order at the end.
func (ix *index) sort() {
	nodes := ix.g.GetNode()
	waiting := make([]int, len(nodes))
	for i, n := range nodes {
		for _, in := range n.GetInput() {
			if _, ok := ix.producer[in]; ok && in != "" {
				waiting[i]++
			}
		}
	}
	ix.pos = make([]int, len(nodes))
	for i := range ix.pos {
		ix.pos[i] = -1
	}
	var ready []int
	for i := range nodes {
		if waiting[i] == 0 {
			ready = append(ready, i)
		}
	}
	for len(ready) > 0 {
		// Take the ready node that comes first in the file, so sorted files keep their order.
		best := 0
		for j := range ready {
			if ready[j] < ready[best] {
				best = j
			}
		}
		i := ready[best]
		ready = append(ready[:best], ready[best+1:]...)
		ix.pos[i] = len(ix.order)
		ix.order = append(ix.order, i)
		for _, out := range nodes[i].GetOutput() {
			if out == "" {
				continue
			}
			for _, c := range ix.consumers[out] {
				for _, in := range nodes[c].GetInput() {
					if in == out {
						waiting[c]--
					}
				}
				if waiting[c] == 0 && ix.pos[c] == -1 && !contains(ready, c) {
					ready = append(ready, c)
				}
			}
		}
	}
	for i := range nodes {
		if ix.pos[i] == -1 {
			ix.pos[i] = len(ix.order)
			ix.order = append(ix.order, i)
		}
	}
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// markDynamic records which tensors depend on a graph input, i.e. are activations rather
// than weights or constants.
func (ix *index) markDynamic() {
	for name := range ix.inputs {
		ix.dynamic[name] = true
	}
	nodes := ix.g.GetNode()
	for _, i := range ix.order {
		dyn := false
		for _, in := range nodes[i].GetInput() {
			if ix.dynamic[in] {
				dyn = true
				break
			}
		}
		if !dyn && len(nodes[i].GetInput()) == 0 && nodes[i].GetOpType() != "Constant" {
			// Ops such as RandomNormal have no inputs but are not constants either.
			dyn = len(nodes[i].GetAttribute()) == 0
		}
		if dyn {
			for _, out := range nodes[i].GetOutput() {
				ix.dynamic[out] = true
			}
		}
	}
}

func (ix *index) node(i int) *pb.NodeProto { return ix.g.GetNode()[i] }

// producerOf returns the node that produces tensor, or nil for inputs and initializers.
func (ix *index) producerOf(tensor string) *pb.NodeProto {
	if i, ok := ix.producer[tensor]; ok {
		return ix.node(i)
	}
	return nil
}

// opsetFor returns the opset version of the node's domain (0 when not imported).
func (ix *index) opsetFor(n *pb.NodeProto) int64 {
	return ix.opsets[defaultDomain(n.GetDomain())]
}

// shapeOf returns the declared shape of a tensor, if the file declares one: dims are -1
// where symbolic. ok is false when nothing is declared.
func (ix *index) shapeOf(tensor string) (dims []int64, ok bool) {
	if t, isInit := ix.inits[tensor]; isInit {
		return t.GetDims(), true
	}
	v := ix.valueInfo[tensor]
	tt := v.GetType().GetTensorType()
	if tt == nil || tt.GetShape() == nil {
		return nil, false
	}
	for _, d := range tt.GetShape().GetDim() {
		if dv, isValue := d.GetValue().(*pb.TensorShapeProto_Dimension_DimValue); isValue {
			dims = append(dims, dv.DimValue)
		} else {
			dims = append(dims, -1)
		}
	}
	return dims, true
}

// elemType infers the element type (a TensorProto.DataType) of a tensor from declarations
// and from the ops that produce it; 0 when it cannot tell.
func (ix *index) elemType(tensor string) int32 {
	if t, ok := ix.types[tensor]; ok {
		return t
	}
	ix.types[tensor] = 0 // guards against cycles in invalid graphs
	t := ix.inferElemType(tensor)
	ix.types[tensor] = t
	return t
}

func (ix *index) inferElemType(tensor string) int32 {
	if t, ok := ix.inits[tensor]; ok {
		return t.GetDataType()
	}
	if v, ok := ix.valueInfo[tensor]; ok {
		if et := v.GetType().GetTensorType().GetElemType(); et != 0 {
			return et
		}
	}
	n := ix.producerOf(tensor)
	if n == nil {
		return 0
	}
	switch n.GetOpType() {
	case "Cast":
		return int32(attrInt(n, "to", 0))
	case "Constant":
		for _, a := range n.GetAttribute() {
			switch a.GetName() {
			case "value":
				return a.GetT().GetDataType()
			case "value_float", "value_floats":
				return int32(pb.TensorProto_FLOAT)
			case "value_int", "value_ints":
				return int32(pb.TensorProto_INT64)
			}
		}
		return 0
	case "Shape", "Size", "NonZero", "ArgMax", "ArgMin":
		return int32(pb.TensorProto_INT64)
	case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf":
		return int32(pb.TensorProto_BOOL)
	case "Where":
		if len(n.GetInput()) > 1 {
			return ix.elemType(n.GetInput()[1])
		}
	case "Attention":
		// ONNX Attention's outputs share the type of Q.
		if len(n.GetInput()) > 0 {
			return ix.elemType(n.GetInput()[0])
		}
	}
	for _, in := range n.GetInput() {
		if in == "" {
			continue
		}
		if t := ix.elemType(in); t != 0 {
			return t
		}
	}
	return 0
}

// attrInt returns the named integer attribute of n, or def when it is absent.
func attrInt(n *pb.NodeProto, name string, def int64) int64 {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a.GetI()
		}
	}
	return def
}

// hasAttr reports whether n carries the named attribute.
func hasAttr(n *pb.NodeProto, name string) bool {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return true
		}
	}
	return false
}

// inputSet is a set of a graph's run-time inputs: bit k stands for the k-th of the names
// valueInputs returns.
type inputSet []uint64

func (a inputSet) or(b inputSet) inputSet {
	out := make(inputSet, max(len(a), len(b)))
	copy(out, a)
	for i, w := range b {
		out[i] |= w
	}
	return out
}

// names lists the inputs in a, in the order of all (valueInputs' names).
func (a inputSet) names(all []string) []string {
	var out []string
	for k, name := range all {
		if k/64 < len(a) && a[k/64]&(1<<(k%64)) != 0 {
			out = append(out, name)
		}
	}
	return out
}

// hasOutside reports whether a holds an input that b does not.
func (a inputSet) hasOutside(b inputSet) bool {
	for i, w := range a {
		if i >= len(b) && w != 0 || i < len(b) && w&^b[i] != 0 {
			return true
		}
	}
	return false
}

// valueInputs returns the graph's run-time inputs in declaration order, and a memoized
// function giving the inputs a tensor's values are computed from. Shape and Size end the
// walk: a tensor's shape is not its values (a key reshaped with the query's batch size
// still holds the encoder's values only).
func (ix *index) valueInputs() ([]string, func(tensor string) inputSet) {
	var names []string
	bit := map[string]int{}
	for _, v := range ix.g.GetInput() {
		if _, ok := ix.inputs[v.GetName()]; ok {
			bit[v.GetName()] = len(names)
			names = append(names, v.GetName())
		}
	}
	memo := map[string]inputSet{}
	var deps func(t string) inputSet
	deps = func(t string) inputSet {
		if d, ok := memo[t]; ok {
			return d
		}
		var own inputSet
		if k, ok := bit[t]; ok {
			own = make(inputSet, k/64+1)
			own[k/64] = 1 << (k % 64)
		}
		memo[t] = own // also the cycle guard
		p, ok := ix.producer[t]
		if !ok || isShapeOp(ix.node(p).GetOpType()) {
			return own
		}
		d := own
		for _, in := range ix.node(p).GetInput() {
			if in != "" && ix.dynamic[in] {
				d = d.or(deps(in))
			}
		}
		memo[t] = d
		return d
	}
	return names, deps
}

func isShapeOp(op string) bool { return op == "Shape" || op == "Size" }
