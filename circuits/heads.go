package circuits

import (
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/attnscope/attnscope/onnxgraph"
)

// Head is one head's numbers from its weights. A NaN means unavailable for this model;
// Circuits.Notes says why.
type Head struct {
	// Layer is attnscope's layer number, Head the head's index in it.
	Layer, Head int
	// OVCopying is Σ Re λ / Σ |λ| over the eigenvalues λ of the full OV circuit
	// W_E W_OV W_U: near 1 for a head that copies the token it attends to into the output.
	OVCopying float64
	// QKPrevToken and QKSelf are how much the head's pattern from the learned positions
	// alone (the first PositionsCompared positions) puts on the previous token and on
	// itself.
	QKPrevToken, QKSelf float64
	// OVNorm and QKNorm are ‖W_OV‖_F and ‖W_QK‖_F.
	OVNorm, QKNorm float64
}

// HeadCircuits computes every head's numbers, layer by layer.
func (c *Circuits) HeadCircuits() []Head {
	var out []Head
	for li := range c.layers {
		l := &c.layers[li]
		var pos [][]float64
		if l.posNote == "" {
			pos = c.positionalPatterns(l)
		}
		for h, hd := range l.heads {
			r := Head{Layer: l.lw.Layer, Head: h, OVCopying: nan, QKPrevToken: nan, QKSelf: nan}
			r.OVNorm = math.Sqrt(productNorm2(hd.v, hd.o))
			r.QKNorm = math.Sqrt(productNorm2(hd.q, transpose(hd.k)))
			if l.qkNote != "" {
				r.QKNorm = nan // rotary: the QK circuit depends on the positions
			}
			if wue := c.unembedEmbed(); wue != nil && l.ovNote == "" {
				r.OVCopying = copying(hd, wue)
			}
			if pos != nil {
				r.QKPrevToken, r.QKSelf = prevAndSelf(pos[h])
			}
			out = append(out, r)
		}
	}
	return out
}

func transpose(m *mat.Dense) *mat.Dense {
	r, cl := m.Dims()
	t := mat.NewDense(cl, r, nil)
	t.Copy(m.T())
	return t
}

// productNorm2 is ‖A B‖_F² for A [n × d] and B [d × m] with small d, computed as
// tr((AᵀA)(BBᵀ)) without forming A B.
func productNorm2(a, b mat.Matrix) float64 {
	var ata, bbt mat.Dense
	ata.Mul(a.T(), a)
	bbt.Mul(b, b.T())
	var s float64
	d, _ := ata.Dims()
	for i := 0; i < d; i++ {
		for j := 0; j < d; j++ {
			s += ata.At(i, j) * bbt.At(j, i)
		}
	}
	return math.Max(s, 0)
}

// copying is the positive-eigenvalue score of the head's full OV circuit: the eigenvalues
// of W_E W_V W_O W_U (vocab × vocab) other than zeros are those of W_O (W_U W_E) W_V
// (d_head × d_head).
func copying(hd head, wue *mat.Dense) float64 {
	var t, m mat.Dense
	t.Mul(wue, hd.v)
	m.Mul(hd.o, &t)
	var e mat.Eigen
	if !e.Factorize(&m, mat.EigenNone) {
		return nan
	}
	var re, abs float64
	for _, l := range e.Values(nil) {
		re += real(l)
		abs += math.Hypot(real(l), imag(l))
	}
	if abs == 0 {
		return nan
	}
	return re / abs
}

// positionalPatterns is, per head, the attention pattern over the first positions that
// the learned position embeddings alone would produce: rows are queries, each a softmax
// over the keys the layer lets it see.
func (c *Circuits) positionalPatterns(l *layer) [][]float64 {
	n := c.w.NPos
	if n > PositionsCompared {
		n = PositionsCompared
	}
	dm := c.dModel
	x := mat.NewDense(n, dm, append([]float64(nil), c.w.PosEmbed[:n*dm]...))
	normalise(x, l.lw.Norm)
	scale := l.lw.Scale
	if scale == 0 {
		scale = 1
	}
	var out [][]float64
	for _, hd := range l.heads {
		var q, k, s mat.Dense
		q.Mul(x, hd.q)
		k.Mul(x, hd.k)
		s.Mul(&q, k.T())
		a := make([]float64, n*n)
		for i := 0; i < n; i++ {
			last := n - 1
			if l.lw.Causal {
				last = i
			}
			row := a[i*n : (i+1)*n]
			mx := math.Inf(-1)
			for j := 0; j <= last; j++ {
				row[j] = scale * s.At(i, j)
				mx = math.Max(mx, row[j])
			}
			var sum float64
			for j := 0; j <= last; j++ {
				row[j] = math.Exp(row[j] - mx)
				sum += row[j]
			}
			for j := 0; j <= last; j++ {
				row[j] /= sum
			}
		}
		out = append(out, a)
	}
	return out
}

// normalise applies a norm's normalisation without its affine part to each row, as the
// layer's LayerNorm or RMSNorm would to a position embedding alone.
func normalise(x *mat.Dense, n *onnxgraph.Norm) {
	if n == nil {
		return
	}
	raw := x.RawMatrix()
	for i := 0; i < raw.Rows; i++ {
		row := raw.Data[i*raw.Stride : i*raw.Stride+raw.Cols]
		var mean float64
		if n.Kind != "rmsnorm" {
			for _, v := range row {
				mean += v
			}
			mean /= float64(len(row))
		}
		var ss float64
		for _, v := range row {
			ss += (v - mean) * (v - mean)
		}
		inv := 1 / math.Sqrt(ss/float64(len(row))+n.Epsilon)
		for j, v := range row {
			row[j] = (v - mean) * inv
		}
	}
}

// prevAndSelf are the means of A[i, i−1] over i ≥ 1 and of A[i, i] over i, for a square
// row-major pattern.
func prevAndSelf(a []float64) (prev, self float64) {
	n := int(math.Sqrt(float64(len(a))))
	for i := 0; i < n; i++ {
		self += a[i*n+i]
		if i > 0 {
			prev += a[i*n+i-1]
		}
	}
	return prev / float64(n-1), self / float64(n)
}
