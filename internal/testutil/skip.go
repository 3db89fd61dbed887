package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// CIEnv is the variable that marks a CI run: .ci/run exports CI=true, as most CI services do.
const CIEnv = "CI"

// InCI reports whether CI names a true value ("true", "1", …: strconv.ParseBool's spellings).
// Under CI, a test input that is missing is a failure, not a reason to skip.
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv(CIEnv))
	return err == nil && ci
}

// Skip skips the test with the message, or, under CI (see InCI), fails it with the same
// message: in CI a missing fixture, library or dependency means the set-up is broken, and a
// skip would report a green run that checked nothing. Use it for every "this input is not
// here" skip; a skip whose condition CI cannot fix (a CUDA check on a machine without CUDA)
// calls t.Skip itself with a "// legitimate skip:" comment saying why (TestNoBareSkips).
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (%s=%s: a missing test input fails under CI instead of skipping)", msg, CIEnv, os.Getenv(CIEnv))
		return
	}
	t.Skipf("skipping: %s", strings.TrimPrefix(msg, "skipping: "))
}

// PythonEnv names the Python interpreter that tests run (`make` sets it to .venv/bin/python).
const PythonEnv = "ATTNSCOPE_PYTHON"

// Python returns the interpreter tests should run: $ATTNSCOPE_PYTHON, else the repository's
// .venv/bin/python, else python3 on the PATH; it must run, and every module named must
// import in it. When there is no such interpreter, or a module does not import, the test is
// skipped — or, under CI, fails (see Skip).
func Python(t testing.TB, modules ...string) string {
	t.Helper()
	py := os.Getenv(PythonEnv)
	if py == "" {
		if p := filepath.Join(Root(), ".venv", "bin", "python"); exists(p) {
			py = p
		} else if p, err := exec.LookPath("python3"); err == nil {
			py = p
		}
	}
	if py == "" {
		Skip(t, "no Python interpreter: %s is not set, there is no .venv/bin/python and no python3 on the PATH", PythonEnv)
		return ""
	}
	out, err := exec.Command(py, "-c", "import "+strings.Join(append([]string{"sys"}, modules...), ", ")).CombinedOutput()
	if err != nil {
		Skip(t, "Python %s cannot import %s: %s", py, strings.Join(append([]string{"sys"}, modules...), ", "), lastLine(out, err))
		return ""
	}
	return py
}

// lastLine is the last line of a command's output (a Python traceback's error), or err.
func lastLine(out []byte, err error) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return err.Error()
}
