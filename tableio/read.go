package tableio

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/attnscope/attnscope/internal/npy"
)

// ReadCSV reads a CSV table with a header line. A column whose cells all parse as
// integers is Int, else one whose cells all parse as floats (empty and NaN cells too) is
// Float, else String.
func ReadCSV(r io.Reader) (*Table, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = false
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("tableio: the CSV has no header line")
	}
	t := &Table{}
	for j, name := range recs[0] {
		cells := make([]string, len(recs)-1)
		for i, rec := range recs[1:] {
			cells[i] = rec[j]
		}
		t.Columns = append(t.Columns, typed(name, cells))
	}
	return t, nil
}

func typed(name string, cells []string) Column {
	ints := make([]int64, len(cells))
	ok := true
	for i, c := range cells {
		v, err := strconv.ParseInt(c, 10, 64)
		if err != nil {
			ok = false
			break
		}
		ints[i] = v
	}
	if ok && len(cells) > 0 {
		return Ints(name, ints)
	}
	floats := make([]float64, len(cells))
	ok = true
	for i, c := range cells {
		if c == "" {
			floats[i] = math.NaN()
			continue
		}
		v, err := strconv.ParseFloat(c, 64)
		if err != nil {
			ok = false
			break
		}
		floats[i] = v
	}
	if ok && len(cells) > 0 {
		return Floats(name, floats, 0)
	}
	return Strings(name, cells)
}

// ReadNPZ reads a table written by WriteNPZ: one 1-D array per column, in the order
// written (int64 and int32 as Int, floats as Float, unicode as String).
func ReadNPZ(r io.ReaderAt, size int64) (*Table, error) {
	z, err := npy.OpenNPZ(r, size)
	if err != nil {
		return nil, err
	}
	t := &Table{}
	for _, name := range z.Order() {
		a, err := z.Read(name)
		if err != nil {
			return nil, err
		}
		switch d := a.Data.(type) {
		case []int64:
			t.Columns = append(t.Columns, Ints(name, d))
		case []int32:
			v := make([]int64, len(d))
			for i, x := range d {
				v[i] = int64(x)
			}
			t.Columns = append(t.Columns, Ints(name, v))
		case []string:
			t.Columns = append(t.Columns, Strings(name, d))
		default:
			t.Columns = append(t.Columns, Floats(name, a.Float64s(), 0))
		}
	}
	return t, t.Check()
}

// ReadParquet reads a whole Parquet file (any row groups) into a Table: integer columns as
// Int, floating-point as Float, strings (plain or dictionaries) as String.
func ReadParquet(data []byte) (*Table, error) {
	pf, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, memory.DefaultAllocator)
	if err != nil {
		return nil, err
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		return nil, err
	}
	defer tbl.Release()
	t := &Table{}
	for i := range int(tbl.NumCols()) {
		col := tbl.Column(i)
		c := Column{Name: col.Name(), NaN: "NaN"}
		for _, chunk := range col.Data().Chunks() {
			if err := appendChunk(&c, chunk); err != nil {
				return nil, fmt.Errorf("column %s: %w", c.Name, err)
			}
		}
		t.Columns = append(t.Columns, c)
	}
	return t, t.Check()
}

func appendChunk(c *Column, a arrow.Array) error {
	switch a := a.(type) {
	case *array.Int64:
		c.Kind = Int
		c.Ints = append(c.Ints, a.Int64Values()...)
	case *array.Int32:
		c.Kind = Int
		for _, v := range a.Int32Values() {
			c.Ints = append(c.Ints, int64(v))
		}
	case *array.Float64:
		c.Kind = Float
		c.Floats = append(c.Floats, a.Float64Values()...)
	case *array.Float32:
		c.Kind = Float
		for _, v := range a.Float32Values() {
			c.Floats = append(c.Floats, float64(v))
		}
	case *array.String:
		c.Kind = String
		for i := range a.Len() {
			c.Strings = append(c.Strings, a.Value(i))
		}
	case *array.Dictionary:
		c.Kind = String
		dict, ok := a.Dictionary().(*array.String)
		if !ok {
			return fmt.Errorf("a dictionary of %s, not of strings", a.Dictionary().DataType())
		}
		for i := range a.Len() {
			c.Strings = append(c.Strings, dict.Value(a.GetValueIndex(i)))
		}
	default:
		return fmt.Errorf("unexpected type %s", a.DataType())
	}
	return nil
}

// Compare reports the first difference between two tables with the same column names in
// the same order: an Int column equals an Int or a Float column of the same values, Float
// values agree within tol (absolute; NaN only equals NaN), strings exactly. It is for tests
// that read one table back from two formats.
func Compare(a, b *Table, tol float64) error {
	if len(a.Columns) != len(b.Columns) {
		return fmt.Errorf("%d columns vs %d (%v vs %v)", len(a.Columns), len(b.Columns), names(a), names(b))
	}
	if a.Rows() != b.Rows() {
		return fmt.Errorf("%d rows vs %d", a.Rows(), b.Rows())
	}
	for i := range a.Columns {
		ca, cb := &a.Columns[i], &b.Columns[i]
		if ca.Name != cb.Name {
			return fmt.Errorf("column %d is %s vs %s", i, ca.Name, cb.Name)
		}
		if (ca.Kind == String) != (cb.Kind == String) {
			return fmt.Errorf("column %s: text vs numbers", ca.Name)
		}
		for r := range a.Rows() {
			if ca.Kind == String {
				if ca.Strings[r] != cb.Strings[r] {
					return fmt.Errorf("column %s row %d: %q vs %q", ca.Name, r, ca.Strings[r], cb.Strings[r])
				}
				continue
			}
			x, y := ca.float(r), cb.float(r)
			if math.IsNaN(x) || math.IsNaN(y) {
				if math.IsNaN(x) != math.IsNaN(y) {
					return fmt.Errorf("column %s row %d: %v vs %v", ca.Name, r, x, y)
				}
				continue
			}
			if !(math.Abs(x-y) <= tol) {
				return fmt.Errorf("column %s row %d: %v vs %v", ca.Name, r, x, y)
			}
		}
	}
	return nil
}

func (c *Column) float(r int) float64 {
	if c.Kind == Int {
		return float64(c.Ints[r])
	}
	return c.Floats[r]
}

func names(t *Table) []string {
	var out []string
	for _, c := range t.Columns {
		out = append(out, c.Name)
	}
	return out
}

// ReadAttentionNPZ reads a dump written by WriteAttentionNPZ back into an Attention (its
// layers not Causal: the arrays are dense), so that it can be written again in another
// format and compared.
func ReadAttentionNPZ(r io.ReaderAt, size int64) (*Attention, error) {
	z, err := npy.OpenNPZ(r, size)
	if err != nil {
		return nil, err
	}
	get := func(name string) (*npy.Array, error) { return z.Read(name) }
	a := &Attention{}
	ids, err := get("ids")
	if err != nil {
		return nil, err
	}
	toks, err := get("tokens")
	if err != nil {
		return nil, err
	}
	a.IDs, _ = ids.Data.([]int64)
	a.Tokens, _ = toks.Data.([]string)
	if slicesContains(z.Order(), "target_ids") {
		tids, err := get("target_ids")
		if err != nil {
			return nil, err
		}
		ttoks, err := get("target_tokens")
		if err != nil {
			return nil, err
		}
		a.TargetIDs, _ = tids.Data.([]int64)
		a.TargetTokens, _ = ttoks.Data.([]string)
	}
	layers, err := get("layers")
	if err != nil {
		return nil, err
	}
	kinds, err := get("layer_kinds")
	if err != nil {
		return nil, err
	}
	ls, _ := layers.Data.([]int64)
	ks, _ := kinds.Data.([]string)
	if len(ls) != len(ks) {
		return nil, fmt.Errorf("tableio: %d layers but %d layer kinds", len(ls), len(ks))
	}
	src, srcTok, tgt, tgtTok := a.IDs, a.Tokens, a.IDs, a.Tokens
	if a.TargetIDs != nil {
		tgt, tgtTok = a.TargetIDs, a.TargetTokens
	}
	for i, l := range ls {
		m, err := get(fmt.Sprintf("attn.L%d", l))
		if err != nil {
			return nil, err
		}
		w, ok := m.Data.([]float32)
		if !ok || len(m.Shape) != 3 {
			return nil, fmt.Errorf("tableio: attn.L%d is %s %v, not float32 [heads, queries, keys]", l, m.DType, m.Shape)
		}
		L := Layer{Layer: int(l), Kind: LayerKind(ks[i])}
		nh, nq, nk := m.Shape[0], m.Shape[1], m.Shape[2]
		for h := range nh {
			rows := make([][]float32, nq)
			for q := range rows {
				off := (h*nq + q) * nk
				rows[q] = w[off : off+nk]
			}
			L.Maps = append(L.Maps, rows)
			L.Heads = append(L.Heads, h)
		}
		if slicesContains(z.Order(), fmt.Sprintf("heads.L%d", l)) {
			hs, err := get(fmt.Sprintf("heads.L%d", l))
			if err != nil {
				return nil, err
			}
			for j, h := range hs.Data.([]int64) {
				L.Heads[j] = int(h)
			}
		}
		switch L.Kind {
		case Encoder:
			L.QueryIDs, L.QueryTokens, L.KeyIDs, L.KeyTokens = src, srcTok, src, srcTok
		case Cross:
			L.QueryIDs, L.QueryTokens, L.KeyIDs, L.KeyTokens = tgt, tgtTok, src, srcTok
		default:
			L.QueryIDs, L.QueryTokens, L.KeyIDs, L.KeyTokens = tgt, tgtTok, tgt, tgtTok
		}
		a.Layers = append(a.Layers, L)
	}
	return a, nil
}

func slicesContains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
