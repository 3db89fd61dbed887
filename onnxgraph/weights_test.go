package onnxgraph_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// traceModel loads, finds and traces the model at path.
func traceModel(t *testing.T, path string) (*onnxgraph.Weights, error) {
	t.Helper()
	return onnxgraph.TraceWeights(testutil.FindAttention(t, path))
}

// layerWant is what a test knows of one traced layer.
type layerWant struct {
	heads, kv, dh int
	causal, cross bool
	norm, kvNorm  string // "" none, "layernorm", "rmsnorm"
	q, k, v       []int  // the reads sets
	bias          bool
}

// TestTraceWeightsCommitted checks the shapes, head counts, scale, mask, norms and reads of
// every committed model's traced weights against what its export script builds (the
// numbers in each folder's config.json).
func TestTraceWeightsCommitted(t *testing.T) {
	gpt2 := func(d, h int) []layerWant {
		return []layerWant{
			{heads: h, kv: h, dh: d, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true},
			{heads: h, kv: h, dh: d, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true, q: []int{0}, k: []int{0}, v: []int{0}},
		}
	}
	tests := []struct {
		model          string
		dModel, vocab  int
		nPos           int // 0: no learned positions
		unembed, tied  bool
		finalNorm      bool
		layers         []layerWant
		scale          float64
		embedNoteMatch string
	}{
		{model: "attn1l", dModel: 64, vocab: 64, nPos: 32, unembed: true, scale: 0.25, layers: []layerWant{
			{heads: 4, kv: 4, dh: 16, causal: true}}},
		{model: "attn2l", dModel: 64, vocab: 64, nPos: 32, unembed: true, scale: 0.25, layers: []layerWant{
			{heads: 4, kv: 4, dh: 16, causal: true},
			{heads: 4, kv: 4, dh: 16, causal: true, q: []int{0}, k: []int{0}, v: []int{0}}}},
		{model: "bert", dModel: 48, vocab: 128, nPos: 64, scale: 1 / math.Sqrt(24), layers: []layerWant{
			{heads: 2, kv: 2, dh: 24, norm: "layernorm", kvNorm: "layernorm", bias: true},
			{heads: 2, kv: 2, dh: 24, norm: "layernorm", kvNorm: "layernorm", bias: true, q: []int{0}, k: []int{0}, v: []int{0}}}},
		{model: "encdec", dModel: 32, vocab: 64, nPos: 32, unembed: true, tied: true, finalNorm: true, scale: 0.25, layers: []layerWant{
			{heads: 2, kv: 2, dh: 16, bias: true},
			{heads: 2, kv: 2, dh: 16, causal: true, bias: true},
			{heads: 2, kv: 2, dh: 16, cross: true, norm: "layernorm", kvNorm: "layernorm", bias: true, q: []int{1}, k: []int{0}, v: []int{0}},
			{heads: 2, kv: 2, dh: 16, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true, q: []int{1, 2}, k: []int{1, 2}, v: []int{1, 2}},
			{heads: 2, kv: 2, dh: 16, cross: true, norm: "layernorm", kvNorm: "layernorm", bias: true, q: []int{1, 2, 3}, k: []int{0}, v: []int{0}}}},
		{model: "fp16", dModel: 64, vocab: 128, nPos: 64, unembed: true, tied: true, finalNorm: true, scale: 0.25, layers: gpt2(16, 4)},
		{model: "fp16step", dModel: 32, vocab: 64, nPos: 32, unembed: true, tied: true, finalNorm: true, scale: 0.3535, layers: gpt2(8, 4)},
		{model: "gpt2tiny", dModel: 64, vocab: 128, nPos: 64, unembed: true, tied: true, finalNorm: true, scale: 0.25, layers: gpt2(16, 4)},
		{model: "gpt2tiny-op14", dModel: 64, vocab: 128, nPos: 64, unembed: true, tied: true, finalNorm: true, scale: 0.25, layers: gpt2(16, 4)},
		// Quantized: the unembedding is its own dequantized copy, not the fp32 embedding.
		{model: "gpt2tiny-int8", dModel: 64, vocab: 128, nPos: 64, unembed: true, finalNorm: true, scale: 0.25, layers: gpt2(16, 4)},
		{model: "merged", dModel: 32, vocab: 64, nPos: 32, unembed: true, tied: true, finalNorm: true, scale: 1 / math.Sqrt(8), layers: gpt2(8, 4)},
		{model: "gqa", dModel: 32, vocab: 64, nPos: 32, unembed: true, finalNorm: true, scale: 1 / math.Sqrt(8), layers: []layerWant{
			{heads: 4, kv: 2, dh: 8, causal: true, norm: "layernorm", kvNorm: "layernorm"},
			{heads: 4, kv: 2, dh: 8, causal: true, norm: "layernorm", kvNorm: "layernorm", q: []int{0}, k: []int{0}, v: []int{0}}}},
		{model: "mha", dModel: 32, vocab: 64, nPos: 32, unembed: true, tied: true, finalNorm: true, scale: 1 / math.Sqrt(8), layers: []layerWant{
			{heads: 4, kv: 4, dh: 8, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true},
			{heads: 4, kv: 4, dh: 8, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true, q: []int{0}, k: []int{0}, v: []int{0}}}},
		{model: "tlstyle", dModel: 32, vocab: 64, nPos: 32, unembed: true, finalNorm: true, scale: 1 / math.Sqrt(8), layers: []layerWant{
			{heads: 4, kv: 4, dh: 8, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true},
			{heads: 4, kv: 4, dh: 8, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true, q: []int{0}, k: []int{0}, v: []int{0}}}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			path := filepath.Join(testutil.Root(), "testdata", "models", tc.model, "model.onnx")
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("committed model %s is missing: %v", tc.model, err)
			}
			w, err := traceModel(t, path)
			if err != nil {
				t.Fatalf("TraceWeights: %v", err)
			}
			checkModelLevel(t, w, tc.dModel, tc.vocab, tc.nPos, tc.unembed, tc.tied, tc.finalNorm)
			if len(w.Layers) != len(tc.layers) {
				t.Fatalf("%d layers traced, want %d", len(w.Layers), len(tc.layers))
			}
			for l, want := range tc.layers {
				lw := w.Layers[l]
				checkLayer(t, w.DModel, lw, want)
				if math.Abs(lw.Scale-tc.scale) > 1e-4*tc.scale {
					t.Errorf("L%d: scale %g, want %g", l, lw.Scale, tc.scale)
				}
			}
		})
	}
}

func checkModelLevel(t *testing.T, w *onnxgraph.Weights, dModel, vocab, nPos int, unembed, tied, finalNorm bool) {
	t.Helper()
	if w.DModel != dModel || w.Vocab != vocab {
		t.Errorf("d_model %d, vocab %d; want %d, %d", w.DModel, w.Vocab, dModel, vocab)
	}
	if len(w.Embed) != vocab*dModel {
		t.Errorf("Embed has %d values, want %d×%d (note %q)", len(w.Embed), vocab, dModel, w.EmbedNote)
	}
	if w.NPos != nPos || len(w.PosEmbed) != nPos*dModel || (nPos == 0) != (w.PosNote != "") {
		t.Errorf("positions: NPos %d with %d values, note %q; want %d", w.NPos, len(w.PosEmbed), w.PosNote, nPos)
	}
	if unembed != (w.Unembed != nil) || (w.Unembed != nil && len(w.Unembed) != dModel*vocab) {
		t.Errorf("Unembed has %d values (note %q); want present=%v", len(w.Unembed), w.UnembedNote, unembed)
	}
	if !unembed && w.UnembedNote == "" {
		t.Errorf("no unembedding and no note saying why")
	}
	if w.UnembedTied != tied {
		t.Errorf("UnembedTied %v, want %v", w.UnembedTied, tied)
	}
	if finalNorm != (w.FinalNorm != nil) && unembed {
		t.Errorf("FinalNorm %v, want present=%v", w.FinalNorm != nil, finalNorm)
	}
}

func checkLayer(t *testing.T, dModel int, lw onnxgraph.LayerWeights, want layerWant) {
	t.Helper()
	l := lw.Layer
	if lw.Heads != want.heads || lw.KVHeads != want.kv || lw.DHead != want.dh {
		t.Errorf("L%d: heads %d, kv %d, d_head %d; want %d, %d, %d", l, lw.Heads, lw.KVHeads, lw.DHead, want.heads, want.kv, want.dh)
	}
	if lw.Causal != want.causal || lw.Cross != want.cross {
		t.Errorf("L%d: causal %v cross %v; want %v %v", l, lw.Causal, lw.Cross, want.causal, want.cross)
	}
	kind := func(n *onnxgraph.Norm) string {
		if n == nil {
			return ""
		}
		if len(n.Scale) != dModel || (n.Bias != nil && len(n.Bias) != dModel) {
			t.Errorf("L%d: norm %s has %d scale and %d bias values, want %d", l, n.Node, len(n.Scale), len(n.Bias), dModel)
		}
		return n.Kind
	}
	if kind(lw.Norm) != want.norm || kind(lw.KVNorm) != want.kvNorm {
		t.Errorf("L%d: norms %q/%q, want %q/%q", l, kind(lw.Norm), kind(lw.KVNorm), want.norm, want.kvNorm)
	}
	if !sameInts(lw.QReads, want.q) || !sameInts(lw.KReads, want.k) || !sameInts(lw.VReads, want.v) {
		t.Errorf("L%d: reads q%v k%v v%v; want q%v k%v v%v", l, lw.QReads, lw.KReads, lw.VReads, want.q, want.k, want.v)
	}
	type perHead struct {
		name  string
		m     [][]float64
		heads int
		size  int
	}
	shapes := []perHead{
		{"W_Q", lw.WQ, want.heads, dModel * want.dh}, {"W_K", lw.WK, want.kv, dModel * want.dh},
		{"W_V", lw.WV, want.kv, dModel * want.dh}, {"W_O", lw.WO, want.heads, want.dh * dModel},
	}
	if want.bias {
		shapes = append(shapes, perHead{"b_Q", lw.BQ, want.heads, want.dh}, perHead{"b_K", lw.BK, want.kv, want.dh}, perHead{"b_V", lw.BV, want.kv, want.dh})
		if len(lw.BO) != dModel {
			t.Errorf("L%d: b_O has %d values, want %d", l, len(lw.BO), dModel)
		}
	} else if lw.BQ != nil || lw.BK != nil || lw.BV != nil || lw.BO != nil {
		t.Errorf("L%d: biases found in a model without them", l)
	}
	for _, s := range shapes {
		if len(s.m) != s.heads {
			t.Errorf("L%d: %s has %d heads, want %d", l, s.name, len(s.m), s.heads)
			continue
		}
		for h, m := range s.m {
			if len(m) != s.size {
				t.Errorf("L%d: %s[%d] has %d values, want %d", l, s.name, h, len(m), s.size)
			}
		}
	}
}

func sameInts(a, b []int) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// checksum is circuits.json's position-sensitive checksum of a row-major matrix.
type checksum struct {
	Sum  float64 `json:"sum"`
	Frob float64 `json:"frob"`
	Pos  float64 `json:"pos"`
}

type checksumPair struct {
	Unfolded *checksum `json:"unfolded"`
	Folded   *checksum `json:"folded"`
}

type lnInfo struct {
	Kind string  `json:"kind"`
	Eps  float64 `json:"eps"`
}

// circuitsRef is the part of testdata/models/<name>/circuits.json (written by
// export/circuits_ref.py from the PyTorch parameters) that TraceWeights answers for.
type circuitsRef struct {
	SourceDetail string `json:"source_detail"`
	DModel       int    `json:"d_model"`
	Vocab        int    `json:"vocab_size"`
	Embedding    struct {
		WE      bool    `json:"W_E"`
		WPos    bool    `json:"W_pos"`
		WU      bool    `json:"W_U"`
		WUTied  bool    `json:"W_U_tied"`
		LnFinal *lnInfo `json:"ln_final"`
	} `json:"embedding"`
	Layers []struct {
		Kind    string  `json:"kind"`
		Causal  bool    `json:"causal"`
		NHeads  int     `json:"n_heads"`
		NKV     int     `json:"n_kv_heads"`
		DHead   int     `json:"d_head"`
		Scale   float64 `json:"scale"`
		LnQ     *lnInfo `json:"ln_q"`
		LnKV    *lnInfo `json:"ln_kv"`
		KVShare string  `json:"kv_stream"`
	} `json:"layers"`
	Composition []struct {
		From  int      `json:"from_layer"`
		To    int      `json:"to_layer"`
		QComp *float64 `json:"q_comp"`
		KComp *float64 `json:"k_comp"`
		VComp *float64 `json:"v_comp"`
	} `json:"composition"`
	Weights struct {
		WE     *checksum     `json:"W_E"`
		WPos   *checksum     `json:"W_pos"`
		WU     *checksumPair `json:"W_U"`
		Layers []struct {
			Layer int `json:"layer"`
			Heads []struct {
				Head   int           `json:"head"`
				KVHead int           `json:"kv_head"`
				WQ     *checksumPair `json:"W_Q"`
				WK     *checksumPair `json:"W_K"`
				WV     *checksumPair `json:"W_V"`
				WO     *checksumPair `json:"W_O"`
				BQ     *checksumPair `json:"b_Q"`
				BK     *checksumPair `json:"b_K"`
				BV     *checksumPair `json:"b_V"`
			} `json:"heads"`
			BO *checksum `json:"b_O"`
		} `json:"layers"`
	} `json:"weights"`
}

// sumOf computes the checksum of a rows × cols row-major matrix.
func sumOf(m []float64, rows, cols int) checksum {
	var c checksum
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			v := m[i*cols+j]
			c.Sum += v
			c.Frob += v * v
			c.Pos += v * float64((31*i+7*j)%13)
		}
	}
	c.Frob = math.Sqrt(c.Frob)
	return c
}

// closeSum reports whether two checksums of an n-element matrix agree to rtol of its size.
func closeSum(got, want checksum, n int) error {
	scale := want.Frob*math.Sqrt(float64(n))*13 + 1e-12
	for _, p := range [][3]any{{"sum", got.Sum, want.Sum}, {"frob", got.Frob, want.Frob}, {"pos", got.Pos, want.Pos}} {
		g, w := p[1].(float64), p[2].(float64)
		if math.Abs(g-w) > 1e-9*scale {
			return fmt.Errorf("%s %.12g, want %.12g", p[0], g, w)
		}
	}
	return nil
}

// foldRows returns diag(γ) W for W [rows × cols] (γ nil: W).
func foldRows(w []float64, gamma []float64, cols int) []float64 {
	if gamma == nil {
		return w
	}
	out := make([]float64, len(w))
	for i := range w {
		out[i] = w[i] * gamma[i/cols]
	}
	return out
}

// foldBias returns b + β W for W [d × D] (b may be nil; β nil: b).
func foldBias(b, beta, w []float64, dh int) []float64 {
	if beta == nil {
		return b
	}
	out := make([]float64, dh)
	copy(out, b)
	for i, bv := range beta {
		for j := 0; j < dh; j++ {
			out[j] += bv * w[i*dh+j]
		}
	}
	return out
}

// TestTraceWeightsMatchPyTorch compares every traced matrix, unfolded and with the
// normalisation folded in as the circuits package will fold it, with the checksums
// export/circuits_ref.py computed from the PyTorch parameters each committed model was
// exported from (circuits.json, testdata/models and the bundled models/), and the layer facts (heads, scale, causal, norms,
// cross-attention, which layers compose) with the same file.
func TestTraceWeightsMatchPyTorch(t *testing.T) {
	refs, _ := filepath.Glob(filepath.Join(testutil.Root(), "testdata", "models", "*", "circuits.json"))
	bundled, _ := filepath.Glob(filepath.Join(testutil.Root(), "models", "*", "circuits.json"))
	if len(refs) == 0 {
		t.Fatal("no testdata/models/*/circuits.json (regenerate with python -m export.circuits_ref --models testdata/models)")
	}
	for _, refPath := range append(refs, bundled...) {
		dir := filepath.Dir(refPath)
		name, _ := filepath.Rel(testutil.Root(), dir)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(refPath)
			if err != nil {
				t.Fatal(err)
			}
			var ref circuitsRef
			if err := json.Unmarshal(data, &ref); err != nil {
				t.Fatalf("%s: %v", refPath, err)
			}
			w, err := traceModel(t, filepath.Join(dir, "model.onnx"))
			if err != nil {
				t.Fatalf("TraceWeights: %v", err)
			}
			compareRef(t, w, &ref)
		})
	}
}

func compareRef(t *testing.T, w *onnxgraph.Weights, ref *circuitsRef) {
	t.Helper()
	d := w.DModel
	if d != ref.DModel || w.Vocab != ref.Vocab {
		t.Fatalf("d_model %d, vocab %d; want %d, %d", d, w.Vocab, ref.DModel, ref.Vocab)
	}
	e := ref.Embedding
	if (w.Embed != nil) != e.WE || (w.PosEmbed != nil) != e.WPos || (w.Unembed != nil) != e.WU || w.UnembedTied != e.WUTied {
		t.Errorf("embedding found %v, positions %v, unembedding %v tied %v; want %v %v %v %v", w.Embed != nil, w.PosEmbed != nil, w.Unembed != nil, w.UnembedTied, e.WE, e.WPos, e.WU, e.WUTied)
	}
	if e.WU {
		checkNorm(t, "final norm", w.FinalNorm, e.LnFinal)
	}
	if w.Embed != nil && ref.Weights.WE != nil {
		if err := closeSum(sumOf(w.Embed, w.Vocab, d), *ref.Weights.WE, len(w.Embed)); err != nil {
			t.Errorf("W_E: %v", err)
		}
	}
	if w.PosEmbed != nil && ref.Weights.WPos != nil {
		if err := closeSum(sumOf(w.PosEmbed, w.NPos, d), *ref.Weights.WPos, len(w.PosEmbed)); err != nil {
			t.Errorf("W_pos: %v", err)
		}
	}
	if w.Unembed != nil && ref.Weights.WU != nil {
		var gamma []float64
		if w.FinalNorm != nil {
			gamma = w.FinalNorm.Scale
		}
		checkPair(t, "W_U", w.Unembed, foldRows(w.Unembed, gamma, w.Vocab), d, w.Vocab, ref.Weights.WU)
	}
	if len(w.Layers) != len(ref.Layers) {
		t.Fatalf("%d layers traced, want %d", len(w.Layers), len(ref.Layers))
	}
	reads := map[[2]int][3]bool{}
	for _, c := range ref.Composition {
		r := reads[[2]int{c.To, c.From}]
		reads[[2]int{c.To, c.From}] = [3]bool{r[0] || c.QComp != nil, r[1] || c.KComp != nil, r[2] || c.VComp != nil}
	}
	for l, rl := range ref.Layers {
		lw := w.Layers[l]
		if lw.Heads != rl.NHeads || lw.KVHeads != rl.NKV || lw.DHead != rl.DHead {
			t.Errorf("L%d: heads %d kv %d d_head %d; want %d %d %d", l, lw.Heads, lw.KVHeads, lw.DHead, rl.NHeads, rl.NKV, rl.DHead)
			continue
		}
		// A model computed in float16 multiplies by the float16 rounding of 1/sqrt(d_head)
		// (0.353515625 for 8): that is its own scale, 1e-4 from PyTorch's.
		tol := 1e-6
		if strings.Contains(ref.SourceDetail, "float16") {
			tol = 5e-4
		}
		if math.Abs(lw.Scale-rl.Scale) > tol*rl.Scale {
			t.Errorf("L%d: scale %.9g, want %.9g", l, lw.Scale, rl.Scale)
		}
		if lw.Causal != rl.Causal || lw.Cross != (rl.Kind == "cross") {
			t.Errorf("L%d: causal %v cross %v; want %v, kind %s", l, lw.Causal, lw.Cross, rl.Causal, rl.Kind)
		}
		checkNorm(t, fmt.Sprintf("L%d Q norm", l), lw.Norm, rl.LnQ)
		checkNorm(t, fmt.Sprintf("L%d K/V norm", l), lw.KVNorm, rl.LnKV)
		var wantQ, wantK, wantV []int
		for e := 0; e < l; e++ {
			r := reads[[2]int{l, e}]
			if r[0] {
				wantQ = append(wantQ, e)
			}
			if r[1] {
				wantK = append(wantK, e)
			}
			if r[2] {
				wantV = append(wantV, e)
			}
		}
		if !sameInts(lw.QReads, wantQ) || !sameInts(lw.KReads, wantK) || !sameInts(lw.VReads, wantV) {
			t.Errorf("L%d: reads q%v k%v v%v; composition pairs say q%v k%v v%v", l, lw.QReads, lw.KReads, lw.VReads, wantQ, wantK, wantV)
		}
		compareLayerWeights(t, d, lw, ref, l)
	}
}

func checkNorm(t *testing.T, what string, got *onnxgraph.Norm, want *lnInfo) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s: got %v, want %v", what, got != nil, want != nil)
	case got.Kind != want.Kind || math.Abs(got.Epsilon-want.Eps) > 1e-6*want.Eps:
		t.Errorf("%s: %s eps %g, want %s eps %g", what, got.Kind, got.Epsilon, want.Kind, want.Eps)
	}
}

func checkPair(t *testing.T, what string, unfolded, folded []float64, rows, cols int, want *checksumPair) {
	t.Helper()
	if want == nil {
		t.Errorf("%s: traced, but circuits.json has none", what)
		return
	}
	if unfolded != nil && want.Unfolded != nil {
		if err := closeSum(sumOf(unfolded, rows, cols), *want.Unfolded, rows*cols); err != nil {
			t.Errorf("%s (unfolded): %v", what, err)
		}
	}
	if want.Folded != nil {
		if err := closeSum(sumOf(folded, rows, cols), *want.Folded, rows*cols); err != nil {
			t.Errorf("%s (folded): %v", what, err)
		}
	}
}

func compareLayerWeights(t *testing.T, d int, lw onnxgraph.LayerWeights, ref *circuitsRef, l int) {
	t.Helper()
	if l >= len(ref.Weights.Layers) {
		t.Errorf("L%d: circuits.json has no weights for it", l)
		return
	}
	rw := ref.Weights.Layers[l]
	dh := lw.DHead
	var gq, bq, gkv, bkv []float64
	if lw.Norm != nil {
		gq, bq = lw.Norm.Scale, lw.Norm.Bias
	}
	if lw.KVNorm != nil {
		gkv, bkv = lw.KVNorm.Scale, lw.KVNorm.Bias
	}
	for _, rh := range rw.Heads {
		h, kv := rh.Head, rh.KVHead
		if h >= lw.Heads || kv >= lw.KVHeads || kv != h/(lw.Heads/lw.KVHeads) {
			t.Errorf("L%dH%d: circuits.json pairs it with K/V head %d", l, h, kv)
			continue
		}
		name := fmt.Sprintf("L%dH%d ", l, h)
		checkPair(t, name+"W_Q", lw.WQ[h], foldRows(lw.WQ[h], gq, dh), d, dh, rh.WQ)
		checkPair(t, name+"W_K", lw.WK[kv], foldRows(lw.WK[kv], gkv, dh), d, dh, rh.WK)
		checkPair(t, name+"W_V", lw.WV[kv], foldRows(lw.WV[kv], gkv, dh), d, dh, rh.WV)
		checkPair(t, name+"W_O", lw.WO[h], lw.WO[h], dh, d, rh.WO)
		for _, b := range []struct {
			what string
			bs   [][]float64
			k    int
			w    []float64
			beta []float64
			pair *checksumPair
		}{
			{"b_Q", lw.BQ, h, lw.WQ[h], bq, rh.BQ},
			{"b_K", lw.BK, kv, lw.WK[kv], bkv, rh.BK},
			{"b_V", lw.BV, kv, lw.WV[kv], bkv, rh.BV},
		} {
			var own []float64
			if b.bs != nil {
				own = b.bs[b.k]
			}
			folded := foldBias(own, b.beta, b.w, dh)
			if folded == nil && b.pair == nil {
				continue
			}
			if b.pair == nil {
				t.Errorf("%s%s: traced a bias circuits.json does not have", name, b.what)
				continue
			}
			checkPair(t, name+b.what, own, folded, 1, dh, b.pair)
		}
	}
	switch {
	case lw.BO == nil && rw.BO == nil:
	case lw.BO == nil || rw.BO == nil:
		t.Errorf("L%d: b_O traced %v, circuits.json has %v", l, lw.BO != nil, rw.BO != nil)
	default:
		if err := closeSum(sumOf(lw.BO, 1, d), *rw.BO, d); err != nil {
			t.Errorf("L%d b_O: %v", l, err)
		}
	}
}

// TestTraceWeightsFixtures traces the third-party exports in ../shared/fixtures and checks
// what their config files say (heads, widths) and what each one's form implies.
func TestTraceWeightsFixtures(t *testing.T) {
	tests := []struct {
		path                  string
		layers, heads, kv, dh int
		dModel, vocab, nPos   int
		causal                bool
		rotary                bool
		unembed               bool
		norm                  string
	}{
		// GPT-2 from onnxruntime's transformer tools: com.microsoft.Attention with packed
		// QKV weights, EmbedLayerNormalization, SkipLayerNormalization.
		{path: "genai-tiny-gpt2-msattn/past.onnx", layers: 5, heads: 4, kv: 4, dh: 8, dModel: 32, vocab: 1000, nPos: 512, causal: true, unembed: true, norm: "layernorm"},
		// Llama with RotaryEmbedding, MultiHeadAttention, fp16 weights in an external file.
		{path: "genai-tiny-llama-fp16-mha-extdata/model.onnx", layers: 2, heads: 1, kv: 1, dh: 16, dModel: 16, vocab: 32000, causal: true, rotary: true, unembed: true, norm: "rmsnorm"},
		// nanoGPT (torch 1.13, opset 10): fused c_attn split by Split, tied lm_head.
		{path: "ezkl-nanogpt/network.onnx", layers: 4, heads: 4, kv: 4, dh: 16, dModel: 64, vocab: 65, nPos: 64, causal: true, unembed: true, norm: "layernorm"},
		// BERT (torch 1.1) with a masked-LM head: no linear unembedding.
		{path: "ort-bert-toy-torch11/bert_toy_optimized.onnx", layers: 5, heads: 4, kv: 4, dh: 8, dModel: 32, vocab: 99, nPos: 512, norm: "layernorm"},
		// GPT-2 with a past (torch 1.6): Gemm projections, Concat with the cache, decomposed
		// LayerNorm; the model outputs hidden states, not logits.
		{path: "ort-gpt2-past-torch16/gpt2_past.onnx", layers: 12, heads: 2, kv: 2, dh: 2, dModel: 4, vocab: 20, nPos: 8, causal: true, norm: "layernorm"},
		{path: "optimum-tiny-distilbert/model.onnx", layers: 2, heads: 2, kv: 2, dh: 1, dModel: 2, vocab: 30522, nPos: 512, norm: "layernorm"},
	}
	for _, tc := range tests {
		t.Run(strings.Split(tc.path, "/")[0], func(t *testing.T) {
			p := testutil.Shared(t, filepath.Join("fixtures", tc.path))
			w, err := traceModel(t, p)
			if err != nil {
				t.Fatalf("TraceWeights: %v", err)
			}
			if len(w.Layers) != tc.layers || w.DModel != tc.dModel || w.Vocab != tc.vocab || w.NPos != tc.nPos {
				t.Errorf("%d layers, d_model %d, vocab %d, n_pos %d; want %d, %d, %d, %d", len(w.Layers), w.DModel, w.Vocab, w.NPos, tc.layers, tc.dModel, tc.vocab, tc.nPos)
			}
			if tc.unembed != (w.Unembed != nil) {
				t.Errorf("unembedding found %v (note %q), want %v", w.Unembed != nil, w.UnembedNote, tc.unembed)
			}
			for l, lw := range w.Layers {
				want := layerWant{heads: tc.heads, kv: tc.kv, dh: tc.dh, causal: tc.causal, norm: tc.norm, kvNorm: tc.norm}
				for e := 0; e < l; e++ {
					want.q, want.k, want.v = append(want.q, e), append(want.k, e), append(want.v, e)
				}
				want.bias = lw.BO != nil // the forms differ; the shapes are what matters
				checkLayer(t, w.DModel, lw, want)
				if (lw.Rotary != "") != tc.rotary {
					t.Errorf("L%d: rotary %q, want %v", l, lw.Rotary, tc.rotary)
				}
				if math.Abs(lw.Scale-1/math.Sqrt(float64(tc.dh))) > 1e-4 {
					t.Errorf("L%d: scale %g, want 1/sqrt(%d)", l, lw.Scale, tc.dh)
				}
			}
		})
	}
}

// TestTraceWeightsPackedMatchesInitializer checks the com.microsoft.Attention form value
// by value: its W_Q, W_K, W_V are the column blocks of the packed [hidden, 3·hidden]
// weight, heads h·d_head + j, and W_O the rows of the c_proj weight.
func TestTraceWeightsPackedMatchesInitializer(t *testing.T) {
	p := testutil.Shared(t, "fixtures/genai-tiny-gpt2-msattn/past.onnx")
	w, err := traceModel(t, p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxgraph.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	full, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) ([]float32, []int64) {
		for _, init := range full.GetGraph().GetInitializer() {
			if init.GetName() == name {
				raw := init.GetRawData()
				out := make([]float32, len(raw)/4)
				for i := range out {
					out[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
				}
				return out, init.GetDims()
			}
		}
		t.Fatalf("no initializer %s", name)
		return nil, nil
	}
	for l, lw := range w.Layers {
		qkv, dims := read(fmt.Sprintf("transformer.h.%d.attn.c_attn.weight", l))
		proj, _ := read(fmt.Sprintf("transformer.h.%d.attn.c_proj.weight", l))
		d, n := int(dims[0]), int(dims[1])
		for h := 0; h < lw.Heads; h++ {
			for i := 0; i < d; i++ {
				for j := 0; j < lw.DHead; j++ {
					for part, m := range [][][]float64{lw.WQ, lw.WK, lw.WV} {
						want := float64(qkv[i*n+part*n/3+h*lw.DHead+j])
						if got := m[h][i*lw.DHead+j]; got != want {
							t.Fatalf("L%d part %d head %d [%d,%d] = %g, want %g", l, part, h, i, j, got, want)
						}
					}
					if got, want := lw.WO[h][j*d+i], float64(proj[(h*lw.DHead+j)*d+i]); got != want {
						t.Fatalf("L%d W_O head %d [%d,%d] = %g, want %g", l, h, j, i, got, want)
					}
				}
			}
		}
	}
}

// TestTraceWeightsRefusals checks that models whose weights cannot be traced get a
// *TraceError that names the site and the node, with a reason.
func TestTraceWeightsRefusals(t *testing.T) {
	tests := []struct {
		path, at, reason string
	}{
		// Q, K and V are graph inputs: there is no projection to find.
		{"onnx23-4d-qk-softmax/model.onnx", "", "graph input Q"},
		// The Gemm's weight is a graph input, not a stored constant.
		{"ort-attn-past-u8s8-quant/attention_past_state.onnx", "Gemm_60", "graph input"},
	}
	for _, tc := range tests {
		t.Run(strings.Split(tc.path, "/")[0], func(t *testing.T) {
			p := testutil.Shared(t, filepath.Join("fixtures", tc.path))
			_, err := traceModel(t, p)
			var te *onnxgraph.TraceError
			if !errors.As(err, &te) {
				t.Fatalf("TraceWeights error %v, want a *TraceError", err)
			}
			if te.Site == "" || te.At != tc.at || !strings.Contains(te.Reason, tc.reason) {
				t.Errorf("TraceError{Site %q, At %q, Reason %q}; want At %q and a reason about %q", te.Site, te.At, te.Reason, tc.at, tc.reason)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "layer 0 (") || strings.Count(msg, "\n") > 0 {
				t.Errorf("message %q is not one sentence naming the layer", msg)
			}
		})
	}
}

// TestTraceWeightsParsed traces a model parsed from memory (no file to read weights from
// beside the bytes), and refuses an Attention without sites.
func TestTraceWeightsParsed(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxgraph.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	att, err := onnxgraph.FindAttention(m)
	if err != nil {
		t.Fatal(err)
	}
	w, err := onnxgraph.TraceWeights(m, att)
	if err != nil {
		t.Fatalf("TraceWeights on a parsed model: %v", err)
	}
	loaded, err := traceModel(t, filepath.Join(testutil.Root(), "testdata", "models", "attn2l", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(w, loaded) {
		t.Errorf("a parsed model traces differently from the same file loaded")
	}
	if _, err := onnxgraph.TraceWeights(m, &onnxgraph.Attention{}); err == nil {
		t.Errorf("TraceWeights with no sites: no error")
	}
}

// TestTraceWeightsSplitEncoderDecoder traces optimum-style split exports: the decoder alone
// (its cross-attention projects the encoder_hidden_states input), and the merged decoder
// whose layers live inside an If, which must give the same weights.
func TestTraceWeightsSplitEncoderDecoder(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "split-encdec")
	if _, err := os.Stat(filepath.Join(dir, "decoder_model.onnx")); err != nil {
		t.Fatalf("committed model split-encdec is missing: %v", err)
	}
	dec, err := traceModel(t, filepath.Join(dir, "decoder_model.onnx"))
	if err != nil {
		t.Fatalf("decoder: %v", err)
	}
	self := layerWant{heads: 2, kv: 2, dh: 8, causal: true, norm: "layernorm", kvNorm: "layernorm", bias: true}
	cross := layerWant{heads: 2, kv: 2, dh: 8, cross: true, norm: "layernorm", bias: true}
	wants := []layerWant{self, cross, self, cross}
	wants[1].q = []int{0}
	wants[2].q, wants[2].k, wants[2].v = []int{0, 1}, []int{0, 1}, []int{0, 1}
	wants[3].q = []int{0, 1, 2}
	if len(dec.Layers) != 4 {
		t.Fatalf("%d decoder layers, want 4", len(dec.Layers))
	}
	for l, want := range wants {
		lw := dec.Layers[l]
		if want.cross {
			// The encoder output arrives as a graph input, normalised by the encoder.
			want.kvNorm = ""
			if lw.KVNorm != nil {
				t.Errorf("L%d: a K/V norm on the encoder_hidden_states input", l)
			}
		}
		checkLayer(t, dec.DModel, lw, want)
	}
	merged, err := traceModel(t, filepath.Join(dir, "decoder_model_merged.onnx"))
	if err != nil {
		t.Fatalf("merged decoder: %v", err)
	}
	for l := range dec.Layers {
		a, b := dec.Layers[l], merged.Layers[l]
		if !reflect.DeepEqual(a.WQ, b.WQ) || !reflect.DeepEqual(a.WK, b.WK) || !reflect.DeepEqual(a.WV, b.WV) || !reflect.DeepEqual(a.WO, b.WO) || !reflect.DeepEqual(a.BO, b.BO) {
			t.Errorf("L%d: the merged decoder's weights differ from the decoder's", l)
		}
	}
	if !reflect.DeepEqual(dec.Embed, merged.Embed) || !reflect.DeepEqual(dec.Unembed, merged.Unembed) {
		t.Errorf("the merged decoder's embedding or unembedding differs from the decoder's")
	}
	enc, err := traceModel(t, filepath.Join(dir, "encoder_model.onnx"))
	if err != nil {
		t.Fatalf("encoder: %v", err)
	}
	if len(enc.Layers) != 1 || enc.Unembed != nil || enc.UnembedNote == "" {
		t.Errorf("encoder: %d layers, unembedding %v (%q); want 1 layer and a note that there are no logits", len(enc.Layers), enc.Unembed != nil, enc.UnembedNote)
	}
}

// BART's learned positions start at row 2 of their table (the encoder adds 2 to the
// positions before its Gather): PosEmbed starts at that row.
func TestTraceWeightsPositionOffset(t *testing.T) {
	w, err := traceModel(t, filepath.Join(testutil.Root(), "testdata", "models", "split-encdec", "encoder_model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if w.PosOffset != 2 || w.NPos != 32 || len(w.PosEmbed) != 32*w.DModel {
		t.Fatalf("position offset %d, %d positions (%d values), want offset 2 and 32 positions of a 34-row table", w.PosOffset, w.NPos, len(w.PosEmbed))
	}
	// The table read from the file independently of Load (which keeps no payloads).
	data, err := os.ReadFile(filepath.Join(testutil.Root(), "testdata", "models", "split-encdec", "encoder_model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	var full pb.ModelProto
	if err := proto.Unmarshal(data, &full); err != nil {
		t.Fatal(err)
	}
	var table []float64
	for _, init := range full.GetGraph().GetInitializer() {
		if init.GetName() == "encoder.embed_positions.weight" {
			raw := init.GetRawData()
			for i := 0; i+4 <= len(raw); i += 4 {
				table = append(table, float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[i:]))))
			}
		}
	}
	if len(table) != 34*w.DModel {
		t.Fatalf("the table has %d values, want 34 × %d", len(table), w.DModel)
	}
	if d := testutil.MaxAbsDiff(w.PosEmbed, table[2*w.DModel:]); d != 0 {
		t.Errorf("PosEmbed differs from rows 2… of the table by %g", d)
	}
}
