package onnxgraph

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// changedAtOpset11 are default-domain operators whose inputs or attributes changed
// incompatibly between opset 10 and 11; a graph that uses them cannot simply be re-labelled.
var changedAtOpset11 = map[string]bool{"Clip": true, "Pad": true, "Resize": true, "Upsample": true, "Scatter": true}

// RelabelOpset10 returns model bytes whose default-domain opset is 11 instead of 10, for
// exports (such as PyTorch 1.13's at opset 10) that use opset-11 features like Equal on
// floats, which onnxruntime then rejects. ok is false when the model is not at opset 10 or
// uses an operator whose meaning changed at opset 11.
func RelabelOpset10(data []byte) (out []byte, ok bool, err error) {
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		return nil, false, fmt.Errorf("decoding model: %w", err)
	}
	var def *pb.OperatorSetIdProto
	for _, o := range mp.GetOpsetImport() {
		if defaultDomain(o.GetDomain()) == "" {
			def = o
		}
	}
	if def == nil || def.GetVersion() != 10 {
		return nil, false, nil
	}
	for _, n := range mp.GetGraph().GetNode() {
		if defaultDomain(n.GetDomain()) == "" && changedAtOpset11[n.GetOpType()] {
			return nil, false, nil
		}
	}
	def.Version = proto.Int64(11)
	out, err = proto.Marshal(mp)
	return out, err == nil, err
}
