package session

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
	"github.com/attnscope/attnscope/result"
)

// stepPlan is how a single-step decoder is fed: which output becomes which past input, and
// along which axis the state grows by one position per step.
type stepPlan struct {
	// present[i] is, for model input i when it is past state, the index in the session's
	// outputs of the present output that feeds it at the next step; -1 for other inputs.
	present []int
	// axis[i] is, for model input i when it is past state, its sequence axis: the one axis
	// whose length the graph leaves open, other than the batch; -1 for other inputs.
	axis []int
}

// planSteps pairs every past input with the present output of the same layer and part
// (past_3 ↔ present_3, past_key_values.0.key ↔ present.0.key), adding those outputs to the
// session's, or says in one sentence why the model cannot be fed token by token.
func (s *Session) planSteps() (*stepPlan, error) {
	presents := map[string]string{}
	for _, o := range s.Model.Graph().GetOutput() {
		if !strings.HasPrefix(strings.ToLower(o.GetName()), "present") {
			continue
		}
		if key, ok := pastKey(o.GetName()); ok {
			presents[key] = o.GetName()
		}
	}
	plan := &stepPlan{present: make([]int, len(s.inputs)), axis: make([]int, len(s.inputs))}
	var extra []string
	for i, in := range s.inputs {
		plan.present[i], plan.axis[i] = -1, -1
		if in.Role != onnxgraph.RolePast {
			continue
		}
		key, ok := pastKey(in.Name)
		out, found := presents[key]
		if !ok || !found {
			return nil, fmt.Errorf("the model takes one token at a time with past state, but its past input %s has no matching present output (such as present_N for past_N), so attnscope cannot feed it a prompt token by token; export the model with its present outputs, or without past state", in.Name)
		}
		if in.ElemType != int32(pb.TensorProto_FLOAT) && in.ElemType != int32(pb.TensorProto_FLOAT16) {
			return nil, fmt.Errorf("past input %s has type %s, which attnscope cannot fill; export the model with float32 or float16 past state", in.Name, typeName(in.ElemType))
		}
		var open []int
		for d := range in.Dims {
			if in.Dims[d] < 0 && !s.isBatchAxis(in, d) {
				open = append(open, d)
			}
		}
		if len(open) != 1 {
			return nil, fmt.Errorf("the model takes one token at a time with past state, but its past input %s has shape %s, with %d axes of open length besides the batch where attnscope needs exactly one (the past positions), so it cannot feed it a prompt token by token", in.Name, dimsString(in), len(open))
		}
		plan.axis[i] = open[0]
		plan.present[i] = len(s.outputs) + len(extra)
		extra = append(extra, out)
	}
	s.outputs = append(s.outputs, extra...)
	return plan, nil
}

// pastKey reduces a past input's or present output's name to what pairs them: the layer
// number and key/value part that follow the past or present prefix ("past_3" and
// "present_3" give "3"; "past_key_values.0.key" and "present.0.key" give "0.key"). ok is
// false for a name without such a prefix.
func pastKey(name string) (key string, ok bool) {
	n := strings.ToLower(name)
	for _, p := range []string{"past_key_values", "past_key_value", "present_key_values", "present_key_value", "past", "present"} {
		if strings.HasPrefix(n, p) {
			parts := strings.FieldsFunc(n[len(p):], func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
			return strings.Join(parts, "."), true
		}
	}
	return "", false
}

// runSteps feeds a single-step decoder ids one token at a time, and assembles the steps'
// attention rows [H,1,t+1] into [H,T,T] maps (zeros right of the diagonal) and their
// logits rows into [T,V], as a run on the whole prompt would give them.
func (s *Session) runSteps(ids []int64) (*result.Result, error) {
	T := len(ids)
	k := 0
	if s.logits != "" {
		k = 1
	}
	res := &result.Result{Tokens: append([]int64(nil), ids...)}
	past := make([]ort.Value, len(s.inputs)) // the state the next step reads
	defer destroyAll(past)
	var logits []float32 // [T,V] once the first step told V
	attn := make([][]float32, s.nAttn)
	heads := make([]int, s.nAttn)
	for t, id := range ids {
		inputs := make([]ort.Value, len(s.inputs))
		for i, in := range s.inputs {
			if s.step.present[i] >= 0 {
				if past[i] == nil {
					v, err := s.buildInput(in, feed{K: 1, src: []int64{id}, tgt: []int64{id}, S: 1, T: 1})
					if err != nil {
						destroyAll(inputs)
						return nil, err
					}
					past[i] = v
				}
				continue
			}
			v, err := s.stepInput(in, id, t)
			if err != nil {
				destroyAll(inputs)
				return nil, err
			}
			inputs[i] = v
		}
		for i := range inputs {
			if s.step.present[i] >= 0 {
				inputs[i] = past[i]
			}
		}
		outputs, err := s.presentOutputs(inputs, 1)
		if err != nil {
			for i, v := range inputs {
				if s.step.present[i] < 0 && v != nil {
					v.Destroy()
				}
			}
			return nil, err
		}
		start := time.Now()
		err = s.sess.Run(inputs, outputs)
		res.RunTime += time.Since(start)
		for i, v := range inputs {
			if s.step.present[i] < 0 && v != nil {
				v.Destroy()
			}
		}
		if err != nil {
			destroyAll(outputs)
			return nil, fmt.Errorf("onnxruntime failed to run the model at token %d of %d: %s", t+1, T, firstLine(err))
		}
		// This step's presents become the next step's past; everything else is read now.
		destroyAll(past)
		for i, o := range s.step.present {
			past[i] = nil
			if o >= 0 {
				past[i], outputs[o] = outputs[o], nil
			}
		}
		err = s.readStep(res, outputs[:k+s.nAttn], k, t, T, &logits, attn, heads)
		destroyAll(outputs)
		if err != nil {
			return nil, err
		}
	}
	res.Logits = logits
	if s.nAttn > 0 {
		res.Attn = make([][][][]float32, len(s.Attention.Sites)) // by layer: nil where not exposed
	}
	for j, buf := range attn {
		res.Attn[s.attnLayer[j]], _ = attentionView(buf, ort.NewShape(int64(heads[j]), int64(T), int64(T)), T)
	}
	for _, b := range append([][]float32{logits}, attn...) {
		if b != nil {
			res.Backing = append(res.Backing, b)
		}
	}
	return res, nil
}

// presentOutputs returns the session's outputs for one step with the present state
// pre-allocated: each present has its past input's shape, n positions longer along the
// past's sequence axis, and its element type; the other outputs are left to onnxruntime.
// onnxruntime_go copies only half the bytes of a float16 output it allocates (it counts
// elements as bytes), and fails to return it: pre-allocating is what lets float16 state run.
func (s *Session) presentOutputs(inputs []ort.Value, n int64) ([]ort.Value, error) {
	outputs := make([]ort.Value, len(s.outputs))
	for i, o := range s.step.present {
		if o < 0 {
			continue
		}
		in := s.inputs[i]
		sh := inputs[i].GetShape()
		if ax := s.step.axis[i]; ax < len(sh) {
			sh[ax] += n
		}
		var v ort.Value
		var err error
		switch in.ElemType {
		case int32(pb.TensorProto_FLOAT):
			v, err = ort.NewTensor(sh, make([]float32, sh.FlattenedSize()))
		case int32(pb.TensorProto_FLOAT16):
			v, err = newFloat16Tensor(sh, make([]byte, 2*sh.FlattenedSize()))
		default:
			err = fmt.Errorf("state of type %s is not supported", typeName(in.ElemType))
		}
		if err != nil {
			destroyAll(outputs)
			return nil, fmt.Errorf("allocating output %s: %w", s.outputs[o], err)
		}
		outputs[o] = v
	}
	return outputs, nil
}

// readStep copies step t's logits row and attention rows into the [T,V] and [H,T,T]
// buffers, allocating them at the first step, when V and H become known.
func (s *Session) readStep(res *result.Result, outputs []ort.Value, k, t, T int, logits *[]float32, attn [][]float32, heads []int) error {
	rows := make([][]float32, len(outputs))
	shapes := make([]ort.Shape, len(outputs))
	for i, v := range outputs {
		shapes[i] = v.GetShape()
		data, _, err := toFloat32(v)
		if err != nil {
			return fmt.Errorf("reading output %s: %w", s.outputs[i], err)
		}
		rows[i] = data
	}
	if t == 0 {
		var sizes []int64
		if k == 1 {
			if sh := shapes[0]; isLogits(sh, 1, s.Limits.Vocab) {
				res.Vocab = int(sh[2])
				sizes = append(sizes, int64(T*res.Vocab))
			}
		}
		for l := range attn {
			sh := shapes[k+l]
			switch len(sh) {
			case 4:
				heads[l] = int(sh[1])
			case 3:
				heads[l] = int(sh[0])
			}
			sizes = append(sizes, int64(heads[l]*T*T))
		}
		bufs := s.buffers(sizes)
		for _, b := range bufs {
			clear(b) // a recycled buffer holds an earlier run; right of the diagonal stays 0
		}
		if res.Vocab > 0 {
			*logits, bufs = bufs[0], bufs[1:]
		}
		copy(attn, bufs)
	}
	if res.Vocab > 0 {
		if len(rows[0]) != res.Vocab {
			return fmt.Errorf("output %s has shape %v at token %d, not [1,1,%d]", s.outputs[0], shapes[0], t+1, res.Vocab)
		}
		copy((*logits)[t*res.Vocab:], rows[0])
	}
	for l := range attn {
		sh, H := shapes[k+l], heads[l]
		want3, want4 := ort.NewShape(int64(H), 1, int64(t+1)), ort.NewShape(1, int64(H), 1, int64(t+1))
		if !slices.Equal(sh, want3) && !slices.Equal(sh, want4) {
			layer := s.attnLayer[l]
			return fmt.Errorf("layer %d (%s) gave probabilities of shape %v at token %d, not [1,%d,1,%d]: its keys are not the tokens so far, so attnscope cannot assemble its map", layer, s.Attention.Sites[layer].Node, sh, t+1, H, t+1)
		}
		for h := 0; h < H; h++ {
			copy(attn[l][(h*T+t)*T:], rows[k+l][h*(t+1):(h+1)*(t+1)])
		}
	}
	return nil
}

// stepInput makes input in for step t, whose one token is id: ids [1,1], a mask over the
// t+1 tokens so far, position t, token type 0.
func (s *Session) stepInput(in onnxgraph.Input, id int64, t int) (ort.Value, error) {
	one := ort.NewShape(1, 1)
	switch in.Role {
	case onnxgraph.RoleIDs:
		return intTensor(in, one, []int64{id})
	case onnxgraph.RoleAttentionMask:
		shape := ort.NewShape(1, int64(t+1))
		if in.ElemType == int32(pb.TensorProto_FLOAT) {
			return ort.NewTensor(shape, make([]float32, t+1)) // additive: 0 keeps
		}
		vals := make([]int64, t+1)
		for i := range vals {
			vals[i] = 1
		}
		return intTensor(in, shape, vals)
	case onnxgraph.RolePositionIDs:
		return intTensor(in, one, []int64{int64(t)})
	case onnxgraph.RoleTokenTypeIDs:
		return intTensor(in, one, []int64{0})
	}
	return s.buildInput(in, feed{K: 1, src: []int64{id}, tgt: []int64{id}, S: 1, T: 1})
}
