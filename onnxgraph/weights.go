package onnxgraph

import "fmt"

// Weights are a model's attention weights traced from its initializers, in
// TransformerLens's row-vector conventions (x W): what the circuits package reads. Matrices
// are float64, row-major, dequantized or cast from whatever the file stores; nothing here is
// folded — the normalisations are reported beside the weights they feed.
type Weights struct {
	// Layers follow the attention sites, one per site, in the same order.
	Layers []LayerWeights
	// DModel is the width of the residual stream.
	DModel int
	// Embed is the token embedding W_E [Vocab × DModel]; nil when no Gather on the ids was
	// found (EmbedNote says why).
	Embed     []float64
	Vocab     int
	EmbedNote string
	// PosEmbed is the learned position embedding W_pos [NPos × DModel]: a table Gathered
	// by position ids (or positions made by Range) or Sliced by the sequence length and
	// added to the token embedding (a sinusoidal table stored as a constant counts too).
	// nil when there is none (rotary, sinusoids computed in the graph, none): PosNote says
	// which.
	PosEmbed []float64
	NPos     int
	PosNote  string
	// PosOffset is the row of the file's position table that position 0 reads (2 for
	// BART's and OPT's tables); PosEmbed already starts there.
	PosOffset int
	// Unembed is W_U [DModel × Vocab]; UnembedTied is set when it equals Embedᵀ value for
	// value (torch stores a tied weight as a transposed copy). nil when the logits are not
	// a linear read of the residual stream, or the model outputs no logits (UnembedNote
	// says why).
	Unembed     []float64
	UnembedTied bool
	UnembedNote string
	// FinalNorm is the normalisation whose output the unembedding reads, if any.
	FinalNorm *Norm
}

// LayerWeights are one attention layer's per-head weights.
type LayerWeights struct {
	// Layer is the site's layer index (Site.Layer).
	Layer int
	// Heads is the number of query heads, DHead their width. KVHeads < Heads for grouped-
	// query attention: query head h reads K/V head h / (Heads / KVHeads).
	Heads, KVHeads, DHead int
	// WQ[h], WK[kv], WV[kv]: [DModel × DHead]; WO[h]: [DHead × DModel].
	WQ, WK, WV, WO [][]float64
	// BQ[h], BK[kv], BV[kv]: [DHead]; BO: [DModel]. nil where the model has no bias.
	BQ, BK, BV [][]float64
	BO         []float64
	// Norm is the normalisation that produces the input of the Q projection, KVNorm the one
	// for K and V (the same pointer unless K/V read another stream, as cross-attention reads
	// the encoder's output); nil where the projection reads the stream directly. In a
	// post-LN model (BERT, nn.Transformer's default) it is the previous sublayer's
	// LayerNorm, whose output is the stream.
	Norm, KVNorm *Norm
	// Scale is the constant the attention scores are multiplied by between Q·Kᵀ and the
	// Softmax, times the constants applied to q or k alone (which WQ, WK leave out; a bias
	// added after such a constant is given divided by it); a fused operator's scale
	// attribute or its default 1/√DHead; 1 when there is none. A constant applied to v
	// alone is folded into WV and BV.
	Scale float64
	// Causal is true when the scores are masked so that a query sees only keys at or
	// before its position, as far as the graph proves it: a mask built with Trilu, from a
	// triangular constant, or by comparing Range positions; or the operator's own
	// unidirectional / is_causal attribute (GroupQueryAttention always is).
	Causal bool
	// Rotary names the node that rotates q and k by position ("" if none): QK circuits are
	// then position-dependent and QK-based numbers unavailable.
	Rotary string
	// Cross marks encoder–decoder cross-attention (Site.Cross).
	Cross bool
	// QReads, KReads, VReads list the earlier layers (indices into Weights.Layers) whose
	// output (after W_O and b_O) is added into the stream this layer's Q, K or V
	// projection reads: the graph computes that input from it without passing through
	// another attention layer's output (an encoder layer reaches the decoder's stream only
	// through cross-attention's K/V, so it is in the cross-attention's KReads/VReads and
	// not in the decoder layers' QReads). These are the pairs composition scores are
	// defined for.
	QReads, KReads, VReads []int
}

// Norm is a LayerNorm or RMSNorm's affine part.
type Norm struct {
	// Kind is "layernorm" or "rmsnorm".
	Kind string
	// Node names the node (or the last node of a decomposed normalisation).
	Node string
	// Scale is γ [DModel]; Bias is β [DModel] or nil.
	Scale, Bias []float64
	// Epsilon is the normalisation's epsilon (0 when unknown).
	Epsilon float64
}

// TraceError says where tracing the weights of one attention site stopped.
type TraceError struct {
	// Layer and Node name the attention site.
	Layer int
	Site  string
	// At names the node where the trace stopped, and Reason what it found there.
	At     string
	Reason string
}

func (e *TraceError) Error() string {
	if e.At == "" {
		return fmt.Sprintf("layer %d (%s): %s", e.Layer, e.Site, e.Reason)
	}
	return fmt.Sprintf("layer %d (%s): at node %s: %s", e.Layer, e.Site, e.At, e.Reason)
}
