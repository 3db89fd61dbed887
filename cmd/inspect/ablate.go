package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/tableio"
)

// ablateCmdFlags are the flags of inspect ablate besides the shared ones.
type ablateCmdFlags struct {
	heads         string
	pairs         bool
	effects       bool
	probeLen      int
	probes        int
	seed          uint64
	bos           string
	progressEvery time.Duration
}

func newAblateCmd() *cobra.Command {
	var f runFlags
	var a ablateCmdFlags
	cmd := &cobra.Command{
		Use:   "ablate [MODEL] (--text TEXT | --text-file FILE | --ids …) [--heads L1H5,L0 | --pairs] [--effects] [--ablate-mode mean]",
		Short: "Switch heads off in turn and measure what each did: loss, in-context learning, predictions",
		Long: `ablate runs the prompt once clean and once per head switched off (all heads, or --heads;
--pairs: every pair of them in the same or adjacent layers), through one session, in
batches, and writes one CSV row per run:
ablated,loss,loss_delta,icl_delta,top1_changed

The first row, "none", is the clean run. loss is the mean next-token loss (nats) over the
prompt; icl_delta the change of its in-context-learning score (the loss late in the prompt
minus early; the positions inspect tokens prints); top1_changed the fraction of positions
whose most likely next token changed. --ablate-mode zero (default) multiplies the head's
attention by 0 before it meets V, so its output z is 0 and biases stay; mean replaces z by
its mean over the positions of a clean run of the prompt (or of --ablate-ref FILE).

--effects adds, per head of the model, the change of its induction and previous-token
scores on the seeded probes (as inspect heads draws them): columns induction_delta.L1H5,
…, prev_token_delta.L1H5, …: the matrix that shows which heads another head depends on.
--format npz, parquet or json (or an --out named so) writes the same columns as numpy
arrays, a Parquet file or a JSON array of objects.`,
		Args: modelArgs("ablate"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAblate(firstArg(args), &f, &a)
		},
	}
	f.register(cmd)
	f.registerOutput(cmd, formatUsage(""), "csv")
	fl := cmd.Flags()
	fl.StringVar(&a.heads, "heads", "all", "the heads to switch off in turn: L1H5,L0H3, L0 (each head of a layer), all")
	fl.BoolVar(&a.pairs, "pairs", false, "switch off every pair of those heads in the same or adjacent layers, instead of each alone")
	fl.BoolVar(&a.effects, "effects", false, "add every head's induction and previous-token score changes (on the probes)")
	fl.IntVar(&a.probeLen, "probe-len", analysis.DefaultProbeLen, "with --effects: random tokens per copy in each probe")
	fl.IntVar(&a.probes, "probes", analysis.DefaultProbes, "with --effects: number of probe sequences")
	fl.Uint64Var(&a.seed, "seed", 0, "with --effects: seed of the probe tokens")
	fl.StringVar(&a.bos, "bos", "auto", "with --effects: token put before each probe: auto, none, or an id")
	a.progressEvery = 2 * time.Second
	return cmd
}

// runAblate sweeps the heads of the model at path (ablate.Sweep) and writes the CSV.
func runAblate(path string, f *runFlags, a *ablateCmdFlags) error {
	if err := f.resolveFormat("ablate", tableFormats...); err != nil {
		return err
	}
	if f.ablation.heads != "" {
		return usagef("ablate switches heads off itself; give them with --heads, not --ablate")
	}
	if f.given("target", f.target) || f.given("target-ids", f.targetIDs) {
		return usagef("ablate runs the prompt as both source and target of an encoder–decoder; --target and --target-ids are for dump, tokens and the browser")
	}
	if a.probeLen < 2 || a.probes < 1 {
		return usagef("--probe-len must be at least 2 and --probes at least 1")
	}
	bos, err := parseBOS(a.bos)
	if err != nil {
		return err
	}
	mode, err := f.ablation.check()
	if err != nil {
		return err
	}
	f.ablation.always = true
	l, out, err := f.openTable(path)
	if err != nil {
		return err
	}
	defer l.close()
	defer out.Abort()
	ids, err := f.prompt(l)
	if err != nil {
		return err
	}
	if why := l.ablateWhy(mode); why != "" {
		return fmt.Errorf("cannot ablate: %s", why)
	}
	heads, err := ablate.ParseHeads(a.heads, l.sess.HeadCounts())
	if err != nil {
		return usagef("--heads: %v", err)
	}
	for _, h := range heads {
		if err := l.sess.CanAblate(h.Layer, mode); err != nil {
			return fmt.Errorf("cannot ablate %s: %w", h, err)
		}
	}
	sets := ablate.Singles(heads)
	if a.pairs {
		if sets = ablate.Pairs(heads); len(sets) == 0 {
			return usagef("--pairs needs at least two heads in the same or adjacent layers")
		}
	}
	o := ablate.SweepOptions{Mode: mode}
	if mode == ablate.Mean {
		if o.Ref, err = f.ablateRefIDs(l); err != nil {
			return err
		}
	}
	if a.effects {
		po, err := l.probeOptions(a.probeLen, a.probes, a.seed, bos, a.bos == "auto")
		if err != nil {
			return err
		}
		if o.Probe, err = analysis.NewProbe(po); err != nil {
			return err
		}
	}
	if err := l.checkSize("prompt", len(ids)); err != nil {
		return err
	}
	start, last := time.Now(), time.Now()
	o.Progress = func(done, total int) {
		if now := time.Now(); now.Sub(last) >= a.progressEvery || done == total && now.Sub(start) >= a.progressEvery {
			last = now
			notice("ablated %d of %d (%s)", done-1, total-1, now.Sub(start).Round(time.Second))
		}
	}
	rows, err := ablate.Sweep(l.sess, ids, sets, o)
	if err != nil {
		return err
	}
	if err := writeTable(out, f.format, ablationTable(rows)); err != nil {
		return err
	}
	return out.Commit()
}

// ablationTable is the sweep's table: ablated,loss,loss_delta,icl_delta,top1_changed,
// then, when the rows have effects, induction_delta.L{l}H{h} for every head and
// prev_token_delta.L{l}H{h} for every head. A value with no data is NaN.
func ablationTable(rows []ablate.Row) *tableio.Table {
	n := len(rows)
	names := make([]string, n)
	cols := [4][]float64{make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)}
	for i, r := range rows {
		names[i] = r.Name()
		for j, v := range []float64{r.Loss, r.LossDelta, r.ICLDelta, r.Top1Changed} {
			cols[j][i] = v
		}
	}
	t := (&tableio.Table{}).Add(tableio.Strings("ablated", names))
	for j, name := range []string{"loss", "loss_delta", "icl_delta", "top1_changed"} {
		t.Add(tableio.Floats(name, cols[j], 8))
	}
	if n == 0 || rows[0].InductionDelta == nil {
		return t
	}
	for m, prefix := range []string{"induction_delta", "prev_token_delta"} {
		for l, layer := range rows[0].InductionDelta {
			for h := range layer {
				v := make([]float64, n)
				for i, r := range rows {
					v[i] = [][][]float64{r.InductionDelta, r.PrevTokenDelta}[m][l][h]
				}
				t.Add(tableio.Floats(fmt.Sprintf("%s.L%dH%d", prefix, l, h), v, 8))
			}
		}
	}
	return t
}
