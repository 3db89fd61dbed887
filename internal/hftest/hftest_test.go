// Package hftest checks the GPT-2 exports that users download from the Hugging Face hub —
// transformers through torch.onnx.export, and optimum's exporter — against transformers'
// own output_attentions=True. The fixtures under testdata/hf/ are made by
// `python -m export.hf_gpt2 --fixtures testdata/hf` (a random 2-layer, 4-head GPT-2).
package hftest

import (
	"path/filepath"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tokenizer"
)

func TestHFGPT2ExportsMatchOutputAttentions(t *testing.T) {
	testutil.RequireORT(t)
	for _, name := range []string{"transformers", "optimum"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(testutil.Root(), "testdata", "hf", name)
			ref := testutil.ReadReference(t, dir)
			m, att := testutil.FindAttention(t, filepath.Join(dir, "model.onnx"))
			if len(att.Sites) != ref.NLayers {
				t.Fatalf("%d attention sites, want %d", len(att.Sites), ref.NLayers)
			}
			s, err := session.Open(m, session.Options{Device: "cpu"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, run := range ref.Runs {
				res, err := s.Run(run.IDs)
				if err != nil {
					t.Fatal(err)
				}
				if d := testutil.MaxAbsDiff(res.Logits, run.Logits.Data); d > 1e-4 {
					t.Errorf("logits differ from transformers by %g", d)
				}
				for l, want := range run.Attention {
					if res.Heads(l) != ref.NHeads {
						t.Fatalf("layer %d: %d heads, want %d", l, res.Heads(l), ref.NHeads)
					}
					var got []float32
					for _, head := range res.Attn[l] {
						for _, row := range head {
							got = append(got, row...)
						}
					}
					if d := testutil.MaxAbsDiff(got, want.Data); d > 1e-5 {
						t.Errorf("T=%d layer %d: attention differs from output_attentions by %g", len(run.IDs), l, d)
					}
				}
			}
			tok, err := tokenizer.Find(filepath.Join(dir, "model.onnx"), "", ref.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			tok.Close()
		})
	}
}
