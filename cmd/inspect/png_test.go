package main

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// svgTexts parses an SVG with encoding/xml and returns its <text> elements by class,
// and how many <rect> cells its maps have.
func svgTexts(t *testing.T, data []byte) (map[string][]string, int) {
	t.Helper()
	texts := map[string][]string{}
	cells := 0
	dec := xml.NewDecoder(bytes.NewReader(data))
	inMap, class := false, ""
	root := ""
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("the SVG does not parse: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = e.Name.Local
			}
			attr := func(n string) string {
				for _, a := range e.Attr {
					if a.Name.Local == n {
						return a.Value
					}
				}
				return ""
			}
			switch e.Name.Local {
			case "g":
				inMap = attr("class") == "map"
			case "rect":
				if inMap {
					cells++
				}
			case "text":
				class = attr("class")
			}
		case xml.EndElement:
			if e.Name.Local == "g" {
				inMap = false
			}
		case xml.CharData:
			if class != "" {
				texts[class] = append(texts[class], string(e))
				class = ""
			}
		}
	}
	if root != "svg" {
		t.Fatalf("the document is <%s>, not <svg>", root)
	}
	return texts, cells
}

func has(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// --png FILE.svg writes an SVG of the same figure: a title naming the model (its
// config.json's "model"), the head and the kind, axis names and token labels, one cell
// per weight; success says where it wrote.
func TestDumpSVG(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "head.svg")
	stdout, stderr, code := inspect(t, "dump", model("attn2l"), "--ids", "1,2,3,4,5", "--layer", "1", "--head", "0", "--png", out)
	if code != 0 || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if want := "inspect: wrote " + out + " (L1H0, 5×5)\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	texts, cells := svgTexts(t, data)
	if title := texts["title"]; len(title) != 1 || title[0] != "attn2l · L1 H0 · self-attention (query × key)" {
		t.Errorf("title %q", title)
	}
	if !has(texts["axis"], "query") || !has(texts["axis"], "key") {
		t.Errorf("axis names %q", texts["axis"])
	}
	if len(texts["query-label"]) != 5 || len(texts["key-label"]) != 5 || texts["query-label"][0] != "1" {
		t.Errorf("token labels %q, %q", texts["query-label"], texts["key-label"])
	}
	if !has(texts["scale"], "sqrt scale") {
		t.Errorf("scale %q", texts["scale"])
	}
	if cells != 25 {
		t.Errorf("%d cells, want 5×5", cells)
	}
}

// Cross-attention is titled and labelled target × source, and keeps its shape: 3 target
// rows of 7 source cells; the grid, as SVG, has every head.
func TestDumpSVGCrossAndGrid(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "cross.SVG")
	_, stderr, code := inspect(t, "dump", model("encdec"), "--ids", "1,2,3,4,5,6,7", "--target-ids", "1,2,3", "--layer", "2", "--head", "0", "--png", out)
	if code != 0 || !strings.Contains(stderr, "(L2H0, 3×7)") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	data, _ := os.ReadFile(out)
	texts, cells := svgTexts(t, data)
	if len(texts["title"]) != 1 || !strings.Contains(texts["title"][0], "cross-attention (target × source)") || !strings.HasPrefix(texts["title"][0], "encdec · L2 H0") {
		t.Errorf("title %q", texts["title"])
	}
	if !has(texts["axis"], "target") || !has(texts["axis"], "source") || cells != 21 {
		t.Errorf("axes %q, %d cells", texts["axis"], cells)
	}
	grid := filepath.Join(dir, "grid.svg")
	if _, stderr, code := inspect(t, "dump", model("attn2l"), "--ids", "1,2,3", "--png", grid); code != 0 || !strings.Contains(stderr, "(grid, 2 layers × 4 heads)") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	data, _ = os.ReadFile(grid)
	texts, cells = svgTexts(t, data)
	if len(texts["head"]) != 8 || cells != 8*9 {
		t.Errorf("grid heads %q, %d cells", texts["head"], cells)
	}
}

// The extension chooses the format: .png is a PNG (not an SVG), anything else is refused
// in one sentence, as a usage error, before the model is even opened (a missing model is
// not reached), and nothing is written.
func TestDumpPictureFormat(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "head.png")
	if _, stderr, code := inspect(t, "dump", model("attn2l"), "--ids", "1,2,3", "--layer", "0", "--head", "1", "--png", out); code != 0 || !strings.Contains(stderr, "wrote "+out+" (L0H1, 3×3)") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("head.png: %v", err)
	}
	for _, name := range []string{"x.jpg", "x.PNG.txt", "noext"} {
		bad := filepath.Join(dir, name)
		for _, m := range []string{model("attn2l"), filepath.Join(dir, "missing.onnx")} {
			stdout, stderr, code := inspect(t, "dump", m, "--ids", "1,2", "--png", bad)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 || stdout != "" || len(lines) != 1 || !strings.Contains(stderr, bad) || !strings.Contains(stderr, ".png") || !strings.Contains(stderr, ".svg") {
				t.Errorf("--png %s (model %s): exit %d, stderr %q", name, m, code, stderr)
			}
			if _, err := os.Stat(bad); err == nil {
				t.Errorf("--png %s wrote a file", name)
			}
		}
	}
	// "-" is stdout, as PNG, with no "wrote" line.
	stdout, stderr, code := inspect(t, "dump", model("attn2l"), "--ids", "1,2", "--layer", "0", "--head", "0", "--png", "-")
	if code != 0 || !strings.HasPrefix(stdout, "\x89PNG") || strings.Contains(stderr, "wrote") {
		t.Errorf("--png -: exit %d, stdout %.8q, stderr %q", code, stdout, stderr)
	}
}
