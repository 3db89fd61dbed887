package circuits

import (
	"math/rand/v2"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/mat"
)

// Composition is how much an earlier head's output is read by a later head: Q, K and V are
// ‖W_OV^A · R‖_F / (‖W_OV^A‖_F ‖R‖_F) with R = W_QK^B, (W_QK^B)ᵀ and W_OV^B. A NaN means the
// later head's query (Q), key (K) or value (V) input does not read the stream the earlier
// head writes to (an encoder–decoder's cross-attention reads its keys and values from the
// encoder).
type Composition struct {
	FromLayer, FromHead, ToLayer, ToHead int
	Q, K, V                              float64
}

// The three ways a later head reads an earlier one.
const (
	modeQ = iota
	modeK
	modeV
	modes
)

// reader is one head's right factor for one mode, reduced: for R = X Yᵀ with X, Y
// [d_model × d_head], s = X R_yᵀ where YᵀY = R_yᵀ R_y, so ‖Z R‖_F = ‖Z s‖_F for any Z whose
// rows live in the residual stream, and ‖R‖_F = ‖s‖_F.
type reader struct {
	s    *mat.Dense
	norm float64
}

// writer is one head's left factor reduced the same way: for L = V O, p = R_v O with VᵀV =
// R_vᵀ R_v, so ‖L Z‖_F = ‖p Z‖_F and ‖L‖_F = ‖p‖_F.
type writer struct {
	p    *mat.Dense
	norm float64
}

// Compositions computes the three composition scores for every pair of heads in which the
// later head's layer reads the earlier head's output (LayerWeights.QReads/KReads/VReads).
// Pairs come in the order of the later layer, then the earlier layer, the earlier head and
// the later head. Each pair costs a d_head × d_model × d_head product per mode, done as one
// matrix product per pair of layers and mode: O(pairs · d_head² · d_model) time.
func (c *Circuits) Compositions() []Composition {
	index := map[int]int{} // attnscope layer number → traced index
	for li := range c.layers {
		index[c.layers[li].lw.Layer] = li
	}
	// Per layer: each head's reduced left factor, and its reduced right factor per mode.
	// (Products of these d_head × d_model × d_head shapes run faster here, in gonum, than
	// the same work as one product per pair of layers: measured on 2 cores.)
	writers := make([][]writer, len(c.layers))
	readers := make([][][modes]reader, len(c.layers))
	parallel(len(c.layers), func(li int) {
		for _, hd := range c.layers[li].heads {
			writers[li] = append(writers[li], newWriter(hd.v, hd.o))
			readers[li] = append(readers[li], [modes]reader{newReader(hd.q, hd.k), newReader(hd.k, hd.q), newReader(hd.v, transpose(hd.o))})
		}
	})
	type job struct{ to, from int }
	var jobs []job
	for to := range c.layers {
		for _, from := range readsUnion(c.layers[to].lw.QReads, c.layers[to].lw.KReads, c.layers[to].lw.VReads) {
			if f, ok := index[from]; ok {
				jobs = append(jobs, job{to, f})
			}
		}
	}
	results := make([][]Composition, len(jobs))
	parallel(len(jobs), func(j int) {
		to, from := jobs[j].to, jobs[j].from
		lt, lf := c.layers[to].lw, c.layers[from].lw
		reads := [modes]bool{contains(lt.QReads, lf.Layer), contains(lt.KReads, lf.Layer), contains(lt.VReads, lf.Layer)}
		if c.layers[to].qkNote != "" {
			reads[modeQ], reads[modeK] = false, false
		}
		rows := make([]Composition, 0, len(writers[from])*len(readers[to]))
		for a, w := range writers[from] {
			for b, rb := range readers[to] {
				r := Composition{FromLayer: lf.Layer, FromHead: a, ToLayer: lt.Layer, ToHead: b, Q: nan, K: nan, V: nan}
				for m, dst := range []*float64{&r.Q, &r.K, &r.V} {
					if reads[m] {
						*dst = score(w, rb[m])
					}
				}
				rows = append(rows, r)
			}
		}
		results[j] = rows
	})
	var out []Composition
	for _, r := range results {
		out = append(out, r...)
	}
	return out
}

func score(w writer, r reader) float64 {
	if w.norm == 0 || r.norm == 0 {
		return nan
	}
	var m mat.Dense
	m.Mul(w.p, r.s)
	return mat.Norm(&m, 2) / (w.norm * r.norm)
}

// newWriter reduces L = V O (V [d_model × d_head], O [d_head × d_model]).
func newWriter(v, o *mat.Dense) writer {
	rv := rFactor(v)
	var p mat.Dense
	p.Mul(rv, o)
	return writer{p: &p, norm: mat.Norm(&p, 2)}
}

// newReader reduces R = X Yᵀ (X, Y [d_model × d_head]).
func newReader(x, y *mat.Dense) reader {
	ry := rFactor(y)
	var s mat.Dense
	s.Mul(x, ry.T())
	return reader{s: &s, norm: mat.Norm(&s, 2)}
}

// rFactor is the d_head × d_head triangular R of a thin QR of a [d_model × d_head], so that
// aᵀa = Rᵀ R.
func rFactor(a *mat.Dense) *mat.Dense {
	r, c := a.Dims()
	if r < c {
		// Fewer rows than columns: aᵀa = aᵀ a itself works as "R" padded with zeros.
		out := mat.NewDense(c, c, nil)
		out.Slice(0, r, 0, c).(*mat.Dense).Copy(a)
		return out
	}
	var qr mat.QR
	qr.Factorize(a)
	var full mat.Dense
	qr.RTo(&full)
	out := mat.NewDense(c, c, nil)
	out.Copy(full.Slice(0, c, 0, c))
	return out
}

// Baseline is the mean composition score, over samples draws, of left and right factors
// whose entries are independent standard normals, with the shapes of a model's heads
// (d_model, and the earlier and later heads' widths). The three modes have the same shapes,
// so one number serves Q, K and V; TransformerLens subtracts such a baseline.
func Baseline(dModel, dHeadFrom, dHeadTo, samples int, seed uint64) float64 {
	rng := rand.New(rand.NewPCG(seed, 0x61747473636f7065))
	normal := func(r, c int) *mat.Dense {
		d := make([]float64, r*c)
		for i := range d {
			d[i] = rng.NormFloat64()
		}
		return mat.NewDense(r, c, d)
	}
	var sum float64
	for i := 0; i < samples; i++ {
		w := newWriter(normal(dModel, dHeadFrom), normal(dHeadFrom, dModel))
		r := newReader(normal(dModel, dHeadTo), normal(dModel, dHeadTo))
		sum += score(w, r)
	}
	return sum / float64(samples)
}

// BaselineFor is Baseline for the head widths of traced layers from and to.
func (c *Circuits) BaselineFor(from, to, samples int, seed uint64) float64 {
	return Baseline(c.dModel, c.layers[from].lw.DHead, c.layers[to].lw.DHead, samples, seed)
}

// TracedIndex is the index into the traced layers of attnscope's layer number, or -1.
func (c *Circuits) TracedIndex(layer int) int {
	for i, l := range c.layers {
		if l.lw.Layer == layer {
			return i
		}
	}
	return -1
}

func readsUnion(lists ...[]int) []int {
	seen := map[int]bool{}
	var out []int
	for _, l := range lists {
		for _, x := range l {
			if !seen[x] {
				seen[x] = true
				out = append(out, x)
			}
		}
	}
	// Keep the order stable: ascending.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// parallel runs f(0..n-1) on as many goroutines as there are CPUs.
func parallel(n int, f func(int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers > n {
		workers = n
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}
