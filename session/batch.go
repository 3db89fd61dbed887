package session

import (
	"fmt"
	"strings"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// RunBatch runs the model once on several sequences of the same length, as one batch of
// shape [K,T] (all-ones masks, positions 0…T−1, zero token types, an empty past), and
// returns one Result per sequence, in order. The results are views into one set of output
// buffers: hand them back with RecycleBatch (or Recycle the first one) only when none of
// them is used any more. A model whose token-id input has a fixed batch size of 1 is run
// once per sequence instead.
func (s *Session) RunBatch(batch [][]int64) ([]*Result, error) {
	if s.sess == nil {
		return nil, errClosed
	}
	if s.idsErr != nil {
		return nil, s.idsErr
	}
	if len(batch) == 0 {
		return nil, fmt.Errorf("no sequences to run")
	}
	T := len(batch[0])
	for i, ids := range batch {
		if len(ids) != T {
			return nil, fmt.Errorf("sequence %d of the batch has %d tokens, the first has %d; a batch needs one length", i, len(ids), T)
		}
		if err := s.CheckIDs(ids); err != nil {
			return nil, err
		}
	}
	if len(batch) == 1 || !s.batchable() {
		out := make([]*Result, len(batch))
		for i, ids := range batch {
			res, err := s.Run(ids)
			if err != nil {
				return nil, err
			}
			out[i] = res
		}
		return out, nil
	}
	K := len(batch)
	flat := make([]int64, 0, K*T)
	for _, ids := range batch {
		flat = append(flat, ids...)
	}
	inputs := make([]ort.Value, len(s.inputs))
	defer destroyAll(inputs)
	for i, in := range s.inputs {
		v, err := s.buildBatchInput(in, flat, K, T)
		if err != nil {
			return nil, err
		}
		inputs[i] = v
	}
	results, err := s.runBatch(inputs, K, T)
	if err != nil {
		// Some exports bake batch 1 into a reshape; such a model still runs one by one.
		results = make([]*Result, K)
		for i, ids := range batch {
			if results[i], err = s.Run(ids); err != nil {
				return nil, err
			}
		}
		return results, nil
	}
	for b, res := range results {
		res.Tokens = append([]int64(nil), batch[b]...)
	}
	return results, nil
}

// RecycleBatch hands the buffers of a RunBatch's results back to the session (see Recycle).
func (s *Session) RecycleBatch(rs []*Result) {
	for _, r := range rs {
		s.Recycle(r)
	}
}

// batchable says whether the token-id input can take more than one sequence.
func (s *Session) batchable() bool {
	for _, in := range s.inputs {
		if (in.Role == onnxgraph.RoleIDs || in.Role == onnxgraph.RoleAttentionMask ||
			in.Role == onnxgraph.RolePositionIDs || in.Role == onnxgraph.RoleTokenTypeIDs) &&
			len(in.Dims) > 0 && in.Dims[0] >= 0 && in.Dims[0] != 1 {
			return false // a fixed batch size other than 1: not ours to fill
		}
		if in.Role == onnxgraph.RoleIDs && (len(in.Dims) != 2 || in.Dims[0] == 1) {
			return false
		}
	}
	return true
}

// runBatch runs prepared [K,T] inputs and splits every output into K per-sequence views.
// Outputs are pre-allocated where the shape templates learned at Open have a fixed first
// dimension (batch 1, or heads for the [B·H,Q,K] form), which becomes K times larger.
func (s *Session) runBatch(inputs []ort.Value, K, T int) ([]*Result, error) {
	outputs := make([]ort.Value, len(s.outputs))
	defer destroyAll(outputs)
	buffers := make([][]float32, len(s.outputs))
	if s.templates != nil {
		var shapes []ort.Shape
		var sizes []int64
		var which []int
		for i, tmpl := range s.templates {
			if len(tmpl) == 0 || tmpl[0] <= 0 {
				continue
			}
			sh := make(ort.Shape, len(tmpl))
			for d, v := range tmpl {
				if sh[d] = v; v < 0 {
					sh[d] = int64(T)
				}
			}
			sh[0] *= int64(K)
			shapes, sizes, which = append(shapes, sh), append(sizes, sh.FlattenedSize()), append(which, i)
		}
		for j, buf := range s.buffers(sizes) {
			i := which[j]
			buffers[i] = buf
			t, err := ort.NewTensor(shapes[j], buf)
			if err != nil {
				return nil, fmt.Errorf("allocating output %s: %w", s.outputs[i], err)
			}
			outputs[i] = t
		}
	}
	if err := s.sess.Run(inputs, outputs); err != nil {
		return nil, fmt.Errorf("onnxruntime failed to run the model on a batch of %d × %d tokens: %s", K, T, firstLine(err))
	}
	results := make([]*Result, K)
	for b := range results {
		results[b] = &Result{}
	}
	converted := false
	shapes := make([]ort.Shape, len(outputs))
	for i, v := range outputs {
		shapes[i] = v.GetShape().Clone()
		if buffers[i] == nil {
			data, isFloat32, err := toFloat32(v)
			if err != nil {
				return nil, fmt.Errorf("reading output %s: %w", s.outputs[i], err)
			}
			buffers[i] = data
			converted = converted || !isFloat32
		}
		if len(shapes[i]) == 0 || shapes[i][0]%int64(K) != 0 || len(buffers[i])%K != 0 {
			return nil, fmt.Errorf("output %s has shape %v, which does not split into %d sequences", s.outputs[i], shapes[i], K)
		}
	}
	k := 0
	if s.logits != "" {
		k = 1
	}
	for b, res := range results {
		res.converted = converted
		res.shapes = make([]ort.Shape, len(outputs))
		for i := range outputs {
			sh := shapes[i].Clone()
			sh[0] /= int64(K)
			res.shapes[i] = sh
			n := len(buffers[i]) / K
			chunk := buffers[i][b*n : (b+1)*n : (b+1)*n]
			if i < k {
				if len(sh) == 3 && sh[0] == 1 && int(sh[1]) == T {
					res.Logits, res.Vocab = chunk, int(sh[2])
				}
				continue
			}
			l := i - k
			a, err := attentionView(chunk, sh, T)
			if err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", l, s.Attention.Sites[l].Node, err)
			}
			res.Attn = append(res.Attn, a)
		}
	}
	results[0].buffers = buffers
	return results, nil
}

// buildBatchInput makes the [K,T] tensor for one model input; flat holds the K sequences'
// ids one after another.
func (s *Session) buildBatchInput(in onnxgraph.Input, flat []int64, K, T int) (ort.Value, error) {
	shape := ort.NewShape(int64(K), int64(T))
	switch in.Role {
	case onnxgraph.RoleIDs:
		return intTensor(in, shape, flat)
	case onnxgraph.RoleAttentionMask:
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
		batchParam := s.batchParam()
		for i, d := range in.Dims {
			switch {
			case d >= 0:
				sh[i] = d
			case in.Params[i] != "" && in.Params[i] == batchParam, strings.Contains(strings.ToLower(in.Params[i]), "batch"):
				sh[i] = int64(K)
			default:
				sh[i] = 0
			}
		}
		switch in.ElemType {
		case int32(pb.TensorProto_FLOAT):
			return ort.NewTensor(sh, []float32{})
		case int32(pb.TensorProto_FLOAT16):
			return ort.NewCustomDataTensor(sh, []byte{}, ort.TensorElementDataTypeFloat16)
		}
		return nil, fmt.Errorf("past input %s has type %s, which attnscope cannot fill", in.Name, typeName(in.ElemType))
	}
	return nil, fmt.Errorf("cannot fill input %s", in.Name)
}
