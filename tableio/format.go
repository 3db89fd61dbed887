// Package tableio writes attnscope's tables — a generic table of typed columns, and the
// attention dump — as CSV, numpy .npz, Parquet or JSON, streaming to an io.Writer.
//
// Every format holds the same columns under the same names as the CSV. CSV and JSON print
// floats as the command chose (Column.Digits); .npz holds one array per column (int64,
// float64, fixed-width unicode) and Parquet one column per column (int64, double, string),
// so numpy.load(allow_pickle=False), pandas, pyarrow and DuckDB read them without a schema.
// The attention dump has its own writer (WriteAttention): dense float32 [heads, queries,
// keys] arrays per layer in .npz, row groups per layer in Parquet.
package tableio

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Format is an output format.
type Format string

// The formats a table can be written in.
const (
	CSV     Format = "csv"
	NPZ     Format = "npz"
	Parquet Format = "parquet"
	JSON    Format = "json"
)

// Formats lists every format, in the order help text names them.
var Formats = []Format{CSV, NPZ, Parquet, JSON}

// Binary reports whether f is a binary format (not for a terminal).
func (f Format) Binary() bool { return f == NPZ || f == Parquet }

// ParseFormat reads a --format value (any case).
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case CSV, NPZ, Parquet, JSON:
		return f, nil
	}
	return "", fmt.Errorf("unknown format %q", s)
}

// FromPath is the format a file name's extension names: .csv, .npz, .parquet (or .pq)
// and .json, in any case; ok is false for any other name.
func FromPath(path string) (f Format, ok bool) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return CSV, true
	case ".npz":
		return NPZ, true
	case ".parquet", ".pq":
		return Parquet, true
	case ".json":
		return JSON, true
	}
	return "", false
}
