package session

import (
	"cmp"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/result"
)

// ablationState is what Open set up for ablation: per layer, nil when its mask input
// exists, else why the layer cannot be ablated.
type ablationState struct {
	layerErr []error
	mean     bool
	// ones and zeros are the inputs of a layer with nothing off: [1,1] and [1,1,1].
	ones, zeros *ort.Tensor[float32]
}

// CanAblate says why the heads of layer l cannot be switched off in mode mode, or returns
// nil when they can.
func (s *Session) CanAblate(l int, mode ablate.Mode) error {
	if l < 0 || l >= len(s.Attention.Sites) {
		return fmt.Errorf("the model has no layer %d", l)
	}
	if s.abl == nil {
		if s.step != nil || s.stepModel {
			return fmt.Errorf("the model is a single-step decoder (one token per run with a key/value cache), which attnscope runs step by step and cannot ablate; export it without the cache")
		}
		return fmt.Errorf("the session was opened without ablation inputs")
	}
	if err := s.abl.layerErr[l]; err != nil {
		return err
	}
	if mode == ablate.Mean && !s.abl.mean {
		return fmt.Errorf("the session was opened for zero ablation only")
	}
	return nil
}

// HeadCounts is the number of heads of every layer as the graph declares them or the
// shape probe saw them, or else, for a layer that can be ablated but whose attention the
// session does not expose (a --layer selection), as its weights tell them
// (onnxgraph.TraceWeights, run once, when first needed); 0 where none tells.
func (s *Session) HeadCounts() []int {
	out := make([]int, len(s.Attention.Sites))
	for l, site := range s.Attention.Sites {
		out[l] = site.Heads
		if h, _ := s.headsAndDim(l); h > 0 {
			out[l] = h
		}
		if out[l] <= 0 && s.abl != nil && l < len(s.abl.layerErr) && s.abl.layerErr[l] == nil {
			if traced := s.tracedHeads(); l < len(traced) {
				out[l] = traced[l]
			}
		}
	}
	return out
}

// tracedHeads are the head counts of every layer from the model's weights
// (onnxgraph.TraceWeights), traced on the first call; nil when the trace fails.
func (s *Session) tracedHeads() []int {
	if !s.headsTraced {
		s.headsTraced = true
		if w, err := onnxgraph.TraceWeights(s.Model, s.Attention); err == nil && len(w.Layers) == len(s.Attention.Sites) {
			s.traceHeads = make([]int, len(w.Layers))
			for l, lw := range w.Layers {
				s.traceHeads[l] = lw.Heads
			}
		}
	}
	return s.traceHeads
}

// headsAndDim are layer l's head count and (with z outputs) head size from the output
// shapes the session probed at Open; 0 where unknown.
func (s *Session) headsAndDim(l int) (heads, dHead int) {
	if s.templates == nil {
		return 0, 0
	}
	k := 0
	if s.logits != "" {
		k = 1
	}
	if l < len(s.attnOut) && s.attnOut[l] >= 0 {
		if a := s.templates[k+s.attnOut[l]]; len(a) == 4 {
			heads = int(a[1])
		} else if len(a) == 3 {
			heads = int(a[0])
		}
	}
	if s.nZ > 0 && s.zOut[l] >= 0 {
		// z is [1,H,T,d] or [H,T,d]: its heads too, for a layer whose attention is not exposed.
		if z := s.templates[k+s.nAttn+s.zOut[l]]; len(z) == 4 {
			heads, dHead = cmp.Or(heads, int(z[1])), int(z[3])
		} else if len(z) == 3 {
			heads, dHead = cmp.Or(heads, int(z[0])), int(z[2])
		}
	}
	return heads, dHead
}

// SetAblation switches heads off in every run that follows (Run, RunPair, RunBatch; nil
// or an empty one switches them on again). Each head must be in a layer CanAblate allows,
// and for mean ablation ZMean must hold its layer's means.
func (s *Session) SetAblation(a *ablate.Ablation) error {
	if a.Empty() {
		s.ablation = nil
		return nil
	}
	if err := s.checkAblation(a); err != nil {
		return err
	}
	s.ablation = a
	return nil
}

// checkAblation says why a cannot be run, or returns nil.
func (s *Session) checkAblation(a *ablate.Ablation) error {
	heads := s.HeadCounts()
	for _, h := range a.Off {
		if err := s.CanAblate(h.Layer, a.Mode); err != nil {
			return err
		}
		if heads[h.Layer] <= 0 {
			return fmt.Errorf("the head count of layer %d is not known before a run", h.Layer)
		}
		if h.Head < 0 || h.Head >= heads[h.Layer] {
			return &ablate.SelectionError{Spec: h.String(), Reason: fmt.Sprintf("layer %d has %d heads (H0–H%d)", h.Layer, heads[h.Layer], heads[h.Layer]-1)}
		}
		if a.Mode == ablate.Mean {
			_, d := s.headsAndDim(h.Layer)
			if h.Layer >= len(a.ZMean) || d == 0 || len(a.ZMean[h.Layer]) != heads[h.Layer]*d {
				return fmt.Errorf("mean ablation of %s needs the layer's mean outputs (%d heads × %d); run the reference first (ablate.MeanZ)", h, heads[h.Layer], d)
			}
		}
	}
	return nil
}

// RunAblations runs ids once per ablation, as one batch when the model allows (see
// RunBatch), and returns one result per ablation, in order (nil or empty ablations are
// plain runs). Release the results with RecycleBatch.
func (s *Session) RunAblations(ids []int64, abls []*ablate.Ablation) ([]*result.Result, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if len(abls) == 0 {
		return nil, fmt.Errorf("no ablations to run")
	}
	if s.abl == nil {
		return nil, s.CanAblate(0, ablate.Zero) // says why: a single-step decoder, no inputs
	}
	if err := s.CheckIDs(ids); err != nil {
		return nil, err
	}
	for _, a := range abls {
		if !a.Empty() {
			if err := s.checkAblation(a); err != nil {
				return nil, err
			}
		}
	}
	if len(abls) == 1 || s.step != nil || s.batchDependent != "" || !s.batchable() {
		out := make([]*result.Result, len(abls))
		for i := range abls {
			res, err := s.runFeed(feed{K: 1, src: ids, tgt: ids, S: len(ids), T: len(ids), abl: abls[i : i+1]})
			if err != nil {
				return nil, err
			}
			out[i] = res
		}
		return out, nil
	}
	K := len(abls)
	flat := make([]int64, 0, K*len(ids))
	for range abls {
		flat = append(flat, ids...)
	}
	out, err := s.runFeedBatch(feed{K: K, src: flat, tgt: flat, S: len(ids), T: len(ids), abl: abls})
	if err != nil {
		return nil, err
	}
	return out.results, nil
}

// ablationInputs are the mask (and z-mean) inputs for a run of K sequences whose
// ablations are abl (one per sequence; nil: the session's own, for all of them).
func (s *Session) ablationInputs(K int, abl []*ablate.Ablation) ([]ort.Value, error) {
	if s.abl == nil {
		return nil, nil
	}
	if abl == nil {
		if s.ablation.Empty() {
			return s.defaultAblationInputs(), nil
		}
		abl = make([]*ablate.Ablation, K)
		for i := range abl {
			abl[i] = s.ablation
		}
	}
	if len(abl) != K {
		return nil, fmt.Errorf("%d ablations for %d sequences", len(abl), K)
	}
	heads := s.HeadCounts()
	var out []ort.Value
	for l := range s.Attention.Sites {
		if s.abl.layerErr[l] != nil {
			continue
		}
		H := heads[l]
		off := false
		for _, a := range abl {
			off = off || len(a.InLayer(l)) > 0
		}
		if !off || H <= 0 {
			out = append(out, s.abl.ones)
			if s.abl.mean {
				out = append(out, s.abl.zeros)
			}
			continue
		}
		mask := make([]float32, K*H)
		for i := range mask {
			mask[i] = 1
		}
		for b, a := range abl {
			for _, h := range a.InLayer(l) {
				mask[b*H+h.Head] = 0
			}
		}
		t, err := ort.NewTensor(ort.NewShape(int64(K), int64(H)), mask)
		if err != nil {
			destroyOwned(out, s.abl)
			return nil, fmt.Errorf("making the ablation mask of layer %d: %w", l, err)
		}
		out = append(out, t)
		if !s.abl.mean {
			continue
		}
		anyMean := false
		for _, a := range abl {
			anyMean = anyMean || !a.Empty() && a.Mode == ablate.Mean
		}
		_, d := s.headsAndDim(l)
		if !anyMean || d == 0 {
			out = append(out, s.abl.zeros) // broadcasts: zero ablation adds nothing to z
			continue
		}
		means := make([]float32, K*H*d)
		for b, a := range abl {
			if a.Empty() || a.Mode != ablate.Mean {
				continue
			}
			for _, h := range a.InLayer(l) {
				copy(means[(b*H+h.Head)*d:(b*H+h.Head+1)*d], a.ZMean[l][h.Head*d:(h.Head+1)*d])
			}
		}
		zt, err := ort.NewTensor(ort.NewShape(int64(K), int64(H), int64(d)), means)
		if err != nil {
			destroyOwned(append(out, t), s.abl)
			return nil, fmt.Errorf("making the mean outputs of layer %d: %w", l, err)
		}
		out = append(out, zt)
	}
	return out, nil
}

// defaultAblationInputs are the inputs of a run with nothing off: shared, never destroyed
// by a run (see destroyOwned).
func (s *Session) defaultAblationInputs() []ort.Value {
	var out []ort.Value
	for l := range s.Attention.Sites {
		if s.abl.layerErr[l] != nil {
			continue
		}
		out = append(out, s.abl.ones)
		if s.abl.mean {
			out = append(out, s.abl.zeros)
		}
	}
	return out
}

// destroyOwned destroys the values of vs that a run made for itself, not the shared
// ones and zeros of st.
func destroyOwned(vs []ort.Value, st *ablationState) {
	for _, v := range vs {
		if v == nil || st != nil && (v == ort.Value(st.ones) || v == ort.Value(st.zeros)) {
			continue
		}
		v.Destroy()
	}
}

// newAblationState keeps what the rewrite said of each layer and makes the shared inputs
// of runs with nothing off.
func newAblationState(layerErr []error, mean bool) (*ablationState, error) {
	st := &ablationState{layerErr: layerErr, mean: mean}
	var err error
	if st.ones, err = ort.NewTensor(ort.NewShape(1, 1), []float32{1}); err != nil {
		return nil, fmt.Errorf("making the ablation masks: %w", err)
	}
	if st.zeros, err = ort.NewTensor(ort.NewShape(1, 1, 1), []float32{0}); err != nil {
		st.ones.Destroy()
		return nil, fmt.Errorf("making the ablation means: %w", err)
	}
	return st, nil
}

// inputNames are the ablation inputs, in the order ablationInputs gives their values.
func (st *ablationState) inputNames() []string {
	var out []string
	for l, err := range st.layerErr {
		if err == nil {
			out = append(out, onnxgraph.AblateInput(l))
			if st.mean {
				out = append(out, onnxgraph.ZMeanInput(l))
			}
		}
	}
	return out
}

func (st *ablationState) destroy() {
	st.ones.Destroy()
	st.zeros.Destroy()
}
