package ablate

import (
	"fmt"
	"math"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/result"
)

// Runner runs one prompt under several ablations at once (package session's Session is
// one, opened with ablation inputs).
type Runner interface {
	// RunAblations runs ids once per ablation (nil: a plain run), one result each, in order.
	RunAblations(ids []int64, abls []*Ablation) ([]*result.Result, error)
	// RecycleBatch hands the results of one RunAblations back.
	RecycleBatch(rs []*result.Result)
	// OutputBytes is the memory of one run's outputs at T tokens (ok false: unknown).
	OutputBytes(T int) (bytes int64, ok bool)
}

// SweepOptions configure Sweep.
type SweepOptions struct {
	// Mode is how heads are switched off.
	Mode Mode
	// Ref is the reference of mean ablation (nil: the prompt itself): every ablated head's
	// output z is replaced by its mean over Ref's positions in a clean run.
	Ref []int64
	// Probe, when set, adds the effects: every head's induction and previous-token score
	// on the probe under each ablation, as changes from the clean probe.
	Probe *analysis.Probe
	// Budget bounds the outputs of one batch of ablated runs (0: analysis.DefaultBudget).
	Budget int64
	// Progress, when set, is told after each batch how many ablations of how many are done.
	Progress func(done, total int)
}

// Row is what switching one set of heads off did.
type Row struct {
	// Ablated are the heads switched off (none: the clean run, Sweep's first row).
	Ablated []Head
	// Loss is the mean next-token loss (nats) over the prompt's positions; LossDelta its
	// change from the clean run. NaN when the model has no logits.
	Loss, LossDelta float64
	// ICLDelta is the change of the prompt's in-context-learning score, the loss at the
	// late position minus at the early one (analysis.ICLPositions); NaN when the prompt is
	// too short or the model has no logits.
	ICLDelta float64
	// Top1Changed is the fraction of positions whose most likely next token changed.
	Top1Changed float64
	// InductionDelta and PrevTokenDelta are, per layer and head, the change of the head's
	// induction and previous-token scores on the probe (nil without SweepOptions.Probe).
	InductionDelta, PrevTokenDelta [][]float64
}

// Name is the row's selection ("none" for the clean run).
func (r Row) Name() string {
	if len(r.Ablated) == 0 {
		return "none"
	}
	return Join(r.Ablated)
}

// Sweep runs ids once clean and once per set of heads switched off, and returns a row per
// run, the clean one first. Runs go through r in batches whose outputs fit the budget.
// Without logits the loss columns are NaN; Sweep then needs the probe's effects to report
// anything and refuses without them.
func Sweep(r Runner, ids []int64, sets [][]Head, o SweepOptions) ([]Row, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("no prompt to ablate on")
	}
	var means [][]float32
	if o.Mode == Mean {
		ref := o.Ref
		if ref == nil {
			ref = ids
		}
		res, err := r.RunAblations(ref, []*Ablation{nil})
		if err != nil {
			return nil, err
		}
		means, err = MeanZ(res[0])
		r.RecycleBatch(res)
		if err != nil {
			return nil, err
		}
	}
	abls := make([]*Ablation, len(sets)+1) // the clean run first
	for i, set := range sets {
		abls[i+1] = &Ablation{Off: set, Mode: o.Mode, ZMean: means}
	}
	budget := o.Budget
	if budget <= 0 {
		budget = analysis.DefaultBudget()
	}
	rows := make([]Row, len(abls))
	var clean *promptStats
	err := inBatches(r, ids, abls, budget, o.Progress, func(i int, res *result.Result) error {
		st := statsOf(res)
		if i == 0 {
			if st.losses == nil && o.Probe == nil {
				return fmt.Errorf("the model has no logits (no output whose last axis is the vocabulary), so ablation cannot change a loss; ask for the effects on other heads instead")
			}
			clean = st
		}
		rows[i] = clean.compare(st, abls[i])
		return nil
	})
	if err != nil {
		return nil, err
	}
	if o.Probe != nil {
		if err := addEffects(r, o.Probe, abls, budget, rows); err != nil {
			return nil, err
		}
	}
	return rows, nil
}

// inBatches runs ids under abls in batches that fit budget and hands each result, with its
// index in abls, to use before the batch's memory goes back to r.
func inBatches(r Runner, ids []int64, abls []*Ablation, budget int64, progress func(done, total int), use func(i int, res *result.Result) error) error {
	size := 1
	if b, ok := r.OutputBytes(len(ids)); ok && b > 0 {
		size = int(max(1, min(int64(len(abls)), budget/b)))
	}
	for start := 0; start < len(abls); start += size {
		end := min(start+size, len(abls))
		rs, err := r.RunAblations(ids, abls[start:end])
		if err != nil {
			return err
		}
		for k, res := range rs {
			if err := use(start+k, res); err != nil {
				r.RecycleBatch(rs)
				return err
			}
		}
		r.RecycleBatch(rs)
		if progress != nil {
			progress(end, len(abls))
		}
	}
	return nil
}

// promptStats are what the rows compare of a run on the prompt.
type promptStats struct {
	losses []float64 // per position (the last NaN); nil without logits
	top1   []int64
	loss   float64
	icl    float64
}

func statsOf(res *result.Result) *promptStats {
	st := &promptStats{loss: math.NaN(), icl: math.NaN()}
	if res.Logits == nil {
		return st
	}
	T := len(res.Tokens)
	st.losses = analysis.TokenLosses(res) // split over the cores
	st.top1 = make([]int64, T)
	for p := range T {
		st.top1[p] = int64(argmax(analysis.LogitsRow(res, p)))
	}
	st.loss, st.icl, _ = analysis.LossSummary(st.losses)
	return st
}

// argmax is the index of row's largest value (the first of equals; −1 for an empty row).
func argmax(row []float32) int {
	best := -1
	for i, v := range row {
		if best < 0 || v > row[best] {
			best = i
		}
	}
	return best
}

// compare is the row of a run with statistics st under ablation a, against the clean c.
func (c *promptStats) compare(st *promptStats, a *Ablation) Row {
	row := Row{Loss: st.loss, LossDelta: st.loss - c.loss, ICLDelta: st.icl - c.icl, Top1Changed: math.NaN()}
	if a != nil {
		row.Ablated = a.Off
	}
	if st.top1 != nil && len(st.top1) == len(c.top1) {
		changed := 0
		for p := range st.top1 {
			if st.top1[p] != c.top1[p] {
				changed++
			}
		}
		row.Top1Changed = float64(changed) / float64(len(st.top1))
	}
	return row
}

// addEffects fills the rows' score changes: each ablation's induction and previous-token
// scores over the probe's sequences, minus the clean run's (abls[0]).
func addEffects(r Runner, p *analysis.Probe, abls []*Ablation, budget int64, rows []Row) error {
	accs := make([]*analysis.Accumulator, len(abls))
	for i := range accs {
		accs[i] = analysis.NewAccumulator()
	}
	for _, seq := range p.IDs {
		err := inBatches(r, seq, abls, budget, nil, func(i int, res *result.Result) error {
			if err := accs[i].AddProbe(res, p.N, p.Start()); err != nil {
				return err
			}
			return accs[i].AddText(res)
		})
		if err != nil {
			return err
		}
	}
	clean := accs[0].Scores()
	for i, acc := range accs {
		scores := acc.Scores()
		for k, s := range scores {
			for len(rows[i].InductionDelta) <= s.Layer {
				rows[i].InductionDelta = append(rows[i].InductionDelta, nil)
				rows[i].PrevTokenDelta = append(rows[i].PrevTokenDelta, nil)
			}
			rows[i].InductionDelta[s.Layer] = append(rows[i].InductionDelta[s.Layer], s.Induction-clean[k].Induction)
			rows[i].PrevTokenDelta[s.Layer] = append(rows[i].PrevTokenDelta[s.Layer], s.PrevToken-clean[k].PrevToken)
		}
	}
	return nil
}

// Singles are the sets that switch off each of heads alone.
func Singles(heads []Head) [][]Head {
	out := make([][]Head, len(heads))
	for i, h := range heads {
		out[i] = []Head{h}
	}
	return out
}

// Pairs are the sets of two of heads whose layers are at most one apart (the same layer
// or adjacent ones): the pairs in which one head can feed the other directly.
func Pairs(heads []Head) [][]Head {
	var out [][]Head
	for i, a := range heads {
		for _, b := range heads[i+1:] {
			if d := b.Layer - a.Layer; d >= -1 && d <= 1 {
				out = append(out, []Head{a, b})
			}
		}
	}
	return out
}
