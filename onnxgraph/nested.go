package onnxgraph

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// exposeIf threads the probabilities of the sites inside If node n out to the main graph
// g: in each branch the site's probabilities become the branch output attn.L{l}.then or
// .else (a branch without that layer outputs an empty float32 tensor instead, as the two
// branches of an If must have the same outputs), the If node gets the output attn.L{l}, and
// g declares it as a graph output.
func exposeIf(g *pb.GraphProto, n *pb.NodeProto, opset int64, sites []Site) error {
	for _, a := range n.GetAttribute() {
		bg := a.GetG()
		if bg == nil || (a.GetName() != "then_branch" && a.GetName() != "else_branch") {
			continue
		}
		keep := len(bg.GetOutput())
		var found []placed
		for _, s := range sites {
			bs := s.If.Then
			if a.GetName() == "else_branch" {
				bs = s.If.Else
			}
			name := s.Output + "." + a.GetName()[:4]
			if bs == nil {
				bg.Node = append(bg.Node, emptyTensor(name, s.Rank))
				bg.Output = append(bg.Output, outputInfo(name, true))
				continue
			}
			found = append(found, placed{site: *bs, name: name})
		}
		if _, err := exposeIn(bg, opset, found); err != nil {
			return fmt.Errorf("If node %s, %s: %w", sites[0].If.Node, a.GetName(), err)
		}
		// Every branch lists the new outputs in layer order, which the If's outputs follow.
		byName := map[string]*pb.ValueInfoProto{}
		for _, o := range bg.GetOutput()[keep:] {
			byName[o.GetName()] = o
		}
		bg.Output = bg.Output[:keep]
		for _, s := range sites {
			bg.Output = append(bg.Output, byName[s.Output+"."+a.GetName()[:4]])
		}
	}
	for _, s := range sites {
		n.Output = append(n.Output, s.Output)
		g.Output = append(g.Output, outputInfo(s.Output, true))
	}
	return nil
}

// emptyTensor is a Constant node whose output is an empty float32 tensor of the given
// rank (every dimension 0).
func emptyTensor(name string, rank int) *pb.NodeProto {
	if rank == 0 {
		rank = 4
	}
	t := &pb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(pb.TensorProto_FLOAT)), Dims: make([]int64, rank)}
	return &pb.NodeProto{
		Name:      proto.String("attnscope/" + name),
		OpType:    proto.String("Constant"),
		Output:    []string{name},
		Attribute: []*pb.AttributeProto{{Name: proto.String("value"), T: t, Type: pb.AttributeProto_TENSOR.Enum()}},
	}
}
