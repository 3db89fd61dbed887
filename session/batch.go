package session

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/onnxgraph"
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
		v, err := s.buildInput(in, flat, K, T)
		if err != nil {
			return nil, err
		}
		inputs[i] = v
	}
	results, err := s.run(inputs, K, T)
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
