// Package npy reads and writes numpy's .npy array format (versions 1.0, 2.0 and 3.0,
// little-endian, C order, never pickled objects) and writes .npz archives of them.
//
// Read returns a whole array; Header and WriteHeader let a caller stream the data of a
// large array itself. The writer of .npz archives is in npz.go; the reader (NPZ) opens
// an archive and reads its members by name.
package npy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Magic is the six bytes every .npy file starts with.
const Magic = "\x93NUMPY"

// DType is an element type attnscope reads or writes.
type DType int

// The element types Read understands. Unicode is numpy's fixed-width '<U{n}' (n UTF-32LE
// code points per element, shorter strings padded with zeros).
const (
	Invalid DType = iota
	Bool          // '|b1'
	Int32         // '<i4'
	Int64         // '<i8'
	Float16       // '<f2' (IEEE 754 half precision, kept as its bits)
	Float32       // '<f4'
	Float64       // '<f8'
	Unicode       // '<U{n}'
)

func (d DType) String() string {
	switch d {
	case Bool:
		return "bool"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Float16:
		return "float16"
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Unicode:
		return "unicode"
	}
	return "invalid"
}

// Half is an IEEE 754 half-precision number, kept as its 16 bits (the layout onnxruntime
// expects for a float16 tensor).
type Half uint16

// Float32 is h's value.
func (h Half) Float32() float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: frac × 2^-24
		v := float32(frac) * float32(1.0/(1<<24))
		if sign != 0 {
			v = -v
		}
		return v
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// Array is one array read from a .npy file. Data holds its elements in C order, as one of
// []bool, []int32, []int64, []Half, []float32, []float64 or []string, matching DType.
type Array struct {
	DType DType
	// Descr is numpy's type string as written in the header ('<f4', '<U7' …).
	Descr string
	// Shape is the array's shape; empty for a scalar (one element).
	Shape []int
	// Width is the number of code points per element of a Unicode array, else 0.
	Width int
	Data  any
}

// Len is the number of elements: the product of Shape (1 for a scalar).
func (a *Array) Len() int { return product(a.Shape) }

// Float64s returns the elements of a numeric or boolean array as float64 (true = 1), or
// nil for a Unicode array.
func (a *Array) Float64s() []float64 {
	switch d := a.Data.(type) {
	case []float64:
		return append([]float64(nil), d...)
	case []float32:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	case []Half:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v.Float32())
		}
		return out
	case []int64:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	case []int32:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	case []bool:
		out := make([]float64, len(d))
		for i, v := range d {
			if v {
				out[i] = 1
			}
		}
		return out
	}
	return nil
}

// Header is a parsed .npy header.
type Header struct {
	DType DType
	Descr string
	Shape []int
	Width int // code points per element of a Unicode array
}

// ElemSize is the number of bytes one element takes.
func (h Header) ElemSize() int {
	switch h.DType {
	case Bool:
		return 1
	case Float16:
		return 2
	case Int32, Float32:
		return 4
	case Int64, Float64:
		return 8
	case Unicode:
		return 4 * h.Width
	}
	return 0
}

// maxBytes bounds the data Read accepts (16 GiB), so a corrupt header's shape cannot
// overflow the size computation.
const maxBytes = 1 << 34

// ReadHeader reads the magic, version and header dictionary of a .npy stream, leaving r at
// the first byte of the data. It refuses what Read cannot represent: big-endian or Fortran-
// order data, object (pickled) arrays and other element types.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("not a .npy file: %s", shortRead(err))
	}
	if string(pre[:6]) != Magic {
		return Header{}, errors.New("not a .npy file: it does not start with numpy's magic bytes \\x93NUMPY")
	}
	major := pre[6]
	var n int
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, fmt.Errorf("truncated .npy header: %s", shortRead(err))
		}
		n = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, fmt.Errorf("truncated .npy header: %s", shortRead(err))
		}
		n = int(binary.LittleEndian.Uint32(b[:]))
		if n > 1<<24 {
			return Header{}, fmt.Errorf(".npy header claims %d bytes; the file is corrupt", n)
		}
	default:
		return Header{}, fmt.Errorf(".npy format version %d.%d is not supported (1.0, 2.0 and 3.0 are)", pre[6], pre[7])
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Header{}, fmt.Errorf("truncated .npy header: %s", shortRead(err))
	}
	var text string
	if major == 3 {
		if !utf8.Valid(buf) {
			return Header{}, errors.New(".npy header is not valid UTF-8")
		}
		text = string(buf)
	} else {
		text = string(buf) // latin-1; the keys we read are ASCII
	}
	return parseHeader(text)
}

func shortRead(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "the data ends too early"
	}
	return err.Error()
}

// parseHeader parses numpy's header dictionary, a Python literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
func parseHeader(s string) (Header, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return Header{}, fmt.Errorf(".npy header is not a dictionary: %q", clip(s))
	}
	descr, ok := dictValue(s, "descr")
	if !ok {
		return Header{}, errors.New(".npy header has no 'descr'")
	}
	fortran, ok := dictValue(s, "fortran_order")
	if !ok {
		return Header{}, errors.New(".npy header has no 'fortran_order'")
	}
	shapeText, ok := dictValue(s, "shape")
	if !ok {
		return Header{}, errors.New(".npy header has no 'shape'")
	}
	if fortran != "False" {
		return Header{}, errors.New("the .npy array is in Fortran order; save it in C order (numpy.ascontiguousarray) and try again")
	}
	d, err := unquote(descr)
	if err != nil {
		return Header{}, fmt.Errorf(".npy header's descr %s is not a simple type (structured arrays are not supported)", clip(descr))
	}
	h := Header{Descr: d}
	switch d {
	case "|b1", "<b1", "b1", "?", "|?":
		h.DType = Bool
	case "<i4":
		h.DType = Int32
	case "<i8":
		h.DType = Int64
	case "<f2":
		h.DType = Float16
	case "<f4":
		h.DType = Float32
	case "<f8":
		h.DType = Float64
	default:
		if strings.HasPrefix(d, "<U") {
			w, err := strconv.Atoi(d[2:])
			if err == nil && w >= 0 {
				h.DType, h.Width = Unicode, w
				break
			}
		}
		if strings.HasPrefix(d, ">") {
			return Header{}, fmt.Errorf("the .npy array is big-endian (%s); convert it with arr.astype(arr.dtype.newbyteorder('<')) and try again", d)
		}
		if strings.Contains(d, "O") {
			return Header{}, errors.New("the .npy array holds Python objects (pickled); only numeric, boolean and unicode arrays can be read")
		}
		return Header{}, fmt.Errorf("the .npy element type %s is not supported (float16/32/64, int32/64, bool and unicode are)", d)
	}
	shape, err := parseShape(shapeText)
	if err != nil {
		return Header{}, err
	}
	h.Shape = shape
	return h, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// dictValue returns the literal text of key's value in a flat Python dict literal.
func dictValue(s, key string) (string, bool) {
	for _, q := range []string{"'", `"`} {
		i := strings.Index(s, q+key+q)
		if i < 0 {
			continue
		}
		rest := strings.TrimLeft(s[i+len(key)+2:], " ")
		if !strings.HasPrefix(rest, ":") {
			continue
		}
		rest = strings.TrimLeft(rest[1:], " ")
		if rest == "" {
			return "", false
		}
		switch rest[0] {
		case '(':
			j := strings.IndexByte(rest, ')')
			if j < 0 {
				return "", false
			}
			return rest[:j+1], true
		case '\'', '"':
			j := strings.IndexByte(rest[1:], rest[0])
			if j < 0 {
				return "", false
			}
			return rest[:j+2], true
		default:
			j := strings.IndexAny(rest, ",}")
			if j < 0 {
				return "", false
			}
			return strings.TrimSpace(rest[:j]), true
		}
	}
	return "", false
}

func unquote(s string) (string, error) {
	if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1], nil
	}
	return "", errors.New("not a string")
}

func parseShape(s string) ([]int, error) {
	if len(s) < 2 || s[0] != '(' || s[len(s)-1] != ')' {
		return nil, fmt.Errorf(".npy header's shape %s is not a tuple", clip(s))
	}
	shape := []int{}
	for _, f := range strings.Split(s[1:len(s)-1], ",") {
		f = strings.TrimSpace(f)
		f = strings.TrimSuffix(f, "L")
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf(".npy header's shape %s is not a tuple of sizes", clip(s))
		}
		shape = append(shape, n)
	}
	return shape, nil
}

func product(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Read reads one .npy array from r: float32, float64, int64, int32, bool, float16 and
// fixed-width unicode, little-endian, C order. It reads exactly the array's bytes, so
// arrays stored one after another can be read in turn; data that ends early is an error.
func Read(r io.Reader) (*Array, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	n := product(h.Shape)
	size := h.ElemSize()
	if size > 0 && n > maxBytes/size {
		return nil, fmt.Errorf("the .npy array's shape %v is too large to read", h.Shape)
	}
	a := &Array{DType: h.DType, Descr: h.Descr, Shape: h.Shape, Width: h.Width}
	// Copy in chunks (never more than the array's bytes, so r is left just past it) so that
	// a header that lies about its size fails at the end of the data, not at an allocation
	// of the claimed size.
	var buf bytes.Buffer
	want := int64(n) * int64(size)
	if got, err := io.CopyN(&buf, r, want); err != nil || got != want {
		return nil, fmt.Errorf("the .npy data ends early: %d of %d bytes for shape %v %s", got, want, h.Shape, h.DType)
	}
	raw := buf.Bytes()
	le := binary.LittleEndian
	switch h.DType {
	case Bool:
		d := make([]bool, n)
		for i := range d {
			d[i] = raw[i] != 0
		}
		a.Data = d
	case Int32:
		d := make([]int32, n)
		for i := range d {
			d[i] = int32(le.Uint32(raw[4*i:]))
		}
		a.Data = d
	case Int64:
		d := make([]int64, n)
		for i := range d {
			d[i] = int64(le.Uint64(raw[8*i:]))
		}
		a.Data = d
	case Float16:
		d := make([]Half, n)
		for i := range d {
			d[i] = Half(le.Uint16(raw[2*i:]))
		}
		a.Data = d
	case Float32:
		d := make([]float32, n)
		for i := range d {
			d[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		a.Data = d
	case Float64:
		d := make([]float64, n)
		for i := range d {
			d[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		a.Data = d
	case Unicode:
		d := make([]string, n)
		var sb strings.Builder
		for i := range d {
			sb.Reset()
			for j := 0; j < h.Width; j++ {
				c := le.Uint32(raw[size*i+4*j:])
				if c == 0 {
					break
				}
				if c > utf8.MaxRune {
					c = utf8.RuneError
				}
				sb.WriteRune(rune(c))
			}
			d[i] = sb.String()
		}
		a.Data = d
	}
	return a, nil
}
