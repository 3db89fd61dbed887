package npy

import (
	"archive/zip"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// NPZWriter writes a .npz archive (what numpy.savez writes: a zip of .npy members, stored
// uncompressed) one member at a time, so an archive larger than memory can be streamed.
// archive/zip computes each member's CRC-32 as it is written and records a member's sizes
// after its data (a data descriptor), in zip64 form for a member or an archive past 4 GiB,
// which numpy's zipfile reads.
type NPZWriter struct {
	zw   *zip.Writer
	cur  *memberWriter
	seen map[string]bool
}

// NewNPZWriter starts an archive on w. Close must be called to write its directory.
func NewNPZWriter(w io.Writer) *NPZWriter {
	return &NPZWriter{zw: zip.NewWriter(w), seen: map[string]bool{}}
}

type memberWriter struct {
	w         io.Writer
	name      string
	remaining int64
}

func (m *memberWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > m.remaining {
		return 0, fmt.Errorf("npy: %s: more data than its shape holds", m.name)
	}
	n, err := m.w.Write(p)
	m.remaining -= int64(n)
	return n, err
}

// Create starts member name (numpy's key; ".npy" is added) holding an array of descr and
// shape, writes its header and returns the writer for exactly its data: product(shape)
// elements in C order, little-endian (see the Append functions). The previous member must
// have been written in full.
func (w *NPZWriter) Create(name, descr string, shape []int) (io.Writer, error) {
	if err := w.finish(); err != nil {
		return nil, err
	}
	if w.seen[name] {
		return nil, fmt.Errorf("npy: member %s written twice", name)
	}
	w.seen[name] = true
	var size int64
	switch {
	case descr == DescrBool:
		size = 1
	case descr == DescrFloat16:
		size = 2
	case descr == DescrInt32 || descr == DescrFloat32:
		size = 4
	case descr == DescrInt64 || descr == DescrFloat64:
		size = 8
	case strings.HasPrefix(descr, "<U"):
		h, err := parseHeader(fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (), }", descr))
		if err != nil {
			return nil, err
		}
		size = int64(4 * h.Width)
	default:
		return nil, fmt.Errorf("npy: cannot write element type %s", descr)
	}
	want := size
	for _, d := range shape {
		want *= int64(d)
	}
	head := HeaderBytes(descr, shape)
	fh := &zip.FileHeader{Name: name + ".npy", Method: zip.Store, Modified: time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)}
	zw, err := w.zw.CreateHeader(fh)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(head); err != nil {
		return nil, err
	}
	w.cur = &memberWriter{w: zw, name: name, remaining: want}
	return w.cur, nil
}

func (w *NPZWriter) finish() error {
	if w.cur != nil && w.cur.remaining != 0 {
		return fmt.Errorf("npy: member %s is %d bytes short of its shape", w.cur.name, w.cur.remaining)
	}
	w.cur = nil
	return nil
}

// WriteArray writes a whole member from an Array (see Write).
func (w *NPZWriter) WriteArray(name string, a *Array) error {
	if err := w.finish(); err != nil {
		return err
	}
	if w.seen[name] {
		return fmt.Errorf("npy: member %s written twice", name)
	}
	w.seen[name] = true
	zw, err := w.zw.CreateHeader(&zip.FileHeader{Name: name + ".npy", Method: zip.Store, Modified: time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		return err
	}
	return Write(zw, a)
}

// Close checks the last member is complete and writes the archive's central directory. It
// does not close the underlying writer.
func (w *NPZWriter) Close() error {
	if err := w.finish(); err != nil {
		return err
	}
	return w.zw.Close()
}

// NPZ is an opened .npz archive.
type NPZ struct {
	zr      *zip.Reader
	members map[string]*zip.File
	order   []string
}

// OpenNPZ opens the archive in r (size bytes long).
func OpenNPZ(r io.ReaderAt, size int64) (*NPZ, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("not a .npz archive: %w", err)
	}
	z := &NPZ{zr: zr, members: map[string]*zip.File{}}
	for _, f := range zr.File {
		name := strings.TrimSuffix(f.Name, ".npy")
		z.members[name] = f
		z.order = append(z.order, name)
	}
	return z, nil
}

// Names lists the archive's keys (member names without ".npy"), sorted.
func (z *NPZ) Names() []string {
	var out []string
	for k := range z.members {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Order lists the archive's keys in the order they were written.
func (z *NPZ) Order() []string { return append([]string(nil), z.order...) }

// Read reads member name, checking its CRC-32.
func (z *NPZ) Read(name string) (*Array, error) {
	f, ok := z.members[name]
	if !ok {
		return nil, fmt.Errorf("the .npz archive has no array %q (it has %s)", name, strings.Join(z.Names(), ", "))
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	a, err := Read(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// Drain to the end so the zip reader verifies the checksum.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return a, nil
}
