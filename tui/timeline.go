package tui

import (
	"context"
	"fmt"
	"math"
	"strconv"

	tea "charm.land/bubbletea/v2"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
)

// Training-timeline mode (Config.Timeline): the browser shows one step of a training run
// at a time. < and > move one step, { and } jump to the earlier or later step where the
// selected head's selected score (o) changes most. A step change opens the step's funcs
// (Timeline.Step) and re-runs the prompt the user typed in the background; the last step
// asked for wins, and every result of an earlier step (a run, an ablation, the probe, the
// circuits) is dropped unseen.

// TimelineConfig makes the browser a training timeline's.
type TimelineConfig struct {
	// Steps are the timeline's steps, ascending; Current is the index of the step
	// Config.Initial (and the Config's funcs) are of.
	Steps   []TimelineStep
	Current int
	// LossName names the loss of the steps' Loss (e.g. "eval loss").
	LossName string
	// Step returns the funcs bound to step i's model, opening it when needed; it runs in
	// the background and ctx is cancelled when the user quits. An error keeps the browser
	// on the step it shows.
	Step func(ctx context.Context, i int) (*StepFuncs, error)
	// Scores computes every head's scores at every step (scores[i] are step i's), in the
	// background after start, for the head sparkline and { }. nil: neither is available.
	// With an error it may still return every step's scores, nil for the steps it could
	// not score.
	Scores func(ctx context.Context) ([][]analysis.HeadScores, error)
	// Shown, when set, is told the index of every step the browser comes to show (the
	// step's run replaced the one shown), so that whoever opens the steps keeps that one
	// open while other steps come and go. It must return at once.
	Shown func(i int)
}

// TimelineStep is one step of a timeline: its optimizer step, the training tokens seen by
// then, and its loss and ICL score (NaN where not measured).
type TimelineStep struct {
	Step, Tokens int64
	Loss, ICL    float64
}

// StepFuncs are the Config funcs bound to one step's model (see Config for what each
// promises); Release is called only with runs of that step.
type StepFuncs struct {
	Device   string
	Rerun    func(ctx context.Context, prompt string) (*Run, error)
	RerunIDs func(ctx context.Context, ids []int64) (*Run, error)
	// RerunPair and RerunPairIDs run an encoder–decoder's source and target (nil for a
	// model of one sequence).
	RerunPair    func(ctx context.Context, source, target string) (*Run, error)
	RerunPairIDs func(ctx context.Context, source, target []int64) (*Run, error)
	Ablate       func(ctx context.Context, prompt string, off []ablate.Head) (*Run, error)
	AblateWhy    string
	Release      func(*Run)
	Probe        func(ctx context.Context) ([]analysis.HeadScores, error)
	Label        func(id int64) string
	Circuits     func(ctx context.Context) (*CircuitsData, error)
	CircuitsWhy  string
}

// timelineState is the timeline mode's part of the Model, written only by Update.
type timelineState struct {
	cur     int // the step shown
	want    int // the step asked for last (cur when none is loading)
	loading bool
	seq     int // counts step requests: a stepDoneMsg of another is stale
	// cancel cancels the context of the step loading (nil when none is), so that a step
	// superseded stops opening.
	cancel context.CancelFunc
	// epoch counts step changes shown: background results of another epoch are of a step
	// no longer shown.
	epoch int
	// note says why the step asked for was chosen ({ and }), for the status line.
	note      string
	scores    [][]analysis.HeadScores // every step's head scores; nil until computed
	scoresErr error
}

// stepDoneMsg ends the opening of step index and the run of prompt on it.
type stepDoneMsg struct {
	seq, index int
	funcs      *StepFuncs
	run        *Run
	err        error
}

type scoresDoneMsg struct {
	scores [][]analysis.HeadScores
	err    error
}

// timeline reports whether the browser is in timeline mode.
func (m *Model) timeline() bool { return m.cfg.Timeline != nil && len(m.cfg.Timeline.Steps) > 0 }

// scoresCmd starts the per-step head scores in the background (nil when there are none
// to compute).
func (m *Model) scoresCmd() tea.Cmd {
	if !m.timeline() || m.cfg.Timeline.Scores == nil {
		return nil
	}
	scores := m.cfg.Timeline.Scores
	return m.bg.cmd(func(ctx context.Context) tea.Msg {
		s, err := scores(ctx)
		return scoresDoneMsg{s, err}
	})
}

// scoresDone files the per-step head scores.
// Scores may come with an error and still be kept: the steps that could not be scored
// then have no scores (nil), and the sparkline leaves them blank.
func (m *Model) scoresDone(msg scoresDoneMsg) {
	m.tl.scores, m.tl.scoresErr = msg.scores, msg.err
	if msg.scores != nil && len(msg.scores) != len(m.cfg.Timeline.Steps) {
		m.tl.scores, m.tl.scoresErr = nil, fmt.Errorf("%d steps were scored, not %d", len(msg.scores), len(m.cfg.Timeline.Steps))
	}
	if m.tl.scoresErr != nil {
		m.setStatus("per-step head scores: %v", m.tl.scoresErr)
	}
	m.gen++
}

// stepName is "step N (k/n)" for step index i.
func (m *Model) stepName(i int) string {
	s := m.cfg.Timeline.Steps
	return fmt.Sprintf("step %d (%d/%d)", s[i].Step, i+1, len(s))
}

// moveStep asks for the step by steps away from the one asked for last.
func (m *Model) moveStep(by int) tea.Cmd {
	i := m.tl.want + by
	switch steps := m.cfg.Timeline.Steps; {
	case i < 0:
		m.setStatus("already at the first step (%d)", steps[0].Step)
		return nil
	case i >= len(steps):
		m.setStatus("already at the last step (%d)", steps[len(steps)-1].Step)
		return nil
	}
	return m.gotoStep(i)
}

// stepScore is the selected score of the selected head at step i (NaN when unknown).
func (m *Model) stepScore(i int) float64 {
	if i < 0 || i >= len(m.tl.scores) {
		return math.NaN()
	}
	for _, s := range m.tl.scores[i] {
		if s.Layer == m.layer && s.Head == m.head {
			return s.Get(m.sortBy)
		}
	}
	return math.NaN()
}

// jumpStep asks for the step, before the one asked for last (dir < 0) or after it, where
// the selected head's selected score changes most from the step before it.
func (m *Model) jumpStep(dir int) tea.Cmd {
	head := fmt.Sprintf("L%dH%d", m.layer, m.head)
	switch {
	case m.tl.scores == nil && m.tl.scoresErr != nil:
		m.setStatus("no per-step scores to jump by: %v", m.tl.scoresErr)
		return nil
	case m.cfg.Timeline.Scores == nil:
		m.setStatus("this timeline has no per-step head scores to jump by")
		return nil
	case m.tl.scores == nil:
		m.setStatus("the per-step head scores are still being computed")
		return nil
	}
	from, to := 1, m.tl.want-1 // the steps whose change from the step before counts
	where := "before"
	if dir > 0 {
		from, to, where = m.tl.want+1, len(m.tl.scores)-1, "after"
	}
	best, bestD := -1, 0.0 // a step where the score does not change is no place to jump to
	for i := from; i <= to; i++ {
		d := math.Abs(m.stepScore(i) - m.stepScore(i-1))
		if !math.IsNaN(d) && d > bestD {
			best, bestD = i, d
		}
	}
	if best < 0 {
		m.setStatus("no change of %s's %s %s %s to jump to", head, m.sortBy, where, m.stepName(m.tl.want))
		return nil
	}
	cmd := m.gotoStep(best)
	m.tl.note = fmt.Sprintf("%s's %s changes most here (%s)", head, m.sortBy, signed(m.stepScore(best)-m.stepScore(best-1)))
	if cmd == nil { // the step shown: nothing to open
		m.setStatus("back on %s: %s", m.stepName(best), m.tl.note)
	} else {
		m.setStatus("opening %s: %s…", m.stepName(best), m.tl.note)
	}
	return cmd
}

// gotoStep starts opening step i and running the latest prompt on it, superseding any
// step still loading.
func (m *Model) gotoStep(i int) tea.Cmd {
	m.tl.seq++
	m.tl.note = ""
	m.tl.want = i
	m.stopLoading()
	m.gen++ // the step bar changes
	if i == m.tl.cur {
		m.tl.loading = false // back to the step shown: the one loading is dropped
		m.setStatus("back on %s", m.stepName(i))
		return nil
	}
	m.tl.loading = true
	m.setStatus("opening %s…", m.stepName(i))
	seq := m.tl.seq
	prompt, target := m.latestRequest()
	open := m.cfg.Timeline.Step
	ids, paired := m.cfg.RerunIDs != nil, m.paired()
	ctx, cancel := context.WithCancel(m.bg.ctx) // cancelled on quit too
	m.tl.cancel = cancel
	return m.bg.cmd(func(context.Context) tea.Msg {
		msg := stepDoneMsg{seq: seq, index: i}
		f, err := open(ctx, i)
		if err == nil && f == nil {
			err = fmt.Errorf("no model")
		}
		if err != nil {
			msg.err = err
			return msg
		}
		msg.funcs = f
		var r *Run
		switch {
		case paired && ids && f.RerunPairIDs != nil:
			var src, tgt []int64
			if src, err = ParseIDs(prompt); err == nil {
				if tgt, err = ParseIDs(target); err == nil {
					r, err = f.RerunPairIDs(ctx, src, tgt)
				}
			}
		case paired && !ids && f.RerunPair != nil:
			r, err = f.RerunPair(ctx, prompt, target)
		case ids && f.RerunIDs != nil:
			var parsed []int64
			if parsed, err = ParseIDs(prompt); err == nil {
				r, err = f.RerunIDs(ctx, parsed)
			}
		case f.Rerun != nil:
			r, err = f.Rerun(ctx, prompt)
		default:
			err = fmt.Errorf("its model cannot run the prompt")
		}
		if err == nil {
			err = r.Check()
		}
		if err == nil && paired && r.Target == "" {
			r.Target = target
		}
		if err != nil {
			if r != nil && f.Release != nil {
				f.Release(r)
			}
			msg.err = err
			return msg
		}
		r.release = f.Release
		msg.run = r
		return msg
	})
}

// stopLoading cancels the step loading, if any.
func (m *Model) stopLoading() {
	if m.tl.cancel != nil {
		m.tl.cancel()
		m.tl.cancel = nil
	}
}

// latestRequest is the prompt the user asked for last (queued, running, or shown) and the
// encoder–decoder target beside it ("" for one sequence).
func (m *Model) latestRequest() (prompt, target string) {
	switch {
	case m.queued != "":
		return m.queued, m.queuedTarget
	case m.running && m.pending != "":
		return m.pending, m.pendingTarget
	}
	return m.clean.Prompt, m.clean.Target
}

// stepDone shows a step that finished opening, when it is still the one asked for last:
// its run replaces the shown one (cursors, view and the heads off stay), its funcs the
// Config's, and the probe and circuits start again on it. A stale step's run is released
// unseen; a step that failed leaves the browser on the step it shows.
func (m *Model) stepDone(msg stepDoneMsg) tea.Cmd {
	if msg.seq != m.tl.seq {
		if msg.run != nil {
			m.release(msg.run)
		}
		return nil
	}
	m.tl.loading = false
	m.tl.want = m.tl.cur
	m.stopLoading()
	m.gen++
	if msg.err != nil {
		m.setStatus("cannot open %s, staying on %s: %v", m.stepName(msg.index), m.stepName(m.tl.cur), msg.err)
		return nil
	}
	f := msg.funcs
	m.tl.cur, m.tl.want = msg.index, msg.index
	if m.cfg.Timeline.Shown != nil {
		m.cfg.Timeline.Shown(msg.index)
	}
	m.tl.epoch++
	m.setClean(msg.run) // releases the old step's runs with its own Release
	m.cfg.Device = f.Device
	m.cfg.Rerun, m.cfg.RerunIDs = f.Rerun, keepIDs(m.cfg.RerunIDs, f.RerunIDs)
	if m.paired() { // the editor keeps editing the source and the target
		m.cfg.RerunPair, m.cfg.RerunPairIDs = f.RerunPair, f.RerunPairIDs
	}
	m.cfg.Ablate, m.cfg.AblateWhy = f.Ablate, f.AblateWhy
	m.cfg.Release, m.cfg.Probe, m.cfg.Label = f.Release, f.Probe, f.Label
	m.cfg.Circuits, m.cfg.CircuitsWhy = f.Circuits, f.CircuitsWhy
	if m.queued == msg.run.Prompt && m.queuedTarget == msg.run.Target {
		m.queued, m.queuedTarget = "", ""
	}
	m.failed = ""
	m.probe, m.probeErr = nil, nil
	m.circ = circuitsCache{}
	if !m.warnDegenerate() {
		m.setStatus("%s: ran %d tokens in %s", m.stepName(m.tl.cur), m.tokens(), duration(msg.run.Result.RunTime))
		if m.tl.note != "" {
			m.setStatus("%s: %s", m.stepName(m.tl.cur), m.tl.note)
		}
	}
	cmds := []tea.Cmd{m.probeCmd(), m.sync()}
	if m.circuits {
		m.circuits = false // toggleCircuits turns it back on and asks for the step's data
		cmds = append(cmds, m.toggleCircuits())
	}
	return tea.Batch(cmds...)
}

// signed writes a change with its sign: +0.031, −0.120.
func signed(d float64) string {
	if d < 0 {
		return "−" + strconv.FormatFloat(-d, 'f', 3, 64)
	}
	return "+" + strconv.FormatFloat(d, 'f', 3, 64)
}

// keepIDs keeps the prompt as ids when it was given as ids (a step that cannot run ids
// has nil, and the prompt then cannot be edited).
func keepIDs(old, f func(context.Context, []int64) (*Run, error)) func(context.Context, []int64) (*Run, error) {
	if old == nil {
		return nil
	}
	return f
}
