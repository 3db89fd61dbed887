package tui

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
)

// fakeTimeline is a timeline of len(induction) steps whose runs differ by step: step i's
// run puts weight (i+1)/10 of every row on the first token. Its Scores give head L0H0
// the induction scores given, and every other head 0.
type fakeTimeline struct {
	induction []float64
	fail      map[int]error // steps whose Step fails
	rel       *releases

	mu      sync.Mutex
	runs    map[*Run]int // every run made, by step
	calls   []string     // "step i: prompt"
	ctxErrs []error      // Step's context's error when called, call by call
	shown   []int        // TimelineConfig.Shown's calls
}

// stepRun is step i's run of prompt: fakeRun's, with weight (i+1)/10 moved to token 0.
func stepRun(i int, prompt string) *Run {
	r := fakeRun(2, 3, len(strings.Fields(prompt)))
	r.Prompt = prompt
	w := float32(i+1) / 10
	for _, heads := range r.Result.Attn {
		for _, a := range heads {
			for _, row := range a {
				for k := range row {
					row[k] *= 1 - w
				}
				row[0] += w
			}
		}
	}
	return r
}

func (f *fakeTimeline) funcs(i int) *StepFuncs {
	return &StepFuncs{
		Device: fmt.Sprintf("CPU%d", i),
		Rerun: func(_ context.Context, prompt string) (*Run, error) {
			r := stepRun(i, prompt)
			f.mu.Lock()
			defer f.mu.Unlock()
			f.runs[r] = i
			f.calls = append(f.calls, fmt.Sprintf("step %d: %s", i, prompt))
			return r, nil
		},
		Release: f.rel.release,
		Probe: func(context.Context) ([]analysis.HeadScores, error) {
			return []analysis.HeadScores{{Layer: 0, Head: 0, Induction: f.induction[i]}}, nil
		},
	}
}

// stepOf is the step a run was made for (-1: not by the fake).
func (f *fakeTimeline) stepOf(r *Run) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.runs[r]; ok {
		return i
	}
	return -1
}

func (f *fakeTimeline) config() *TimelineConfig {
	n := len(f.induction)
	steps := make([]TimelineStep, n)
	for i := range steps {
		steps[i] = TimelineStep{Step: int64(i * 100), Tokens: int64(i) * 25600, Loss: 3 - float64(i)*0.5, ICL: math.NaN()}
	}
	return &TimelineConfig{
		Steps: steps, Current: n - 1, LossName: "eval loss",
		Step: func(ctx context.Context, i int) (*StepFuncs, error) {
			f.mu.Lock()
			f.ctxErrs = append(f.ctxErrs, ctx.Err())
			f.mu.Unlock()
			if err := f.fail[i]; err != nil {
				return nil, err
			}
			return f.funcs(i), nil
		},
		Shown: func(i int) {
			f.mu.Lock()
			f.shown = append(f.shown, i)
			f.mu.Unlock()
		},
		Scores: func(context.Context) ([][]analysis.HeadScores, error) {
			out := make([][]analysis.HeadScores, n)
			for i, v := range f.induction {
				for l := range 2 {
					for h := range 3 {
						s := analysis.HeadScores{Layer: l, Head: h}
						if l == 0 && h == 0 {
							s.Induction = v
						}
						out[i] = append(out[i], s)
					}
				}
			}
			return out, nil
		},
	}
}

// timelineModel is a browser on the fake timeline's last step, at w×h, with its probe and
// per-step scores done.
func timelineModel(t *testing.T, f *fakeTimeline, w, h int) *Model {
	t.Helper()
	f.rel, f.runs = &releases{}, map[*Run]int{}
	last := len(f.induction) - 1
	first := f.funcs(last)
	r, _ := first.Rerun(context.Background(), "the cat sat on the mat")
	m := New(Config{
		ModelName: "tl", Device: first.Device, Profile: heatmap.ANSI256, Initial: r,
		Rerun: first.Rerun, Release: first.Release, Probe: first.Probe,
		Timeline: f.config(),
	})
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	drain(m, m.Init())
	return m
}

// drain runs cmd and feeds its messages to m, and theirs in turn, as Bubble Tea would (a
// batch's commands one after another).
func drain(m *Model, cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case nil, tea.QuitMsg:
	case tea.BatchMsg:
		for _, c := range msg {
			drain(m, c)
		}
	default:
		_, next := m.Update(msg)
		drain(m, next)
	}
}

// pressRun presses s and runs what it starts.
func pressRun(m *Model, s string) {
	_, cmd := m.Update(press(s))
	drain(m, cmd)
}

// stepBarOf is the screen's step bar, without escapes.
func stepBarOf(m *Model) string {
	for _, l := range screenLines(m) {
		if strings.HasPrefix(l, " step ") {
			return strings.TrimRight(l, " ")
		}
	}
	return ""
}

// markedColumn is the column of the reverse-video cell of the sparkline after label on
// the screen (-1 when there is none).
func markedColumn(m *Model, label string) int {
	for _, line := range strings.Split(m.render(), "\n") {
		i := strings.Index(line, label+" ")
		if i < 0 || !strings.Contains(ansi.Strip(line), "▁") && !strings.Contains(ansi.Strip(line), "█") {
			continue
		}
		rest := line[i+len(label)+1:]
		j := strings.Index(rest, sgrReverse)
		if j < 0 {
			return -1
		}
		return utf8.RuneCountInString(ansi.Strip(rest[:j]))
	}
	return -1
}

// < > { } move through the steps: each shows that step's run of the prompt as typed,
// keeps the cursor and the view, moves the sparklines' mark; out-of-range moves and jumps
// with nowhere to go change nothing but say so.
func TestTimelineSteps(t *testing.T) {
	// L0H0's induction: the largest change is into step 2, then into step 4.
	f := &fakeTimeline{induction: []float64{0.1, 0.12, 0.6, 0.62, 0.3}}
	m := timelineModel(t, f, 120, 40)
	if got := stepBarOf(m); got != " step 400/400 · 102.4 k tokens · eval loss 1.00 · ICL –  [5/5]" {
		t.Fatalf("step bar: %q", got)
	}
	if !strings.Contains(ansi.Strip(m.render()), "<> step") || !strings.Contains(ansi.Strip(m.render()), "{} jump") {
		t.Fatalf("the key bar lacks the timeline's keys:\n%s", ansi.Strip(m.render()))
	}
	// A typed prompt, the head view and the cursor on L0H0 stay across steps.
	pressRun(m, "e")
	m.editor.setValue("a b c d e f g")
	pressRun(m, "enter")
	if m.clean.Prompt != "a b c d e f g" {
		t.Fatalf("the typed prompt did not run: %q", m.clean.Prompt)
	}
	pressRun(m, "enter") // the head view of L0H0
	wantView := m.view
	cases := []struct {
		key       string
		step      int    // the step shown after it
		status    string // in the status line
		moved     bool   // a new run is shown
		sparkMark int
	}{
		{">", 4, "already at the last step (400)", false, 4},
		{"{", 2, "L0H0's induction changes most here (+0.480)", true, 2},
		{"}", 4, "L0H0's induction changes most here (−0.320)", true, 4},
		{"<", 3, "step 300 (4/5): ran 7 tokens", true, 3},
		{"<", 2, "step 200 (3/5)", true, 2},
		{"<", 1, "step 100 (2/5)", true, 1},
		{"{", 1, "no change of L0H0's induction before step 100 (2/5)", false, 1},
		{"<", 0, "step 0 (1/5)", true, 0},
		{"<", 0, "already at the first step (0)", false, 0},
		{"}", 2, "changes most here (+0.480)", true, 2},
		{">", 3, "step 300 (4/5)", true, 3},
	}
	for _, c := range cases {
		before := m.run
		pressRun(m, c.key)
		if m.tl.cur != c.step {
			t.Fatalf("%s: step %d shown, want %d", c.key, m.tl.cur, c.step)
		}
		if !strings.Contains(m.status, c.status) {
			t.Fatalf("%s: status %q, want %q in it", c.key, m.status, c.status)
		}
		if got := (m.run != before); got != c.moved {
			t.Fatalf("%s: a new run shown: %v, want %v", c.key, got, c.moved)
		}
		if got := f.stepOf(m.run); got != c.step {
			t.Fatalf("%s: the run shown is step %d's, want step %d's", c.key, got, c.step)
		}
		if want := float32(c.step+1) / 10; math.Abs(float64(m.run.Result.Attn[1][2][3][0]-want)) > 1e-6 {
			t.Fatalf("%s: the map is not step %d's", c.key, c.step)
		}
		if m.clean.Prompt != "a b c d e f g" || m.run.Prompt != "a b c d e f g" {
			t.Fatalf("%s: the prompt changed to %q", c.key, m.run.Prompt)
		}
		if m.view != wantView || m.layer != 0 || m.head != 0 {
			t.Fatalf("%s: view %s on L%dH%d, want the head view of L0H0", c.key, m.view, m.layer, m.head)
		}
		if m.cfg.Device != fmt.Sprintf("CPU%d", c.step) {
			t.Fatalf("%s: the funcs are not the step's (device %q)", c.key, m.cfg.Device)
		}
		if m.probe == nil || m.probe[0].Induction != f.induction[c.step] {
			t.Fatalf("%s: the probe scores are not step %d's: %v", c.key, c.step, m.probe)
		}
		for _, label := range []string{"L0H0 induction", "eval loss"} {
			if got := markedColumn(m, label); got != c.sparkMark {
				t.Fatalf("%s: the %s sparkline marks column %d, want %d", c.key, label, got, c.sparkMark)
			}
		}
		if c.moved && !f.rel.has(before) {
			t.Fatalf("%s: the run of the step left was not released", c.key)
		}
		f.mu.Lock()
		if c.moved && (len(f.shown) == 0 || f.shown[len(f.shown)-1] != c.step) {
			t.Fatalf("%s: Shown was told %v, want step %d last", c.key, f.shown, c.step)
		}
		f.mu.Unlock()
		checkFrame(t, m.render(), 120, 40, "after "+c.key)
	}
}

// A step asked for while another loads supersedes it: the earlier step's run, coming
// back last, is released unseen.
func TestTimelineLastRequestWins(t *testing.T) {
	f := &fakeTimeline{induction: []float64{0.1, 0.2, 0.3, 0.4, 0.5}}
	m := timelineModel(t, f, 120, 40)
	_, first := m.Update(press("<")) // step 3, not run yet
	_, second := m.Update(press("<"))
	if !m.tl.loading || m.tl.want != 2 || m.tl.cur != 4 {
		t.Fatalf("two < while loading: want step 2 loading over step 4, got want %d cur %d loading %v", m.tl.want, m.tl.cur, m.tl.loading)
	}
	if bar := stepBarOf(m); !strings.Contains(bar, "opening step 200 (3/5)") {
		t.Fatalf("the step bar does not say which step opens: %q", bar)
	}
	drain(m, second)
	if m.tl.cur != 2 || f.stepOf(m.run) != 2 {
		t.Fatalf("step %d shown (run of %d), want 2", m.tl.cur, f.stepOf(m.run))
	}
	shown := m.run
	stale := first().(stepDoneMsg)
	if len(f.ctxErrs) != 2 || f.ctxErrs[0] != nil || !errors.Is(f.ctxErrs[1], context.Canceled) {
		t.Fatalf("Step's contexts' errors %v: want the superseded step's cancelled", f.ctxErrs)
	}
	m.Update(stale)
	if m.tl.cur != 2 || m.run != shown {
		t.Fatalf("the stale step %d replaced step 2", stale.index)
	}
	if !f.rel.has(stale.run) {
		t.Fatal("the stale step's run was not released")
	}
}

// A prompt re-run started on a step that is left before it returns is not shown: the
// prompt runs again on the new step.
func TestTimelineStaleRerun(t *testing.T) {
	f := &fakeTimeline{induction: []float64{0.1, 0.2, 0.3}}
	m := timelineModel(t, f, 120, 40)
	pressRun(m, "e")
	m.editor.setValue("x y z")
	_, rerun := m.Update(press("enter")) // on step 2, not run yet
	pressRun(m, "<")                     // step 1 opens with the pending prompt
	if m.tl.cur != 1 || m.run.Prompt != "x y z" {
		t.Fatalf("step %d with %q, want step 1 with the pending prompt", m.tl.cur, m.run.Prompt)
	}
	shown := m.run
	msg := rerun().(runDoneMsg)
	_, next := m.Update(msg)
	drain(m, next)
	if m.run != shown || f.stepOf(m.run) != 1 {
		t.Fatalf("the stale re-run of step 2 replaced step 1's run")
	}
	if !f.rel.has(msg.run) {
		t.Fatal("the stale re-run was not released")
	}
}

// A step that cannot be opened leaves the browser on the step it shows, saying why in one
// sentence; the per-step scores not yet known make { say so.
func TestTimelineStepFails(t *testing.T) {
	f := &fakeTimeline{induction: []float64{0.1, 0.2, 0.3}, fail: map[int]error{1: errors.New("model.onnx is not a model")}}
	m := timelineModel(t, f, 120, 40)
	shown := m.run
	pressRun(m, "<")
	if m.tl.cur != 2 || m.run != shown || m.tl.loading {
		t.Fatalf("a failed step moved the browser to step %d", m.tl.cur)
	}
	if want := "cannot open step 100 (2/3), staying on step 200 (3/3): model.onnx is not a model"; m.status != want {
		t.Fatalf("status %q, want %q", m.status, want)
	}
	m.tl.scores = nil
	pressRun(m, "{")
	if m.tl.cur != 2 || m.status != "the per-step head scores are still being computed" {
		t.Fatalf("{ without scores: step %d, status %q", m.tl.cur, m.status)
	}
	if !strings.Contains(ansi.Strip(m.render()), "L0H0 induction computing…") {
		t.Fatalf("the head sparkline does not say it is computing:\n%s", ansi.Strip(m.render()))
	}
	// Scores with a step missing are kept: the sparkline draws the others, { still jumps.
	partial := [][]analysis.HeadScores{{{Layer: 0, Head: 0, Induction: 0.1}}, nil, {{Layer: 0, Head: 0, Induction: 0.5}}}
	m.Update(scoresDoneMsg{partial, errors.New("step 100: not a model")})
	if m.status != "per-step head scores: step 100: not a model" || markedColumn(m, "L0H0 induction") != 2 {
		t.Fatalf("partial scores: status %q, screen:\n%s", m.status, ansi.Strip(m.render()))
	}
	pressRun(m, "{")
	if !strings.Contains(m.status, "no change of L0H0's induction before") {
		t.Fatalf("{ over a step without scores: %q", m.status)
	}
}

// Outside timeline mode < > { } do nothing and are neither in the key bar nor the help.
func TestTimelineKeysOnlyInTimelineMode(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 6))
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	run, status := m.run, m.status
	for _, k := range []string{"<", ">", "{", "}"} {
		pressRun(m, k)
	}
	if m.run != run || m.status != status {
		t.Fatalf("timeline keys acted outside timeline mode: status %q", m.status)
	}
	screen := ansi.Strip(m.render())
	if strings.Contains(screen, "<> step") {
		t.Fatalf("timeline mode shown outside a timeline:\n%s", screen)
	}
	pressRun(m, "?")
	if strings.Contains(ansi.Strip(m.render()), "timeline:") {
		t.Fatal("the help lists the timeline keys outside a timeline")
	}
	f := &fakeTimeline{induction: []float64{0.1, 0.2, 0.3}}
	tm := timelineModel(t, f, 200, 60)
	pressRun(tm, "?")
	if !strings.Contains(ansi.Strip(tm.render()), "timeline: previous step") {
		t.Fatal("the help lacks the timeline keys in timeline mode")
	}
}

// The step bar and the sparklines fit every window: no line wider, no more lines.
func TestTimelineFits(t *testing.T) {
	f := &fakeTimeline{induction: make([]float64, 40)}
	for i := range f.induction {
		f.induction[i] = float64(i%7) / 7
	}
	for _, size := range [][2]int{{40, 10}, {60, 20}, {80, 24}, {120, 40}, {300, 100}} {
		m := timelineModel(t, f, size[0], size[1])
		for _, k := range []string{"", "<", "enter", "tab", "?"} {
			if k != "" {
				pressRun(m, k)
			}
			checkFrame(t, m.render(), size[0], size[1], fmt.Sprintf("timeline after %q", k))
		}
		if size[1] >= sparkMinHeight && markedColumn(m, "ICL") < 0 && size[0] >= 60 {
			t.Fatalf("at %d×%d the sparklines show no mark:\n%s", size[0], size[1], ansi.Strip(m.render()))
		}
	}
}

// An encoder–decoder's step change runs the source and the target as shown through the
// new step's RerunPair, and later edits go to that step's RerunPair.
func TestTimelinePairKeepsTarget(t *testing.T) {
	type call struct {
		step     int
		src, tgt string
	}
	var calls []call
	pairFuncs := func(i int) *StepFuncs {
		return &StepFuncs{RerunPair: func(_ context.Context, src, tgt string) (*Run, error) {
			calls = append(calls, call{i, src, tgt})
			r := fakePairRun()
			r.Prompt = src
			return r, nil
		}}
	}
	first := fakePairRun()
	first.Target = "T0 T1 T2"
	steps := []TimelineStep{{Step: 0, Loss: 2, ICL: 0}, {Step: 10, Loss: 1, ICL: 0.1}}
	m := New(Config{ModelName: "m", Profile: heatmap.NoColor, Initial: first,
		RerunPair: pairFuncs(1).RerunPair,
		Timeline: &TimelineConfig{Steps: steps, Current: 1,
			Step: func(_ context.Context, i int) (*StepFuncs, error) { return pairFuncs(i), nil }}})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	pressRun(m, "<")
	if m.tl.cur != 0 || len(calls) != 1 || calls[0] != (call{0, "S0 S1 S2 S3", "T0 T1 T2"}) {
		t.Fatalf("step %d after <, calls %v", m.tl.cur, calls)
	}
	if m.clean.Target != "T0 T1 T2" {
		t.Fatalf("the target became %q", m.clean.Target)
	}
	pressRun(m, "e")
	pressRun(m, "enter")
	if len(calls) != 2 || calls[1].step != 0 {
		t.Fatalf("an edit after the step change ran %v, want step 0's RerunPair", calls)
	}
}

// Head scores (all in [0, 1]) are drawn on the fixed scale 0..1; the loss and the ICL
// score from their least to their greatest value, even where they lie in [0, 1].
func TestSparklineScale(t *testing.T) {
	ticks := []rune(string(sparkTicks))
	low, high := string(ticks[0]), string(ticks[len(ticks)-1])
	cases := []struct {
		name       string
		y          []float64
		unit       bool
		first, end string
	}{
		{"scores near zero stay low", []float64{0.01, 0.02, 0.03}, true, low, low},
		{"a score reaching 1 is full", []float64{0, 0.5, 1}, true, low, high},
		{"a loss spans the range", []float64{3.2, 2.9, 2.8}, false, high, low},
		{"an ICL score below zero spans the range", []float64{0.2, -0.1, -0.3}, false, high, low},
		{"an ICL score within [0, 1] spans the range too", []float64{0.086, 0.355, 0.2}, false, low, string(ticks[3])},
	}
	for _, c := range cases {
		got := []rune(ansi.Strip(sparkline(c.y, 1, len(c.y), c.unit)))
		if len(got) != len(c.y) || string(got[0]) != c.first || string(got[len(got)-1]) != c.end {
			t.Errorf("%s: sparkline(%v) = %q, want it to start with %s and end with %s", c.name, c.y, string(got), c.first, c.end)
		}
	}
}

// The marked cell is the one whose share of the steps holds the current step, also when
// the sparkline has fewer cells than steps.
func TestSparklineMarksTheCurrentStepsCell(t *testing.T) {
	for _, c := range []struct{ n, w int }{{5, 4}, {18, 17}, {18, 4}, {6, 6}, {40, 13}} {
		y := make([]float64, c.n)
		for cur := range c.n {
			line := sparkline(y, cur, c.w, false)
			cells := strings.Split(strings.ReplaceAll(line, sgrReset, ""), sgrReverse)
			if len(cells) != 2 {
				t.Fatalf("n %d w %d cur %d: %d marks in %q", c.n, c.w, cur, len(cells)-1, line)
			}
			mark := len([]rune(cells[0]))
			if from, to := mark*c.n/c.w, (mark+1)*c.n/c.w; cur < from || cur >= to {
				t.Errorf("n %d w %d: step %d marked in cell %d, which holds steps %d–%d", c.n, c.w, cur, mark, from, to-1)
			}
		}
	}
}

// A jump that lands on the step still shown (another was loading) says it is back there,
// not that it opens it.
func TestTimelineJumpBackToTheShownStep(t *testing.T) {
	f := &fakeTimeline{induction: []float64{0.1, 0.12, 0.6, 0.62, 0.3}}
	m := timelineModel(t, f, 120, 40)
	m.Update(press("<")) // step 3 starts loading; its command is never run
	if m.tl.want != 3 || m.tl.cur != 4 {
		t.Fatalf("after <: want %d, cur %d", m.tl.want, m.tl.cur)
	}
	_, cmd := m.Update(press("}")) // the largest change after step 3 is into step 4, the one shown
	if cmd != nil || m.tl.want != 4 || m.tl.loading {
		t.Fatalf("} back to the shown step: cmd %v, want %d, loading %v", cmd != nil, m.tl.want, m.tl.loading)
	}
	if !strings.HasPrefix(m.status, "back on step 400") || strings.Contains(m.status, "opening") {
		t.Fatalf("status %q, want it to say it is back on step 400", m.status)
	}
}
