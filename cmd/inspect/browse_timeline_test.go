package main

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/timeline"
	"github.com/attnscope/attnscope/tui"
)

// openTimeline builds the browser's config for the timeline in dir as `inspect DIR`
// does; the cache is closed when the test ends.
func openTimeline(t *testing.T, dir string, args ...string) (tui.Config, *stepCache) {
	t.Helper()
	cfg, c, err := browserFlags(t, args...).timelineConfig(heatmap.NoColor, dir)
	if err != nil {
		t.Fatal(err)
	}
	c.begin()
	t.Cleanup(c.close)
	return cfg, c
}

// maxAttnDiff is the largest difference between two results' attention weights; +Inf
// when their shapes differ.
func maxAttnDiff(a, b *result.Result) float64 {
	if len(a.Attn) != len(b.Attn) {
		return math.Inf(1)
	}
	d := 0.0
	for l := range a.Attn {
		if len(a.Attn[l]) != len(b.Attn[l]) {
			return math.Inf(1)
		}
		for h := range a.Attn[l] {
			if len(a.Attn[l][h]) != len(b.Attn[l][h]) {
				return math.Inf(1)
			}
			for q := range a.Attn[l][h] {
				if len(a.Attn[l][h][q]) != len(b.Attn[l][h][q]) {
					return math.Inf(1)
				}
				for k, v := range a.Attn[l][h][q] {
					d = max(d, math.Abs(float64(v-b.Attn[l][h][q][k])))
				}
			}
		}
	}
	return d
}

// `inspect DIR` on the committed timeline opens its last step with the step's default
// prompt, and each step asked for (in any order, the cache closing and reopening steps)
// runs the prompt with that step's model: the attention and probe scores of opening the
// step's model.onnx directly.
func TestBrowseTimelineSteps(t *testing.T) {
	dir := committedTimeline(t)
	tl, err := timeline.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, c := openTimeline(t, dir)
	tc := cfg.Timeline
	last := len(tl.Steps) - 1
	if tc == nil || tc.Current != last || len(tc.Steps) != len(tl.Steps) || tc.LossName != "eval loss" {
		t.Fatalf("timeline config %+v, want the %d steps from the last", tc, len(tl.Steps))
	}
	for i, s := range tc.Steps {
		m := tl.Steps[i].Metrics
		if s.Step != tl.Steps[i].Step || s.Tokens != tl.Steps[i].Tokens || s.Loss != m.EvalLoss || !(s.ICL == m.ICL || math.IsNaN(s.ICL) && math.IsNaN(m.ICL)) {
			t.Fatalf("step %d: %+v, metrics %+v", i, s, m)
		}
	}
	prompt := cfg.Initial.Prompt
	if prompt != stepPrompt(tl.Steps[last]) || prompt == defaultPrompt {
		t.Fatalf("the first prompt is %q, want step %d's default_prompt", prompt, tl.Steps[last].Step)
	}
	ctx := context.Background()
	direct := map[int]*result.Result{}
	for _, i := range []int{last, 0, 3, 1, last, 2, 4, 0} {
		f, err := tc.Step(ctx, i)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		tc.Shown(i) // as the browser does when the step's run replaces the one shown
		run, err := f.Rerun(ctx, prompt)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		want, ok := direct[i]
		if !ok {
			one, _ := openBrowser(t, tl.Steps[i].Model, "--text", prompt, "--tokenizer", tl.Tokenizer)
			want = one.Initial.Result
			direct[i] = want
		}
		if d := maxAttnDiff(run.Result, want); d > 1e-5 {
			t.Fatalf("step %d: the attention differs from its model.onnx's by %g", i, d)
		}
		if run.Prompt != prompt || !slicesEqual(run.Labels, cfg.Initial.Labels) {
			t.Fatalf("step %d ran %q (%v), want %q", i, run.Prompt, run.Labels, prompt)
		}
		probe, err := f.Probe(ctx)
		if err != nil || len(probe) == 0 {
			t.Fatalf("step %d's probe: %v", i, err)
		}
		f.Release(run)
		c.mu.Lock()
		n := len(c.entries)
		c.mu.Unlock()
		if n > 4 {
			t.Fatalf("after step %d the cache holds %d steps, want at most 4", i, n)
		}
	}
	if d := maxAttnDiff(direct[0], direct[last]); d < 1e-3 {
		t.Fatalf("the first and last steps' attention differ by only %g: the test cannot tell steps apart", d)
	}
}

// slicesEqual reports whether two label lists are equal.
func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

// A step closed to bound the cache refuses its funcs with a sentence (Label gives the id),
// and asked for again it is opened again.
func TestBrowseTimelineCacheBound(t *testing.T) {
	dir := committedTimeline(t)
	cfg, _ := openTimeline(t, dir)
	ctx := context.Background()
	old, err := cfg.Timeline.Step(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{3, 1, 0} { // 5 is neither current, the one before, nor a neighbour
		if _, err := cfg.Timeline.Step(ctx, i); err != nil {
			t.Fatal(err)
		}
		cfg.Timeline.Shown(i) // nor shown: the browser shows each step it was given
	}
	var rerr error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, rerr = old.Rerun(ctx, cfg.Initial.Prompt); rerr != nil {
			break
		}
	}
	if rerr == nil || !strings.Contains(rerr.Error(), "step 600's model was closed") {
		t.Fatalf("a closed step's Rerun: %v", rerr)
	}
	if got := old.Label(3); got != "3" {
		t.Fatalf("a closed step's Label(3) = %q, want the id", got)
	}
	again, err := cfg.Timeline.Step(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Rerun(ctx, cfg.Initial.Prompt); err != nil {
		t.Fatalf("step 600 opened again: %v", err)
	}
}

// The step on screen stays open while steps asked for after it come back but are not
// shown (the user pressed > > < < faster than a prompt runs: the browser drops the results
// and stays where it was).
func TestBrowseTimelineKeepsTheShownStep(t *testing.T) {
	dir := committedTimeline(t)
	cfg, _ := openTimeline(t, dir)
	ctx := context.Background()
	for _, i := range []int{4, 3, 1, 0} { // returned, never shown
		if _, err := cfg.Timeline.Step(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // closings run in the background
	if _, err := cfg.Rerun(ctx, cfg.Initial.Prompt); err != nil {
		t.Fatalf("the shown step (600) was closed under the browser: %v", err)
	}
}

// The per-step head scores are those of `inspect heads --timeline DIR`.
func TestBrowseTimelineScores(t *testing.T) {
	dir := committedTimeline(t)
	cfg, _ := openTimeline(t, dir)
	scores, err := cfg.Timeline.Scores(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, code := inspect(t, "heads", "--timeline", dir, "--device", "cpu")
	if code != 0 {
		t.Fatalf("heads --timeline: exit %d: %s", code, stderr)
	}
	rows := readCSV(t, out)[1:]
	var got []analysisRow
	for _, step := range scores {
		for _, s := range step {
			got = append(got, analysisRow{s.Layer, s.Head, s.Induction, s.PrevToken})
		}
	}
	if len(got) != len(rows) || len(scores) != 6 {
		t.Fatalf("%d scores over %d steps, heads --timeline has %d rows", len(got), len(scores), len(rows))
	}
	for i, r := range rows {
		ind, _ := strconv.ParseFloat(r[4], 64)
		prev, _ := strconv.ParseFloat(r[5], 64)
		g := got[i]
		if strconv.Itoa(g.layer) != r[2] || strconv.Itoa(g.head) != r[3] || math.Abs(g.induction-ind) > 1e-5 || math.Abs(g.prev-prev) > 1e-5 {
			t.Fatalf("row %d: browser %+v, heads --timeline %v", i, g, r)
		}
	}
}

type analysisRow struct {
	layer, head     int
	induction, prev float64
}

// Steps open one at a time, and a step passed over before its turn (the user scrubbed on)
// is not opened at all.
func TestBrowseTimelineSkipsPassedSteps(t *testing.T) {
	dir := committedTimeline(t)
	cfg, c := openTimeline(t, dir)
	c.opening <- struct{}{} // hold the turn: nothing opens
	entry := func(i int) *stepEntry {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			c.mu.Lock()
			e := c.entries[i]
			c.mu.Unlock()
			if e != nil {
				return e
			}
		}
		t.Fatalf("step %d was not asked for", i)
		return nil
	}
	ctx0, cancel0 := context.WithCancel(context.Background())
	done0 := make(chan error, 1)
	go func() { _, err := cfg.Timeline.Step(ctx0, 0); done0 <- err }()
	e0 := entry(0)
	done2 := make(chan error, 1)
	go func() { _, err := cfg.Timeline.Step(context.Background(), 2); done2 <- err }()
	entry(2)
	cancel0() // the browser cancels a step superseded
	<-c.opening
	if err := <-done0; !errors.Is(err, context.Canceled) {
		t.Fatalf("the superseded request: %v, want its context's cancellation", err)
	}
	if err := <-done2; err != nil {
		t.Fatalf("step 2: %v", err)
	}
	<-e0.ready
	if e0.err != errSkipped || e0.l != nil {
		t.Fatalf("step 0, passed over, was opened (err %v)", e0.err)
	}
}
