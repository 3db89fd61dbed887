// Package circuits computes a model's attention circuits from its weights, in
// TransformerLens's conventions (row vectors): each head's QK circuit W_QK = W_Q W_Kᵀ and OV
// circuit W_OV = W_V W_O, with the LayerNorm scales folded in as TransformerLens's fold_ln
// does (centring ignored). From them: the OV copying score, the positional preference of the
// QK circuit, composition scores between heads of different layers, and a head's strongest
// token pairs. Everything goes through d_head-sized factors: no d_model × d_model circuit per
// head and no vocabulary × vocabulary matrix is ever held.
package circuits

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/attnscope/attnscope/onnxgraph"
)

// Folding says, for output headers and notes, how the weights were prepared.
const Folding = "LayerNorm/RMSNorm scales folded into W_Q, W_K, W_V and W_U (TransformerLens fold_ln; centring and the normalisation itself ignored); biases not in W_QK or W_OV"

// PositionsCompared is how many leading positions the positional QK scores look at.
const PositionsCompared = 64

// Circuits are a model's folded attention weights, ready for the circuit computations.
type Circuits struct {
	w      *onnxgraph.Weights
	dModel int
	layers []layer
	// embed is W_E [vocab × d_model], unembed the folded W_U [d_model × vocab]; nil when
	// not traced (ovNote says why).
	embed, unembed *mat.Dense
	// wue is W_U W_E [d_model × d_model], for the OV copying score: computed on first use
	// (a 50,000-token vocabulary makes it the costliest product here).
	wueOnce sync.Once
	wue     *mat.Dense
	ovNote  string
}

type layer struct {
	lw    *onnxgraph.LayerWeights
	heads []head
	// qkNote says why QK-based numbers are unavailable ("" when they are available);
	// posNote why the positional ones are; ovNote why this layer's OV copying is.
	qkNote, posNote, ovNote string
}

// head holds one head's folded factors: q, k, v are d_model × d_head, o is d_head × d_model.
type head struct {
	q, k, v, o *mat.Dense
}

// New folds the traced weights. It fails when the weights are not the shapes their own
// dimensions say (a tracing bug, not a user error).
func New(w *onnxgraph.Weights) (*Circuits, error) {
	if w == nil || len(w.Layers) == 0 {
		return nil, errors.New("no attention layers with traced weights")
	}
	dm := w.DModel
	if dm <= 0 {
		return nil, fmt.Errorf("traced d_model is %d", dm)
	}
	c := &Circuits{w: w, dModel: dm}
	for i := range w.Layers {
		l, err := foldLayer(&w.Layers[i], dm)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", w.Layers[i].Layer, err)
		}
		if l.qkNote == "" {
			l.posNote = positionNote(w, &w.Layers[i])
		} else {
			l.posNote = l.qkNote
		}
		c.layers = append(c.layers, l)
	}
	// An encoder's layers write a stream the logits read only through cross-attention:
	// their OV circuit through W_U is not a path of the model.
	for _, l := range w.Layers {
		if !l.Cross {
			continue
		}
		for _, e := range readsUnion(l.KReads, l.VReads) {
			if li := c.TracedIndex(e); li >= 0 && c.layers[li].ovNote == "" {
				c.layers[li].ovNote = "an encoder layer, whose output reaches the logits only through cross-attention"
			}
		}
	}
	switch {
	case w.Embed == nil:
		c.ovNote = "no token embedding was traced"
		if w.EmbedNote != "" {
			c.ovNote += " (" + w.EmbedNote + ")"
		}
	case w.Unembed == nil:
		c.ovNote = "no linear unembedding was traced"
		if w.UnembedNote != "" {
			c.ovNote += " (" + w.UnembedNote + ")"
		}
	case len(w.Embed) != w.Vocab*dm || len(w.Unembed) != dm*w.Vocab:
		return nil, fmt.Errorf("embedding has %d values and unembedding %d, want %d × %d", len(w.Embed), len(w.Unembed), w.Vocab, dm)
	default:
		c.embed = mat.NewDense(w.Vocab, dm, w.Embed)
		u := mat.NewDense(dm, w.Vocab, append([]float64(nil), w.Unembed...))
		if w.FinalNorm != nil {
			if err := scaleRows(u, w.FinalNorm.Scale); err != nil {
				return nil, fmt.Errorf("final norm: %w", err)
			}
		}
		c.unembed = u
	}
	return c, nil
}

// unembedEmbed is W_U W_E (folded), nil when either was not traced.
func (c *Circuits) unembedEmbed() *mat.Dense {
	c.wueOnce.Do(func() {
		if c.embed == nil || c.unembed == nil {
			return
		}
		c.wue = mat.NewDense(c.dModel, c.dModel, nil)
		c.wue.Mul(c.unembed, c.embed)
	})
	return c.wue
}

// positionNote says why the positional QK scores of a layer are unavailable, or "".
func positionNote(w *onnxgraph.Weights, lw *onnxgraph.LayerWeights) string {
	switch {
	case lw.Cross:
		return "cross-attention: queries and keys have different positions"
	case w.PosEmbed == nil:
		if w.PosNote != "" {
			return w.PosNote
		}
		return "no learned position embedding was traced"
	case len(w.PosEmbed) != w.NPos*w.DModel || w.NPos < 2:
		return fmt.Sprintf("position embedding has %d values for %d positions", len(w.PosEmbed), w.NPos)
	}
	return ""
}

func foldLayer(lw *onnxgraph.LayerWeights, dm int) (layer, error) {
	l := layer{lw: lw}
	if lw.Rotary != "" {
		l.qkNote = "rotary position embedding (" + lw.Rotary + ") makes the QK circuit position-dependent"
	}
	nh, dh := lw.Heads, lw.DHead
	kvh := lw.KVHeads
	if kvh == 0 {
		kvh = nh
	}
	if nh <= 0 || dh <= 0 || nh%kvh != 0 {
		return l, fmt.Errorf("%d heads, %d key/value heads of width %d", nh, kvh, dh)
	}
	if len(lw.WQ) != nh || len(lw.WO) != nh || len(lw.WK) != kvh || len(lw.WV) != kvh {
		return l, fmt.Errorf("weights for %d/%d/%d/%d heads (Q/K/V/O), want %d/%d/%d/%d", len(lw.WQ), len(lw.WK), len(lw.WV), len(lw.WO), nh, kvh, kvh, nh)
	}
	for h := 0; h < nh; h++ {
		kv := h / (nh / kvh)
		q, err := folded(lw.WQ[h], dm, dh, lw.Norm)
		if err != nil {
			return l, fmt.Errorf("W_Q of head %d: %w", h, err)
		}
		k, err := folded(lw.WK[kv], dm, dh, lw.KVNorm)
		if err != nil {
			return l, fmt.Errorf("W_K of head %d: %w", h, err)
		}
		v, err := folded(lw.WV[kv], dm, dh, lw.KVNorm)
		if err != nil {
			return l, fmt.Errorf("W_V of head %d: %w", h, err)
		}
		if len(lw.WO[h]) != dh*dm {
			return l, fmt.Errorf("W_O of head %d has %d values, want %d × %d", h, len(lw.WO[h]), dh, dm)
		}
		o := mat.NewDense(dh, dm, lw.WO[h])
		l.heads = append(l.heads, head{q: q, k: k, v: v, o: o})
	}
	return l, nil
}

// folded copies a d_model × d_head weight with the norm's scale folded into its rows.
func folded(w []float64, dm, dh int, n *onnxgraph.Norm) (*mat.Dense, error) {
	if len(w) != dm*dh {
		return nil, fmt.Errorf("%d values, want %d × %d", len(w), dm, dh)
	}
	d := mat.NewDense(dm, dh, append([]float64(nil), w...))
	if n != nil {
		if err := scaleRows(d, n.Scale); err != nil {
			return nil, fmt.Errorf("norm %s: %w", n.Node, err)
		}
	}
	return d, nil
}

// scaleRows multiplies row i of d by s[i] (diag(s) · d).
func scaleRows(d *mat.Dense, s []float64) error {
	r, _ := d.Dims()
	if s == nil {
		return nil
	}
	if len(s) != r {
		return fmt.Errorf("scale has %d values for %d rows", len(s), r)
	}
	raw := d.RawMatrix()
	for i := 0; i < r; i++ {
		row := raw.Data[i*raw.Stride : i*raw.Stride+raw.Cols]
		for j := range row {
			row[j] *= s[i]
		}
	}
	return nil
}

// Layers is the number of attention layers.
func (c *Circuits) Layers() int { return len(c.layers) }

// Heads is the number of heads of layer l (an index into the traced layers).
func (c *Circuits) Heads(l int) int { return len(c.layers[l].heads) }

// LayerNumber is the layer index of traced layer l as the rest of attnscope numbers it.
func (c *Circuits) LayerNumber(l int) int { return c.layers[l].lw.Layer }

// DModel is the residual stream's width.
func (c *Circuits) DModel() int { return c.dModel }

// Vocab is the vocabulary size, 0 when no embedding was traced.
func (c *Circuits) Vocab() int {
	if c.embed == nil {
		return 0
	}
	return c.w.Vocab
}

// Notes are the sentences that say which numbers are unavailable and why, one per cause.
func (c *Circuits) Notes() []string {
	var notes []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			notes = append(notes, s)
		}
	}
	if c.ovNote != "" {
		add("OV copying unavailable: " + c.ovNote)
	}
	for _, l := range c.layers {
		if l.ovNote != "" && c.ovNote == "" {
			add(fmt.Sprintf("layer %d: OV copying unavailable: %s", l.lw.Layer, l.ovNote))
		}
		if l.qkNote != "" {
			add(fmt.Sprintf("layer %d: QK numbers unavailable: %s", l.lw.Layer, l.qkNote))
		} else if l.posNote != "" {
			add(fmt.Sprintf("layer %d: positional QK scores unavailable: %s", l.lw.Layer, l.posNote))
		}
	}
	return notes
}

// frob2 is the squared Frobenius norm.
func frob2(m mat.Matrix) float64 {
	n := mat.Norm(m, 2)
	return n * n
}

var nan = math.NaN()
