package tui

import (
	"context"
	"errors"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
)

// ablator is a fake Config.Ablate: it records its calls and returns a fakeRun of the
// prompt's tokens whose later tokens are the harder to predict the more heads are off, and
// whose layers from the first head off on attend to the first token.
type ablator struct {
	L, H   int
	tokens func(prompt string) int
	err    error // returned instead of a run, when set
	mu     sync.Mutex
	calls  []ablateCall
}

type ablateCall struct {
	prompt string
	off    []ablate.Head
	run    *Run
}

// newAblator ablates runs shaped like first: of its prompt, its tokens; of any other
// prompt (run by newModel's Rerun), a token per word.
func newAblator(first *Run) *ablator {
	return &ablator{L: len(first.Result.Attn), H: first.Result.Heads(0), tokens: func(prompt string) int {
		if prompt == first.Prompt {
			return len(first.Result.Tokens)
		}
		return len(strings.Fields(prompt))
	}}
}

func (a *ablator) ablate(_ context.Context, prompt string, off []ablate.Head) (*Run, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		a.calls = append(a.calls, ablateCall{prompt, slices.Clone(off), nil})
		return nil, a.err
	}
	T := a.tokens(prompt)
	r := fakeRun(a.L, a.H, T)
	r.Prompt, r.Labels, r.Pieces = "", nil, nil // taken from the clean run
	res := r.Result
	for i := 0; i < T; i++ { // the later the harder
		res.Logits[i*res.Vocab+(i+1)%10] -= float32(0.25 * float64(i*len(off)))
	}
	for l := off[0].Layer + 1; l < a.L; l++ {
		for _, m := range res.Attn[l] {
			for q := range m {
				clear(m[q])
				m[q][0] = 1
			}
		}
	}
	a.calls = append(a.calls, ablateCall{prompt, slices.Clone(off), r})
	return r, nil
}

func (a *ablator) last() ablateCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.calls) == 0 {
		return ablateCall{}
	}
	return a.calls[len(a.calls)-1]
}

func (a *ablator) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

// releases records the runs handed to Config.Release.
type releases struct {
	mu   sync.Mutex
	runs []*Run
}

func (r *releases) release(run *Run) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs = append(r.runs, run)
}

// has waits a while for run to be released (Release runs in the background).
func (r *releases) has(run *Run) bool {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r.mu.Lock()
		ok := slices.Contains(r.runs, run)
		r.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// had reports whether run has been released.
func (r *releases) had(run *Run) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.runs, run)
}

// ablModel is newModel with a fake Ablate and a recorded Release, at 120×40.
func ablModel(t *testing.T, run *Run) (*Model, *ablator, *releases) {
	t.Helper()
	m := newModel(heatmap.ANSI256, run)
	a := newAblator(run)
	rel := &releases{}
	m.cfg.Ablate, m.cfg.Release = a.ablate, rel.release
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	return m, a, rel
}

// send updates m with msg and then, one at a time, with the message of each command it
// returns, as Bubble Tea would (quitting and nil messages aside).
func send(m *Model, msg tea.Msg) {
	for msg != nil {
		_, cmd := m.Update(msg)
		if cmd == nil {
			return
		}
		msg = cmd()
		if _, ok := msg.(tea.QuitMsg); ok {
			return
		}
	}
}

// x toggles the selected head in and out of the set of heads off; each change re-runs
// the model through Ablate with the prompt and the sorted set, and shows that run.
func TestAblateToggle(t *testing.T) {
	m, a, _ := ablModel(t, fakeRun(3, 3, 8))
	clean := m.run
	steps := []struct {
		keys []string
		off  string // the set after the keys
	}{
		{[]string{"x"}, "L0H0"},
		{[]string{"right", "down", "down", "x"}, "L0H0,L2H1"},
		{[]string{"up", "x"}, "L0H0,L1H1,L2H1"},
		{[]string{"right", "x"}, "L0H0,L1H1,L1H2,L2H1"},
		{[]string{"x"}, "L0H0,L1H1,L2H1"},
		{[]string{"left", "left", "up", "x"}, "L1H1,L2H1"},
		{[]string{"enter", "x"}, "L0H0,L1H1,L2H1"}, // the head view too
	}
	for i, s := range steps {
		before := a.count()
		for _, k := range s.keys {
			send(m, press(k))
		}
		want := offHeads(s.off)
		call := a.last()
		if m.off != s.off || a.count() != before+1 || call.prompt != clean.Prompt || !slices.Equal(call.off, want) {
			t.Fatalf("step %d %v: off %q, %d calls, last Ablate(%q, %v); want off %q and one call with %v",
				i, s.keys, m.off, a.count()-before, call.prompt, call.off, s.off, want)
		}
		if !slices.IsSortedFunc(call.off, ablate.Compare) {
			t.Fatalf("step %d: Ablate got an unsorted set %v", i, call.off)
		}
		if m.run != call.run || m.clean != clean || m.shownOff != s.off {
			t.Fatalf("step %d: the ablated run is not shown (shown off %q)", i, m.shownOff)
		}
	}
}

// X switches every head back on without a run and shows the clean run kept from before;
// the ablated run is released, the clean one never. x on the last head off does the same.
func TestAblateRestore(t *testing.T) {
	for _, restore := range [][]string{{"X"}, {"x"}} {
		m, a, rel := ablModel(t, fakeRun(2, 3, 8))
		clean := m.run
		send(m, press("x"))
		ablated := m.run
		if ablated == clean || m.shownOff != "L0H0" {
			t.Fatalf("x did not show an ablated run")
		}
		calls := a.count()
		var cmd tea.Cmd
		for _, k := range restore {
			_, cmd = m.Update(press(k))
		}
		if cmd != nil || m.running || a.count() != calls {
			t.Fatalf("%v started a run", restore)
		}
		if m.run != clean || m.off != "" || m.shownOff != "" {
			t.Fatalf("%v: the clean run is not shown (off %q)", restore, m.off)
		}
		m.bg.stop() // waits for the releases
		if !rel.had(ablated) {
			t.Fatalf("%v: the ablated run was not released", restore)
		}
		if rel.had(clean) {
			t.Fatal("the clean run was released while shown")
		}
		screen := ansi.Strip(m.render())
		if strings.Contains(screen, "off:") || strings.Contains(screen, "ablated") {
			t.Fatalf("%v: the screen still speaks of heads off:\n%s", restore, screen)
		}
	}
	m, a, _ := ablModel(t, fakeRun(2, 3, 8))
	if _, cmd := m.Update(press("X")); cmd != nil || a.count() != 0 || m.status != "no head is switched off" {
		t.Fatalf("X with every head on: status %q", m.status)
	}
}

// mainArea is the screen without the side panel.
func mainArea(screen string) string {
	lines := strings.Split(screen, "\n")
	for i, l := range lines {
		lines[i], _, _ = strings.Cut(l, "│")
	}
	return strings.Join(lines, "\n")
}

// sidePanelOf is the side panel of a screen.
func sidePanelOf(screen string) string {
	var out []string
	for _, l := range strings.Split(screen, "\n") {
		if _, panel, ok := strings.Cut(l, "│"); ok {
			out = append(out, panel)
		}
	}
	return strings.Join(out, "\n")
}

// numbers are the numbers of the first line of screen that contains label.
func numbers(t *testing.T, screen, label string) []float64 {
	t.Helper()
	for _, line := range strings.Split(screen, "\n") {
		if i := strings.Index(line, label); i >= 0 {
			var out []float64
			for _, s := range regexp.MustCompile(`[-+]?\d+\.\d+`).FindAllString(line[i+len(label):], -1) {
				v, _ := strconv.ParseFloat(s, 64)
				out = append(out, v)
			}
			return out
		}
	}
	t.Fatalf("no line with %q in:\n%s", label, screen)
	return nil
}

func meanLoss(losses []float64) float64 {
	sum, n := 0.0, 0
	for _, l := range losses {
		if !math.IsNaN(l) {
			sum += l
			n++
		}
	}
	return sum / float64(n)
}

// checkNumbers asserts that got is want (clean, ablated, change) to the 3 decimals shown.
func checkNumbers(t *testing.T, what string, got []float64, clean, ablated float64) {
	t.Helper()
	want := []float64{clean, ablated, ablated - clean}
	if len(got) != 3 {
		t.Fatalf("%s: %v on the line, want clean, ablated and change %v", what, got, want)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 0.0006 {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}

// The panel shows the heads off, the mean next-token loss clean → ablated and its change,
// and the in-context-learning score's, computed here from the runs with
// analysis.TokenLosses; a prompt too short has no ICL, a model without logits no loss.
func TestAblatePanel(t *testing.T) {
	m, a, _ := ablModel(t, fakeRun(2, 3, 8))
	clean := m.run
	for _, k := range []string{"x", "right", "x", "enter"} {
		send(m, press(k))
	}
	cl, ab := analysis.TokenLosses(clean.Result), analysis.TokenLosses(a.last().run.Result)
	if meanLoss(ab) <= meanLoss(cl)+0.1 {
		t.Fatalf("the fake's ablation hardly changes the loss: %g → %g", meanLoss(cl), meanLoss(ab))
	}
	early, late, _ := analysis.ICLPositions(8)
	screen := ansi.Strip(m.render())
	if !strings.Contains(screen, "off: L0H0 L0H1") || !strings.Contains(screen, "L0H1 (ablated)") {
		t.Fatalf("the screen does not say which heads are off:\n%s", screen)
	}
	checkNumbers(t, "mean loss", numbers(t, screen, "│ loss"), meanLoss(cl), meanLoss(ab))
	checkNumbers(t, "ICL", numbers(t, screen, "│ ICL"), cl[late]-cl[early], ab[late]-ab[early])
	if !strings.Contains(m.status, "mean loss") {
		t.Fatalf("status %q", m.status)
	}

	// A prompt of two tokens has losses but no ICL score.
	m, _, _ = ablModel(t, fakeRun(2, 3, 2))
	send(m, press("x"))
	if screen := ansi.Strip(m.render()); !strings.Contains(screen, "ICL: prompt too short") || !strings.Contains(screen, "│ loss") {
		t.Fatalf("two tokens:\n%s", screen)
	}

	// Without logits there is no loss to compare.
	run := fakeRun(2, 3, 8)
	run.Result.Logits, run.Result.Vocab = nil, 0
	m, a, _ = ablModel(t, run)
	m.cfg.Ablate = func(ctx context.Context, p string, off []ablate.Head) (*Run, error) {
		r, err := a.ablate(ctx, p, off)
		r.Result.Logits, r.Result.Vocab = nil, 0
		return r, err
	}
	send(m, press("x"))
	if panel := sidePanelOf(ansi.Strip(m.render())); !strings.Contains(panel, "the model has no logits") || strings.Contains(panel, "\n loss ") {
		t.Fatalf("no logits:\n%s", panel)
	}
}

// The token view shows, with heads off, each token's loss clean and ablated and the change.
func TestAblateTokenView(t *testing.T) {
	m, a, _ := ablModel(t, fakeRun(2, 3, 8))
	clean := m.run
	send(m, press("tab"))
	send(m, press("tab"))
	if screen := ansi.Strip(m.render()); strings.Contains(screen, "token's loss") {
		t.Fatalf("a loss table with every head on:\n%s", screen)
	}
	send(m, press("x"))
	send(m, press("left")) // the cursor on token 6
	cl, ab := analysis.TokenLosses(clean.Result), analysis.TokenLosses(a.last().run.Result)
	screen := mainArea(ansi.Strip(m.render()))
	if !strings.Contains(screen, "token's loss") {
		t.Fatalf("no loss table:\n%s", screen)
	}
	// Token 6's loss is that of predicting it at position 5.
	checkNumbers(t, "token 6", numbers(t, screen, "▶    6 "+clean.Labels[6]), cl[5], ab[5])
	checkNumbers(t, "token 3", numbers(t, screen, "    3 "+clean.Labels[3]), cl[2], ab[2])
}

// The grid marks the heads off, apart from the score marks.
func TestAblateGridMarks(t *testing.T) {
	m, _, _ := ablModel(t, fakeRun(2, 3, 8))
	send(m, press("right"))
	send(m, press("x"))
	screen := ansi.Strip(m.render())
	if n := strings.Count(screen, "×off"); n != 1 || !strings.Contains(screen, "× off") || !strings.Contains(screen, "1 head off") {
		t.Fatalf("%d off marks:\n%s", n, screen)
	}
	send(m, press("X"))
	if screen := ansi.Strip(m.render()); strings.Contains(screen, "×off") || strings.Contains(screen, "× off") {
		t.Fatalf("off marks with every head on:\n%s", screen)
	}
}

// Without Config.Ablate, x says why in the status line and switches nothing off.
func TestAblateUnavailable(t *testing.T) {
	for _, why := range []string{"the model was exported without head masks", ""} {
		m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
		m.cfg.AblateWhy = why
		m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
		_, cmd := m.Update(press("x"))
		want := why
		if want == "" {
			want = defaultAblateWhy
		}
		if cmd != nil || m.off != "" || m.status != want || !strings.Contains(ansi.Strip(m.render()), want) {
			t.Fatalf("x without Ablate: status %q, off %q", m.status, m.off)
		}
	}
}

// A failed ablation says why and leaves the heads as they were shown.
func TestAblateFailure(t *testing.T) {
	m, a, _ := ablModel(t, fakeRun(2, 3, 8))
	send(m, press("x"))
	a.err = errors.New("no mask input for layer 1")
	send(m, press("down"))
	send(m, press("x"))
	if m.off != "L0H0" || m.shownOff != "L0H0" || !strings.Contains(m.status, "no mask input for layer 1") {
		t.Fatalf("after a failed ablation: off %q, shown %q, status %q", m.off, m.shownOff, m.status)
	}
	// A run that does not fit the clean run is refused too.
	a.err = nil
	a.tokens = func(string) int { return 5 }
	send(m, press("x"))
	if m.off != "L0H0" || m.shownOff != "L0H0" || !strings.Contains(m.status, "does not match") {
		t.Fatalf("after a misfit ablated run: off %q, shown %q, status %q", m.off, m.shownOff, m.status)
	}
}

// Keys pressed while an ablated run is in flight change the wanted set; the run that
// comes back for a set no longer wanted is released unseen, and the wanted one follows.
// X during the run shows the clean run at once.
func TestAblateDuringRun(t *testing.T) {
	m, a, rel := ablModel(t, fakeRun(2, 3, 8))
	clean := m.run
	_, first := m.Update(press("x"))
	if first == nil || !m.running {
		t.Fatal("x did not start a run")
	}
	m.Update(press("right"))
	if _, cmd := m.Update(press("x")); cmd != nil {
		t.Fatal("a second run started while one is in flight")
	}
	if m.off != "L0H0,L0H1" || m.run != clean {
		t.Fatalf("off %q", m.off)
	}
	_, second := m.Update(first())
	stale := a.last().run
	if m.run != clean || second == nil || !rel.has(stale) {
		t.Fatalf("the run for a set no longer wanted was shown, or no run followed it")
	}
	m.Update(second())
	if got := a.last(); m.run != got.run || m.shownOff != "L0H0,L0H1" || len(got.off) != 2 {
		t.Fatalf("the wanted run is not shown: shown %q", m.shownOff)
	}
	_, third := m.Update(press("x")) // back to L0H0
	m.Update(press("X"))
	if m.run != clean || m.off != "" {
		t.Fatal("X during a run did not show the clean run at once")
	}
	if _, cmd := m.Update(third()); cmd != nil || m.run != clean || m.running {
		t.Fatal("the run finished after X changed the screen")
	}
}

// Editing the prompt with heads off runs the new prompt clean and ablated: both are
// shown (the loss change is of the new prompt), and the old runs are released.
func TestAblateEditPrompt(t *testing.T) {
	m, a, rel := ablModel(t, fakeRun(2, 3, 8))
	oldClean := m.run
	send(m, press("down"))
	send(m, press("x"))
	oldAblated := m.run
	send(m, press("e"))
	m.Update(keyMsg("ctrl+u"))
	for _, r := range "a b c d e f g h i j k l" {
		m.Update(press(string(r)))
	}
	// One command runs the new prompt clean and ablated: no frame shows the new prompt's
	// clean run as if the heads were off.
	_, cmd := m.Update(press("enter"))
	if _, next := m.Update(cmd()); next != nil {
		t.Fatal("the ablated run of the new prompt came in a second command")
	}
	call := a.last()
	if call.prompt != "a b c d e f g h i j k l" || !slices.Equal(call.off, []ablate.Head{{Layer: 1, Head: 0}}) {
		t.Fatalf("Ablate(%q, %v)", call.prompt, call.off)
	}
	if m.clean.Prompt != call.prompt || m.run != call.run || m.tokens() != 12 || m.shownOff != "L1H0" {
		t.Fatalf("after the edit: clean %q, shows the ablated run %v, %d tokens", m.clean.Prompt, m.run == call.run, m.tokens())
	}
	if m.run.Labels == nil || m.run.Prompt != call.prompt {
		t.Fatal("the ablated run did not get the clean run's labels and prompt")
	}
	if !rel.has(oldClean) || !rel.has(oldAblated) {
		t.Fatal("the old prompt's runs were not released")
	}
	cl, ab := analysis.TokenLosses(m.clean.Result), analysis.TokenLosses(call.run.Result)
	checkNumbers(t, "mean loss", numbers(t, ansi.Strip(m.render()), "│ loss"), meanLoss(cl), meanLoss(ab))
}

// At 80×24 every view with heads off fits, keeps the key help as its bottom line and
// says what is off (go test -v shows the screens).
func TestAblatedScreensAt80x24(t *testing.T) {
	cases := []struct {
		name string
		keys []string
		want []string
	}{
		{"grid", []string{"right", "x", "down", "x"}, []string{"×off", "2 heads off", "mean loss"}},
		{"head", []string{"x", "enter"}, []string{"L0H0 (ablated)", "off: L0H0", " loss ", " ICL "}},
		{"tokens", []string{"x", "tab", "tab"}, []string{"token's loss", "off: L0H0", "▶   29"}},
		{"help", []string{"x", "?"}, []string{"x switches the selected head off", "every head back on"}},
	}
	for _, c := range cases {
		if c.name == "help" {
			// The help is taller than 80×24: the ablation text is further down.
			c.keys = append(c.keys, strings.Fields(strings.Repeat("down ", 40))...)
		}
		m, _, _ := ablModel(t, fakeRun(4, 6, 30))
		m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
		for _, k := range c.keys {
			send(m, press(k))
		}
		frame := m.render()
		checkFrame(t, frame, 80, 24, c.name)
		screen := ansi.Strip(frame)
		t.Logf("%s:\n%s", c.name, screen)
		lines := strings.Split(screen, "\n")
		if len(lines) != 24 || !strings.HasSuffix(strings.TrimSpace(lines[23]), "q quit") {
			t.Fatalf("%s: the bottom line is not the key bar:\n%s", c.name, screen)
		}
		for _, w := range c.want {
			if !strings.Contains(screen, w) {
				t.Errorf("%s: no %q on the screen:\n%s", c.name, w, screen)
			}
		}
	}
	// The help overlay lists both keys where its columns fit.
	m, _, _ := ablModel(t, fakeRun(4, 6, 30))
	send(m, press("?"))
	screen := ansi.Strip(m.render())
	for _, w := range []string{"x     switch head off / on (ablate)", "X     switch every head back on"} {
		if !strings.Contains(screen, w) {
			t.Errorf("the help at 120×40 lacks %q:\n%s", w, screen)
		}
	}
}
