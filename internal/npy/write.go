package npy

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Descriptors of the element types attnscope writes.
const (
	DescrBool    = "|b1"
	DescrInt32   = "<i4"
	DescrInt64   = "<i8"
	DescrFloat16 = "<f2"
	DescrFloat32 = "<f4"
	DescrFloat64 = "<f8"
)

// DescrUnicode is the descriptor of fixed-width unicode elements of width code points.
func DescrUnicode(width int) string { return "<U" + strconv.Itoa(width) }

// HeaderBytes returns the preamble of a .npy file holding a C-order array of descr and
// shape: magic, version 1.0 (2.0 when the dictionary would not fit in 64 KiB), header
// length and the header dictionary, padded with spaces and a newline so the data starts
// at a multiple of 64 bytes.
func HeaderBytes(descr string, shape []int) []byte {
	var sb strings.Builder
	sb.WriteString("{'descr': '")
	sb.WriteString(descr)
	sb.WriteString("', 'fortran_order': False, 'shape': (")
	for i, d := range shape {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa(d))
	}
	if len(shape) == 1 {
		sb.WriteString(",")
	}
	sb.WriteString("), }")
	dict := sb.String()
	pre := 10 // magic 6 + version 2 + length 2
	if len(dict)+1+pre+63 > math.MaxUint16 {
		pre = 12
	}
	total := pre + len(dict) + 1
	pad := (64 - total%64) % 64
	hlen := len(dict) + pad + 1
	out := make([]byte, 0, pre+hlen)
	out = append(out, Magic...)
	if pre == 10 {
		out = append(out, 1, 0)
		out = binary.LittleEndian.AppendUint16(out, uint16(hlen))
	} else {
		out = append(out, 2, 0)
		out = binary.LittleEndian.AppendUint32(out, uint32(hlen))
	}
	out = append(out, dict...)
	for range pad {
		out = append(out, ' ')
	}
	return append(out, '\n')
}

// WriteHeader writes HeaderBytes(descr, shape) to w; the caller then writes the
// array's product(shape) elements in C order, little-endian.
func WriteHeader(w io.Writer, descr string, shape []int) error {
	_, err := w.Write(HeaderBytes(descr, shape))
	return err
}

// Write writes a whole array: its header and data. Data must be one of the slice types
// Array documents, holding product(Shape) elements; a []string is written as Unicode of
// width Width (or of its longest element, in code points, when Width is 0).
func Write(w io.Writer, a *Array) error {
	n := product(a.Shape)
	var descr string
	var body []byte
	switch d := a.Data.(type) {
	case []bool:
		descr, body = DescrBool, make([]byte, len(d))
		for i, v := range d {
			if v {
				body[i] = 1
			}
		}
	case []int32:
		descr, body = DescrInt32, AppendInt32s(nil, d)
	case []int64:
		descr, body = DescrInt64, AppendInt64s(nil, d)
	case []Half:
		descr = DescrFloat16
		for _, v := range d {
			body = binary.LittleEndian.AppendUint16(body, uint16(v))
		}
	case []float32:
		descr, body = DescrFloat32, AppendFloat32s(nil, d)
	case []float64:
		descr, body = DescrFloat64, AppendFloat64s(nil, d)
	case []string:
		width := a.Width
		if width == 0 {
			width = UnicodeWidth(d)
		}
		descr, body = DescrUnicode(width), AppendUnicode(nil, d, width)
	default:
		return fmt.Errorf("npy: cannot write %T", a.Data)
	}
	if l := reflectLen(a.Data); l != n {
		return fmt.Errorf("npy: %d elements for shape %v", l, a.Shape)
	}
	if err := WriteHeader(w, descr, a.Shape); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

func reflectLen(d any) int {
	switch d := d.(type) {
	case []bool:
		return len(d)
	case []int32:
		return len(d)
	case []int64:
		return len(d)
	case []Half:
		return len(d)
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case []string:
		return len(d)
	}
	return -1
}

// UnicodeWidth is the width a '<U{n}' array needs for ss: the most code points in any of
// them (at least 1, as numpy's own minimum).
func UnicodeWidth(ss []string) int {
	w := 1
	for _, s := range ss {
		w = max(w, utf8.RuneCountInString(s))
	}
	return w
}

// AppendUnicode appends ss as fixed-width UTF-32LE elements of width code points each,
// zero-padded; longer strings are cut (a caller that wants them whole uses UnicodeWidth).
// Invalid UTF-8 becomes U+FFFD.
func AppendUnicode(b []byte, ss []string, width int) []byte {
	for _, s := range ss {
		k := 0
		for _, r := range s {
			if k == width {
				break
			}
			b = binary.LittleEndian.AppendUint32(b, uint32(r))
			k++
		}
		for ; k < width; k++ {
			b = append(b, 0, 0, 0, 0)
		}
	}
	return b
}

// AppendFloat32s appends vs little-endian.
func AppendFloat32s(b []byte, vs []float32) []byte {
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// AppendFloat64s appends vs little-endian.
func AppendFloat64s(b []byte, vs []float64) []byte {
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	return b
}

// AppendInt64s appends vs little-endian.
func AppendInt64s(b []byte, vs []int64) []byte {
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

// AppendInt32s appends vs little-endian.
func AppendInt32s(b []byte, vs []int32) []byte {
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return b
}

// littleEndian is whether this machine stores numbers as .npy's '<' types do.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Float32Bytes returns v's own memory as little-endian '<f4' bytes, without copying, on a
// little-endian machine; elsewhere it returns AppendFloat32s(nil, v). The bytes alias v:
// write them before v changes.
func Float32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	if !littleEndian {
		return AppendFloat32s(nil, v)
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}
