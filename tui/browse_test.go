package tui

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
)

// work is a fake Probe or Rerun that blocks until released (or, when it honours its
// context, until cancelled) and records what happened to it.
type work struct {
	honourCtx bool
	started   chan struct{}
	release   chan struct{}
	mu        sync.Mutex
	running   bool
	finished  bool
	cancelled bool
}

func newWork(honourCtx bool) *work {
	return &work{honourCtx: honourCtx, started: make(chan struct{}), release: make(chan struct{})}
}

func (w *work) do(ctx context.Context) {
	w.mu.Lock()
	w.running = true
	w.mu.Unlock()
	close(w.started)
	done := ctx.Done()
	if !w.honourCtx {
		done = nil
	}
	select {
	case <-w.release:
	case <-done:
	}
	time.Sleep(50 * time.Millisecond) // what a session takes to hand its buffers back
	w.mu.Lock()
	w.running, w.finished, w.cancelled = false, true, ctx.Err() != nil
	w.mu.Unlock()
}

func (w *work) state() (running, finished, cancelled bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running, w.finished, w.cancelled
}

// browseWith runs Browse (or, with plain, Bubble Tea's own Run as cmd/inspect used to) on
// a config with the given Probe and Rerun; it returns the pipe that types into it and a
// channel closed when it has returned.
func browseWith(t *testing.T, cfg Config, plain bool) (*io.PipeWriter, chan struct{}) {
	t.Helper()
	in, keys := io.Pipe()
	opts := []tea.ProgramOption{tea.WithInput(in), tea.WithOutput(io.Discard), tea.WithWindowSize(100, 30), tea.WithoutSignals()}
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		var err error
		if plain {
			_, err = tea.NewProgram(New(cfg), opts...).Run()
		} else {
			err = Browse(cfg, opts...)
		}
		if err != nil {
			t.Errorf("browse: %v", err)
		}
	}()
	t.Cleanup(func() { keys.Close() })
	return keys, returned
}

func waitFor(t *testing.T, c chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// Quitting while the probe or a re-run is in flight: Browse cancels their context and
// returns only after they have returned, so the caller can close the session and the
// tokenizer they use. Bubble Tea alone returns with them still running (the control
// case, which is what cmd/inspect did).
func TestBrowseWaitsForBackgroundWork(t *testing.T) {
	cases := []struct {
		name      string
		rerun     bool // the work is a re-run started with e, x, enter (else the probe)
		ablate    bool // the work is an ablated run started with x
		honourCtx bool
		plain     bool
	}{
		{"probe, stops when cancelled", false, false, true, false},
		{"probe, ignores cancelling", false, false, false, false},
		{"re-run, stops when cancelled", true, false, true, false},
		{"re-run, ignores cancelling", true, false, false, false},
		{"ablation, stops when cancelled", false, true, true, false},
		{"ablation, ignores cancelling", false, true, false, false},
		{"control: Bubble Tea alone", false, false, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWork(c.honourCtx)
			cfg := Config{ModelName: "m", Profile: heatmap.NoColor, Initial: fakeRun(1, 2, 4)}
			switch {
			case c.rerun:
				cfg.Rerun = func(ctx context.Context, prompt string) (*Run, error) {
					w.do(ctx)
					return fakeRun(1, 2, 4), nil
				}
			case c.ablate:
				cfg.Ablate = func(ctx context.Context, prompt string, off []ablate.Head) (*Run, error) {
					w.do(ctx)
					return fakeRun(1, 2, 4), nil
				}
			default:
				cfg.Probe = func(ctx context.Context) ([]analysis.HeadScores, error) {
					w.do(ctx)
					return nil, ctx.Err()
				}
			}
			keys, returned := browseWith(t, cfg, c.plain)
			switch {
			case c.rerun:
				io.WriteString(keys, "ex\r")
			case c.ablate:
				io.WriteString(keys, "x")
			}
			waitFor(t, w.started, "the work to start")
			io.WriteString(keys, "q")
			if !c.honourCtx {
				// It must still be waiting a while later; then the work is released.
				select {
				case <-returned:
					if running, _, _ := w.state(); !c.plain || !running {
						t.Fatalf("returned before the work finished (running %v)", running)
					}
					close(w.release)
					return // the control case: Bubble Tea returned under running work
				case <-time.After(300 * time.Millisecond):
					if c.plain {
						t.Fatal("the control case did not return")
					}
				}
				close(w.release)
			}
			waitFor(t, returned, "Browse to return")
			running, finished, cancelled := w.state()
			if running || !finished {
				t.Fatalf("Browse returned with the work running %v, finished %v", running, finished)
			}
			if c.honourCtx && !cancelled {
				t.Fatal("the work's context was not cancelled on quit")
			}
		})
	}
}

// No background work starts once Browse is stopping: a command Bubble Tea has not yet run
// when the program quits returns nothing and calls nothing.
func TestBackgroundRefusesWorkAfterStop(t *testing.T) {
	b := newBackground()
	called := false
	cmd := b.cmd(func(context.Context) tea.Msg { called = true; return nil })
	b.stop()
	if msg := cmd(); msg != nil || called {
		t.Fatalf("a command ran after stop: %v", msg)
	}
	b.goDo(func(context.Context) { called = true })
	b.stop()
	if called {
		t.Fatal("goDo ran after stop")
	}
}
