// Package testutil finds the project's test inputs (committed models, ../shared fixtures)
// and reads the PyTorch reference files written by export/.
package testutil

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
)

// Root is the repository's root folder.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Models returns the folders of the committed test models (testdata/models/*) that hold
// one model.onnx; a split encoder–decoder (split-encdec: encoder_model.onnx and
// decoder_model.onnx) has tests of its own.
func Models(t testing.TB) []string {
	dirs, err := filepath.Glob(filepath.Join(Root(), "testdata", "models", "*", "model.onnx"))
	for i, p := range dirs {
		dirs[i] = filepath.Dir(p)
	}
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no committed test models under testdata/models (regenerate with `make fixtures`)")
	}
	sort.Strings(dirs)
	return dirs
}

// Shared returns ../shared/<rel> beside the repository. When it is absent the test is
// skipped with a message, or, under CI, fails (see Skip).
func Shared(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(Root(), "..", "shared", rel)
	if _, err := os.Stat(p); err != nil {
		Skip(t, "%s is not present (the shared fixtures live in ../shared beside the repository)", p)
	}
	return p
}

// Tensor is a flat row-major tensor of a reference file.
type Tensor struct {
	Shape []int     `json:"shape"`
	Data  []float32 `json:"data"`
}

// Run is one forward pass recorded by PyTorch at export time. An encoder–decoder's run
// has the source in IDs and the target in DecoderIDs (nil for one-sequence models).
type Run struct {
	IDs        []int64 `json:"ids"`
	DecoderIDs []int64 `json:"decoder_ids"`
	// PrefixIDs, when not empty, were run first and their past state fed to this run
	// (a merged decoder's use-cache branch); a plain run has none.
	PrefixIDs []int64  `json:"prefix_ids"`
	Logits    Tensor   `json:"logits"`
	Attention []Tensor `json:"attention"`
}

// Reference is export/'s reference.json: PyTorch's logits and attention per run.
type Reference struct {
	Model      string   `json:"model"`
	Opset      int      `json:"opset"`
	NLayers    int      `json:"n_layers"`
	NHeads     int      `json:"n_heads"`
	VocabSize  int      `json:"vocab_size"`
	NPositions int      `json:"n_positions"`
	Inputs     []string `json:"inputs"`
	Runs       []Run    `json:"runs"`
	// Tolerance loosens the comparison for models that do not compute in float32
	// (float16, int8 weights); absent means 1e-5 for attention and 1e-4 for logits.
	Tolerance *struct {
		Attention float64 `json:"attention"`
		Logits    float64 `json:"logits"`
	} `json:"tolerance"`
}

// AttentionTolerance is the largest difference from PyTorch's attention a test accepts.
func (r *Reference) AttentionTolerance() float64 {
	if r.Tolerance != nil && r.Tolerance.Attention > 0 {
		return r.Tolerance.Attention
	}
	return 1e-5
}

// LogitsTolerance is the largest difference from PyTorch's logits a test accepts.
func (r *Reference) LogitsTolerance() float64 {
	if r.Tolerance != nil && r.Tolerance.Logits > 0 {
		return r.Tolerance.Logits
	}
	return 1e-4
}

// PlainRuns are the runs without a prefix: those a session reproduces from their ids
// alone (and decoder ids).
func (r *Reference) PlainRuns() []Run {
	var out []Run
	for _, run := range r.Runs {
		if len(run.PrefixIDs) == 0 {
			out = append(out, run)
		}
	}
	return out
}

// ReadReference reads dir/reference.json.
func ReadReference(t testing.TB, dir string) *Reference {
	b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatalf("reading reference: %v", err)
	}
	ref := &Reference{}
	if err := json.Unmarshal(b, ref); err != nil {
		t.Fatalf("parsing %s/reference.json: %v", dir, err)
	}
	return ref
}
