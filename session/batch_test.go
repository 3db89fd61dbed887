package session_test

import (
	"path/filepath"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

// A batch gives each sequence the logits and attention that running it alone gives.
func TestRunBatchEqualsRun(t *testing.T) {
	for _, dir := range testutil.Models(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			s := testutil.OpenSession(t, filepath.Join(dir, "model.onnx"))
			ref := testutil.ReadReference(t, dir)
			vocab := int64(s.Limits.Vocab)
			if vocab == 0 { // an embedding the graph hides (inside an If branch)
				vocab = int64(ref.VocabSize)
			}
			const tolA, tolL = 1e-5, 1e-5
			batch := [][]int64{seq(9, vocab), seq(9, vocab), seq(9, vocab)}
			for i := range batch[1] {
				batch[1][i] = (batch[1][i] + 7) % vocab
				batch[2][i] = (batch[2][i] * 3) % vocab
			}
			for round := 0; round < 2; round++ { // the second round reuses recycled buffers
				rs, err := s.RunBatch(batch)
				if err != nil {
					t.Fatal(err)
				}
				if len(rs) != len(batch) {
					t.Fatalf("%d results for %d sequences", len(rs), len(batch))
				}
				for b, ids := range batch {
					one, err := s.Run(ids)
					if err != nil {
						t.Fatal(err)
					}
					got := rs[b]
					if len(got.Tokens) != len(ids) || got.Tokens[3] != ids[3] {
						t.Fatalf("sequence %d: tokens %v", b, got.Tokens)
					}
					if d := testutil.MaxAbsDiff(got.Logits, one.Logits); len(got.Logits) != len(one.Logits) || d > tolL {
						t.Errorf("sequence %d: logits differ by %g (len %d vs %d)", b, d, len(got.Logits), len(one.Logits))
					}
					if len(got.Attn) != len(one.Attn) {
						t.Fatalf("sequence %d: %d layers, want %d", b, len(got.Attn), len(one.Attn))
					}
					for l := range one.Attn {
						if d := testutil.MaxAbsDiff(testutil.Flatten(got.Attn[l]), testutil.Flatten(one.Attn[l])); d > tolA {
							t.Errorf("sequence %d layer %d: attention differs by %g", b, l, d)
						}
					}
					checkRows(t, got.Attn[0], 1e-4)
					s.Recycle(one)
				}
				s.RecycleBatch(rs)
			}
		})
	}
}

func TestRunBatchErrors(t *testing.T) {
	s := testutil.OpenSession(t, filepath.Join(testutil.Root(), "testdata", "models", "attn1l", "model.onnx"))
	if _, err := s.RunBatch(nil); err == nil {
		t.Error("an empty batch ran")
	}
	if _, err := s.RunBatch([][]int64{{1, 2}, {1, 2, 3}}); err == nil {
		t.Error("a ragged batch ran")
	}
	if _, err := s.RunBatch([][]int64{{1, 2}, {1, 64}}); err == nil {
		t.Error("an id past the vocabulary ran")
	}
}
