package tableio

import (
	"bufio"
	"encoding/csv"
	"unicode"
	"unicode/utf8"

	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/attnscope/attnscope/internal/npy"
)

// Kind is a column's element type.
type Kind int

// The kinds of column.
const (
	Int    Kind = iota // int64
	Float              // float64
	String             // text
)

// Column is one named, typed column of a Table. Exactly the slice of its Kind is used.
type Column struct {
	Name    string
	Kind    Kind
	Ints    []int64
	Floats  []float64
	Strings []string
	// Digits are the significant digits a float is printed with in CSV and JSON (0: the
	// fewest that read back as the same float64).
	Digits int
	// NaN is how CSV prints a NaN float ("NaN" from Floats; "" leaves the cell empty).
	// JSON writes null for NaN and ±Inf; .npz and Parquet keep the value.
	NaN string
	// Dict asks Parquet to dictionary-encode a string column (token labels, names that
	// repeat). Parquet's writer dictionary-encodes every column while its dictionary stays
	// small; Dict only matters for how readers see it (pandas: a categorical column).
	Dict bool
}

// Ints is an int64 column.
func Ints(name string, v []int64) Column { return Column{Name: name, Kind: Int, Ints: v} }

// Floats is a float64 column printed with digits significant digits (0: shortest exact),
// NaN printed as "NaN".
func Floats(name string, v []float64, digits int) Column {
	return Column{Name: name, Kind: Float, Floats: v, Digits: digits, NaN: "NaN"}
}

// Strings is a text column.
func Strings(name string, v []string) Column { return Column{Name: name, Kind: String, Strings: v} }

// Len is the column's number of rows.
func (c *Column) Len() int {
	switch c.Kind {
	case Int:
		return len(c.Ints)
	case Float:
		return len(c.Floats)
	}
	return len(c.Strings)
}

// Table is a table of equally long columns, written row by row in CSV and JSON and column
// by column in .npz and Parquet.
type Table struct {
	Columns []Column
}

// Add appends columns and returns t, for building a table in one expression.
func (t *Table) Add(cols ...Column) *Table {
	t.Columns = append(t.Columns, cols...)
	return t
}

// Rows is the number of rows (0 for a table without columns).
func (t *Table) Rows() int {
	if len(t.Columns) == 0 {
		return 0
	}
	return t.Columns[0].Len()
}

// Check reports a table that cannot be written: columns of different lengths, two
// columns of one name, an empty name.
func (t *Table) Check() error {
	seen := map[string]bool{}
	for i := range t.Columns {
		c := &t.Columns[i]
		if c.Name == "" {
			return fmt.Errorf("tableio: column %d has no name", i)
		}
		if seen[c.Name] {
			return fmt.Errorf("tableio: two columns are named %s", c.Name)
		}
		seen[c.Name] = true
		if c.Len() != t.Rows() {
			return fmt.Errorf("tableio: column %s has %d rows, column %s %d", c.Name, c.Len(), t.Columns[0].Name, t.Rows())
		}
	}
	return nil
}

// Write writes t to w in format f.
func Write(w io.Writer, f Format, t *Table) error {
	if err := t.Check(); err != nil {
		return err
	}
	switch f {
	case CSV:
		return WriteCSV(w, t)
	case JSON:
		return WriteJSON(w, t)
	case NPZ:
		return WriteNPZ(w, t)
	case Parquet:
		return WriteParquet(w, t)
	}
	return fmt.Errorf("tableio: unknown format %q", f)
}

// WriteCSV writes a header line of the column names, then one line per row; text is quoted
// as encoding/csv quotes it.
func WriteCSV(w io.Writer, t *Table) error {
	if err := t.Check(); err != nil {
		return err
	}
	var buf []byte
	for i, c := range t.Columns {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = AppendCSVField(buf, c.Name)
	}
	buf = append(buf, '\n')
	if _, err := w.Write(buf); err != nil {
		return err
	}
	for r := range t.Rows() {
		buf = buf[:0]
		for i := range t.Columns {
			c := &t.Columns[i]
			if i > 0 {
				buf = append(buf, ',')
			}
			switch c.Kind {
			case Int:
				buf = strconv.AppendInt(buf, c.Ints[r], 10)
			case Float:
				if v := c.Floats[r]; math.IsNaN(v) {
					buf = append(buf, c.NaN...)
				} else {
					buf = appendFloat(buf, v, c.Digits)
				}
			case String:
				buf = AppendCSVField(buf, c.Strings[r])
			}
		}
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

func appendFloat(buf []byte, v float64, digits int) []byte {
	if digits <= 0 {
		digits = -1
	}
	return strconv.AppendFloat(buf, v, 'g', digits, 64)
}

// AppendCSVField appends s as one CSV field, quoted as encoding/csv quotes it.
func AppendCSVField(buf []byte, s string) []byte {
	if !csvNeedsQuotes(s) {
		return append(buf, s...)
	}
	var b strings.Builder
	cw := csv.NewWriter(&b)
	cw.Write([]string{s})
	cw.Flush()
	return append(buf, strings.TrimSuffix(b.String(), "\n")...)
}

// csvNeedsQuotes mirrors encoding/csv's fieldNeedsQuotes for the comma separator.
func csvNeedsQuotes(s string) bool {
	if s == "" {
		return false
	}
	if s == `\.` {
		return true
	}
	if strings.ContainsAny(s, ",\"\r\n") {
		return true
	}
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsSpace(r)
}

// WriteJSON writes one JSON array with an object per row, its keys the column names in
// column order; NaN and ±Inf are null.
func WriteJSON(w io.Writer, t *Table) error {
	if err := t.Check(); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	keys := make([][]byte, len(t.Columns))
	for i, c := range t.Columns {
		keys[i] = appendJSONString(nil, c.Name)
	}
	bw.WriteString("[")
	var buf []byte
	for r := range t.Rows() {
		buf = buf[:0]
		if r > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, "\n  {"...)
		for i := range t.Columns {
			c := &t.Columns[i]
			if i > 0 {
				buf = append(buf, ", "...)
			}
			buf = append(buf, keys[i]...)
			buf = append(buf, ": "...)
			switch c.Kind {
			case Int:
				buf = strconv.AppendInt(buf, c.Ints[r], 10)
			case Float:
				buf = appendJSONFloat(buf, c.Floats[r], c.Digits)
			case String:
				buf = appendJSONString(buf, c.Strings[r])
			}
		}
		buf = append(buf, '}')
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	if t.Rows() > 0 {
		bw.WriteString("\n")
	}
	bw.WriteString("]\n")
	return bw.Flush()
}

func appendJSONFloat(buf []byte, v float64, digits int) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(buf, "null"...)
	}
	return appendFloat(buf, v, digits)
}

func appendJSONFloat32(buf []byte, v float32) []byte {
	if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
		return append(buf, "null"...)
	}
	return strconv.AppendFloat(buf, float64(v), 'g', -1, 32)
}

// appendJSONString appends s as a JSON string (invalid UTF-8 becomes U+FFFD).
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			buf = append(buf, '\\', byte(r))
		case r == '\n':
			buf = append(buf, '\\', 'n')
		case r == '\r':
			buf = append(buf, '\\', 'r')
		case r == '\t':
			buf = append(buf, '\\', 't')
		case r < 0x20 || r == 0x2028 || r == 0x2029:
			buf = append(buf, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			buf = append(buf, string(r)...)
		}
	}
	return append(buf, '"')
}

// WriteNPZ writes one array per column, named as the column: int64, float64, or
// fixed-width unicode ('<U{n}', n the longest text's code points).
func WriteNPZ(w io.Writer, t *Table) error {
	if err := t.Check(); err != nil {
		return err
	}
	z := npy.NewNPZWriter(w)
	for i := range t.Columns {
		c := &t.Columns[i]
		a := &npy.Array{Shape: []int{c.Len()}}
		switch c.Kind {
		case Int:
			a.Data = c.Ints
		case Float:
			a.Data = c.Floats
		case String:
			a.Data = c.Strings
		}
		if err := z.WriteArray(c.Name, a); err != nil {
			return err
		}
	}
	return z.Close()
}

// FromRows builds a Table from column names and rows of values, for commands that build
// their tables a row at a time. A column's kind is its first non-nil value's: int, int32
// or int64 make an Int column, float32 or float64 a Float column (printed with digits
// significant digits, 0: shortest), string a String column; nil is NaN in a Float column.
// A value of another kind than its column's, or a row of another length, is an error.
func FromRows(names []string, rows [][]any, digits int) (*Table, error) {
	t := &Table{Columns: make([]Column, len(names))}
	for j, name := range names {
		c := Column{Name: name, Kind: -1, Digits: digits, NaN: "NaN"}
		for _, r := range rows {
			if len(r) != len(names) {
				return nil, fmt.Errorf("tableio: a row has %d values for %d columns", len(r), len(names))
			}
			if c.Kind < 0 {
				switch r[j].(type) {
				case int, int32, int64:
					c.Kind = Int
				case float32, float64:
					c.Kind = Float
				case string:
					c.Kind = String
				}
			}
		}
		if c.Kind < 0 {
			c.Kind = Float // no values, or all nil
		}
		for i, r := range rows {
			switch v := r[j].(type) {
			case int:
				if c.Kind == Int {
					c.Ints = append(c.Ints, int64(v))
					continue
				}
			case int32:
				if c.Kind == Int {
					c.Ints = append(c.Ints, int64(v))
					continue
				}
			case int64:
				if c.Kind == Int {
					c.Ints = append(c.Ints, v)
					continue
				}
			case float32:
				if c.Kind == Float {
					c.Floats = append(c.Floats, float64(v))
					continue
				}
			case float64:
				if c.Kind == Float {
					c.Floats = append(c.Floats, v)
					continue
				}
			case string:
				if c.Kind == String {
					c.Strings = append(c.Strings, v)
					continue
				}
			case nil:
				if c.Kind == Float {
					c.Floats = append(c.Floats, math.NaN())
					continue
				}
			}
			return nil, fmt.Errorf("tableio: column %s row %d: %T in a column of %s", name, i, r[j], kindName(c.Kind))
		}
		t.Columns[j] = c
	}
	return t, t.Check()
}

func kindName(k Kind) string {
	switch k {
	case Int:
		return "integers"
	case Float:
		return "floats"
	}
	return "text"
}
