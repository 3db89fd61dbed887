package session

import (
	"strings"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// logitsOutput is the output to read logits from, or "" when the model has none: its main
// output (see onnxgraph.MainOutput), or the float32 copy Expose adds of a float16, bfloat16 or
// double one (onnxgraph.LogitsOutput) when the model is exposed, provided that output may be
// logits: where the vocabulary is known (vocab > 0) its declared last axis is open or the
// vocabulary's size; where it is not, the output is named as a language-model head (see
// lmHeadName). An encoder's last_hidden_state, whose last axis is the hidden size, is not.
// Run still checks each run's shape (isLogits).
func logitsOutput(m *onnxgraph.Model, vocab int, exposed bool) string {
	main := onnxgraph.MainOutput(m)
	if main == "" {
		return ""
	}
	var info *pb.ValueInfoProto
	for _, o := range m.Graph().GetOutput() {
		if o.GetName() == main {
			info = o
		}
	}
	if vocab > 0 {
		dims := info.GetType().GetTensorType().GetShape().GetDim()
		if len(dims) > 0 {
			if last := dims[len(dims)-1]; last.GetDimParam() == "" && last.GetDimValue() > 0 && last.GetDimValue() != int64(vocab) {
				return ""
			}
		}
	} else if !lmHeadName(main) {
		return ""
	}
	switch et := onnxgraph.MainOutputType(m); {
	case et == int32(pb.TensorProto_UNDEFINED) || et == int32(pb.TensorProto_FLOAT):
		return main
	case onnxgraph.NeedsFloat32Copy(et) && exposed:
		return onnxgraph.LogitsOutput
	}
	return ""
}

// lmHeadName says whether an output's name declares it a language-model head's scores:
// logits (lm_logits, …) or BERT's prediction_scores.
func lmHeadName(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "logits") || strings.Contains(n, "prediction_scores")
}

// isLogits says whether one sequence's output of shape sh holds per-token logits for T
// tokens: [1,T,V] with V the vocabulary's size where it is known (vocab > 0).
func isLogits(sh ort.Shape, T, vocab int) bool {
	return len(sh) == 3 && sh[0] == 1 && int(sh[1]) == T && sh[2] > 0 && (vocab <= 0 || int(sh[2]) == vocab)
}
