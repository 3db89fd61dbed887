package tableio

import (
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// parquetBatch is the most rows put in one Arrow record before it is handed to the
// Parquet writer (which encodes it into the row group's pages at once).
const parquetBatch = 1 << 18

// writerProps are the Parquet settings of every file: Snappy pages, dictionary encoding
// (except the columns listed in plain, whose values hardly repeat), statistics, and the
// Arrow schema stored so pyarrow and pandas read dictionary columns back as such.
func writerProps(plain ...string) (*parquet.WriterProperties, pqarrow.ArrowWriterProperties) {
	opts := []parquet.WriterProperty{
		parquet.WithCompression(compress.Codecs.Snappy),
		parquet.WithDictionaryDefault(true),
		parquet.WithCreatedBy("attnscope"),
	}
	for _, p := range plain {
		opts = append(opts, parquet.WithDictionaryFor(p, false))
	}
	// The dump's integer columns run in order (a layer, a head, a query row, keys 0…T−1):
	// delta encoding stores them in a few bits a value without hashing each into a
	// dictionary, which was most of the writer's time.
	for _, p := range []string{"layer", "head", "query", "key", "query_id", "key_id"} {
		opts = append(opts, parquet.WithDictionaryFor(p, false), parquet.WithEncodingFor(p, parquet.Encodings.DeltaBinaryPacked))
	}
	// Statistics of a dictionary column cost a pass over each batch's indices; token
	// labels are not what a reader filters row groups by.
	for _, p := range []string{"query_token", "key_token"} {
		opts = append(opts, parquet.WithStatsFor(p, false))
	}
	return parquet.NewWriterProperties(opts...), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
}

var dictString = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}

// WriteParquet writes t as one Parquet row group: int64, double and string columns (a
// Dict column as a dictionary of strings), named as t's columns.
func WriteParquet(w io.Writer, t *Table) error {
	if err := t.Check(); err != nil {
		return err
	}
	fields := make([]arrow.Field, len(t.Columns))
	var plain []string
	for i, c := range t.Columns {
		fields[i] = arrow.Field{Name: c.Name}
		switch {
		case c.Kind == Int:
			fields[i].Type = arrow.PrimitiveTypes.Int64
		case c.Kind == Float:
			fields[i].Type = arrow.PrimitiveTypes.Float64
			plain = append(plain, c.Name)
		case c.Dict:
			fields[i].Type = dictString
		default:
			fields[i].Type = arrow.BinaryTypes.String
		}
	}
	schema := arrow.NewSchema(fields, nil)
	props, aprops := writerProps(plain...)
	fw, err := pqarrow.NewFileWriter(schema, nopCloser{w}, props, aprops)
	if err != nil {
		return err
	}
	mem := memory.DefaultAllocator
	cols := make([]arrow.Array, len(t.Columns))
	for i := range t.Columns {
		c := &t.Columns[i]
		switch {
		case c.Kind == Int:
			cols[i] = int64Array(c.Ints)
		case c.Kind == Float:
			cols[i] = array.NewFloat64Data(primitiveData(arrow.PrimitiveTypes.Float64, len(c.Floats), arrow.Float64Traits.CastToBytes(c.Floats)))
		case c.Dict:
			d := newDict(c.Strings)
			cols[i] = d.array(mem, d.index)
			d.release()
		default:
			b := array.NewStringBuilder(mem)
			b.AppendValues(c.Strings, nil)
			cols[i] = b.NewArray()
		}
	}
	rec := array.NewRecordBatch(schema, cols, int64(t.Rows()))
	defer rec.Release()
	for _, c := range cols {
		c.Release()
	}
	if err := fw.Write(rec); err != nil {
		fw.Close()
		return err
	}
	return fw.Close()
}

// nopCloser keeps the Parquet writer's Close from closing the caller's writer.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func primitiveData(t arrow.DataType, n int, b []byte) arrow.ArrayData {
	return array.NewData(t, n, []*memory.Buffer{nil, memory.NewBufferBytes(b)}, nil, 0, 0)
}

func int32Array(v []int32) arrow.Array {
	return array.NewInt32Data(primitiveData(arrow.PrimitiveTypes.Int32, len(v), arrow.Int32Traits.CastToBytes(v)))
}

func int64Array(v []int64) arrow.Array {
	return array.NewInt64Data(primitiveData(arrow.PrimitiveTypes.Int64, len(v), arrow.Int64Traits.CastToBytes(v)))
}

// dict is a label column's dictionary: the distinct labels of one axis, and each
// position's index among them. Positions past the labels (see Layer) get "".
type dict struct {
	distinct []string
	index    []int32
	values   arrow.Array
}

// newDict makes the dictionary of labels for an axis of n positions.
func newDict(labels []string, n ...int) *dict {
	size := len(labels)
	if len(n) > 0 {
		size = max(size, n[0])
	}
	d := &dict{index: make([]int32, size)}
	seen := map[string]int32{}
	for i := range size {
		l := label(labels, i)
		j, ok := seen[l]
		if !ok {
			j = int32(len(d.distinct))
			seen[l] = j
			d.distinct = append(d.distinct, l)
		}
		d.index[i] = j
	}
	b := array.NewStringBuilder(memory.DefaultAllocator)
	b.AppendValues(d.distinct, nil)
	d.values = b.NewArray()
	return d
}

// array is the dictionary array of indices idx (copied by the writer before idx is reused).
func (d *dict) array(mem memory.Allocator, idx []int32) arrow.Array {
	indices := array.NewInt32Data(primitiveData(arrow.PrimitiveTypes.Int32, len(idx), arrow.Int32Traits.CastToBytes(idx)))
	defer indices.Release()
	return array.NewDictionaryArray(dictString, indices, d.values)
}

func (d *dict) release() { d.values.Release() }

// WriteAttentionParquet writes the dump's rows that flt keeps, in AttentionColumns: int32
// layer, head, query and key, int64 query_id and key_id (token ids, as in .npz), float32
// weight, and query_token and key_token as dictionaries of strings (pandas: categories).
// Integer columns are delta-encoded, token columns dictionary-encoded, pages Snappy. Each layer is its own row group (split further
// past Parquet's 64 Mi rows); rows are encoded a batch at a time, so memory holds one
// layer's encoded pages, not its rows.
func WriteAttentionParquet(w io.Writer, a *Attention, flt Filter) error {
	i32, i64 := arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Int64
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "layer", Type: i32}, {Name: "head", Type: i32}, {Name: "query", Type: i32}, {Name: "key", Type: i32},
		{Name: "query_token", Type: dictString}, {Name: "key_token", Type: dictString},
		{Name: "weight", Type: arrow.PrimitiveTypes.Float32},
		{Name: "query_id", Type: i64}, {Name: "key_id", Type: i64},
	}, nil)
	props, aprops := writerProps("weight")
	fw, err := pqarrow.NewFileWriter(schema, nopCloser{w}, props, aprops)
	if err != nil {
		return err
	}
	mem := memory.DefaultAllocator
	var (
		layer, head, query, key []int32
		qid, kid                []int64
		qtok, ktok              []int32
		weight                  []float32
		keyBuf                  []int
	)
	flush := func(qd, kd *dict) error {
		if len(weight) == 0 {
			return nil
		}
		cols := []arrow.Array{
			int32Array(layer), int32Array(head), int32Array(query), int32Array(key),
			qd.array(mem, qtok), kd.array(mem, ktok),
			array.NewFloat32Data(primitiveData(arrow.PrimitiveTypes.Float32, len(weight), arrow.Float32Traits.CastToBytes(weight))),
			int64Array(qid), int64Array(kid),
		}
		rec := array.NewRecordBatch(schema, cols, int64(len(weight)))
		for _, c := range cols {
			c.Release()
		}
		err := fw.WriteBuffered(rec)
		rec.Release()
		layer, head, query, key, qid, kid = layer[:0], head[:0], query[:0], key[:0], qid[:0], kid[:0]
		qtok, ktok, weight = qtok[:0], ktok[:0], weight[:0]
		return err
	}
	fail := func(err error) error {
		fw.Close()
		return err
	}
	for _, L := range a.Layers {
		nq, nk := 0, 0
		if len(L.Maps) > 0 && len(L.Maps[0]) > 0 {
			nq, nk = len(L.Maps[0]), len(L.Maps[0][0])
		}
		qd, kd := newDict(L.QueryTokens, nq), newDict(L.KeyTokens, nk)
		if err := fw.NewBufferedRowGroupChecked(); err != nil {
			return fail(err)
		}
		for hi, rows := range L.Maps {
			for q, row := range rows {
				ks := flt.keys(row, q, L.Causal, &keyBuf)
				qID := id(L.QueryIDs, q)
				for i := range ks.n {
					k := ks.at(i)
					layer = append(layer, int32(L.Layer))
					head = append(head, int32(L.Heads[hi]))
					query = append(query, int32(q))
					key = append(key, int32(k))
					qtok = append(qtok, qd.index[q])
					ktok = append(ktok, kd.index[k])
					weight = append(weight, row[k])
					qid = append(qid, qID)
					kid = append(kid, id(L.KeyIDs, k))
				}
				if len(weight) >= parquetBatch {
					if err := flush(qd, kd); err != nil {
						return fail(err)
					}
				}
			}
		}
		err := flush(qd, kd)
		qd.release()
		kd.release()
		if err != nil {
			return fail(err)
		}
	}
	return fw.Close()
}
