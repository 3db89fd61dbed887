package session

import (
	"fmt"
	"strings"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// buildInput makes the tensor for one model input from f: [K,S] for the source's ids,
// mask, positions and token types, [K,T] for the target's, an empty past, a false
// use_cache_branch.
func (s *Session) buildInput(in onnxgraph.Input, f feed) (ort.Value, error) {
	K, T, flat := f.K, f.S, f.src
	if in.Role == onnxgraph.RoleDecoderIDs || (s.seq2seq && followsTarget(in.Name)) {
		T, flat = f.T, f.tgt
	}
	shape := ort.NewShape(int64(K), int64(T))
	switch in.Role {
	case onnxgraph.RoleIDs, onnxgraph.RoleDecoderIDs:
		return intTensor(in, shape, flat)
	case onnxgraph.RoleUseCacheBranch:
		sh := make(ort.Shape, len(in.Dims))
		for i, d := range in.Dims {
			sh[i] = max(d, 1)
		}
		return ort.NewTensor(sh, make([]bool, sh.FlattenedSize()))
	case onnxgraph.RoleAttentionMask:
		if len(in.Dims) == 4 {
			return causalMask(in, K, T)
		}
		if in.ElemType == int32(pb.TensorProto_FLOAT) {
			return ort.NewTensor(shape, make([]float32, K*T)) // additive: 0 keeps
		}
		vals := make([]int64, K*T)
		for i := range vals {
			vals[i] = 1
		}
		return intTensor(in, shape, vals)
	case onnxgraph.RolePositionIDs:
		vals := make([]int64, K*T)
		for i := range vals {
			vals[i] = int64(i % T)
		}
		return intTensor(in, shape, vals)
	case onnxgraph.RoleTokenTypeIDs:
		return intTensor(in, shape, make([]int64, K*T))
	case onnxgraph.RolePast:
		sh := make(ort.Shape, len(in.Dims))
		for i, d := range in.Dims {
			switch {
			case d >= 0:
				sh[i] = d
			case s.isBatchAxis(in, i):
				sh[i] = int64(K)
			default:
				sh[i] = 0
			}
		}
		switch in.ElemType {
		case int32(pb.TensorProto_FLOAT):
			return ort.NewTensor(sh, []float32{})
		case int32(pb.TensorProto_FLOAT16):
			return newFloat16Tensor(sh, nil)
		}
		return nil, fmt.Errorf("past input %s has type %s, which attnscope cannot fill", in.Name, typeName(in.ElemType))
	}
	return nil, fmt.Errorf("cannot fill input %s", in.Name)
}

// followsTarget says whether a mask, position or token-type input of an encoder–decoder
// belongs to the target (decoder_attention_mask, decoder_position_ids…) rather than the
// source (attention_mask, encoder_attention_mask…).
func followsTarget(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "decoder") || strings.HasPrefix(n, "tgt") || strings.HasPrefix(n, "target")
}

// MaskedScore is what a [batch,1,T,T] float mask holds above the diagonal (see
// causalMask); 0 on and below it.
const MaskedScore = -10000

// causalMask fills a Megatron-style [K,1,T,T] float mask: 0 where query i may see key j
// (j ≤ i), MaskedScore where it may not. Models add it to the scores, or fill the scores
// where it is non-zero; both read it the same way. Other element types are refused: bool
// masks mean "keep" in some exporters and "mask" in others.
func causalMask(in onnxgraph.Input, K, T int) (ort.Value, error) {
	if in.ElemType != int32(pb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("the model takes a 4-D %s attention mask (%s), whose meaning (keep or mask) attnscope cannot tell; export it with a 2-D [batch, sequence] mask or a float one", typeName(in.ElemType), in.Name)
	}
	vals := make([]float32, K*T*T)
	for k := 0; k < K; k++ {
		for i := 0; i < T; i++ {
			for j := i + 1; j < T; j++ {
				vals[(k*T+i)*T+j] = MaskedScore
			}
		}
	}
	return ort.NewTensor(ort.NewShape(int64(K), 1, int64(T), int64(T)), vals)
}

// isBatchAxis says whether axis d of input in, of open length, is the batch: its name is
// the token-id input's first axis's, or has "batch" in it.
func (s *Session) isBatchAxis(in onnxgraph.Input, d int) bool {
	p := in.Params[d]
	if strings.Contains(strings.ToLower(p), "batch") {
		return true
	}
	for _, ids := range s.inputs {
		if ids.Role == onnxgraph.RoleIDs && len(ids.Params) > 0 {
			return p != "" && p == ids.Params[0]
		}
	}
	return false
}

// dimsString writes an input's declared shape as [batch, 4, past_sequence, 8] ("?" for an
// open axis without a name).
func dimsString(in onnxgraph.Input) string {
	parts := make([]string, len(in.Dims))
	for d, v := range in.Dims {
		switch {
		case v >= 0:
			parts[d] = fmt.Sprint(v)
		case in.Params[d] != "":
			parts[d] = in.Params[d]
		default:
			parts[d] = "?"
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func intTensor(in onnxgraph.Input, shape ort.Shape, vals []int64) (ort.Value, error) {
	switch in.ElemType {
	case int32(pb.TensorProto_INT64):
		return ort.NewTensor(shape, vals)
	case int32(pb.TensorProto_INT32):
		v32 := make([]int32, len(vals))
		for i, v := range vals {
			v32[i] = int32(v)
		}
		return ort.NewTensor(shape, v32)
	case int32(pb.TensorProto_BOOL):
		vb := make([]bool, len(vals))
		for i, v := range vals {
			vb[i] = v != 0
		}
		return ort.NewTensor(shape, vb)
	}
	return nil, fmt.Errorf("input %s has type %s; attnscope fills integer inputs only", in.Name, typeName(in.ElemType))
}
