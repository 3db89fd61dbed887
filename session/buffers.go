package session

import (
	"runtime/debug"

	"github.com/attnscope/attnscope/result"
	ort "github.com/yalue/onnxruntime_go"
)

// probeShapes runs the model on two tiny prompts (or once at its fixed length) and
// returns the output shapes as templates in T, or nil when they do not follow T simply.
func (s *Session) probeShapes() [][]int64 {
	lengths := []int{2, 3}
	if s.Limits.FixedLen > 0 {
		lengths = []int{s.Limits.FixedLen}
	}
	var seen [][]ort.Shape
	for _, T := range lengths {
		ids := make([]int64, T)
		out, err := s.runFeedBatch(feed{K: 1, src: ids, tgt: ids, S: T, T: T})
		if err != nil || out.converted {
			return nil
		}
		seen = append(seen, out.shapes)
	}
	templates := make([][]int64, len(s.outputs))
	for i := range s.outputs {
		a := seen[0][i]
		templates[i] = append([]int64(nil), a...)
		if len(seen) == 1 {
			continue
		}
		b := seen[1][i]
		if len(a) != len(b) {
			return nil
		}
		for d := range a {
			switch {
			case a[d] == b[d]:
			case a[d] == int64(lengths[0]) && b[d] == int64(lengths[1]):
				templates[i][d] = -1
			default:
				return nil
			}
		}
	}
	return templates
}

// Recycle hands the buffers of a result that is no longer used back to the session, so
// that the next Run of the same length writes into them instead of allocating (the
// attention of GPT-2-small at T = 1024 is 576 MiB). res must not be used afterwards.
func (s *Session) Recycle(res *result.Result) {
	if res == nil {
		return
	}
	s.spare = append(s.spare, res.Backing...)
	res.Backing, res.Logits, res.Attn, res.Z = nil, nil, nil, nil
}

// buffers returns one slice per size, reusing recycled ones of exactly that size. Spare
// buffers of other sizes (an earlier prompt length) are released to the operating system
// before allocating, so a long prompt after a short one does not hold both.
func (s *Session) buffers(sizes []int64) [][]float32 {
	out := make([][]float32, len(sizes))
	missing := false
	for i, n := range sizes {
		for j, b := range s.spare {
			if int64(len(b)) == n {
				out[i] = b
				s.spare = append(s.spare[:j], s.spare[j+1:]...)
				break
			}
		}
		missing = missing || out[i] == nil
	}
	if missing && len(s.spare) > 0 {
		s.spare = nil
		debug.FreeOSMemory()
	}
	for i, n := range sizes {
		if out[i] == nil {
			out[i] = make([]float32, n)
		}
	}
	return out
}

// sizeTemplates are the output shapes in T that OutputBytes counts: those learned at Open
// (templates), or for a single-step decoder those its first step told (stepSizes); nil
// when neither is known.
func (s *Session) sizeTemplates() [][]int64 {
	if s.templates != nil {
		return s.templates
	}
	return s.stepSizes
}

// stepShapes learns a single-step decoder's output sizes in T from one step on token 0:
// what a run of T tokens returns, logits [1,T,V] and each exposed layer's map [1,H,T,T],
// and the past state it carries, each present as its past input's shape with T positions.
// nil when the step fails (the run that fails says why).
func (s *Session) stepShapes() [][]int64 {
	res, err := s.runSteps([]int64{0})
	if err != nil {
		return nil
	}
	defer s.Recycle(res)
	out := make([][]int64, len(s.outputs))
	k := 0
	if s.logits != "" {
		if res.Vocab == 0 {
			return nil
		}
		out[0], k = []int64{1, -1, int64(res.Vocab)}, 1
	}
	for j, l := range s.attnLayer {
		out[k+j] = []int64{1, int64(res.Heads(l)), -1, -1}
	}
	for i, o := range s.step.present {
		if o < 0 {
			continue
		}
		in := s.inputs[i]
		dims := make([]int64, len(in.Dims))
		for d, v := range in.Dims {
			switch {
			case d == s.step.axis[i]:
				v = -1
			case v < 0:
				v = 1 // the batch
			}
			dims[d] = v
		}
		out[o] = dims
	}
	for _, d := range out {
		if d == nil {
			return nil
		}
	}
	return out
}

// OutputBytes is the memory the outputs of one run of T tokens take (logits and every
// layer's attention, float32), from the output shapes learned at Open (a single-step
// decoder's from its first step there), without running the model; ok is false when
// those shapes do not follow T simply (a model whose outputs converted from another type). For an encoder–decoder it is the
// size when source and target both have T tokens.
func (s *Session) OutputBytes(T int) (bytes int64, ok bool) {
	layers, other, ok := s.AttentionBytes(T)
	for _, b := range layers {
		other += b
	}
	return other, ok
}

// AttentionBytes is, for a run of T tokens, the memory of each exposed layer's attention
// output (float32), in the order of Layers, and of the other outputs together (logits, z);
// ok is false when OutputBytes cannot tell. Their sum is OutputBytes(T).
func (s *Session) AttentionBytes(T int) (layers []int64, other int64, ok bool) {
	templates := s.sizeTemplates()
	if templates == nil {
		return nil, 0, false
	}
	k := 0
	if s.logits != "" {
		k = 1
	}
	for i, tmpl := range templates {
		size := int64(4) // float32
		for _, d := range tmpl {
			if d < 0 {
				d = int64(T)
			}
			size *= d
		}
		if i >= k && i < k+s.nAttn {
			layers = append(layers, size)
		} else {
			other += size
		}
	}
	return layers, other, true
}
