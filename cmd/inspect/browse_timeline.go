package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/timeline"
	"github.com/attnscope/attnscope/tui"
)

// timelineConfig opens the training timeline in dir for the browser: the last step's
// model runs the first prompt (--text, else the last step's config.json default_prompt,
// else the browser's default), and the returned config's Timeline opens the other steps
// through the returned cache, which the caller closes once the UI has returned (on an
// error everything is closed already).
func (f *runFlags) timelineConfig(profile heatmap.Profile, dir string) (tui.Config, *stepCache, error) {
	if f.file != "" {
		return tui.Config{}, nil, usagef("--file picks a model inside a MODEL folder; a timeline's steps are each step's model.onnx")
	}
	tl, err := timeline.Open(dir)
	if err != nil {
		return tui.Config{}, nil, err
	}
	if f.tokenizer == "" {
		f.tokenizer = tl.Tokenizer // one tokenizer for every step
	}
	prompted := f.given("text", f.text) || f.given("ids", f.ids) || f.given("text-file", f.textFile)
	last := len(tl.Steps) - 1
	name := tl.Model
	if name == "" {
		name = filepath.Base(filepath.Clean(dir))
	}
	f.ablation.always = true // for the x key
	l, err := f.open(tl.Steps[last].Model)
	if err != nil {
		return tui.Config{}, nil, fmt.Errorf("step %d: %w", tl.Steps[last].Step, err)
	}
	cfg, err := f.firstRun(l, profile, name, stepPrompt(tl.Steps[last]))
	if err != nil {
		l.close()
		return tui.Config{}, nil, err
	}
	c := newStepCache(f, tl, prompted)
	// The browser calls the last step's funcs guarded like every other step's: the cache
	// may close the step once the user has moved on.
	g := c.add(last, l, cfg)
	cfg.Device, cfg.Rerun, cfg.RerunIDs, cfg.RerunPair, cfg.RerunPairIDs = g.Device, g.Rerun, g.RerunIDs, g.RerunPair, g.RerunPairIDs
	cfg.Ablate, cfg.AblateWhy, cfg.Release, cfg.Probe, cfg.Label = g.Ablate, g.AblateWhy, g.Release, g.Probe, g.Label
	cfg.Circuits, cfg.CircuitsWhy = g.Circuits, g.CircuitsWhy
	tc := &tui.TimelineConfig{Current: last, Step: c.step, Scores: c.scores, Shown: c.show}
	tc.Steps, tc.LossName = timelineSteps(tl)
	cfg.Timeline = tc
	return cfg, c, nil // c.begin() starts opening the neighbours
}

// browseTimeline is `inspect DIR` for a training timeline: the browser on its last step,
// with the step bar. Notices written on stderr while the browser is up (a step's session
// opening, say) would scribble over the screen: they are held and written once it quits.
func browseTimeline(f *runFlags, profile heatmap.Profile, dir string, run func(tui.Config) error) error {
	cfg, c, err := f.timelineConfig(profile, dir)
	if err != nil {
		return err
	}
	defer c.close()
	held, restore := holdStderr()
	defer restore()
	c.begin() // after the swap: the openings it starts write notices to os.Stderr
	err = run(cfg)
	c.close() // before the held notices: closing may say something too
	restore()
	os.Stderr.Write(held())
	return err
}

// holdStderr points os.Stderr at a temporary file until restore (which may be called
// more than once); held then reads what was written there. When no file can be made,
// stderr is left alone.
func holdStderr() (held func() []byte, restore func()) {
	tmp, err := os.CreateTemp("", "attnscope-stderr-*")
	if err != nil {
		return func() []byte { return nil }, func() {}
	}
	os.Remove(tmp.Name())
	orig := os.Stderr
	os.Stderr = tmp
	done := false
	restore = func() {
		if !done {
			os.Stderr, done = orig, true
		}
	}
	held = func() []byte {
		defer tmp.Close()
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return nil
		}
		b, _ := io.ReadAll(tmp)
		return b
	}
	return held, restore
}

// stepPrompt is the step's config.json default_prompt, else the browser's default.
func stepPrompt(st timeline.Step) string {
	if st.Config != "" {
		if b, err := os.ReadFile(st.Config); err == nil {
			var c struct {
				Prompt string `json:"default_prompt"`
			}
			if json.Unmarshal(b, &c) == nil && strings.TrimSpace(c.Prompt) != "" {
				return c.Prompt
			}
		}
	}
	return defaultPrompt
}

// timelineSteps are the timeline's steps as the browser shows them, with the loss the
// sparkline draws: eval_loss, or train_loss when no step has an eval_loss.
func timelineSteps(tl *timeline.Timeline) ([]tui.TimelineStep, string) {
	eval := false
	for _, s := range tl.Steps {
		eval = eval || !math.IsNaN(s.Metrics.EvalLoss)
	}
	steps := make([]tui.TimelineStep, len(tl.Steps))
	name := "eval loss"
	if !eval {
		name = "train loss"
	}
	for i, s := range tl.Steps {
		loss := s.Metrics.EvalLoss
		if !eval {
			loss = s.Metrics.TrainLoss
		}
		steps[i] = tui.TimelineStep{Step: s.Step, Tokens: s.Tokens, Loss: loss, ICL: s.Metrics.ICL}
	}
	return steps, name
}

// scores is every head's scores at every step, as `inspect heads --timeline` computes
// them with its default flags (its probe; the built-in sample for the text scores unless
// a prompt was given on the command line), each step's model opened and closed in turn.
// A step that cannot be scored has nil scores, and the error names the first such step
// and how many there were; the others are scored all the same.
func (c *stepCache) scores(ctx context.Context) ([][]analysis.HeadScores, error) {
	g := c.f
	if !c.prompted {
		g.text, g.ids, g.textFile = "", "", "" // the browser's default prompt was not given
	}
	g.format = "csv"
	h := headsFlags{probeLen: analysis.DefaultProbeLen, probes: analysis.DefaultProbes, bos: "auto", sortBy: "induction"}
	bos, err := parseBOS(h.bos)
	if err != nil {
		return nil, err
	}
	r := &timelineRun{f: &g, h: &h, bos: bos}
	out := make([][]analysis.HeadScores, len(c.tl.Steps))
	var first error
	failed := 0
	for i, st := range c.tl.Steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s, err := r.score(st)
		if err != nil {
			if failed++; first == nil {
				first = fmt.Errorf("step %d: %w", st.Step, err)
			}
			continue
		}
		out[i] = s
	}
	if failed > 1 {
		first = fmt.Errorf("%d steps not scored; %w", failed, first)
	}
	return out, first
}
