package onnxgraph

import (
	"fmt"
	"strings"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// operandNames names, for each attention operator FindAttention reads, the inputs and
// outputs the operator requires (the ONNX and onnxruntime contrib operator schemas); a
// node that lacks one of them is malformed, and no runtime would load it.
var operandNames = map[string]struct{ inputs, outputs []string }{
	"Softmax":                           {[]string{"input"}, []string{"output"}},
	"Attention":                         {[]string{"Q", "K", "V"}, []string{"Y"}},
	"com.microsoft.Attention":           {[]string{"input", "weights"}, []string{"output"}},
	"com.microsoft.MultiHeadAttention":  {[]string{"query"}, []string{"output"}},
	"com.microsoft.GroupQueryAttention": {[]string{"query"}, []string{"output"}},
	"If":                                {[]string{"cond"}, nil},
}

// malformedReason says why node n breaks its operator's definition — a required input or
// output missing or unnamed, a Softmax with more than one input, two attributes of one
// name — or returns "" when it does not (or when attnscope does not look at the operator).
func malformedReason(n *pb.NodeProto) string {
	op := opName(n)
	want, ok := operandNames[op]
	if !ok {
		return ""
	}
	var missing []string
	for k, name := range want.inputs {
		if k >= len(n.GetInput()) || n.GetInput()[k] == "" {
			missing = append(missing, "input "+name)
		}
	}
	for k, name := range want.outputs {
		if k >= len(n.GetOutput()) || n.GetOutput()[k] == "" {
			missing = append(missing, "output "+name)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("has %d input(s) and %d output(s), without its required %s", len(n.GetInput()), len(n.GetOutput()), strings.Join(missing, ", "))
	}
	if op == "Softmax" && len(n.GetInput()) > 1 {
		return fmt.Sprintf("has %d inputs, where a Softmax takes one", len(n.GetInput()))
	}
	seen := map[string]bool{}
	for _, a := range n.GetAttribute() {
		if seen[a.GetName()] {
			return fmt.Sprintf("has two attributes named %q", a.GetName())
		}
		seen[a.GetName()] = true
	}
	return ""
}

// MalformedError says that the model holds a node that breaks its operator's definition,
// which onnxruntime would refuse to load; Node and Op name the first such node.
type MalformedError struct {
	Node, Op, Reason string
	// Count is the number of malformed nodes (≥ 1).
	Count int
}

func (e *MalformedError) Error() string {
	more := ""
	if e.Count > 1 {
		more = fmt.Sprintf(" (and %d more malformed node(s))", e.Count-1)
	}
	return fmt.Sprintf("the model is malformed: node %s (%s) %s%s; the file is damaged or its exporter wrote an invalid graph", e.Node, e.Op, e.Reason, more)
}
