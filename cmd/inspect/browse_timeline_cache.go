package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/timeline"
	"github.com/attnscope/attnscope/tokenizer"
	"github.com/attnscope/attnscope/tui"
)

// stepCache opens a timeline's steps for the browser, in the background, one at a time,
// and keeps at most five open: the step asked for last and its neighbours, which are
// opened ahead so that moving a step feels immediate, and the last two steps returned (the
// one shown while another loads, and the one before). Steps further away are closed, once
// any call on them has returned; a call on a closed step is refused with one sentence. A
// step no longer wanted when its turn to open comes (the user scrubbed past it) is not
// opened at all.
type stepCache struct {
	f  runFlags // copied again for every step opened: opening writes to it
	tl *timeline.Timeline
	// prompted: the prompt was given on the command line (the per-step scores then use it).
	prompted bool
	// ref are the first prompt's ids: the reference of --ablate's mean ablation on every step.
	ref []int64

	opening chan struct{} // one step opens at a time

	mu      sync.Mutex
	entries map[int]*stepEntry
	// want is the step asked for last; cur the step returned last, prev the one before;
	// shown the step the browser shows (TimelineConfig.Shown), never closed while shown.
	want, cur, prev, shown int
	closed                 bool
	wg                     sync.WaitGroup // the openings and closings under way
}

// errSkipped is the error of a step whose opening was skipped: no longer wanted.
var errSkipped = fmt.Errorf("the step was passed over before it opened; ask for it again")

// stepEntry is one step's model, open or opening.
type stepEntry struct {
	index int
	ready chan struct{} // closed once l, funcs and err are set
	l     *loaded
	funcs *tui.StepFuncs
	err   error

	run    sync.Mutex   // held by every call that uses the session, and by shut
	label  sync.RWMutex // held by Label (the tokenizer), and by shut
	closed bool
}

// newStepCache returns an empty cache for tl's steps, each opened with the flags f.
func newStepCache(f *runFlags, tl *timeline.Timeline, prompted bool) *stepCache {
	return &stepCache{f: *f, tl: tl, prompted: prompted, entries: map[int]*stepEntry{},
		opening: make(chan struct{}, 1), want: -1, cur: -1, prev: -1, shown: -1}
}

// add files step i's model, opened already, with the config bound to it, and returns
// the config's funcs guarded as the cache's steps' are.
func (c *stepCache) add(i int, l *loaded, cfg tui.Config) *tui.StepFuncs {
	e := &stepEntry{index: i, ready: make(chan struct{}), l: l}
	c.ref = l.last.ids
	e.funcs = e.guard(c.tl.Steps[i].Step, cfg)
	close(e.ready)
	c.mu.Lock()
	c.entries[i] = e
	c.shown = i // the first step shown
	c.mu.Unlock()
	return e.funcs
}

// step is the browser's TimelineConfig.Step: the funcs of step i, opened when needed (or
// waited for while another call opens it). It makes i the current step: its neighbours
// start opening and the steps far from it are closed.
func (c *stepCache) step(ctx context.Context, i int) (*tui.StepFuncs, error) {
	if i < 0 || i >= len(c.tl.Steps) {
		return nil, fmt.Errorf("the timeline has no step %d", i)
	}
	c.mu.Lock()
	c.want = i
	e := c.startLocked(i)
	c.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("the browser is closing")
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.err != nil {
		return nil, e.err
	}
	c.touch(i)
	return e.funcs, nil
}

// wantedLocked reports whether step j is one to keep open (see stepCache). c.mu is held.
func (c *stepCache) wantedLocked(j int) bool {
	return (j >= c.want-1 && j <= c.want+1) || j == c.cur || j == c.prev || j == c.shown
}

// begin starts opening the neighbours of the step shown first (add's).
func (c *stepCache) begin() {
	c.mu.Lock()
	i := c.shown
	c.mu.Unlock()
	if i >= 0 {
		c.touch(i)
	}
}

// show is the browser's TimelineConfig.Shown: step i is the one on screen, kept open
// until another is shown.
func (c *stepCache) show(i int) {
	c.mu.Lock()
	c.shown = i
	c.mu.Unlock()
}

// touch makes i the step returned last: when it is also the step asked for last its
// neighbours start opening, and every step not wanted is closed.
func (c *stepCache) touch(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if i != c.cur {
		c.prev, c.cur = c.cur, i
	}
	if c.want < 0 {
		c.want = i
	}
	if i == c.want {
		c.startLocked(i - 1)
		c.startLocked(i + 1)
	}
	for j, e := range c.entries {
		if !c.wantedLocked(j) {
			delete(c.entries, j)
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				e.shut()
			}()
		}
	}
}

// startLocked returns step i's entry, starting to open it when there is none; nil for a
// step out of range or once the cache is closed. c.mu is held.
func (c *stepCache) startLocked(i int) *stepEntry {
	if c.closed || i < 0 || i >= len(c.tl.Steps) {
		return nil
	}
	if e, ok := c.entries[i]; ok {
		return e
	}
	e := &stepEntry{index: i, ready: make(chan struct{})}
	c.entries[i] = e
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(e.ready)
		c.opening <- struct{}{}
		defer func() { <-c.opening }()
		c.mu.Lock()
		wanted := c.wantedLocked(i) && !c.closed
		c.mu.Unlock()
		var cfg tui.Config
		if !wanted {
			e.err = errSkipped
		} else if e.l, cfg, e.err = c.open(i); e.err == nil {
			e.funcs = e.guard(c.tl.Steps[i].Step, cfg)
		}
		if e.err != nil { // asked for again, it is tried again
			c.mu.Lock()
			if c.entries[i] == e {
				delete(c.entries, i)
			}
			c.mu.Unlock()
		}
	}()
	return e
}

// open opens step i's model and tokenizer, switches off --ablate's heads, and binds the
// browser's funcs to it.
func (c *stepCache) open(i int) (*loaded, tui.Config, error) {
	st := c.tl.Steps[i]
	g := c.f
	l, err := g.open(st.Model)
	if err != nil {
		return nil, tui.Config{}, err // the error names the model's path
	}
	tok, err := tokenizer.Find(l.model.Path, g.tokenizer, l.sess.Limits.Vocab)
	if err != nil && (g.tokenizer != "" || g.ids == "") {
		l.close()
		return nil, tui.Config{}, fmt.Errorf("its tokenizer: %w", err)
	}
	l.tok = tok
	if err := g.applyAblation(l, c.ref); err != nil {
		l.close()
		return nil, tui.Config{}, err
	}
	var cfg tui.Config
	locked := g.bind(l, &cfg)
	if l.sess.Seq2Seq() {
		g.pairRerun(l, &cfg, &tui.Run{}, locked)
	}
	return l, cfg, nil
}

// close closes every step once the openings and closings under way have finished; later
// calls to step are refused. It may be called more than once.
func (c *stepCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	entries := c.entries
	c.entries = map[int]*stepEntry{}
	c.mu.Unlock()
	for _, e := range entries {
		e.shut()
	}
}

// shut closes the step's model once the calls on it have returned; later calls are
// refused.
func (e *stepEntry) shut() {
	<-e.ready
	e.run.Lock()
	defer e.run.Unlock()
	e.label.Lock()
	defer e.label.Unlock()
	if e.closed || e.l == nil {
		return
	}
	e.closed = true
	e.l.close()
}

// guard is cfg's funcs bound to step's model, each refusing to run (Release: doing
// nothing; Label: giving the id) once the step has been shut.
func (e *stepEntry) guard(step int64, cfg tui.Config) *tui.StepFuncs {
	shut := fmt.Errorf("step %d's model was closed to save memory; move to the step again", step)
	lock := func() (bool, func()) {
		e.run.Lock()
		return e.closed, e.run.Unlock
	}
	f := &tui.StepFuncs{Device: cfg.Device, AblateWhy: cfg.AblateWhy, Circuits: cfg.Circuits, CircuitsWhy: cfg.CircuitsWhy}
	if cfg.Rerun != nil {
		f.Rerun = func(ctx context.Context, prompt string) (*tui.Run, error) {
			closed, unlock := lock()
			defer unlock()
			if closed {
				return nil, shut
			}
			return cfg.Rerun(ctx, prompt)
		}
	}
	if cfg.RerunIDs != nil {
		f.RerunIDs = func(ctx context.Context, ids []int64) (*tui.Run, error) {
			closed, unlock := lock()
			defer unlock()
			if closed {
				return nil, shut
			}
			return cfg.RerunIDs(ctx, ids)
		}
	}
	if cfg.RerunPair != nil {
		f.RerunPair = func(ctx context.Context, src, tgt string) (*tui.Run, error) {
			closed, unlock := lock()
			defer unlock()
			if closed {
				return nil, shut
			}
			return cfg.RerunPair(ctx, src, tgt)
		}
	}
	if cfg.RerunPairIDs != nil {
		f.RerunPairIDs = func(ctx context.Context, src, tgt []int64) (*tui.Run, error) {
			closed, unlock := lock()
			defer unlock()
			if closed {
				return nil, shut
			}
			return cfg.RerunPairIDs(ctx, src, tgt)
		}
	}
	if cfg.Ablate != nil {
		f.Ablate = func(ctx context.Context, prompt string, off []ablate.Head) (*tui.Run, error) {
			closed, unlock := lock()
			defer unlock()
			if closed {
				return nil, shut
			}
			return cfg.Ablate(ctx, prompt, off)
		}
	}
	if cfg.Probe != nil {
		f.Probe = func(ctx context.Context) ([]analysis.HeadScores, error) {
			closed, unlock := lock()
			defer unlock()
			if closed {
				return nil, shut
			}
			return cfg.Probe(ctx)
		}
	}
	if cfg.Release != nil {
		f.Release = func(r *tui.Run) {
			closed, unlock := lock()
			defer unlock()
			if !closed {
				cfg.Release(r)
			}
		}
	}
	if cfg.Label != nil {
		f.Label = func(id int64) string {
			e.label.RLock()
			defer e.label.RUnlock()
			if e.closed {
				return strconv.FormatInt(id, 10)
			}
			return cfg.Label(id)
		}
	}
	return f
}
