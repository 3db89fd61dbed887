// Package hftest checks the GPT-2 exports that users download from the Hugging Face hub —
// transformers through torch.onnx.export, and optimum's exporter — against transformers'
// own output_attentions=True. The fixtures under testdata/hf/ are made by
// `python -m export.hf_gpt2 --fixtures testdata/hf` (a random 2-layer, 4-head GPT-2).
package hftest

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/tokenizer"
)

// mismatches compares one run's attention with transformers' output_attentions: the same
// number of layers, each [heads][query][key] of the recorded shape, every value within tol
// (NaN fails). It returns one line per mismatch.
func mismatches(attn [][][][]float32, run testutil.Run, tol float64) []string {
	var bad []string
	if len(attn) != len(run.Attention) {
		return []string{fmt.Sprintf("%d layers, transformers has %d", len(attn), len(run.Attention))}
	}
	for l, want := range run.Attention {
		shape := []int{len(attn[l]), 0, 0}
		if len(attn[l]) > 0 {
			shape[1] = len(attn[l][0])
			if len(attn[l][0]) > 0 {
				shape[2] = len(attn[l][0][0])
			}
		}
		if len(want.Shape) != 4 || shape[0] != want.Shape[1] || shape[1] != want.Shape[2] || shape[2] != want.Shape[3] {
			bad = append(bad, fmt.Sprintf("layer %d: [heads, query, key] %v, transformers has %v", l, shape, want.Shape))
			continue
		}
		if d := testutil.MaxAbsDiff(testutil.Flatten(attn[l]), want.Data); d > tol {
			bad = append(bad, fmt.Sprintf("layer %d: attention differs from output_attentions by %g", l, d))
		}
	}
	return bad
}

// transpose exchanges query and key of every head: what a session that read the
// probabilities with the wrong stride would return.
func transpose(attn [][][][]float32) [][][][]float32 {
	out := make([][][][]float32, len(attn))
	for l, heads := range attn {
		out[l] = make([][][]float32, len(heads))
		for h, rows := range heads {
			t := make([][]float32, len(rows[0]))
			for k := range t {
				t[k] = make([]float32, len(rows))
				for q := range rows {
					t[k][q] = rows[q][k]
				}
			}
			out[l][h] = t
		}
	}
	return out
}

func TestHFGPT2ExportsMatchOutputAttentions(t *testing.T) {
	for _, name := range []string{"transformers", "optimum"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(testutil.Root(), "testdata", "hf", name)
			ref := testutil.ReadReference(t, dir)
			_, att := testutil.FindAttention(t, filepath.Join(dir, "model.onnx"))
			if len(att.Sites) != ref.NLayers {
				t.Fatalf("%d attention sites, want %d", len(att.Sites), ref.NLayers)
			}
			s := testutil.OpenSession(t, filepath.Join(dir, "model.onnx"))
			if len(ref.Runs) == 0 {
				t.Fatal("reference.json has no runs")
			}
			for _, run := range ref.Runs {
				res, err := s.Run(run.IDs)
				if err != nil {
					t.Fatal(err)
				}
				if d := testutil.MaxAbsDiff(res.Logits, run.Logits.Data); d > ref.LogitsTolerance() {
					t.Errorf("T=%d: logits differ from transformers by %g", len(run.IDs), d)
				}
				for _, b := range mismatches(res.Attn, run, ref.AttentionTolerance()) {
					t.Errorf("T=%d %s", len(run.IDs), b)
				}
				checkCaught(t, res, run, ref.AttentionTolerance())
			}
			tok, err := tokenizer.Find(filepath.Join(dir, "model.onnx"), "", ref.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			tok.Close()
		})
	}
}

// checkCaught proves the comparison above can fail: the session's own result, transposed,
// with one value NaN, or with its last layer dropped, is a mismatch.
func checkCaught(t *testing.T, res *result.Result, run testutil.Run, tol float64) {
	t.Helper()
	if len(run.IDs) < 2 {
		return
	}
	nan := transpose(transpose(res.Attn)) // a deep copy
	nan[0][0][1][0] = float32(math.NaN())
	for name, bad := range map[string][][][][]float32{
		"transposed":      transpose(res.Attn),
		"one NaN":         nan,
		"last layer lost": res.Attn[:len(res.Attn)-1],
	} {
		if len(mismatches(bad, run, tol)) == 0 {
			t.Errorf("T=%d: a result %s passes the comparison with output_attentions", len(run.IDs), name)
		}
	}
}
