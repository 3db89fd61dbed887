// Package analysis turns the attention and logits of a run into the numbers the
// interpretability literature uses: per-head scores, probe prompts, per-token loss, top-k
// predictions and the in-context-learning score.
//
// # Head scores
//
// A is one head's attention on one sequence of T tokens: rows are queries, each row sums
// to 1 (DESIGN.md). Positions are 0-based.
//
//	previous-token   mean over i ≥ 1 of A[i, i−1]
//	self             mean over all i of A[i, i]
//	first-token      mean over all i of A[i, 0]
//	entropy          mean over all i of −Σ_j A[i, j] ln A[i, j]   (nats; 0 ln 0 = 0)
//	induction        on the probe (below): mean over the second copy's positions i of
//	                 A[i, i−n+1], the token after the earlier occurrence of token i
//	duplicate-token  on the probe: mean over the second copy of A[i, i−n], the earlier
//	                 occurrence of token i itself
//
// Self and first-token include row 0, which in a causal model always puts all its weight
// on position 0 (so a perfect previous-token head has self 1/T and first-token 2/T).
// Scores over several sequences (probes, corpus windows) are the mean of the per-sequence
// scores. Induction and duplicate-token are computed on the probe; the others on the
// user's prompt, or a built-in English sample (NaturalText) when the model has a
// tokenizer and no prompt is given, or on the probe itself when there is neither.
//
// The probe is "n random tokens, then the same n again" (n = 50 by default, K sequences,
// seeded), optionally after a BOS token: the prompt of Olsson et al., "In-context Learning
// and Induction Heads" (2022), of TransformerLens's head detector
// (transformer_lens.head_detector) and of the ARENA induction-head exercises, which call
// a head an induction head when its score exceeds 0.4 (Threshold). Ids are drawn
// uniformly from the ordinary vocabulary (special tokens excluded when a tokenizer says
// which they are), distinct within a copy when the vocabulary allows, so that every token
// of the second copy has exactly one earlier occurrence.
//
// How these differ from TransformerLens's "mul" measure: detect_head scores a head as
// Σ(A ⊙ P) / ΣA for a 0/1 detection pattern P. ΣA is the number of rows (every row sums to
// 1), so its induction and duplicate-token scores divide the second copy's attention by all
// 2n (+1) rows rather than by the n rows that can show the pattern: for the same head its
// induction score is about half of ours (a perfect induction head scores 1 here and ≈ 0.5
// there). Its previous-token score divides by T rather than T−1, and its patterns come from
// token equality, so accidental repeats inside a copy add to its score; ours use positions.
//
// # Sink-discounted scores and labels
//
// Trained models often park much of a head's attention on position 0 whatever the query
// (an "attention sink"; on Llama-style models over a third of the heads have first-token
// ≥ 0.4), so first-token hides what else such a head does. The sink-discounted scores
// (HeadScores.InductionNoSink, PrevTokenNoSink, DuplicateNoSink, SelfNoSink) measure the
// patterns on each row with key 0 taken out and the rest renormalised:
//
//	m_i = Σ_{j≥1} A[i, j]   (= 1 − A[i, 0]; rows with m_i = 0 are skipped)
//	previous-token  mean over rows i ≥ 2 with m_i > 0 of A[i, i−1] / m_i
//	self            mean over rows i ≥ 2 with m_i > 0 of A[i, i] / m_i
//	induction       mean over the second copy's rows i with m_i > 0 of A[i, i−n+1] / m_i
//	duplicate-token mean over the second copy's rows i with m_i > 0 and i−n ≥ 1 of
//	                A[i, i−n] / m_i
//
// Rows 0 and 1 are left out of previous-token and self: row 1's previous token is key 0
// itself, and in a causal model row 1 without key 0 can only attend to itself. A row
// whose every weight is on key 0 tells nothing about the rest and is skipped, not counted
// as 0; a score with no row left (a pure sink head) is NaN. Over several sequences each is
// the mean of the per-sequence scores that are defined. The first-token score is the sink
// share; the plain scores and the CSV columns are unchanged.
//
// HeadScores.Label names a head by the largest sink-discounted score that reaches 0.4
// (ties go to the first of induction, prev-token, duplicate-token, self), "sink" when none
// does but first-token reaches 0.4, and "" otherwise; it returns the sink share beside the
// name. A head with 0.6 on key 0 and the rest on the previous token is "prev-token" with
// sink share 0.6, not "first-token".
//
// # Loss and in-context learning
//
// Loss at position p is the cross-entropy of the logits at p against token p+1 (nats);
// the last position has none. The in-context-learning score (Olsson et al. 2022) is the
// mean loss at a late position minus the mean loss at an early one, over many sequences:
// positions 500 and 50 when the sequences are long enough, otherwise stated positions
// (ICLPositions). Negative means the model predicts better later in the context.
//
// The Python reference export/scores.py implements the same formulas independently from
// PyTorch's own attention; testdata/scores holds its results and the tests compare.
package analysis
