package ablate

import (
	"math"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/result"
)

// fakeRunner makes a one-layer, two-head run whose logits at every position favour the
// token (position + number of heads off) % vocab, so each ablation has a known effect.
type fakeRunner struct {
	vocab    int
	logits   bool
	bytes    int64
	batches  []int // sizes of the RunAblations calls
	recycled int
}

func (f *fakeRunner) RunAblations(ids []int64, abls []*Ablation) ([]*result.Result, error) {
	f.batches = append(f.batches, len(abls))
	out := make([]*result.Result, len(abls))
	for i, a := range abls {
		T := len(ids)
		res := &result.Result{Tokens: ids, Attn: [][][][]float32{{eye(T), eye(T)}}}
		if f.logits {
			res.Vocab = f.vocab
			res.Logits = make([]float32, T*f.vocab)
			off := 0
			if !a.Empty() {
				off = len(a.Off)
			}
			for p := 0; p < T; p++ {
				res.Logits[p*f.vocab+(p+off)%f.vocab] = 5
			}
		}
		out[i] = res
	}
	return out, nil
}

func (f *fakeRunner) RecycleBatch(rs []*result.Result) { f.recycled += len(rs) }

func (f *fakeRunner) OutputBytes(T int) (int64, bool) { return f.bytes, f.bytes > 0 }

func eye(T int) [][]float32 {
	m := make([][]float32, T)
	for q := range m {
		m[q] = make([]float32, T)
		m[q][q] = 1
	}
	return m
}

func TestSweepRows(t *testing.T) {
	r := &fakeRunner{vocab: 4, logits: true, bytes: 100}
	ids := []int64{1, 2, 3, 0, 1, 2}
	sets := [][]Head{{{0, 0}}, {{0, 0}, {0, 1}}, {{0, 1}}}
	rows, err := Sweep(r, ids, sets, SweepOptions{Budget: 250})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || rows[0].Name() != "none" || rows[2].Name() != "L0H0,L0H1" {
		t.Fatalf("rows %v", rows)
	}
	if got := r.batches; len(got) != 2 || got[0] != 2 || got[1] != 2 {
		t.Errorf("batches %v, want two of 2 (a budget of 250 bytes, 100 per run)", got)
	}
	if r.recycled != 4 {
		t.Errorf("%d results recycled, want 4", r.recycled)
	}
	// The clean run predicts token p+1 at p (ids follow it), so its top-1 is right; one
	// head off predicts p+1 too (shift 1) — the logits favour (p+off)%4.
	for i, row := range rows {
		if i == 0 && (row.LossDelta != 0 || row.Top1Changed != 0) {
			t.Errorf("clean row %+v", row)
		}
		if math.Abs(row.LossDelta-(row.Loss-rows[0].Loss)) > 1e-12 {
			t.Errorf("%s: loss_delta %g is not %g − %g", row.Name(), row.LossDelta, row.Loss, rows[0].Loss)
		}
	}
	if rows[1].Top1Changed != 1 || rows[2].Top1Changed != 1 {
		t.Errorf("top1_changed %g, %g; every position's argmax moved", rows[1].Top1Changed, rows[2].Top1Changed)
	}
	if rows[1].Loss != rows[3].Loss {
		t.Errorf("two single heads with the same fake effect have losses %g and %g", rows[1].Loss, rows[3].Loss)
	}
}

func TestSweepWithoutLogits(t *testing.T) {
	r := &fakeRunner{vocab: 4}
	_, err := Sweep(r, []int64{1, 2, 3}, [][]Head{{{0, 0}}}, SweepOptions{})
	if err == nil || !strings.Contains(err.Error(), "no logits") {
		t.Fatalf("err = %v, want a refusal naming the missing logits", err)
	}
}

func TestPairs(t *testing.T) {
	heads := []Head{{0, 0}, {0, 1}, {1, 0}, {2, 0}}
	var got []string
	for _, p := range Pairs(heads) {
		got = append(got, Join(p))
	}
	want := "L0H0,L0H1 L0H0,L1H0 L0H1,L1H0 L1H0,L2H0"
	if strings.Join(got, " ") != want {
		t.Errorf("Pairs = %q, want %q", strings.Join(got, " "), want)
	}
}
