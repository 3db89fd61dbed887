package testutil

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SkipMarker is the comment that declares a direct t.Skip legitimate: it must be on the
// line of the call or the line above, followed by why CI cannot make the condition go
// away (for example: "// legitimate skip: CUDA is present, so there is no error to see").
const SkipMarker = "legitimate skip:"

// bareSkips lists, as "path:line", every t.Skip, t.Skipf or t.SkipNow (and b.…) in the
// repository's Go files that neither goes through Skip (which fails under CI) nor carries
// SkipMarker.
func bareSkips(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".venv", "build", "bin", "lib", "node_modules", "testdata", "vendor":
				if path != root {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || path == filepath.Join(Root(), "internal", "testutil", "skip.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
		if err != nil {
			// Someone's file in the middle of an edit: the compiler reports it.
			return nil
		}
		lines := strings.Split(string(src), "\n")
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "Skip", "Skipf", "SkipNow":
			default:
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "testutil" {
				return true
			}
			line := fset.Position(call.Pos()).Line
			marked := strings.Contains(lines[line-1], SkipMarker)
			if line >= 2 && strings.Contains(lines[line-2], SkipMarker) {
				marked = true
			}
			if !marked {
				rel, _ := filepath.Rel(root, path)
				found = append(found, fmt.Sprintf("%s:%d", rel, line))
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return found
}

// Every skip in the repository either goes through testutil.Skip (a failure under CI) or
// says why it is legitimate: a plain t.Skip for a missing input would turn a broken CI set-up
// into a green run that checked nothing.
func TestNoBareSkips(t *testing.T) {
	if found := bareSkips(t, Root()); len(found) > 0 {
		t.Errorf("%d skips neither use testutil.Skip (which fails under CI=true) nor carry a %q comment saying why CI cannot meet their condition:\n  %s",
			len(found), "// "+SkipMarker, strings.Join(found, "\n  "))
	}
}

// The checker finds a bare skip, accepts a marked one and one through testutil.Skip.
func TestBareSkipsChecker(t *testing.T) {
	dir := t.TempDir()
	src := `package x

import "testing"

func TestA(t *testing.T) {
	t.Skip("not there")
}

func TestB(t *testing.T) {
	// legitimate skip: the machine has CUDA
	t.Skip("cuda")
	t.Skipf("x %d", 1) // legitimate skip: a FIFO cannot be made here
	testutil.Skip(t, "fixture absent")
}

func BenchmarkC(b *testing.B) {
	b.SkipNow()
}
`
	if err := os.WriteFile(filepath.Join(dir, "x_test.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(bareSkips(t, dir), ",")
	if got != "x_test.go:6,x_test.go:17" {
		t.Fatalf("bare skips %q, want x_test.go:6,x_test.go:17", got)
	}
}
