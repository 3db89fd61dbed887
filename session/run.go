package session

import (
	"fmt"
	"slices"
	"time"

	"github.com/attnscope/attnscope/internal/npy"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/ablate"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
	"github.com/attnscope/attnscope/result"
)

// Run runs the model on one sequence of token ids (batch 1), with an all-ones attention
// mask, positions 0…T−1, zero token types and an empty past. An encoder–decoder gets ids
// as both its source and its target (RunPair gives them apart). A single-step decoder
// (token ids of fixed length 1 plus past state) is fed ids one token at a time, each
// step's present state becoming the next step's past; its result is what a run on the
// whole prompt would give: [H,T,T] attention with zeros right of the diagonal, T rows of
// logits.
func (s *Session) Run(ids []int64) (*result.Result, error) {
	if s.seq2seq {
		return s.RunPair(ids, ids)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.CheckIDs(ids); err != nil {
		return nil, err
	}
	if s.step != nil {
		return s.runSteps(ids)
	}
	return s.runFeed(feed{K: 1, src: ids, tgt: ids, S: len(ids), T: len(ids)})
}

// RunPair runs an encoder–decoder on a source sequence (its token-id input, such as
// input_ids) and a target sequence (its decoder token ids, such as decoder_input_ids).
// Masks and positions follow the sequence they belong to: decoder_attention_mask and
// decoder position ids the target, attention_mask and encoder_attention_mask the source.
// The result's Tokens are the target and its Source the source.
func (s *Session) RunPair(src, tgt []int64) (*result.Result, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if !s.seq2seq {
		return nil, fmt.Errorf("the model takes one sequence of token ids, not a source and a target; run it on one prompt")
	}
	if err := s.CheckPair(src, tgt); err != nil {
		return nil, err
	}
	return s.runFeed(feed{K: 1, src: src, tgt: tgt, S: len(src), T: len(tgt)})
}

// feed is what the inputs of a run on token ids are built from: K sequences of source and
// target ids, each flat ([K·S] and [K·T]); both are the same for a model with one sequence.
type feed struct {
	K        int
	src, tgt []int64
	S, T     int
	// abl are the sequences' ablations (nil: the session's, see SetAblation).
	abl []*ablate.Ablation
}

// runFeed builds every input from f, runs, and returns one result per sequence.
func (s *Session) runFeed(f feed) (*result.Result, error) {
	out, err := s.runFeedBatch(f)
	if err != nil {
		return nil, err
	}
	return out.results[0], nil
}

func (s *Session) runFeedBatch(f feed) (*ran, error) {
	inputs := make([]ort.Value, len(s.inputs))
	defer destroyAll(inputs)
	for i, in := range s.inputs {
		v, err := s.inputFor(in, f)
		if err != nil {
			return nil, err
		}
		inputs[i] = v
	}
	abl, err := s.ablationInputs(f.K, f.abl)
	if err != nil {
		return nil, err
	}
	defer destroyOwned(abl, s.abl)
	out, err := s.run(append(inputs, abl...), nil, f.K, f.T, f.S)
	if err != nil {
		return nil, err
	}
	for b, res := range out.results {
		res.Tokens = append([]int64(nil), f.tgt[b*f.T:(b+1)*f.T]...)
		if s.seq2seq {
			res.Source = append([]int64(nil), f.src[b*f.S:(b+1)*f.S]...)
			res.Sides = resultSides(s.sides, res.Attn, f.S, f.T)
		} else if s.sides != nil {
			res.Sides = slices.Clone(s.sides) // a lone decoder's cross-attention
		}
	}
	return out, nil
}

// RunTensors runs the model on the given input tensors (every model input, by name), for
// models whose inputs are not token ids, or for inputs saved with a model (an ONNX test
// case's input_N.pb). T is the query length the attention is expected to have, used only
// to tell per-token logits from other outputs; Result.Tokens is nil. The present outputs
// of a single-step decoder come back by name (float32 or float16, whole), ready to be fed
// as the next call's past; nil for other models.
func (s *Session) RunTensors(tensors map[string]*pb.TensorProto, T int) (*result.Result, map[string]*pb.TensorProto, error) {
	if s.sess == nil {
		return nil, nil, errClosed
	}
	inputs := make([]ort.Value, len(s.inputs))
	defer destroyAll(inputs)
	for i, in := range s.inputs {
		t, ok := tensors[in.Name]
		if !ok {
			return nil, nil, fmt.Errorf("no tensor given for the model's input %s", in.Name)
		}
		v, err := valueFromProto(t)
		if err != nil {
			return nil, nil, fmt.Errorf("input %s: %w", in.Name, err)
		}
		inputs[i] = v
	}
	// The tensors may hold past state or any other shapes the templates do not foresee:
	// onnxruntime allocates the outputs, except a single-step decoder's present state, one
	// position longer than its past (see presentOutputs).
	var given []ort.Value
	if s.step != nil {
		var err error
		if given, err = s.presentOutputs(inputs, 1); err != nil {
			return nil, nil, err
		}
	}
	abl, err := s.ablationInputs(1, nil) // SetAblation's heads, as Run
	if err != nil {
		return nil, nil, err
	}
	defer destroyOwned(abl, s.abl)
	out, err := s.run(append(inputs[:len(inputs):len(inputs)], abl...), given, 1, T, -1)
	if err != nil {
		return nil, nil, err
	}
	return out.results[0], out.present, nil
}

// run runs prepared [K,T] inputs (K = 1 for Run and RunTensors) and splits every output
// into K per-sequence views; S is the source length of an encoder–decoder (T otherwise;
// −1 when the inputs are not built from ids, so that output shapes are unknown).
// Outputs are pre-allocated from the shape templates learned at Open (when S = T): all of
// them for one sequence; for K sequences those whose first dimension is fixed (batch 1,
// or heads for the [B·H,Q,K] form), which becomes K times larger. given, when not nil,
// holds outputs the caller pre-allocated (by output index, nil elsewhere); run destroys
// them with the rest. Present outputs (of a single-step decoder) are returned in
// ran.present when K = 1.
func (s *Session) run(inputs, given []ort.Value, K, T, S int) (*ran, error) {
	outputs := make([]ort.Value, len(s.outputs))
	copy(outputs, given)
	defer destroyAll(outputs)
	buffers := make([][]float32, len(s.outputs))
	k := 0
	if s.logits != "" {
		k = 1
	}
	nOut := k + s.nAttn + s.nZ // the outputs read as float32; presents follow
	if s.templates != nil && S == T {
		var shapes []ort.Shape
		var sizes []int64
		var which []int
		for i, tmpl := range s.templates {
			if K > 1 && (len(tmpl) == 0 || tmpl[0] <= 0) {
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
	start := time.Now()
	if err := s.sess.Run(inputs, outputs); err != nil {
		if K == 1 {
			return nil, fmt.Errorf("onnxruntime failed to run the model on %d tokens: %s", T, firstLine(err))
		}
		return nil, fmt.Errorf("onnxruntime failed to run the model on a batch of %d × %d tokens: %s", K, T, firstLine(err))
	}
	elapsed := time.Since(start)
	out := &ran{results: make([]*result.Result, K), shapes: make([]ort.Shape, len(outputs))}
	for b := range out.results {
		out.results[b] = &result.Result{RunTime: elapsed}
	}
	shapes := make([]ort.Shape, len(outputs))
	for i, v := range outputs {
		shapes[i] = v.GetShape().Clone()
		if i >= nOut {
			if K == 1 {
				t, err := protoFromValue(s.outputs[i], v)
				if err != nil {
					return nil, fmt.Errorf("reading output %s: %w", s.outputs[i], err)
				}
				if out.present == nil {
					out.present = map[string]*pb.TensorProto{}
				}
				out.present[s.outputs[i]] = t
			}
			continue
		}
		if buffers[i] == nil {
			data, isFloat32, err := toFloat32(v)
			if err != nil {
				return nil, fmt.Errorf("reading output %s: %w", s.outputs[i], err)
			}
			buffers[i] = data
			out.converted = out.converted || !isFloat32
		}
		if K > 1 && (len(shapes[i]) == 0 || shapes[i][0]%int64(K) != 0 || len(buffers[i])%K != 0) {
			return nil, fmt.Errorf("output %s has shape %v, which does not split into %d sequences", s.outputs[i], shapes[i], K)
		}
	}
	for i := range outputs[:nOut] {
		out.shapes[i] = shapes[i].Clone()
		if K > 1 {
			out.shapes[i][0] /= int64(K)
		}
	}
	for b, res := range out.results {
		for i := range outputs[:nOut] {
			sh := out.shapes[i]
			n := len(buffers[i]) / K
			chunk := buffers[i][b*n : (b+1)*n : (b+1)*n]
			if i < k {
				if isLogits(sh, T, s.Limits.Vocab) {
					res.Logits, res.Vocab = chunk, int(sh[2])
				}
				continue
			}
			j := i - k // among the attention outputs, then the z outputs
			if j >= s.nAttn {
				if res.Z == nil {
					res.Z = make([][]float32, len(s.Attention.Sites)) // by layer: nil where z is not exposed
					res.ZHeads = make([]int, len(s.Attention.Sites))
				}
				l := s.zLayer[j-s.nAttn]
				res.Z[l] = chunk
				if len(sh) == 4 { // [1,H,T,d], else [H,T,d]
					res.ZHeads[l] = int(sh[1])
				} else if len(sh) == 3 {
					res.ZHeads[l] = int(sh[0])
				}
				continue
			}
			l := s.attnLayer[j]
			a, err := attentionView(chunk, sh, T)
			if err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", l, s.Attention.Sites[l].Node, err)
			}
			if res.Attn == nil {
				res.Attn = make([][][][]float32, len(s.Attention.Sites)) // by layer: nil where not exposed
			}
			res.Attn[l] = a
		}
	}
	out.results[0].Backing = buffers
	return out, nil
}

// ran is what one onnxruntime call gave: a result per sequence (the first holding the
// backing buffers of all of them), the shapes of one sequence's logits and attention
// outputs, whether any of them had to be converted to float32, and the present outputs of
// a single run (K = 1) by name.
type ran struct {
	results   []*result.Result
	shapes    []ort.Shape
	converted bool
	present   map[string]*pb.TensorProto
}

// attentionView turns one layer's probabilities, [B,H,Q,K] (first batch element) or
// [H,Q,K] (batch 1), into [head][query][key] slices over the same memory.
func attentionView(data []float32, sh ort.Shape, T int) ([][][]float32, error) {
	var H, Q, K int
	switch len(sh) {
	case 4:
		// Batches larger than 1 come only from RunTensors; the first element is kept.
		H, Q, K = int(sh[1]), int(sh[2]), int(sh[3])
		data = data[:H*Q*K]
	case 3:
		H, Q, K = int(sh[0]), int(sh[1]), int(sh[2])
	default:
		return nil, fmt.Errorf("probabilities of shape %v: expected [1,heads,query,key] or [heads,query,key]", sh)
	}
	if len(data) != H*Q*K {
		return nil, fmt.Errorf("probabilities of shape %v hold %d values", sh, len(data))
	}
	heads := make([][][]float32, H)
	for h := range heads {
		heads[h] = make([][]float32, Q)
		for q := range heads[h] {
			off := (h*Q + q) * K
			heads[h][q] = data[off : off+K : off+K]
		}
	}
	return heads, nil
}

// toFloat32 returns an output's values as float32, converting float16 and float64;
// isFloat32 says whether it was float32 to begin with. A float16 output reaches it whole
// only from a tensor the session pre-allocated: onnxruntime_go fails to return float16
// outputs it allocates (see presentOutputs), which is why Expose casts attention to float32.
func toFloat32(v ort.Value) (data []float32, isFloat32 bool, err error) {
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return t.GetData(), true, nil
	case *ort.Tensor[float64]:
		d := t.GetData()
		out := make([]float32, len(d))
		for i, x := range d {
			out[i] = float32(x)
		}
		return out, false, nil
	case *ort.CustomDataTensor:
		if t.DataType() != ort.TensorElementDataTypeFloat16 {
			break
		}
		b := t.GetData()
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = halfToFloat(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
		return out, false, nil
	}
	return nil, false, fmt.Errorf("output of unsupported type %T", v)
}

// halfToFloat converts an IEEE 754 binary16 value to float32.
func halfToFloat(h uint16) float32 { return npy.Half(h).Float32() }

// destroyAll releases values, skipping empty slots (including typed nil pointers, which
// the binding can leave behind when converting an output fails).
func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v == nil {
			continue
		}
		if c, ok := v.(*ort.CustomDataTensor); ok && c == nil {
			continue
		}
		v.Destroy()
	}
}
