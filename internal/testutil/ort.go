package testutil

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
)

// RequireORT loads onnxruntime, skipping the test when it is not installed and the
// environment does not name it. `make test` names it, so CI cannot skip silently; a plain
// `go test ./...` uses what `make setup` put under lib/.
func RequireORT(t testing.TB) {
	t.Helper()
	lib := ""
	if os.Getenv(session.LibraryEnv) == "" {
		if p := filepath.Join(Root(), "lib", "libonnxruntime.so"); exists(p) {
			lib = p
		}
	}
	if _, err := session.Init(lib); err != nil {
		if os.Getenv(session.LibraryEnv) != "" {
			t.Fatal(err)
		}
		t.Skipf("skipping: %v", err)
	}
}

// OpenSession loads the model at path and opens a CPU session on it, closed when the test
// ends.
func OpenSession(t testing.TB, path string) *session.Session {
	t.Helper()
	RequireORT(t)
	m, err := onnxgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Open(m, session.Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// MaxAbsDiff is the largest |a[i] − b[i]|; +Inf when the lengths differ.
func MaxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// Flatten lays one layer's [head][query][key] attention out row-major, as in reference.json.
func Flatten(heads [][][]float32) []float32 {
	var out []float32
	for _, rows := range heads {
		for _, row := range rows {
			out = append(out, row...)
		}
	}
	return out
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// FindAttention loads the model at path and finds its attention sites, failing the test
// on any error.
func FindAttention(t testing.TB, path string) (*onnxgraph.Model, *onnxgraph.Attention) {
	t.Helper()
	m, err := onnxgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	att, err := onnxgraph.FindAttention(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, att
}

// ExpectError checks err against a table case's expected error: when want is "" any error
// fails the test and ExpectError returns false; otherwise err must contain want, and
// ExpectError returns true (the case is done).
func ExpectError(t testing.TB, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	return true
}
