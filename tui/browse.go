package tui

import (
	"context"
	"sync"

	tea "charm.land/bubbletea/v2"
)

// Browse shows the browser on cfg in the terminal until the user quits. Then it cancels the
// context given to Probe, Rerun and Ablate and waits until every background call (Probe,
// Rerun, Ablate, Release) has returned, so that the caller may close what they use (a
// session, a tokenizer) as soon as Browse returns: Bubble Tea itself does not wait for
// commands when it quits. opts are Bubble Tea's program options. Browse refuses an initial
// run that fails Run.Check.
func Browse(cfg Config, opts ...tea.ProgramOption) error {
	if err := cfg.Initial.Check(); err != nil {
		return err
	}
	m := New(cfg)
	defer m.bg.stop()
	_, err := tea.NewProgram(m, opts...).Run()
	return err
}

// background tracks the work the UI starts off its own goroutine, so that it can be
// cancelled and waited for: once stop has begun, no new work starts.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newBackground() *background {
	ctx, cancel := context.WithCancel(context.Background())
	return &background{ctx: ctx, cancel: cancel}
}

// begin registers one piece of work; false once stop has begun (the work must not start).
func (b *background) begin() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	return true
}

// cmd wraps f as a Bubble Tea command that is tracked: it does not start after stop, and
// stop waits for it.
func (b *background) cmd(f func(ctx context.Context) tea.Msg) tea.Cmd {
	return func() tea.Msg {
		if !b.begin() {
			return nil
		}
		defer b.wg.Done()
		return f(b.ctx)
	}
}

// goDo runs f on a goroutine of its own, tracked like cmd.
func (b *background) goDo(f func(ctx context.Context)) {
	if !b.begin() {
		return
	}
	go func() {
		defer b.wg.Done()
		f(b.ctx)
	}()
}

// stop cancels the context, refuses new work and waits for the work under way.
func (b *background) stop() {
	b.cancel()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}
