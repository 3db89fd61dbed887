package session_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/session"
)

// openSplit joins dir's encoder and decoder files into one model and opens a CPU session
// on it, closed when the test ends.
func openSplit(t *testing.T, dir, encName, decName string, opts session.Options) *session.Session {
	t.Helper()
	testutil.RequireORT(t)
	enc, err := onnxgraph.Load(filepath.Join(dir, encName))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := onnxgraph.Load(filepath.Join(dir, decName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxgraph.JoinEncoderDecoder(enc, dec)
	if err != nil {
		t.Fatal(err)
	}
	opts.Device = "cpu"
	s, err := session.Open(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The split BART that export/split_encdec.py wrote (optimum's encoder_model.onnx +
// decoder_model.onnx or decoder_model_merged.onnx) runs as one encoder–decoder: encoder self-attention, then per
// decoder layer its self-attention and cross-attention, each equal to transformers' own
// attention within 1e-5, labelled source × source, target × target and target × source.
func TestSplitEncDecMatchesPyTorch(t *testing.T) {
	for _, decoder := range []string{"decoder_model.onnx", "decoder_model_merged.onnx"} {
		t.Run(decoder, func(t *testing.T) { splitMatchesPyTorch(t, decoder) })
	}
}

// splitMatchesPyTorch is TestSplitEncDecMatchesPyTorch for one of the fixture's decoders:
// the plain one, or the merged one (an If on use_cache_branch, fed false).
func splitMatchesPyTorch(t *testing.T, decoder string) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "split-encdec")
	ref := testutil.ReadReference(t, dir)
	s := openSplit(t, dir, "encoder_model.onnx", decoder, session.Options{})
	if !s.Seq2Seq() {
		t.Fatal("the joined model is not seen as an encoder–decoder")
	}
	if len(s.Attention.Sites) != ref.NLayers {
		t.Fatalf("%d attention sites, want %d", len(s.Attention.Sites), ref.NLayers)
	}
	if s.Limits.Vocab != ref.VocabSize {
		t.Errorf("vocabulary %d, want %d", s.Limits.Vocab, ref.VocabSize)
	}
	wantSides := [][2]result.Side{
		{result.SourceSide, result.SourceSide},
		{result.TargetSide, result.TargetSide}, {result.TargetSide, result.SourceSide},
		{result.TargetSide, result.TargetSide}, {result.TargetSide, result.SourceSide},
	}
	for pass := 0; pass < 2; pass++ { // the second pass reuses recycled buffers
		for i, run := range ref.Runs {
			res, err := s.RunPair(run.IDs, run.DecoderIDs)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Source, run.IDs) || !slices.Equal(res.Tokens, run.DecoderIDs) {
				t.Fatalf("run %d: source %v tokens %v", i, res.Source, res.Tokens)
			}
			if len(res.Attn) != len(run.Attention) {
				t.Fatalf("run %d: %d layers, want %d", i, len(res.Attn), len(run.Attention))
			}
			for l, want := range run.Attention {
				if got := [2]result.Side{res.QuerySide(l), res.KeySide(l)}; got != wantSides[l] {
					t.Errorf("run %d layer %d: sides %v, want %v", i, l, got, wantSides[l])
				}
				if res.Cross(l) != s.Attention.Sites[l].Cross {
					t.Errorf("run %d layer %d: Cross %v but the site says %v", i, l, res.Cross(l), s.Attention.Sites[l].Cross)
				}
				if d := testutil.MaxAbsDiff(testutil.Flatten(res.Attn[l]), want.Data); d > 1e-5 {
					t.Errorf("run %d layer %d (%s): max abs diff %.3g > 1e-5", i, l, s.Attention.Sites[l].Node, d)
				}
			}
			if d := testutil.MaxAbsDiff(res.Logits, run.Logits.Data); d > 1e-4 {
				t.Errorf("run %d: logits differ by %.3g", i, d)
			}
			s.Recycle(res)
		}
	}
	// Source and target of one length: the sides come from the graph, not the shapes.
	tgt := ref.Runs[0].DecoderIDs
	res, err := s.RunPair(tgt, tgt)
	if err != nil {
		t.Fatal(err)
	}
	for l := range res.Attn {
		if got := [2]result.Side{res.QuerySide(l), res.KeySide(l)}; got != wantSides[l] {
			t.Errorf("S = T, layer %d: sides %v, want %v", l, got, wantSides[l])
		}
	}
}

// Heads of a joined model can be switched off like those of a single-graph one: an
// ablated decoder self-attention head's row changes nothing upstream (the encoder's map
// stays) and the run differs downstream.
func TestSplitEncDecAblation(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "split-encdec")
	ref := testutil.ReadReference(t, dir)
	s := openSplit(t, dir, "encoder_model.onnx", "decoder_model.onnx", session.Options{Ablation: true})
	run := ref.Runs[0]
	clean, err := s.RunPair(run.IDs, run.DecoderIDs)
	if err != nil {
		t.Fatal(err)
	}
	if why := s.CanAblate(1, ablate.Zero); why != nil {
		t.Fatalf("the decoder's first self-attention cannot be ablated: %v", why)
	}
	cleanLogits := slices.Clone(clean.Logits)
	cleanEnc := slices.Clone(testutil.Flatten(clean.Attn[0]))
	if err := s.SetAblation(&ablate.Ablation{Off: []ablate.Head{{Layer: 1, Head: 0}}}); err != nil {
		t.Fatal(err)
	}
	off, err := s.RunPair(run.IDs, run.DecoderIDs)
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.MaxAbsDiff(testutil.Flatten(off.Attn[0]), cleanEnc); d > 0 {
		t.Errorf("ablating a decoder head changed the encoder's attention by %g", d)
	}
	if d := testutil.MaxAbsDiff(off.Logits, cleanLogits); d == 0 {
		t.Error("ablating L1H0 changed nothing in the logits")
	}
}

// Vespa's random encoder and decoder (two files from another exporter, an additive float
// encoder_attention_mask that stays an input of its own) join into the model that
// testutil.MergedVespa builds by hand, with the same attention.
func TestSplitVespaJoin(t *testing.T) {
	dir := filepath.Join(testutil.Shared(t, "fixtures"), vespa)
	s := openSplit(t, dir, "random_encoder.onnx", "random_decoder.onnx", session.Options{})
	byHand := testutil.OpenSession(t, testutil.MergedVespa(t))
	var names []string
	for _, in := range onnxgraph.Inputs(s.Model) {
		names = append(names, in.Name)
	}
	if got := strings.Join(names, ","); got != "input_ids,attention_mask,decoder_input_ids,encoder_attention_mask" {
		t.Errorf("inputs %s", got)
	}
	src, tgt := []int64{3, 14, 15, 92, 65}, []int64{2, 7, 1}
	a, err := s.RunPair(src, tgt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := byHand.RunPair(src, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Attn) != len(b.Attn) {
		t.Fatalf("%d layers, want %d", len(a.Attn), len(b.Attn))
	}
	for l := range a.Attn {
		if d := testutil.MaxAbsDiff(testutil.Flatten(a.Attn[l]), testutil.Flatten(b.Attn[l])); d > 1e-6 {
			t.Errorf("layer %d differs from the hand-joined model by %g", l, d)
		}
		if a.Cross(l) != b.Cross(l) {
			t.Errorf("layer %d: cross %v, want %v", l, a.Cross(l), b.Cross(l))
		}
	}
}

// Files that do not fit together are refused in one sentence.
func TestSplitJoinErrors(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "split-encdec")
	load := func(path string) *onnxgraph.Model {
		m, err := onnxgraph.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	enc, dec := load(filepath.Join(dir, "encoder_model.onnx")), load(filepath.Join(dir, "decoder_model.onnx"))
	other := load(filepath.Join(testutil.Root(), "testdata", "models", "attn1l", "model.onnx"))
	cases := []struct {
		name     string
		enc, dec *onnxgraph.Model
		want     string
	}{
		{"decoder without encoder_hidden_states", enc, other, "has no encoder_hidden_states input"},
		{"two decoders", dec, dec, "takes encoder_hidden_states itself, so it is a decoder"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := onnxgraph.JoinEncoderDecoder(c.enc, c.dec)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line containing %q", err, c.want)
			}
		})
	}
}
