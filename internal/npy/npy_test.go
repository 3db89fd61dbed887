package npy

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readFile(t *testing.T, name string) (*Array, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Read(f)
}

func TestReadNumpyFiles(t *testing.T) {
	cases := []struct {
		file  string
		dtype DType
		shape []int
		data  any
	}{
		{"f32.npy", Float32, []int{2, 3}, []float32{0, 0.25, 0.5, 0.75, 1, 1.25}},
		{"i64.npy", Int64, []int{2, 2}, []int64{1, -2, 3, 1 << 40}},
		{"i32.npy", Int32, []int{2}, []int32{7, -8}},
		{"bool.npy", Bool, []int{3}, []bool{true, false, true}},
		{"uni.npy", Unicode, []int{4}, []string{"a", "héllo", "Ġthe", "日本"}},
		{"scalar.npy", Float32, []int{}, []float32{3.5}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			a, err := readFile(t, c.file)
			if err != nil {
				t.Fatal(err)
			}
			if a.DType != c.dtype || !reflect.DeepEqual(a.Shape, c.shape) || !reflect.DeepEqual(a.Data, c.data) {
				t.Fatalf("got %v %v %v, want %v %v %v", a.DType, a.Shape, a.Data, c.dtype, c.shape, c.data)
			}
		})
	}
	a, err := readFile(t, "f64.npy")
	if err != nil {
		t.Fatal(err)
	}
	d := a.Data.([]float64)
	if d[0] != 1.5 || d[1] != -2.25 || !math.IsNaN(d[2]) {
		t.Fatalf("f64: %v", d)
	}
	a, err = readFile(t, "f16.npy")
	if err != nil {
		t.Fatal(err)
	}
	got := a.Float64s()
	want := []float64{0.5, -2, 65504, 5.960464477539063e-08}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("f16[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestReadRefuses(t *testing.T) {
	for file, want := range map[string]string{
		"big.npy":     "big-endian",
		"fortran.npy": "Fortran order",
		"object.npy":  "Python objects",
	} {
		_, err := readFile(t, file)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to mention %q", file, err, want)
		}
	}
	for name, data := range map[string][]byte{
		"not npy":   []byte("PK\x03\x04 hello there"),
		"empty":     nil,
		"truncated": HeaderBytes(DescrFloat32, []int{4})[:20],
		"short":     append(HeaderBytes(DescrFloat32, []int{4}), 1, 2, 3),
		"huge":      HeaderBytes(DescrFloat64, []int{1 << 30, 1 << 30}),
	} {
		if _, err := Read(bytes.NewReader(data)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestRoundTripAndHeaderPadding(t *testing.T) {
	arrays := []*Array{
		{Shape: []int{2, 2}, Data: []float32{1, 2, 3, float32(math.Inf(-1))}},
		{Shape: []int{3}, Data: []float64{0.1, 0.2, 0.3}},
		{Shape: []int{1}, Data: []int64{-5}},
		{Shape: []int{2}, Data: []int32{1, 2}},
		{Shape: []int{2}, Data: []bool{false, true}},
		{Shape: []int{1}, Data: []Half{0x3c00}},
		{Shape: []int{3}, Data: []string{"", "x", "ĠΩmega"}},
		{Shape: []int{0, 5}, Data: []float32{}},
	}
	for _, a := range arrays {
		var buf bytes.Buffer
		if err := Write(&buf, a); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		hlen := int(b[8]) | int(b[9])<<8
		if (10+hlen)%64 != 0 || b[10+hlen-1] != '\n' {
			t.Errorf("%T: header of %d bytes is not padded to 64", a.Data, 10+hlen)
		}
		got, err := Read(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Shape, a.Shape) || !reflect.DeepEqual(got.Data, a.Data) {
			t.Errorf("round trip: got %v %v, want %v %v", got.Shape, got.Data, a.Shape, a.Data)
		}
	}
}

func TestNPZ(t *testing.T) {
	var buf bytes.Buffer
	w := NewNPZWriter(&buf)
	m, err := w.Create("attn.L0", DescrFloat32, []int{2, 2, 2})
	if err != nil {
		t.Fatal(err)
	}
	m.Write(AppendFloat32s(nil, []float32{1, 0, 0.5, 0.5}))
	if _, err := w.Create("early", DescrInt64, []int{1}); err == nil {
		t.Fatal("a member started before the last was complete")
	}
	m.Write(AppendFloat32s(nil, []float32{1, 0, 0.25, 0.75}))
	if err := w.WriteArray("tokens", &Array{Shape: []int{2}, Data: []string{"a", "bc"}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	z, err := OpenNPZ(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if got := z.Names(); !reflect.DeepEqual(got, []string{"attn.L0", "tokens"}) {
		t.Fatalf("names %v", got)
	}
	a, err := z.Read("attn.L0")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Shape, []int{2, 2, 2}) || a.Data.([]float32)[7] != 0.75 {
		t.Fatalf("attn.L0 = %v %v", a.Shape, a.Data)
	}
	if _, err := z.Read("nope"); err == nil || !strings.Contains(err.Error(), "attn.L0, tokens") {
		t.Fatalf("missing member: %v", err)
	}
	// A flipped data byte fails the member's CRC-32.
	bad := bytes.Clone(buf.Bytes())
	i := bytes.Index(bad, AppendFloat32s(nil, []float32{0.25, 0.75}))
	bad[i] ^= 1
	z, _ = OpenNPZ(bytes.NewReader(bad), int64(len(bad)))
	if _, err := z.Read("attn.L0"); err == nil {
		t.Fatal("corrupt member read without a checksum error")
	}
}
