// Package result holds what one run of a model gives every view: the tokens, the logits
// and each head's attention map. It is plain data, so that analysis, the browser and the
// table writers depend on it and not on onnxruntime (package session produces it).
package result

import "time"

// Side names the sequence along one axis of an attention map.
type Side uint8

const (
	// TargetSide is Result.Tokens: a one-sequence model's prompt, an encoder–decoder's
	// target (the decoder's ids).
	TargetSide Side = iota
	// SourceSide is Result.Source: an encoder–decoder's source (the encoder's ids).
	SourceSide
)

// Result is one run of the model on one sequence: everything every view needs.
type Result struct {
	// Tokens are the input ids; for an encoder–decoder, the target (the decoder's ids).
	Tokens []int64
	// Source are an encoder–decoder's source ids (the encoder's); nil for a model with one
	// sequence.
	Source []int64
	// Logits are row-major [len(Tokens)][Vocab]; nil when the model has no output whose
	// last axis is the vocabulary (an encoder's hidden state, a classifier's scores).
	Logits []float32
	// Vocab is the logits' last dimension (0 when Logits is nil).
	Vocab int
	// Attn is [layer][head][query][key]; rows sum to 1. Queries and keys run over Tokens,
	// except in an encoder–decoder's encoder layers (Source on both axes) and its
	// cross-attention layers (Tokens × Source): see QueryTokens and KeyTokens. It is indexed
	// by the model's layer numbers, one entry per layer, and a layer the session did not
	// expose (a selection of layers, session.Options.Layers) is nil: no heads (Heads is 0),
	// no memory. Consumers that range over Attn therefore skip it by themselves; Layers
	// lists the exposed ones.
	Attn [][][][]float32
	// Z is, per layer, the heads' outputs z (probabilities × V, before the heads are
	// merged), row-major [head][query][d_head], when the session exposes them (opened for
	// mean ablation); nil otherwise.
	Z [][]float32
	// ZHeads is, per layer, the head count of Z[l] (set with Z; a layer whose attention is
	// not exposed still has its z, and Heads cannot tell its head count).
	ZHeads []int
	// RunTime is the wall time of the model's run (the sum over the steps of a model fed
	// one token at a time).
	RunTime time.Duration
	// Sides are, per layer, the sequences along the query and key axes of an
	// encoder–decoder's maps; nil for a one-sequence run, whose maps run over Tokens.
	Sides [][2]Side
	// Backing is the memory Logits and Attn are views of, kept so that whoever produced
	// the result can reuse it once the result is handed back (session.Recycle); nil for a
	// result built by hand.
	Backing [][]float32
}

// Heads is the head count of layer l: 0 for a layer that was not exposed.
func (r *Result) Heads(l int) int { return len(r.Attn[l]) }

// Exposed reports whether layer l's maps are in the result (see Attn).
func (r *Result) Exposed(l int) bool { return l >= 0 && l < len(r.Attn) && r.Attn[l] != nil }

// Layers are the layers whose maps are in the result, in order: every layer of the model
// unless the session exposed a selection.
func (r *Result) Layers() []int {
	var out []int
	for l, heads := range r.Attn {
		if heads != nil {
			out = append(out, l)
		}
	}
	return out
}

// QuerySide is the sequence along layer l's query axis: SourceSide for an
// encoder–decoder's encoder layers, TargetSide otherwise.
func (r *Result) QuerySide(l int) Side { return r.side(l, 0) }

// KeySide is the sequence along layer l's key axis: SourceSide for an encoder–decoder's
// encoder and cross-attention layers, TargetSide otherwise.
func (r *Result) KeySide(l int) Side { return r.side(l, 1) }

// QueryTokens are the ids along layer l's query axis: r.Source or r.Tokens itself, as
// QuerySide says.
func (r *Result) QueryTokens(l int) []int64 { return r.SideTokens(r.QuerySide(l)) }

// KeyTokens are the ids along layer l's key axis: r.Source or r.Tokens itself, as KeySide
// says.
func (r *Result) KeyTokens(l int) []int64 { return r.SideTokens(r.KeySide(l)) }

// SideTokens are the ids of one side: Source for SourceSide, else Tokens.
func (r *Result) SideTokens(sd Side) []int64 {
	if sd == SourceSide {
		return r.Source
	}
	return r.Tokens
}

// Cross reports whether layer l is cross-attention: queries from the target (Tokens),
// keys from the source (Source).
func (r *Result) Cross(l int) bool { return r.QuerySide(l) == TargetSide && r.KeySide(l) == SourceSide }

// OneSequence reports whether layer l's queries and keys are positions of the same
// sequence (every layer of a one-sequence model, an encoder–decoder's self-attention):
// only then do diagonal scores (previous-token, self, induction) mean anything.
func (r *Result) OneSequence(l int) bool { return r.QuerySide(l) == r.KeySide(l) }

func (r *Result) side(l, axis int) Side {
	if l >= 0 && l < len(r.Sides) {
		return r.Sides[l][axis]
	}
	return TargetSide
}
