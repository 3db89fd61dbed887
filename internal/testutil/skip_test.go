package testutil

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Fatalf and Skipf instead of stopping the goroutine.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
}

// Under CI a missing input fails the test; elsewhere it skips it, with the same message.
func TestSkipPolicy(t *testing.T) {
	cases := []struct {
		ci        string
		wantFatal bool
	}{
		{"", false}, {"false", false}, {"0", false}, {"nonsense", false},
		{"true", true}, {"1", true}, {"TRUE", true},
	}
	for _, c := range cases {
		t.Run("CI="+c.ci, func(t *testing.T) {
			t.Setenv(CIEnv, c.ci)
			r := &recorder{TB: t}
			Skip(r, "%s is not present", "../shared/x")
			msg := r.skip
			if c.wantFatal {
				if r.fatal == "" || r.skip != "" {
					t.Fatalf("under CI=%s: fatal %q, skip %q; want a failure", c.ci, r.fatal, r.skip)
				}
				msg = r.fatal
			} else if r.skip == "" || r.fatal != "" {
				t.Fatalf("with CI=%q: fatal %q, skip %q; want a skip", c.ci, r.fatal, r.skip)
			}
			if !strings.Contains(msg, "../shared/x is not present") {
				t.Errorf("message %q does not say what is missing", msg)
			}
		})
	}
}

// Shared and Python follow the policy: an absent folder or module fails under CI.
func TestHelpersFailUnderCI(t *testing.T) {
	helpers := map[string]func(testing.TB){
		"Shared":           func(tb testing.TB) { Shared(tb, "no-such-folder-for-testutil") },
		"Python module":    func(tb testing.TB) { Python(tb, "no_such_module_for_testutil") },
		"Python not there": func(tb testing.TB) { Python(tb) },
	}
	for name, h := range helpers {
		t.Run(name, func(t *testing.T) {
			if name == "Python not there" {
				t.Setenv(PythonEnv, filepath.Join(t.TempDir(), "no-python"))
			}
			for _, ci := range []string{"true", ""} {
				t.Setenv(CIEnv, ci)
				r := &recorder{TB: t}
				h(r)
				if (ci == "true") != (r.fatal != "") || (ci == "true") == (r.skip != "") {
					t.Errorf("CI=%q: fatal %q, skip %q", ci, r.fatal, r.skip)
				}
			}
		})
	}
}
