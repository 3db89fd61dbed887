package tui

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/teatest/v2"
	"github.com/charmbracelet/x/vt"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/result"
)

// fakeRun builds a run of T tokens over L layers of H heads: head h of layer l attends to
// position i−1−((l+h)%2) (a previous-token pattern), with logits favouring token i+1.
func fakeRun(L, H, T int) *Run {
	res := &result.Result{Vocab: 10}
	for i := 0; i < T; i++ {
		res.Tokens = append(res.Tokens, int64(i%10))
		row := make([]float32, 10)
		row[(i+1)%10] = 5
		res.Logits = append(res.Logits, row...)
	}
	for l := 0; l < L; l++ {
		var heads [][][]float32
		for h := 0; h < H; h++ {
			a := make([][]float32, T)
			for i := range a {
				a[i] = make([]float32, T)
				j := i - 1 - (l+h)%2
				if j < 0 {
					j = 0
				}
				a[i][j] = 1
			}
			heads = append(heads, a)
		}
		res.Attn = append(res.Attn, heads)
	}
	labels := make([]string, T)
	pieces := make([]string, T)
	for i := range labels {
		labels[i] = []string{"The", "␣cat", "␣sat", "␣on", "␣the", "␣mat", ".", "↵", "␣日本", "<e2 80>"}[i%10]
		pieces[i] = []string{"The", " cat", " sat", " on", " the", " mat", ".", "\n", " 日本", "\t"}[i%10]
	}
	return &Run{Prompt: "The cat sat on the mat.", Result: res, Labels: labels, Pieces: pieces}
}

func newModel(profile heatmap.Profile, run *Run) *Model {
	return New(Config{
		ModelName: "test.onnx", Device: "CPU", Profile: profile, Initial: run,
		Rerun: func(_ context.Context, prompt string) (*Run, error) {
			r := fakeRun(2, 3, len(strings.Fields(prompt)))
			r.Prompt = prompt
			return r, nil
		},
		Probe: func(context.Context) ([]analysis.HeadScores, error) {
			return []analysis.HeadScores{{Layer: 1, Head: 2, Induction: 0.9, DuplicateToken: 0.1}}, nil
		},
	})
}

func press(s string) tea.KeyPressMsg {
	switch s {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "tab":
		return tea.KeyPressMsg{Code: tea.KeyTab}
	case "up":
		return tea.KeyPressMsg{Code: tea.KeyUp}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "left":
		return tea.KeyPressMsg{Code: tea.KeyLeft}
	case "right":
		return tea.KeyPressMsg{Code: tea.KeyRight}
	}
	if len([]rune(s)) > 1 {
		return keyMsg(s) // pgdown, ctrl+u, …
	}
	r := []rune(s)[0]
	return tea.KeyPressMsg{Code: r, Text: s}
}

// checkFrame asserts that a frame fits a w×h terminal exactly: no line wider, no more lines.
func checkFrame(t *testing.T, frame string, w, h int, what string) {
	t.Helper()
	lines := strings.Split(frame, "\n")
	if len(lines) > h {
		t.Fatalf("%s at %d×%d: %d lines", what, w, h, len(lines))
	}
	for i, l := range lines {
		if lw := ansi.StringWidth(l); lw > w {
			t.Fatalf("%s at %d×%d: line %d is %d cells wide: %q", what, w, h, i, lw, ansi.Strip(l))
		}
	}
}

// Every view, in every colour profile, fits every terminal size from 20×6 to 300×100;
// too small a terminal gets one line asking for a larger window.
func TestSizeSweep(t *testing.T) {
	widths := []int{20, 39, 40, 41, 55, 79, 80, 99, 100, 120, 200, 300}
	heights := []int{6, 9, 10, 11, 12, 20, 40, 100}
	states := []struct {
		name string
		keys []string
	}{
		{"grid", nil},
		{"head", []string{"enter"}},
		{"head fit", []string{"enter", "z"}},
		{"head zoomed", []string{"enter", "+", "+", "right", "right"}},
		{"tokens", []string{"tab", "tab"}},
		{"tokens reversed", []string{"tab", "tab", "r", "g"}},
		{"help", []string{"?"}},
		{"help scrolled", []string{"?", "down", "down", "down"}},
		{"editing", []string{"e"}},
		{"grid paged", []string{"pgdown", "down"}},
		{"score table", []string{"h", "down", "o"}},
		{"heads off, score table", []string{"x", "h", "G"}},
		{"heads off, grid", []string{"x", "right", "x"}},
		{"heads off, head", []string{"x", "enter"}},
		{"heads off, tokens", []string{"x", "tab", "tab"}},
		{"heads off, help", []string{"x", "?"}},
	}
	for _, p := range []heatmap.Profile{heatmap.TrueColor, heatmap.ANSI256, heatmap.ANSI16, heatmap.NoColor} {
		for _, T := range []int{1, 7, 150} {
			for _, st := range states {
				run := fakeRun(3, 12, T)
				m := newModel(p, run)
				m.cfg.Ablate = newAblator(run).ablate
				for _, k := range st.keys {
					send(m, press(k))
				}
				for _, w := range widths {
					for _, h := range heights {
						m.Update(tea.WindowSizeMsg{Width: w, Height: h})
						frame := m.render()
						checkFrame(t, frame, w, h, st.name)
						small := w < minWidth || h < minHeight
						if small != strings.HasPrefix(frame, "make the window") || small && strings.Contains(frame, "\n") {
							t.Fatalf("%s at %d×%d: %q", st.name, w, h, ansi.Strip(frame))
						}
						if !small && len(strings.Split(frame, "\n")) != h {
							t.Fatalf("%s at %d×%d: frame is not full height", st.name, w, h)
						}
					}
				}
			}
		}
	}
}

func TestNavigation(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	steps := []struct {
		key                string
		view               view
		layer, head, query int
	}{
		{"right", gridView, 0, 1, 7},
		{"right", gridView, 0, 2, 7},
		{"right", gridView, 0, 2, 7}, // stays on the last head
		{"down", gridView, 1, 2, 7},
		{"enter", headView, 1, 2, 7},
		{"up", headView, 1, 2, 6},
		{"g", headView, 1, 2, 0},
		{"G", headView, 1, 2, 7},
		{"m", headView, 1, 2, 7},
		{"tab", tokenView, 1, 2, 7},
		{"left", tokenView, 1, 2, 6},
		{"esc", gridView, 1, 2, 6},
	}
	for i, s := range steps {
		m.Update(press(s.key))
		if m.view != s.view || m.layer != s.layer || m.head != s.head || m.query != s.query {
			t.Fatalf("step %d (%s): view %s L%dH%d query %d, want %s L%dH%d query %d", i, s.key, m.view, m.layer, m.head, m.query, s.view, s.layer, s.head, s.query)
		}
	}
	m.view = headView
	m.query = 5
	m.Update(press("m"))
	if want := 5 - 1 - (1+2)%2; m.key != want {
		t.Fatalf("m put the key cursor on %d, want the row's peak %d", m.key, want)
	}
	m.Update(press("]"))
	if m.key <= 3 {
		t.Fatalf("] left the key cursor at %d", m.key)
	}
	if _, cmd := m.Update(press("q")); cmd == nil || cmd() != tea.Quit() {
		t.Fatal("q does not quit")
	}
}

// Editing the prompt re-runs the model through Rerun and shows the new run.
func TestEditPrompt(t *testing.T) {
	m := newModel(heatmap.TrueColor, fakeRun(2, 3, 8))
	released := make(chan *Run, 1)
	m.cfg.Release = func(r *Run) { released <- r }
	first := m.run
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("e"))
	if !m.editing {
		t.Fatal("e does not open the prompt editor")
	}
	for _, r := range " one two" {
		m.Update(press(string(r)))
	}
	_, cmd := m.Update(press("enter"))
	if cmd == nil || !m.running {
		t.Fatal("enter does not start a run")
	}
	m.Update(cmd())
	if m.running || m.run.Prompt != "The cat sat on the mat. one two" || m.tokens() != 8 {
		t.Fatalf("after the run: prompt %q, %d tokens", m.run.Prompt, m.tokens())
	}
	select {
	case r := <-released:
		if r != first {
			t.Error("a run other than the old one was released")
		}
	case <-time.After(5 * time.Second):
		t.Error("the old run was not released")
	}
	if !strings.Contains(ansi.Strip(m.render()), "ran 8 tokens") {
		t.Error("the status line does not report the run")
	}
}

// The score panel shows text scores at once and probe scores once the probe is done; n
// jumps to the best head by the sort score.
func TestScoresAndJump(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 30})
	if !math.IsNaN(m.headScores(1, 2).Induction) {
		t.Fatal("induction before the probe ran")
	}
	m.Update(m.Init()())
	if got := m.headScores(1, 2).Induction; got != 0.9 {
		t.Fatalf("induction %g after the probe", got)
	}
	m.Update(press("n"))
	if m.layer != 1 || m.head != 2 {
		t.Fatalf("n went to L%dH%d, want the induction head L1H2", m.layer, m.head)
	}
	screen := ansi.Strip(m.render())
	for _, want := range []string{"L1H2 scores", "induction", "0.900", "★", "prev_token", "next after"} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q:\n%s", want, screen)
		}
	}
}

func TestSavePNG(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.cfg.SaveDir = t.TempDir()
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("p"))
	m.Update(press("P"))
	if !strings.Contains(m.status, "saved") || !strings.Contains(m.status, "grid.png") {
		t.Fatalf("status %q", m.status)
	}
}

// The whole program, with a pinned size and colour profile: the screen that a terminal
// would show, reconstructed by a terminal emulator from what the program wrote.
func TestProgramScreen(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(100, 30),
		teatest.WithProgramOptions(tea.WithColorProfile(colorprofile.ANSI256)))
	term := vt.NewEmulator(100, 30)
	go io.Copy(io.Discard, term) // the emulator's answers to the program's queries
	var out bytes.Buffer
	screenHas := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := io.ReadAll(tm.Output())
			out.Write(b)
			// A terminal's line discipline turns \n into \r\n (ONLCR); the emulator
			// gets the bytes a terminal would.
			term.Write(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
			if strings.Contains(term.String(), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the screen never showed %q; it shows:\n%s", want, term.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	screenHas("grid view")
	tm.Send(press("right"))
	tm.Send(press("down"))
	tm.Send(press("enter"))
	screenHas("L1H1 · head view")
	tm.Send(press("tab"))
	screenHas("what")
	tm.Send(press("?"))
	screenHas("keys (any key closes this)")
	tm.Send(press("q"))
	tm.Send(press("q"))
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	if !strings.Contains(out.String(), "\x1b[38;5;") {
		t.Error("no 256-colour sequences in the output")
	}
}

// A run whose maps are all alike row by row says so in the status line.
func TestDegenerateWarningInStatus(t *testing.T) {
	run := fakeRun(1, 2, 4)
	for _, a := range run.Result.Attn[0] {
		for i := range a {
			a[i] = []float32{0.25, 0.25, 0.25, 0.25}
		}
	}
	if m := New(Config{Initial: run}); !strings.Contains(m.status, "warning: every attention map has all its rows identical") {
		t.Fatalf("status %q", m.status)
	}
	if m := New(Config{Initial: fakeRun(1, 2, 4)}); m.status != "" {
		t.Fatalf("status %q for ordinary maps", m.status)
	}
}

// e pressed while a re-run is in flight opens the editor (it was dropped, so the text
// typed next ran as commands: "the quick fox" quit on its q). Enter queues the prompt,
// which runs when the current run finishes; the editor offers the latest prompt.
func TestEditDuringRun(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	m.Update(press("e"))
	m.Update(keyMsg("ctrl+u"))
	for _, r := range "one two" {
		m.Update(press(string(r)))
	}
	_, first := m.Update(press("enter"))
	if first == nil || !m.running {
		t.Fatal("enter did not start a run")
	}
	m.Update(press("e"))
	if !m.editing || m.editor.value() != "one two" {
		t.Fatalf("e during a run: editing %v, editor holds %q", m.editing, m.editor.value())
	}
	m.Update(keyMsg("ctrl+u"))
	for _, r := range "the quick fox jumps over the lazy dog? q" {
		if _, cmd := m.Update(press(string(r))); cmd != nil {
			t.Fatalf("typing %q in the editor during a run returned a command", r)
		}
	}
	if !m.editing || m.view != gridView || m.showHelp || m.editor.value() != "the quick fox jumps over the lazy dog? q" {
		t.Fatalf("typed text ran as commands: editing %v, view %s, help %v, editor %q", m.editing, m.view, m.showHelp, m.editor.value())
	}
	if _, cmd := m.Update(press("enter")); cmd != nil || m.queued == "" || !strings.Contains(m.status, "queued") {
		t.Fatalf("enter during a run: cmd %v, queued %q, status %q", cmd != nil, m.queued, m.status)
	}
	m.Update(press("e")) // the editor offers the queued prompt
	if m.editor.value() != "the quick fox jumps over the lazy dog? q" {
		t.Fatalf("editor holds %q, want the queued prompt", m.editor.value())
	}
	m.Update(press("esc"))
	_, second := m.Update(first())
	if m.run.Prompt != "one two" || second == nil || !m.running || m.queued != "" {
		t.Fatalf("after the first run: shows %q, running %v, queued %q", m.run.Prompt, m.running, m.queued)
	}
	m.Update(second())
	if m.running || m.run.Prompt != "the quick fox jumps over the lazy dog? q" {
		t.Fatalf("after the queued run: shows %q, running %v", m.run.Prompt, m.running)
	}
}

// A failed or malformed re-run leaves the shown run in place with one sentence in the
// status line, and the editor offers the failed prompt again (it offered the shown run's,
// losing a long edit).
func TestRerunFailure(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	shown := m.run
	ragged := fakeRun(1, 1, 3)
	ragged.Result.Attn[0][0][2] = ragged.Result.Attn[0][0][2][:1]
	for _, msg := range []runDoneMsg{
		{prompt: "x", err: errors.New("the prompt is longer than the model's 64 positions")},
		{prompt: "y", run: ragged},
		{prompt: "z"},
	} {
		m.Update(msg)
		if m.run != shown || !strings.HasPrefix(m.status, "error: ") {
			t.Fatalf("after %+v: status %q", msg, m.status)
		}
		// The refused prompt is not lost: e offers it again for fixing.
		m.Update(press("e"))
		if got := m.editor.value(); got != msg.prompt {
			t.Fatalf("after a failed run of %q the editor offers %q", msg.prompt, got)
		}
		m.Update(press("esc"))
		checkFrame(t, m.render(), 120, 40, "after a failed run")
	}
}

// p and P never overwrite: with files of the default names already there, they are left
// alone and the PNG goes under a fresh name, which the status line gives. An encoding
// failure leaves no file behind.
func TestSavePNGNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.cfg.SaveDir = dir
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	head := filepath.Join(dir, "attnscope-test-L0H0.png")
	grid := filepath.Join(dir, "attnscope-test-grid.png")
	for _, p := range []string{head, grid} {
		if err := os.WriteFile(p, []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ key, old, fresh string }{
		{"p", head, filepath.Join(dir, "attnscope-test-L0H0-2.png")},
		{"P", grid, filepath.Join(dir, "attnscope-test-grid-2.png")},
	} {
		m.Update(press(c.key))
		if b, err := os.ReadFile(c.old); err != nil || string(b) != "precious" {
			t.Fatalf("%s: the existing %s was changed: %q, %v", c.key, c.old, b, err)
		}
		b, err := os.ReadFile(c.fresh)
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("%s: no PNG at %s: %v", c.key, c.fresh, err)
		}
		if !strings.Contains(m.status, "saved "+c.fresh) {
			t.Fatalf("%s: status %q does not say %s", c.key, m.status, c.fresh)
		}
	}
	// An encoder that fails half-way.
	fail := func(w io.Writer) error {
		w.Write([]byte("\x89PNG half"))
		return errors.New("out of memory")
	}
	oldHead, oldGrid := writeHeadPNG, writeGridPNG
	t.Cleanup(func() { writeHeadPNG, writeGridPNG = oldHead, oldGrid })
	writeHeadPNG = func(w io.Writer, _ heatmap.Figure) error { return fail(w) }
	writeGridPNG = func(w io.Writer, _ heatmap.GridFigure) error { return fail(w) }
	before, _ := os.ReadDir(dir)
	for _, k := range []string{"p", "P"} {
		m.Update(press(k))
		if !strings.HasPrefix(m.status, "cannot save") || !strings.Contains(m.status, "out of memory") {
			t.Fatalf("%s with a failing encoder: status %q", k, m.status)
		}
	}
	if after, _ := os.ReadDir(dir); len(after) != len(before) {
		t.Fatalf("a failed save left files behind: %d files, then %d", len(before), len(after))
	}
}

// The top-k panel says why there are no predictions: no logits at all (an encoder's
// result; session reports logits only for an output over the vocabulary), or an encoder
// layer's source queries.
func TestPanelWithoutLogits(t *testing.T) {
	run := fakeRun(2, 3, 8)
	run.Result.Logits, run.Result.Vocab = nil, 0
	m := newModel(heatmap.ANSI256, run)
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	screen := ansi.Strip(m.render())
	if !strings.Contains(screen, "no logits: the model has no") || strings.Contains(screen, "%") {
		t.Fatalf("no logits:\n%s", screen)
	}
	m = newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	if screen := ansi.Strip(m.render()); !strings.Contains(screen, "%") || strings.Contains(screen, "no logits") {
		t.Fatalf("with logits, no predictions:\n%s", screen)
	}
}

// A PNG that cannot be drawn (an empty map) leaves an existing file of its name alone:
// before, p truncated the file, failed, and removed it.
func TestSavePNGFailureKeepsExistingFile(t *testing.T) {
	dir := t.TempDir()
	m := newModel(heatmap.ANSI256, fakeRun(1, 1, 0))
	m.cfg.SaveDir = dir
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	head := filepath.Join(dir, "attnscope-test-L0H0.png")
	if err := os.WriteFile(head, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Update(press("p"))
	if b, err := os.ReadFile(head); err != nil || string(b) != "precious" {
		t.Fatalf("the existing file is now %q (%v); status %q", b, err, m.status)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || !strings.HasPrefix(m.status, "cannot save") {
		t.Fatalf("%d files after a failed save; status %q", len(entries), m.status)
	}
}

// A long message in the status line pushes the standing facts (scale, run time, device)
// out before it is cut: the user reads the whole error.
func TestStatusLineMakesRoom(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	msg := "the prompt has 62227 tokens but the model's position table holds 128"
	m.Update(runDoneMsg{prompt: "x", err: errors.New(msg)})
	lines := strings.Split(ansi.Strip(m.render()), "\n")
	status := lines[len(lines)-2]
	if !strings.Contains(status, "error: "+msg) || !strings.Contains(status, "8 tokens") {
		t.Fatalf("status line %q", status)
	}
}

// A paste outside the prompt editor is ignored: its text never runs as commands.
func TestPasteOutsideEditorIsIgnored(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	before := m.state
	if _, cmd := m.Update(tea.PasteMsg{Content: "q?e\tjjj"}); cmd != nil || m.state != before {
		t.Fatalf("a paste in the grid changed the state or quit: %+v", m.state)
	}
}

// The grid's first frame computes text scores only where they are drawn: the selected
// head's (the side panel), and every visible head's only when the marks are of a text
// score. Induction marks come from the probe, and computing entropy for every head of a
// 12×12 model at T = 1024 made the first frame ten times slower (95 ms → 1 s).
func TestGridComputesOnlyTheScoresItDraws(t *testing.T) {
	filled := func(m *Model) int {
		n := 0
		for _, heads := range m.textScores {
			for _, s := range heads {
				if s != nil {
					n++
				}
			}
		}
		return n
	}
	m := newModel(heatmap.ANSI256, fakeRun(3, 4, 16))
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	if n := filled(m); n != 1 {
		t.Fatalf("marking by induction: %d heads' text scores computed, want 1 (the selected head)", n)
	}
	for m.sortBy != analysis.PrevToken {
		m.Update(press("o"))
	}
	if n := filled(m); n != 12 {
		t.Fatalf("marking by previous-token: %d heads' text scores computed, want all 12 visible", n)
	}
}
