package ablate

import (
	"fmt"

	"github.com/attnscope/attnscope/result"
)

// Ablation is a set of heads switched off in a run. The session's graph multiplies each
// head's probabilities by a mask before ×V (onnxgraph.AblateInput), so ablating other
// heads is another input, not another session.
type Ablation struct {
	// Off are the heads switched off.
	Off []Head
	// Mode is Zero (the head's output z is 0) or Mean (z is ZMean's).
	Mode Mode
	// ZMean is, for mean ablation, per layer the heads' mean outputs [heads·d_head] (see
	// MeanZ); layers without heads off may be nil.
	ZMean [][]float32
}

// Empty reports whether no head is off.
func (a *Ablation) Empty() bool { return a == nil || len(a.Off) == 0 }

// InLayer are the heads of a in layer l.
func (a *Ablation) InLayer(l int) []Head {
	if a.Empty() {
		return nil
	}
	var out []Head
	for _, h := range a.Off {
		if h.Layer == l {
			out = append(out, h)
		}
	}
	return out
}

// MeanZ is, per layer (nil for a layer without z), each head's output z averaged over the positions of res (a run of a
// session opened for mean ablation), [heads·d_head]: the reference of mean ablation. An
// encoder–decoder's layers average over their query sequence.
func MeanZ(res *result.Result) ([][]float32, error) {
	if res.Z == nil {
		return nil, fmt.Errorf("the run has no head outputs z: open the session with mean ablation")
	}
	out := make([][]float32, len(res.Z))
	for l, z := range res.Z {
		if z == nil {
			continue // a layer whose z the session does not expose (it cannot be mean-ablated)
		}
		H := res.Heads(l)
		if H == 0 && l < len(res.ZHeads) {
			H = res.ZHeads[l] // a layer whose attention was not exposed (a selection of layers)
		}
		Q := len(res.QueryTokens(l))
		if H == 0 || Q == 0 || len(z)%(H*Q) != 0 {
			return nil, fmt.Errorf("layer %d: %d head outputs do not split into %d heads × %d positions", l, len(z), H, Q)
		}
		d := len(z) / (H * Q)
		m := make([]float64, H*d)
		for h := range H {
			for q := range Q {
				row := z[(h*Q+q)*d : (h*Q+q+1)*d]
				for i, v := range row {
					m[h*d+i] += float64(v)
				}
			}
		}
		out[l] = make([]float32, H*d)
		for i, v := range m {
			out[l][i] = float32(v / float64(Q))
		}
	}
	return out, nil
}
