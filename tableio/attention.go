package tableio

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/attnscope/attnscope/internal/npy"
)

// LayerKind says which sequences a layer's queries and keys run over.
type LayerKind string

// The kinds of attention layer.
const (
	// Self is self-attention over the prompt (a one-sequence model) or over an
	// encoder–decoder's target (its decoder).
	Self LayerKind = "self"
	// Encoder is an encoder–decoder's encoder self-attention, over the source.
	Encoder LayerKind = "encoder"
	// Cross is cross-attention: target queries, source keys.
	Cross LayerKind = "cross"
)

// AttentionColumns are the dump's columns, in order: the contract's seven, then the
// token ids (added after them, so readers by name keep working).
var AttentionColumns = []string{"layer", "head", "query", "key", "query_token", "key_token", "weight", "query_id", "key_id"}

// Layer is one layer's maps in a dump.
type Layer struct {
	// Layer is the layer's number in the model.
	Layer int
	Kind  LayerKind
	// Heads are the head numbers of Maps, in order.
	Heads []int
	// Maps are the heads' attention, [head][query][key].
	Maps [][][]float32
	// QueryIDs, KeyIDs are the ids along each axis, QueryTokens, KeyTokens their display
	// labels. A position past their end (a map longer than its sequence) gets id −1 and
	// an empty label.
	QueryIDs, KeyIDs       []int64
	QueryTokens, KeyTokens []string
	// Causal says keys after the query are masked (they carry no weight): Filter's
	// CausalOnly drops them from this layer only.
	Causal bool
}

// Attention is what a dump writes: the sequences and the chosen layers' maps.
type Attention struct {
	// IDs and Tokens are the prompt's ids and labels: an encoder–decoder's source.
	IDs    []int64
	Tokens []string
	// TargetIDs and TargetTokens are an encoder–decoder's target; nil otherwise.
	TargetIDs    []int64
	TargetTokens []string
	Layers       []Layer
}

// Filter shrinks a dump's rows (CSV, Parquet, JSON; .npz is always dense).
type Filter struct {
	// CausalOnly drops the masked keys after the query in Causal layers.
	CausalOnly bool
	// MinWeight keeps weights of at least this (0: all).
	MinWeight float32
	// TopK keeps the K largest weights of each query row (ties: the earlier key), in key
	// order (0: all).
	TopK int
}

// Dense reports whether f keeps every weight.
func (f Filter) Dense() bool { return !f.CausalOnly && f.MinWeight <= 0 && f.TopK <= 0 }

// sparse reports whether kept keys can have gaps (not just a shorter row).
func (f Filter) sparse() bool { return f.MinWeight > 0 || f.TopK > 0 }

// keySet is the keys kept of one row, ascending: the first n keys when keep is nil, else
// keep (n = len(keep)).
type keySet struct {
	keep []int
	n    int
}

// at is the i-th key kept.
func (s keySet) at(i int) int {
	if s.keep == nil {
		return i
	}
	return s.keep[i]
}

// keys returns the keys f keeps of row q of a layer (causal or not). A sparse filter's keys
// are written into *buf, which grows as needed and is reused from row to row.
func (f Filter) keys(row []float32, q int, causal bool, buf *[]int) keySet {
	n := len(row)
	if f.CausalOnly && causal {
		n = min(n, q+1)
	}
	if !f.sparse() {
		return keySet{n: n}
	}
	kept := (*buf)[:0]
	for k := range n {
		if f.MinWeight <= 0 || row[k] >= f.MinWeight {
			kept = append(kept, k)
		}
	}
	if f.TopK > 0 && len(kept) > f.TopK {
		slices.SortStableFunc(kept, func(a, b int) int {
			switch {
			case row[a] > row[b]:
				return -1
			case row[a] < row[b]:
				return 1
			}
			return 0
		})
		kept = kept[:f.TopK]
		slices.Sort(kept)
	}
	*buf = kept
	return keySet{keep: kept, n: len(kept)}
}

func label(labels []string, i int) string {
	if i < len(labels) {
		return labels[i]
	}
	return ""
}

func id(ids []int64, i int) int64 {
	if i < len(ids) {
		return ids[i]
	}
	return -1
}

// WriteAttention writes a dump in format f: one row per (layer, head, query, key) that
// flt keeps in CSV and Parquet (columns AttentionColumns; a Parquet row group per layer),
// one document in JSON (see WriteAttentionJSON), dense arrays in .npz (see
// WriteAttentionNPZ, which refuses a filter).
func WriteAttention(w io.Writer, f Format, a *Attention, flt Filter) error {
	switch f {
	case CSV:
		return WriteAttentionCSV(w, a, flt)
	case JSON:
		return WriteAttentionJSON(w, a, flt)
	case NPZ:
		if !flt.Dense() {
			return fmt.Errorf("tableio: .npz dumps are dense; they take no filter")
		}
		return WriteAttentionNPZ(w, a)
	case Parquet:
		return WriteAttentionParquet(w, a, flt)
	}
	return fmt.Errorf("tableio: unknown format %q", f)
}

// WriteAttentionCSV writes the CSV: a header of AttentionColumns, then a row per kept
// weight, layer by layer, head by head, query by query, key by key. Weights are printed
// with the fewest digits that read back as the same float32.
func WriteAttentionCSV(w io.Writer, a *Attention, flt Filter) error {
	buf := []byte("layer,head,query,key,query_token,key_token,weight,query_id,key_id\n")
	if _, err := w.Write(buf); err != nil {
		return err
	}
	quote := Memo(func(labels []string) []string {
		out := make([]string, len(labels))
		for i, l := range labels {
			out[i] = string(AppendCSVField(nil, l))
		}
		return out
	})
	var keyBuf []int
	for _, L := range a.Layers {
		queries, keys := quote(L.QueryTokens), quote(L.KeyTokens)
		for hi, rows := range L.Maps {
			// The row's fixed prefix "layer,head," is formatted once per head.
			prefix := strconv.AppendInt(nil, int64(L.Layer), 10)
			prefix = append(prefix, ',')
			prefix = strconv.AppendInt(prefix, int64(L.Heads[hi]), 10)
			prefix = append(prefix, ',')
			for q, row := range rows {
				ks := flt.keys(row, q, L.Causal, &keyBuf)
				qLabel, qID := label(queries, q), id(L.QueryIDs, q)
				for i := range ks.n {
					k := ks.at(i)
					buf = append(buf[:0], prefix...)
					buf = strconv.AppendInt(buf, int64(q), 10)
					buf = append(buf, ',')
					buf = strconv.AppendInt(buf, int64(k), 10)
					buf = append(buf, ',')
					buf = append(buf, qLabel...)
					buf = append(buf, ',')
					buf = append(buf, label(keys, k)...)
					buf = append(buf, ',')
					buf = strconv.AppendFloat(buf, float64(row[k]), 'g', -1, 32)
					buf = append(buf, ',')
					buf = strconv.AppendInt(buf, qID, 10)
					buf = append(buf, ',')
					buf = strconv.AppendInt(buf, id(L.KeyIDs, k), 10)
					buf = append(buf, '\n')
					if _, err := w.Write(buf); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// Memo returns f computing its result once per distinct slice (the same first element and
// length): a dump's layers share their token and label slices, so each sequence's labels
// are made once.
func Memo[T, R any](f func([]T) R) func([]T) R {
	type key struct {
		first *T
		n     int
	}
	cache := map[key]R{}
	return func(s []T) R {
		if len(s) == 0 {
			var zero R
			return zero
		}
		k := key{&s[0], len(s)}
		if out, ok := cache[k]; ok {
			return out
		}
		out := f(s)
		cache[k] = out
		return out
	}
}

// WriteAttentionNPZ writes the dump as numpy arrays: ids (int64 [T]) and tokens ('<U{n}'
// [T]) of the prompt (an encoder–decoder's source), target_ids and target_tokens for an
// encoder–decoder, layers (int64: the layer numbers written) and layer_kinds ('<U7':
// self, encoder, cross), then per layer attn.L{n}, float32 [heads, queries, keys]
// (cross-attention: [heads, target, source]), streamed row by row, and heads.L{n} (int64)
// when only some of its heads are written.
func WriteAttentionNPZ(w io.Writer, a *Attention) error {
	z := npy.NewNPZWriter(w)
	write := func(name string, data any) error {
		return z.WriteArray(name, &npy.Array{Shape: []int{lenOf(data)}, Data: data})
	}
	if err := write("ids", nonNil(a.IDs)); err != nil {
		return err
	}
	if err := write("tokens", nonNilS(a.Tokens)); err != nil {
		return err
	}
	if a.TargetIDs != nil {
		if err := write("target_ids", a.TargetIDs); err != nil {
			return err
		}
		if err := write("target_tokens", nonNilS(a.TargetTokens)); err != nil {
			return err
		}
	}
	layers, kinds := []int64{}, []string{}
	for _, L := range a.Layers {
		layers = append(layers, int64(L.Layer))
		kinds = append(kinds, string(L.Kind))
	}
	if err := write("layers", layers); err != nil {
		return err
	}
	if err := write("layer_kinds", kinds); err != nil {
		return err
	}
	for _, L := range a.Layers {
		q, k := 0, 0
		if len(L.Maps) > 0 {
			q = len(L.Maps[0])
			if q > 0 {
				k = len(L.Maps[0][0])
			}
		}
		m, err := z.Create(fmt.Sprintf("attn.L%d", L.Layer), npy.DescrFloat32, []int{len(L.Maps), q, k})
		if err != nil {
			return err
		}
		for _, rows := range L.Maps {
			if len(rows) != q {
				return fmt.Errorf("tableio: layer %d's heads have different numbers of queries", L.Layer)
			}
			for _, row := range rows {
				if len(row) != k {
					return fmt.Errorf("tableio: layer %d's rows have different numbers of keys", L.Layer)
				}
			}
			// A head's rows are usually views of one [queries × keys] block (a run's
			// output): it is written in one piece, straight from memory.
			if whole := contiguous(rows); whole != nil {
				if _, err := m.Write(npy.Float32Bytes(whole)); err != nil {
					return err
				}
				continue
			}
			for _, row := range rows {
				if _, err := m.Write(npy.Float32Bytes(row)); err != nil {
					return err
				}
			}
		}
		if !allHeads(L.Heads) {
			hs := make([]int64, len(L.Heads))
			for i, h := range L.Heads {
				hs[i] = int64(h)
			}
			if err := write(fmt.Sprintf("heads.L%d", L.Layer), hs); err != nil {
				return err
			}
		}
	}
	return z.Close()
}

func allHeads(heads []int) bool {
	for i, h := range heads {
		if h != i {
			return false
		}
	}
	return true
}

func lenOf(d any) int {
	switch d := d.(type) {
	case []int64:
		return len(d)
	case []string:
		return len(d)
	}
	return 0
}

func nonNil(v []int64) []int64 {
	if v == nil {
		return []int64{}
	}
	return v
}

func nonNilS(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// WriteAttentionJSON writes the dump as one JSON object:
//
//	{"ids": [...], "tokens": [...],
//	 "target_ids": [...], "target_tokens": [...],      (encoder–decoders only)
//	 "layers": [{"layer": 0, "kind": "self", "heads": [0, 1, ...],
//	             "weights": [[[w, ...], ...], ...]}, ...]}
//
// weights is [head][query][key]. With CausalOnly a causal layer's row q holds keys 0…q
// only; with MinWeight or TopK rows are sparse and "keys" ([head][query][…], parallel to
// weights) gives each weight's key. NaN and ±Inf weights are null.
func WriteAttentionJSON(w io.Writer, a *Attention, flt Filter) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	buf := []byte(`{"ids": `)
	buf = appendInts(buf, a.IDs)
	buf = append(buf, `, "tokens": `...)
	buf = appendStrings(buf, a.Tokens)
	if a.TargetIDs != nil {
		buf = append(buf, `, "target_ids": `...)
		buf = appendInts(buf, a.TargetIDs)
		buf = append(buf, `, "target_tokens": `...)
		buf = appendStrings(buf, a.TargetTokens)
	}
	buf = append(buf, `, "layers": [`...)
	bw.Write(buf)
	var keyBuf []int
	for li, L := range a.Layers {
		buf = buf[:0]
		if li > 0 {
			buf = append(buf, ',')
		}
		buf = fmt.Appendf(buf, "\n {\"layer\": %d, \"kind\": %q, \"heads\": ", L.Layer, L.Kind)
		hs := make([]int64, len(L.Heads))
		for i, h := range L.Heads {
			hs[i] = int64(h)
		}
		buf = appendInts(buf, hs)
		bw.Write(buf)
		for _, field := range []string{"weights", "keys"} {
			if field == "keys" && !flt.sparse() {
				continue
			}
			fmt.Fprintf(bw, ", %q: [", field)
			for hi, rows := range L.Maps {
				if hi > 0 {
					bw.WriteString(",")
				}
				bw.WriteString("\n  [")
				for q, row := range rows {
					buf = buf[:0]
					if q > 0 {
						buf = append(buf, ",\n   "...)
					}
					ks := flt.keys(row, q, L.Causal, &keyBuf)
					buf = append(buf, '[')
					for i := range ks.n {
						k := ks.at(i)
						if i > 0 {
							buf = append(buf, ',')
						}
						if field == "keys" {
							buf = strconv.AppendInt(buf, int64(k), 10)
						} else {
							buf = appendJSONFloat32(buf, row[k])
						}
					}
					buf = append(buf, ']')
					if _, err := bw.Write(buf); err != nil {
						return err
					}
				}
				bw.WriteString("]")
			}
			bw.WriteString("]")
		}
		bw.WriteString("}")
	}
	bw.WriteString("\n]}\n")
	return bw.Flush()
}

func appendInts(buf []byte, v []int64) []byte {
	buf = append(buf, '[')
	for i, x := range v {
		if i > 0 {
			buf = append(buf, ", "...)
		}
		buf = strconv.AppendInt(buf, x, 10)
	}
	return append(buf, ']')
}

func appendStrings(buf []byte, v []string) []byte {
	buf = append(buf, '[')
	for i, s := range v {
		if i > 0 {
			buf = append(buf, ", "...)
		}
		buf = appendJSONString(buf, s)
	}
	return append(buf, ']')
}

// contiguous returns rows as one slice when each row starts where the one before ends in
// memory (views of one row-major block), else nil.
func contiguous(rows [][]float32) []float32 {
	if len(rows) == 0 || len(rows[0]) == 0 {
		return nil
	}
	k := len(rows[0])
	first := rows[0][:cap(rows[0])]
	if len(first) < k*len(rows) {
		return nil
	}
	whole := first[:k*len(rows)]
	for i, row := range rows {
		if len(row) != k || &row[0] != &whole[i*k] {
			return nil
		}
	}
	return whole
}
