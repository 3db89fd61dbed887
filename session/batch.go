package session

import (
	"fmt"

	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/result"
)

// RunBatch runs the model once on several sequences of the same length, as one batch of
// shape [K,T] (all-ones masks, positions 0…T−1, zero token types, an empty past), and
// returns one Result per sequence, in order. The results are views into one set of output
// buffers: hand them back with RecycleBatch (or Recycle the first one) only when none of
// them is used any more. An encoder–decoder gets each sequence as both source and target,
// as Run does. A model whose token-id input has a fixed batch size of 1, a single-step
// decoder (fed one token at a time, see Run) and a model whose results depend on the batch
// (dynamic quantization, see onnxgraph.BatchDependentOp) are run once per sequence
// instead, so that every result equals Run's.
func (s *Session) RunBatch(batch [][]int64) ([]*result.Result, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if len(batch) == 0 {
		return nil, fmt.Errorf("no sequences to run")
	}
	T := len(batch[0])
	seq := "" // an encoder–decoder takes each sequence as source and target, as Run does
	if s.seq2seq {
		seq = "source"
	}
	for i, ids := range batch {
		if len(ids) != T {
			return nil, fmt.Errorf("sequence %d of the batch has %d tokens, the first has %d; a batch needs one length", i, len(ids), T)
		}
		if err := s.checkIDs(ids, seq); err != nil {
			return nil, err
		}
	}
	if len(batch) == 1 || s.step != nil || s.batchDependent != "" || !s.batchable() {
		return s.runEach(batch)
	}
	K := len(batch)
	flat := make([]int64, 0, K*T)
	for _, ids := range batch {
		flat = append(flat, ids...)
	}
	out, err := s.runFeedBatch(feed{K: K, src: flat, tgt: flat, S: T, T: T})
	if err != nil {
		// Some exports bake batch 1 into a reshape; such a model still runs one by one.
		return s.runEach(batch)
	}
	return out.results, nil
}

// runEach runs the sequences one at a time.
func (s *Session) runEach(batch [][]int64) ([]*result.Result, error) {
	out := make([]*result.Result, len(batch))
	for i, ids := range batch {
		res, err := s.Run(ids)
		if err != nil {
			return nil, err
		}
		out[i] = res
	}
	return out, nil
}

// RecycleBatch hands the buffers of a RunBatch's results back to the session (see Recycle).
func (s *Session) RecycleBatch(rs []*result.Result) {
	for _, r := range rs {
		s.Recycle(r)
	}
}

// batchable says whether the token-id input can take more than one sequence.
func (s *Session) batchable() bool {
	if len(s.given) > 0 {
		return false // tensors given for inputs (Options.Inputs) hold one sequence
	}
	for _, in := range s.inputs {
		if (in.Role == onnxgraph.RoleIDs || in.Role == onnxgraph.RoleDecoderIDs || in.Role == onnxgraph.RoleAttentionMask ||
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
