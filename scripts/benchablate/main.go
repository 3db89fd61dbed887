// Command benchablate times head ablation on one model and prints a Markdown table:
//
//   - plain: one forward pass of a T-token prompt through a session without ablation
//     inputs (attention exposed, as every command runs);
//   - masks: the same pass through a session opened with the mask inputs, nothing off
//     (the inputs' overhead on a plain run);
//   - sweep: inspect ablate's single-head sweep (ablate.Sweep: the clean run and one run
//     per head), batched as the command batches it and one run at a time; reported per
//     ablated run and as a ratio to the plain pass.
//
// Medians of -reps runs after one warm-up; the cases are timed in turn within each rep.
// scripts/bench_ablate.sh runs it.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"time"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/session"
)

func main() {
	modelPath := flag.String("model", "build/bench/gpt2-small/model.onnx", "ONNX model")
	T := flag.Int("T", 128, "prompt length")
	reps := flag.Int("reps", 3, "timed runs")
	sweeps := flag.Bool("sweeps", true, "time the sweeps too (not only single passes)")
	flag.Parse()
	if err := run(*modelPath, *T, *reps, *sweeps); err != nil {
		fmt.Fprintln(os.Stderr, "benchablate:", err)
		os.Exit(1)
	}
}

func open(path string, ablation bool) (*session.Session, error) {
	m, err := onnxgraph.Load(path)
	if err != nil {
		return nil, err
	}
	return session.Open(m, session.Options{Device: "cpu", Ablation: ablation})
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func run(path string, T, reps int, sweeps bool) error {
	plain, err := open(path, false)
	if err != nil {
		return err
	}
	defer plain.Close()
	masked, err := open(path, true)
	if err != nil {
		return err
	}
	defer masked.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]int64, T)
	for i := range ids {
		ids[i] = rng.Int64N(int64(plain.Limits.Vocab))
	}
	var heads []ablate.Head
	for l, n := range masked.HeadCounts() {
		for h := 0; h < n; h++ {
			heads = append(heads, ablate.Head{Layer: l, Head: h})
		}
	}
	sets := ablate.Singles(heads)
	forward := func(s *session.Session) (time.Duration, error) {
		start := time.Now()
		res, err := s.Run(ids)
		if err != nil {
			return 0, err
		}
		d := time.Since(start)
		s.Recycle(res)
		return d, nil
	}
	tr := &timedRunner{Session: masked}
	sweep := func(budget int64) (time.Duration, time.Duration, error) {
		tr.inRuns = 0
		start := time.Now()
		_, err := ablate.Sweep(tr, ids, sets, ablate.SweepOptions{Budget: budget})
		return time.Since(start), tr.inRuns, err
	}
	one, _ := masked.OutputBytes(T)
	var tPlain, tMasks, tBatched, tSingle, rBatched, rSingle []time.Duration
	// Single passes are short: time them 5× as often as the sweeps, alternating.
	for rep := 0; rep <= 5*reps; rep++ {
		a, err := forward(plain)
		if err != nil {
			return err
		}
		b, err := forward(masked)
		if err != nil {
			return err
		}
		if rep > 0 {
			tPlain, tMasks = append(tPlain, a), append(tMasks, b)
		}
	}
	for rep := 0; sweeps && rep <= reps; rep++ {
		c, cr, err := sweep(0)
		if err != nil {
			return err
		}
		d, dr, err := sweep(one) // one run per batch
		if err != nil {
			return err
		}
		if rep > 0 { // the first is the warm-up
			tBatched, tSingle = append(tBatched, c), append(tSingle, d)
			rBatched, rSingle = append(rBatched, cr), append(rSingle, dr)
		}
	}
	p := median(tPlain)
	runs := time.Duration(len(sets) + 1)
	fmt.Printf("Model: %s, %d heads; prompt of %d random ids; %d cores (GOMAXPROCS %d); medians of %d single passes (alternating) and of %d sweeps, each after a warm-up.\n\n", path, len(heads), T, runtime.NumCPU(), runtime.GOMAXPROCS(0), 5*reps, reps)
	fmt.Println("| case | time | per run | ratio to a plain pass | of which onnxruntime | its ratio |")
	fmt.Println("|---|---|---|---|---|---|")
	fmt.Printf("| plain pass (attention exposed, no mask inputs) | %s | %s | 1.000 | | |\n", p.Round(time.Millisecond), p.Round(time.Millisecond))
	fmt.Printf("| plain pass with the mask inputs, nothing off (target ≤ 1.02) | %s | %s | %.3f | | |\n", median(tMasks).Round(time.Millisecond), median(tMasks).Round(time.Millisecond), float64(median(tMasks))/float64(p))
	if !sweeps {
		return nil
	}
	for _, c := range []struct {
		name    string
		d, runs time.Duration
	}{{"single-head sweep, batched as `inspect ablate` does (target ≤ 1.1 per run)", median(tBatched), median(rBatched)}, {"single-head sweep, one run per call", median(tSingle), median(rSingle)}} {
		per, perRun := c.d/runs, c.runs/runs
		fmt.Printf("| %s: %d runs | %s | %s | %.3f | %s per run | %.3f |\n", c.name, runs, c.d.Round(time.Millisecond), per.Round(time.Millisecond), float64(per)/float64(p), perRun.Round(time.Millisecond), float64(perRun)/float64(p))
	}
	return nil
}

// timedRunner adds up the time spent inside RunAblations (the runs, not the sweep's loss
// and top-1 computation).
type timedRunner struct {
	*session.Session
	inRuns time.Duration
}

func (t *timedRunner) RunAblations(ids []int64, abls []*ablate.Ablation) ([]*result.Result, error) {
	start := time.Now()
	rs, err := t.Session.RunAblations(ids, abls)
	t.inRuns += time.Since(start)
	return rs, err
}
