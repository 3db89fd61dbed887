package circuits

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"gonum.org/v1/gonum/mat"
)

// TokenPair is one entry of a head's full OV circuit W_E W_OV W_U: attending to Source
// raises Output's logit by Value (per unit of attention).
type TokenPair struct {
	Source, Output int
	Value          float64
}

// SkipTrigram is one entry of a head's token QK circuit W_E W_QK W_Eᵀ with what the
// attended token then writes: a destination token Dest attends to an earlier Source with
// score QK, and the head then raises Output's logit by OV — "Source … Dest → Output".
type SkipTrigram struct {
	Dest, Source, Output int
	QK, OV               float64
}

// ErrNoTokens says the model's embedding or unembedding was not traced.
var ErrNoTokens = errors.New("token circuits need the token embedding and a linear unembedding")

// blockRows is how many vocabulary rows one block of a token circuit holds.
const blockRows = 256

func (c *Circuits) head(layer, h int) (*layer, head, error) {
	li := c.TracedIndex(layer)
	if li < 0 {
		return nil, head{}, fmt.Errorf("layer %d has no traced attention", layer)
	}
	l := &c.layers[li]
	if h < 0 || h >= len(l.heads) {
		return nil, head{}, fmt.Errorf("layer %d has %d heads, no head %d", layer, len(l.heads), h)
	}
	return l, l.heads[h], nil
}

// TopOV is the k largest entries of the head's full OV circuit W_E W_OV W_U, largest
// first, computed block by block through W_E W_V [vocab × d_head] and W_O W_U
// [d_head × vocab]. among, when not nil, restricts sources and outputs to those token ids
// (tokens a corpus uses: a vocabulary's never-trained tokens otherwise crowd the list).
// It stops early, with ctx's error, when ctx is cancelled.
func (c *Circuits) TopOV(ctx context.Context, layer, h, k int, among []int) ([]TokenPair, error) {
	l, hd, err := c.head(layer, h)
	if err != nil {
		return nil, err
	}
	if c.embed == nil || c.unembed == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoTokens, c.ovNote)
	}
	if l.ovNote != "" {
		return nil, errors.New(l.ovNote)
	}
	if err := c.checkAmong(among); err != nil {
		return nil, err
	}
	left, right := c.ovFactors(hd)
	left, right = rowsOf(left, among), colsOf(right, among)
	top, err := topEntries(ctx, left, right, k)
	if err != nil {
		return nil, err
	}
	out := make([]TokenPair, len(top))
	for i, e := range top {
		out[i] = TokenPair{Source: pick(among, e.row), Output: pick(among, e.col), Value: e.v}
	}
	return out, nil
}

// checkAmong refuses token ids outside the vocabulary.
func (c *Circuits) checkAmong(among []int) error {
	if among != nil && len(among) == 0 {
		return errors.New("no tokens to list pairs among")
	}
	for _, id := range among {
		if id < 0 || id >= c.w.Vocab {
			return fmt.Errorf("token id %d is outside the vocabulary (0–%d)", id, c.w.Vocab-1)
		}
	}
	return nil
}

// rowsOf is the rows ids of m (all of m when ids is nil).
func rowsOf(m *mat.Dense, ids []int) *mat.Dense {
	if ids == nil {
		return m
	}
	_, cols := m.Dims()
	out := mat.NewDense(len(ids), cols, nil)
	for i, id := range ids {
		out.SetRow(i, m.RawRowView(id))
	}
	return out
}

// colsOf is the columns ids of m (all of m when ids is nil).
func colsOf(m *mat.Dense, ids []int) *mat.Dense {
	if ids == nil {
		return m
	}
	rows, _ := m.Dims()
	out := mat.NewDense(rows, len(ids), nil)
	for j, id := range ids {
		for i := 0; i < rows; i++ {
			out.Set(i, j, m.At(i, id))
		}
	}
	return out
}

// pick maps an index into among back to the token id (among nil: the index is the id).
func pick(among []int, i int) int {
	if among == nil {
		return i
	}
	return among[i]
}

func (c *Circuits) ovFactors(hd head) (left, right *mat.Dense) {
	left, right = new(mat.Dense), new(mat.Dense)
	left.Mul(c.embed, hd.v)
	right.Mul(hd.o, c.unembed)
	return left, right
}

// SkipTrigrams is the k largest entries of the head's token QK circuit (destination
// token × attended source token), each with the source token's most raised output under
// the head's OV circuit. Positions, biases and the normalisation are left out, as in the
// framework paper's tables; for a model with more than one layer these are the direct
// paths only. among, when not nil, restricts every token of the table to those ids.
func (c *Circuits) SkipTrigrams(layer, h, k int, among []int) ([]SkipTrigram, error) {
	l, hd, err := c.head(layer, h)
	if err != nil {
		return nil, err
	}
	if l.qkNote != "" {
		return nil, errors.New(l.qkNote)
	}
	if c.embed == nil || c.unembed == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoTokens, c.ovNote)
	}
	if l.lw.Cross {
		return nil, errors.New("cross-attention: its keys are encoder states, not tokens")
	}
	if err := c.checkAmong(among); err != nil {
		return nil, err
	}
	var dq, sk mat.Dense
	dq.Mul(c.embed, hd.q)
	sk.Mul(c.embed, hd.k)
	top, err := topEntries(context.Background(), rowsOf(&dq, among), colsOf(transpose(&sk), among), k)
	if err != nil {
		return nil, err
	}
	left, right := c.ovFactors(hd)
	right = colsOf(right, among)
	best := map[int]entry{}
	out := make([]SkipTrigram, len(top))
	for i, e := range top {
		src := pick(among, e.col)
		b, ok := best[src]
		if !ok {
			var row mat.Dense
			row.Mul(left.Slice(src, src+1, 0, left.RawMatrix().Cols), right)
			b = entry{v: row.At(0, 0)}
			_, n := row.Dims()
			for j := 1; j < n; j++ {
				if v := row.At(0, j); v > b.v {
					b = entry{col: j, v: v}
				}
			}
			best[src] = b
		}
		out[i] = SkipTrigram{Dest: pick(among, e.row), Source: src, Output: pick(among, b.col), QK: e.v, OV: b.v}
	}
	return out, nil
}

type entry struct {
	row, col int
	v        float64
}

// minHeap keeps the k largest entries seen, smallest on top.
type minHeap []entry

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i].v < h[j].v }
func (h minHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (h *minHeap) offer(e entry, k int) {
	if len(*h) < k {
		heap.Push(h, e)
	} else if e.v > (*h)[0].v {
		(*h)[0] = e
		heap.Fix(h, 0)
	}
}

// topEntries is the k largest entries of left · right ([n × d] · [d × m]), largest first
// (ties by row, then column), computed in blocks of rows on every CPU; ctx's error when it
// is cancelled first.
func topEntries(ctx context.Context, left, right *mat.Dense, k int) ([]entry, error) {
	n, d := left.Dims()
	if k <= 0 || n == 0 {
		return nil, nil
	}
	blocks := (n + blockRows - 1) / blockRows
	var mu sync.Mutex
	all := &minHeap{}
	parallel(blocks, func(b int) {
		if ctx.Err() != nil {
			return
		}
		lo, hi := b*blockRows, min((b+1)*blockRows, n)
		var prod mat.Dense
		prod.Mul(left.Slice(lo, hi, 0, d), right)
		local := &minHeap{}
		raw := prod.RawMatrix()
		for i := 0; i < hi-lo; i++ {
			row := raw.Data[i*raw.Stride : i*raw.Stride+raw.Cols]
			for j, v := range row {
				local.offer(entry{lo + i, j, v}, k)
			}
		}
		mu.Lock()
		for _, e := range *local {
			all.offer(e, k)
		}
		mu.Unlock()
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := append([]entry(nil), *all...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].v != out[j].v {
			return out[i].v > out[j].v
		}
		if out[i].row != out[j].row {
			return out[i].row < out[j].row
		}
		return out[i].col < out[j].col
	})
	return out, nil
}
