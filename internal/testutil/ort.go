package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
)

// RequireORT loads onnxruntime. A library named by the environment that does not load fails
// the test; when none is named and none is installed, the test is skipped, or, under CI,
// fails (see Skip). A plain `go test ./...` uses what `make setup` put under lib/.
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
		Skip(t, "onnxruntime is not installed: %v", err)
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
