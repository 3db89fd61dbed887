// Package tui is attnscope's terminal UI: a Bubble Tea program that shows every head of a
// run as a thumbnail, one head's full map with token labels, and the prompt coloured by
// attention, with head scores and next-token predictions beside them. It works at any
// terminal size, in truecolor, 256, 16 or no colours, without a mouse.
//
// Update changes the state and View only draws it: after every message Update bounds the
// cursors by the selected map, scrolls them into view, fills the caches (scores,
// thumbnails) and draws the screen but for its bottom line, so that View reads and never writes.
package tui

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/result"
)

// Run is one run of the model as the UI shows it.
type Run struct {
	Prompt string
	Result *result.Result
	// Labels are the tokens' axis labels (visible spaces and newlines).
	Labels []string
	// Pieces are the tokens' text for the prompt view (a newline in a piece breaks the
	// line); nil shows the labels separated by spaces.
	Pieces []string
	// SourceLabels are the labels of an encoder–decoder's source (Result.Source), which
	// encoder layers have on both axes and cross-attention layers on the key axis; nil for
	// a one-sequence run. Labels and Pieces are then the target's.
	SourceLabels []string
	// Target is an encoder–decoder's target as the user wrote it (text, or ids with
	// Config.RerunIDs), the source being Prompt; "" for a one-sequence run. The prompt
	// editor edits it beside the source (tab switches) when Config.RerunPair or
	// RerunPairIDs is set.
	Target string

	// release is the Release of the funcs that made the run (nil: Config.Release): in
	// timeline mode each step's runs go back to their own step.
	release func(*Run)
}

// ErrNoResult is Run.Check's answer for a run without a result.
var ErrNoResult = errors.New("the run has no result")

// MapError is Run.Check's answer for an attention map whose rows differ in length.
type MapError struct{ Layer, Head, Row, Len, Want int }

func (e *MapError) Error() string {
	return fmt.Sprintf("the attention map of L%dH%d is not rectangular: row %d has %d keys, row 0 has %d", e.Layer, e.Head, e.Row, e.Len, e.Want)
}

// Check reports why r cannot be shown: ErrNoResult, or a *MapError for a map whose rows
// differ in length. Maps of any size (empty included) and labels of any number are shown.
func (r *Run) Check() error {
	if r == nil || r.Result == nil {
		return ErrNoResult
	}
	for l, heads := range r.Result.Attn {
		for h, a := range heads {
			for q, row := range a {
				if len(row) != len(a[0]) {
					return &MapError{Layer: l, Head: h, Row: q, Len: len(row), Want: len(a[0])}
				}
			}
		}
	}
	return nil
}

// Config is what the UI needs from the command that starts it.
type Config struct {
	ModelName string
	Device    string
	Profile   heatmap.Profile
	// Initial is the first run shown; it must pass Run.Check.
	Initial *Run
	// Rerun runs the model on a new prompt (nil: the prompt cannot be edited). It runs in
	// the background; ctx is cancelled when the user quits.
	Rerun func(ctx context.Context, prompt string) (*Run, error)
	// RerunIDs, when set, makes the prompt a list of token ids (the run was given as ids):
	// e edits the ids, comma-separated, and enter re-runs them through RerunIDs (not as
	// text through Rerun). The runs' Prompt is then the ids as the user wrote them. It runs
	// in the background like Rerun.
	RerunIDs func(ctx context.Context, ids []int64) (*Run, error)
	// RerunPair, for an encoder–decoder, runs the model on a new source and target (text):
	// the editor then edits both (tab switches between them, starting from the shown run's
	// Prompt and Target) and enter re-runs them through RerunPair, not Rerun. RerunPairIDs
	// is the same for ids (with RerunIDs: the editor edits the source and target ids).
	// The runs' Target, when "", is set to the target as the user wrote it. They run in
	// the background like Rerun.
	RerunPair    func(ctx context.Context, source, target string) (*Run, error)
	RerunPairIDs func(ctx context.Context, source, target []int64) (*Run, error)
	// Ablate runs the model on prompt with the heads in off zero-ablated (switched off) and
	// returns that run; it runs in the background like Rerun (ctx cancelled on quit). nil:
	// the model cannot be ablated, and AblateWhy says why (shown when x is pressed).
	//
	// off is sorted by ablate.Compare and never empty. The run must be of the same tokens
	// as the clean run of prompt (same layers and heads); its Labels, Pieces and
	// SourceLabels, when nil, are taken from the clean run.
	Ablate    func(ctx context.Context, prompt string, off []ablate.Head) (*Run, error)
	AblateWhy string
	// Release is called, in the background, with a run the UI no longer shows (to recycle
	// its buffers).
	Release func(*Run)
	// Probe computes the probe-based head scores (induction, duplicate-token); it runs in
	// the background after start, and should return soon after ctx is cancelled (the user
	// quit). nil: those scores are not shown.
	Probe func(ctx context.Context) ([]analysis.HeadScores, error)
	// Label gives the display label of any vocabulary id (for predictions); nil: the id.
	Label func(id int64) string
	// SaveDir is where PNGs are written ("" = the working directory).
	SaveDir string
	// Circuits computes the circuits panel's data from the model's weights; it runs in the
	// background the first time c is pressed. nil: the panel shows CircuitsWhy.
	Circuits    func(ctx context.Context) (*CircuitsData, error)
	CircuitsWhy string
	// Timeline, when set, makes the browser a training timeline's: the funcs above are
	// those of step Timeline.Current, and Timeline.Step gives other steps' (see
	// TimelineConfig).
	Timeline *TimelineConfig
}

type view int

const (
	gridView view = iota
	headView
	tokenView
)

func (v view) String() string { return [...]string{"grid", "head", "tokens"}[v] }

// state is everything the user can change; Update alone writes it, and it is comparable,
// so that a test can check that View leaves it alone.
type state struct {
	width, height int
	view          view
	showHelp      bool
	helpTop       int  // first line of the help overlay's body on screen
	table         bool // the grid shows the score table instead of thumbnails
	circuits      bool // the side panel shows the head's circuits instead of its scores
	tableTop      int  // first row of the score table on screen
	editing       bool
	running       bool
	status        string
	layer, head   int
	query, key    int // cursor in the head and token views
	// The sequences the query and key cursors are on (an encoder–decoder's layers differ),
	// and each sequence's cursor positions from when the cursors were last on it, so that
	// moving through the layers finds a sequence's cursor where it was left.
	qSide, kSide       result.Side
	sideQuery, sideKey [2]int
	rowTop             int // first visible query row (head detail)
	colLeft            int // first visible key column (head detail)
	gridTop            int // first visible layer (grid)
	gridLeft           int // first visible head (grid)
	zoom               int // cells per key in head detail (1–4)
	fit                bool
	scale              heatmap.Scale
	reverse            bool // token view: who attends to the cursor token
	sortBy             analysis.Score
	jumpRank           int    // rank the next jump goes to
	pending            string // the prompt of the run in flight ("" for an ablation of the shown prompt)
	queued             string // a prompt submitted during a run, to run after it ("": none)
	failed             string // the last prompt whose run failed, offered for editing again
	// An encoder–decoder's targets beside pending, queued and failed (see Config.RerunPair),
	// and whether the editor is on the target (tab switches).
	pendingTarget, queuedTarget, failedTarget string
	editTarget                                bool
	// off are the heads the user has switched off, as ablate.Join writes them (sorted; ""
	// for none). The run shown has shownOff off (see Model); runs bring it to off.
	off string
}

// topKey is what the screen above its bottom line depends on: the state and the
// generation of the data (run, probe).
type topKey struct {
	st  state
	gen int
}

// Model is the Bubble Tea model.
type Model struct {
	state
	cfg    Config
	keys   keyMap
	editor editor
	// other is the text of the sequence the editor is not on (an encoder–decoder's source
	// while the target is edited, and the other way round).
	other   string
	palette *heatmap.Palette
	bg      *background

	// run is the run shown: clean, or with the heads of shownOff switched off. clean is
	// the clean run of the shown prompt (run itself when no head is off), kept so that
	// switching every head back on needs no run and the ablation's effects can be shown.
	run      *Run
	clean    *Run
	shownOff string // the heads off in run, as ablate.Join writes them ("" when run is clean)
	// cleanLoss and ablatedLoss are the next-token losses of clean and run at every
	// position (analysis.TokenLosses), computed in the background with the ablated run;
	// nil when not known (no head off yet).
	cleanLoss, ablatedLoss []float64

	circ circuitsCache // the circuits panel's data
	tl   timelineState // timeline mode's steps (see TimelineConfig)

	probe    []analysis.HeadScores // nil until the probe finishes
	probeErr error
	gen      int // counts changes of run and probe, for topKey

	// Caches, written only by Update (see settle).
	thumbs     map[thumbKey][]string
	order      []analysis.HeadScores    // the score table's rows, sorted, for orderFor
	orderFor   topKey                   // the sort score and the generation order is of
	textScores [][]*analysis.HeadScores // [layer][head], each nil until first needed
	// top is the screen above its bottom line (the help or the prompt editor), drawn for
	// topFor: typing a key into the editor then costs one copy of it, not a frame.
	top    string
	frame  string // top and the help line: the whole screen when the editor is closed
	topFor topKey
	topOK  bool
}

// New returns the UI model for a first run (which must pass Run.Check). Use Browse to show
// it: Browse also waits for the background work it starts.
func New(cfg Config) *Model {
	m := &Model{
		cfg:     cfg,
		keys:    newKeyMap(),
		editor:  editor{width: 1},
		palette: heatmap.NewPalette(cfg.Profile),
		bg:      newBackground(),
		run:     cfg.Initial,
		clean:   cfg.Initial,
	}
	if cfg.Initial != nil && cfg.Initial.release == nil {
		cfg.Initial.release = cfg.Release
	}
	if m.timeline() {
		m.tl.cur = clamp(cfg.Timeline.Current, 0, len(cfg.Timeline.Steps)-1)
		m.tl.want = m.tl.cur
	}
	m.editor.label = m.editorLabel()
	m.zoom = 2
	m.scale = heatmap.Sqrt
	m.sortBy = analysis.Induction
	// The cursor starts on each sequence's last token.
	m.sideQuery[result.TargetSide] = max(0, len(m.run.Result.Tokens)-1)
	m.sideQuery[result.SourceSide] = max(0, len(m.run.Result.Source)-1)
	m.qSide, m.kSide = m.res().QuerySide(0), m.res().KeySide(0)
	m.query = m.sideQuery[m.qSide]
	m.warnDegenerate()
	m.settle()
	return m
}

// warnDegenerate puts the run's degenerate-map warning (see result.Result.Degenerate) in
// the status line; it reports whether there was one.
func (m *Model) warnDegenerate() bool {
	if m.run == nil || m.run.Result == nil {
		return false
	}
	if w := m.run.Result.Degenerate(); w != "" {
		m.setStatus("warning: %s", w)
		return true
	}
	return false
}

// runDoneMsg is the end of a run of a new prompt: the clean run, or err; and, when heads
// were off, the ablated run of the same prompt (abl, nil when none was asked for or the
// clean run failed).
type runDoneMsg struct {
	epoch  int // the timeline step change it was started in (see timelineState)
	prompt string
	target string
	run    *Run
	err    error
	abl    *ablation
}

type probeDoneMsg struct {
	epoch  int
	scores []analysis.HeadScores
	err    error
}

// Init starts the probe, and a timeline's per-step head scores, in the background.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.probeCmd(), m.scoresCmd())
}

// probeCmd starts the probe in the background (nil without one).
func (m *Model) probeCmd() tea.Cmd {
	if m.cfg.Probe == nil {
		return nil
	}
	probe, epoch := m.cfg.Probe, m.tl.epoch
	return m.bg.cmd(func(ctx context.Context) tea.Msg {
		s, err := probe(ctx)
		return probeDoneMsg{epoch, s, err}
	})
}

func (m *Model) res() *result.Result { return m.run.Result }
func (m *Model) layers() int         { return len(m.res().Attn) }
func (m *Model) tokens() int         { return len(m.run.Labels) }

// headsIn is layer l's head count (0 for a layer that does not exist).
func (m *Model) headsIn(l int) int {
	if l < 0 || l >= m.layers() {
		return 0
	}
	return m.res().Heads(l)
}

// attn is the selected head's map; nil when the run has no such head.
func (m *Model) attn() [][]float32 {
	if m.head < 0 || m.head >= m.headsIn(m.layer) {
		return nil
	}
	return m.res().Attn[m.layer][m.head]
}

// mapSize is the selected map's query and key counts.
func (m *Model) mapSize() (q, k int) {
	a := m.attn()
	if len(a) == 0 {
		return 0, 0
	}
	return len(a), len(a[0])
}

// keyLen is the key-axis length of the selected head.
func (m *Model) keyLen() int { _, k := m.mapSize(); return k }

// sideLabels are the labels of one of the run's sequences: the source's (when the run has
// one) or the tokens'.
func (m *Model) sideLabels(sd result.Side) []string {
	if sd == result.SourceSide && m.run.SourceLabels != nil {
		return m.run.SourceLabels
	}
	return m.run.Labels
}

// queryLabels and keyLabels label the selected layer's axes: in cross-attention, target
// tokens down and source tokens across.
func (m *Model) queryLabels() []string { return m.sideLabels(m.res().QuerySide(m.layer)) }
func (m *Model) keyLabels() []string   { return m.sideLabels(m.res().KeySide(m.layer)) }

// oneSequence reports whether layer l's queries and keys are the same sequence's tokens
// (every layer of a one-sequence model; not an encoder–decoder's cross-attention).
func (m *Model) oneSequence(l int) bool { return m.res().OneSequence(l) }

func (m *Model) setStatus(format string, args ...any) {
	m.status = fmt.Sprintf(format, args...)
}

// Update handles keys, pastes, resizes and finished runs; after each it settles the
// state (see settle). Keys typed into the prompt editor change only the editor.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	var cmd tea.Cmd
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = max(msg.Width, 0), max(msg.Height, 0)
		m.editor.setWidth(m.width - len(m.editor.lead()))
	case runDoneMsg:
		cmd = m.runDone(msg)
	case ablateDoneMsg:
		cmd = m.ablateDone(msg)
	case stepDoneMsg:
		cmd = m.stepDone(msg)
	case scoresDoneMsg:
		m.scoresDone(msg)
	case circuitsDoneMsg:
		if msg.epoch != m.tl.epoch {
			return m, nil // of a timeline step no longer shown
		}
		m.circuitsDone(msg)
	case ovDoneMsg:
		if msg.epoch != m.tl.epoch {
			return m, nil
		}
		if m.circ.ov == nil {
			m.circ.ov = map[ablate.Head]ovEntry{}
		}
		m.circ.ov[msg.head] = ovEntry{done: true, pairs: msg.pairs, err: msg.err}
		m.gen++
	case probeDoneMsg:
		if msg.epoch != m.tl.epoch {
			return m, nil
		}
		m.probe, m.probeErr = msg.scores, msg.err
		if msg.err != nil {
			m.setStatus("the induction probe failed: %v", msg.err)
		}
		if m.probe == nil && m.probeErr == nil {
			m.probe = []analysis.HeadScores{}
		}
		m.gen++
	case tea.MouseClickMsg:
		if m.editing || !m.click(msg.Mouse()) {
			return m, nil
		}
	case tea.MouseWheelMsg:
		if m.editing || !m.wheel(msg.Mouse()) {
			return m, nil
		}
	case tea.PasteMsg:
		if m.editing {
			if m.paste(msg.Content) {
				return m, nil
			}
			break // the status line changed: redraw the cached screen
		}
	case tea.KeyPressMsg:
		if m.editing {
			var done bool
			if cmd, done = m.updateEditing(msg); !done {
				return m, cmd
			}
		} else {
			cmd = m.updateKey(msg)
		}
	default:
		return m, nil
	}
	m.settle()
	if ov := m.ovCmd(); ov != nil {
		cmd = tea.Batch(cmd, ov)
	}
	return m, cmd
}

// paste inserts pasted text into the editor, saying so in the status line when it was
// cut; it reports whether all of it went in.
func (m *Model) paste(s string) bool {
	if !m.editor.insert(s) {
		m.setStatus("the prompt is cut at %d characters", maxPromptRunes)
		return false
	}
	return true
}

// runDone shows a finished run (or its error), and its ablated run when heads are off;
// then it starts what is wanted next (see sync): the queued prompt, if any.
func (m *Model) runDone(msg runDoneMsg) tea.Cmd {
	m.running, m.pending, m.pendingTarget = false, "", ""
	if msg.epoch != m.tl.epoch {
		// A run of a timeline step no longer shown: its prompt runs again on the step shown
		// unless that step ran it already.
		m.release(msg.run)
		if msg.abl != nil {
			m.release(msg.abl.run)
		}
		if msg.prompt != m.clean.Prompt && m.queued == "" {
			m.queued, m.queuedTarget = msg.prompt, msg.target
		}
		return m.sync()
	}
	shown := false
	switch {
	case msg.err != nil:
		m.setStatus("error: %v", msg.err)
		m.failed, m.failedTarget = msg.prompt, msg.target
	case msg.run.Check() != nil:
		m.setStatus("error: %v", msg.run.Check())
		m.failed, m.failedTarget = msg.prompt, msg.target
		m.release(msg.run)
	default:
		m.failed, m.failedTarget = "", ""
		m.setClean(msg.run)
		if !m.warnDegenerate() {
			m.setStatus("ran %d tokens in %s", m.tokens(), duration(msg.run.Result.RunTime))
		}
		shown = true
	}
	if a := msg.abl; a != nil {
		if shown {
			m.ablationDone(a)
		} else {
			m.release(a.run)
		}
	}
	return m.sync()
}

// setClean shows r, a clean run of a new prompt, releasing the runs shown before; heads
// the new run lacks are no longer off.
func (m *Model) setClean(r *Run) {
	oldClean, oldRun := m.clean, m.run
	m.clean, m.run, m.shownOff = r, r, ""
	m.cleanLoss, m.ablatedLoss = nil, nil
	m.dataChanged()
	m.release(oldClean)
	if oldRun != oldClean {
		m.release(oldRun)
	}
	m.keepExistingOff()
}

// dataChanged notes a change of the run shown: the screen and the caches of its maps
// are redrawn.
func (m *Model) dataChanged() {
	m.gen++
	m.thumbs, m.textScores, m.order = nil, nil, nil
}

// release hands a run the UI no longer shows to Config.Release, in the background.
func (m *Model) release(r *Run) {
	if r == nil {
		return
	}
	rel := r.release
	if rel == nil {
		rel = m.cfg.Release
	}
	if rel == nil {
		return
	}
	m.bg.goDo(func(context.Context) { rel(r) })
}

// startRun runs the model on prompt in the background: clean, and, when heads are off,
// then with them off, so that the ablation's effects are of the new prompt too.
func (m *Model) startRun(prompt, target string) tea.Cmd {
	m.running, m.pending, m.pendingTarget = true, prompt, target
	m.setStatus("running…")
	rerun, abl := m.cfg.Rerun, m.cfg.Ablate
	switch pair, pairIDs := m.cfg.RerunPair, m.cfg.RerunPairIDs; {
	case m.paired() && m.cfg.RerunIDs != nil && pairIDs != nil:
		rerun = func(ctx context.Context, prompt string) (*Run, error) {
			src, err := ParseIDs(prompt)
			if err != nil {
				return nil, fmt.Errorf("source: %w", err)
			}
			tgt, err := ParseIDs(target)
			if err != nil {
				return nil, fmt.Errorf("target: %w", err)
			}
			return pairIDs(ctx, src, tgt)
		}
	case m.paired() && pair != nil:
		rerun = func(ctx context.Context, prompt string) (*Run, error) {
			return pair(ctx, prompt, target)
		}
	case m.cfg.RerunIDs != nil:
		byIDs := m.cfg.RerunIDs
		rerun = func(ctx context.Context, prompt string) (*Run, error) {
			ids, err := ParseIDs(prompt)
			if err != nil {
				return nil, err
			}
			return byIDs(ctx, ids)
		}
	}
	paired := m.paired()
	off := offHeads(m.off)
	rel, epoch := m.cfg.Release, m.tl.epoch
	return m.bg.cmd(func(ctx context.Context) tea.Msg {
		r, err := rerun(ctx, prompt)
		if err == nil && r == nil {
			err = ErrNoResult
		}
		if r != nil {
			r.release = rel
		}
		if err == nil && paired && r.Target == "" {
			r.Target = target
		}
		msg := runDoneMsg{epoch: epoch, prompt: prompt, target: target, run: r, err: err}
		if err == nil && len(off) > 0 && abl != nil && r.Check() == nil {
			// The heads the new run has (runDone keeps those off: see keepExistingOff).
			if kept := existingHeads(r.Result, off); len(kept) > 0 {
				msg.abl = runAblation(ctx, abl, r, kept, ablate.Join(kept), true)
				if msg.abl.run != nil {
					msg.abl.run.release = rel
				}
			}
		}
		return msg
	})
}

// ParseIDs reads a list of token ids as the ids editor takes them: non-negative integers
// separated by commas and/or spaces.
func ParseIDs(s string) ([]int64, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) == 0 {
		return nil, errors.New("no token ids: give them comma-separated, e.g. 5,17,23")
	}
	ids := make([]int64, 0, len(fields))
	for _, f := range fields {
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil || id < 0 {
			return nil, fmt.Errorf("token ids are non-negative integers, comma-separated; %q is not one", shorten(f, 20))
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// updateEditing handles a key in the prompt editor; done reports whether the editor
// closed or the key changed more than the editor (the state then needs settling).
func (m *Model) updateEditing(msg tea.KeyPressMsg) (cmd tea.Cmd, done bool) {
	switch msg.String() {
	case "ctrl+c":
		return tea.Quit, true
	case "esc":
		m.editing = false
		return nil, true
	case "tab":
		if !m.paired() {
			break // a tab typed into the prompt
		}
		cur := m.editor.value()
		m.editor.setValue(m.other)
		m.other, m.editTarget = cur, !m.editTarget
		m.setEditorLabel()
		which, other := "source", "target"
		if m.editTarget {
			which, other = other, which
		}
		m.setStatus("editing the %s (tab: the %s); enter runs both", which, other)
		return nil, true
	case "enter":
		m.editing = false
		prompt, target := m.editor.value(), ""
		if m.paired() {
			target = m.other
			if m.editTarget {
				prompt, target = target, prompt
			}
		}
		switch {
		case strings.TrimSpace(prompt) == "" && m.paired():
			m.setStatus("the source is empty; nothing was run")
		case strings.TrimSpace(prompt) == "":
			m.setStatus("the prompt is empty; nothing was run")
		case m.paired() && strings.TrimSpace(target) == "":
			m.setStatus("the target is empty; nothing was run")
		case m.running:
			m.queued, m.queuedTarget = prompt, target
			m.setStatus("queued: the new prompt runs when the current run finishes")
		default:
			return m.startRun(prompt, target), true
		}
		return nil, true
	}
	if !m.editor.key(msg) {
		m.setStatus("the prompt is cut at %d characters", maxPromptRunes)
		return nil, true
	}
	return nil, false
}

// paired reports whether the editor edits an encoder–decoder's source and target (see
// Config.RerunPair).
func (m *Model) paired() bool {
	if m.cfg.RerunIDs != nil {
		return m.cfg.RerunPairIDs != nil
	}
	return m.cfg.RerunPair != nil
}

// editorLabel is the label that starts the editor's line: which sequence it edits, and
// whether as ids.
func (m *Model) editorLabel() string {
	switch {
	case m.paired() && m.cfg.RerunIDs != nil && m.editTarget:
		return targetIDsLabel
	case m.paired() && m.cfg.RerunIDs != nil:
		return sourceIDsLabel
	case m.paired() && m.editTarget:
		return targetLabel
	case m.paired():
		return sourceLabel
	case m.cfg.RerunIDs != nil:
		return idsLabel
	}
	return promptLabel
}

// setEditorLabel sets the editor's label for the sequence it is on, and its width to what
// the label leaves.
func (m *Model) setEditorLabel() {
	m.editor.label = m.editorLabel()
	m.editor.setWidth(m.width - len(m.editor.lead()))
}

func (m *Model) updateKey(msg tea.KeyPressMsg) tea.Cmd {
	k := m.keys
	if m.showHelp {
		// ↑/↓ (and the page keys) scroll a help taller than the window; any other key
		// closes it; q still quits.
		if scroll := m.helpScroll(); scroll > 0 {
			switch {
			case key.Matches(msg, k.Up):
				m.helpTop--
				return nil
			case key.Matches(msg, k.Down):
				m.helpTop++
				return nil
			case key.Matches(msg, k.PageUp):
				m.helpTop -= max(m.bodyHeight()-2, 1)
				return nil
			case key.Matches(msg, k.PageDown):
				m.helpTop += max(m.bodyHeight()-2, 1)
				return nil
			}
		}
		m.showHelp = false
		if key.Matches(msg, k.Quit) {
			return tea.Quit
		}
		return nil
	}
	switch {
	case key.Matches(msg, k.Quit):
		return tea.Quit
	case key.Matches(msg, k.Help):
		m.showHelp, m.helpTop = true, 0
	case key.Matches(msg, k.Edit):
		if m.cfg.Rerun == nil && m.cfg.RerunIDs == nil && !m.paired() {
			m.setStatus("this model runs on ids; the prompt cannot be edited")
			break
		}
		// The latest prompt asked for: queued, running, failed, or shown.
		p, t := m.clean.Prompt, m.clean.Target
		if m.failed != "" {
			p, t = m.failed, m.failedTarget
		}
		if m.running && m.pending != "" {
			p, t = m.pending, m.pendingTarget
		}
		if m.queued != "" {
			p, t = m.queued, m.queuedTarget
		}
		m.editing, m.editTarget = true, false
		m.editor.setValue(p)
		m.other = t
		m.setEditorLabel()
		switch {
		case m.paired() && m.cfg.RerunIDs != nil:
			m.setStatus("editing the source ids (tab: the target ids), comma-separated; enter runs both")
		case m.paired():
			m.setStatus("editing the source (tab: the target); enter runs both")
		case m.cfg.RerunIDs != nil:
			m.setStatus("editing ids: token ids, comma-separated; enter runs them")
		}
	case key.Matches(msg, k.Table) && m.view == gridView:
		m.table = !m.table
	case key.Matches(msg, k.Circuits):
		return m.toggleCircuits()
	case key.Matches(msg, k.Open):
		if m.view == gridView {
			m.openHead()
		}
	case key.Matches(msg, k.Back):
		m.view = gridView
	case key.Matches(msg, k.NextView):
		m.view = (m.view + 1) % 3
	case key.Matches(msg, k.Scale):
		m.scale = m.scale.Next()
	case key.Matches(msg, k.Zoom):
		m.fit = !m.fit
	case key.Matches(msg, k.ZoomIn):
		m.zoom = min(m.zoom+1, 4)
		m.fit = false
	case key.Matches(msg, k.ZoomOut):
		m.zoom = max(m.zoom-1, 1)
	case key.Matches(msg, k.Direction):
		m.reverse = !m.reverse
	case key.Matches(msg, k.Sort):
		m.sortBy = (m.sortBy + 1) % analysis.Score(len(analysis.AllScores))
		m.jumpRank = 0
		m.setStatus("marking and jumping by %s", m.sortBy)
	case key.Matches(msg, k.Jump):
		m.jumpToNextBest()
	case key.Matches(msg, k.Save):
		m.savePNG(false)
	case key.Matches(msg, k.SaveGrid):
		m.savePNG(true)
	case key.Matches(msg, k.Ablate):
		return m.toggleOff()
	case key.Matches(msg, k.Restore):
		return m.restoreAll()
	case m.timeline() && key.Matches(msg, k.StepBack):
		return m.moveStep(-1)
	case m.timeline() && key.Matches(msg, k.StepNext):
		return m.moveStep(1)
	case m.timeline() && key.Matches(msg, k.JumpBack):
		return m.jumpStep(-1)
	case m.timeline() && key.Matches(msg, k.JumpNext):
		return m.jumpStep(1)
	default:
		m.move(msg)
	}
	return nil
}

// openHead opens the head view on the selected head at its most informative place: the
// query cursor on the row with the sharpest attention (the highest largest weight; of
// equals, the last row; a causal map's first row, 1.0 by construction, left out), the key
// cursor on that row's peak (settle scrolls both into view).
func (m *Model) openHead() {
	m.view = headView
	if m.layers() == 0 || m.headsIn(m.layer) == 0 {
		return
	}
	a := m.attn()
	from := 0
	if m.oneSequence(m.layer) && len(a) > 1 && causalFirstRow(a[0]) {
		from = 1 // a causal map's first row attends to itself alone: its 1.0 says nothing
	}
	q, k := sharpestRow(a[from:])
	if q < 0 {
		return
	}
	q += from
	m.query, m.key = q, k
}

// causalFirstRow reports whether a map's first row puts no weight past its own key (the
// first token of a causal model, whose weight is 1.0 whatever the head does).
func causalFirstRow(row []float32) bool {
	for _, v := range row[min(1, len(row)):] {
		if v != 0 {
			return false
		}
	}
	return true
}

// sharpestRow is the row of a with the highest largest weight (ties: the last such row)
// and the key of that weight (ties: the first); -1, -1 for an empty map.
func sharpestRow(a [][]float32) (q, k int) {
	q, k = -1, -1
	var best float32
	for i, row := range a {
		if len(row) == 0 {
			continue
		}
		j := 0
		for c, v := range row {
			if v > row[j] {
				j = c
			}
		}
		if q < 0 || row[j] >= best {
			q, k, best = i, j, row[j]
		}
	}
	return q, k
}

// move handles the cursor keys, whose meaning depends on the view. It may leave a cursor
// out of range: settle bounds it.
func (m *Model) move(msg tea.KeyPressMsg) {
	k := m.keys
	page := max(m.bodyHeight()-6, 1)
	switch {
	case m.view == gridView && m.table:
		m.fillTable()
		i := m.tableIndex(m.order)
		switch {
		case key.Matches(msg, k.Up):
			i--
		case key.Matches(msg, k.Down):
			i++
		case key.Matches(msg, k.PageUp):
			i -= page
		case key.Matches(msg, k.PageDown):
			i += page
		case key.Matches(msg, k.Top):
			i = 0
		case key.Matches(msg, k.Bottom):
			i = len(m.order) - 1
		}
		if len(m.order) > 0 {
			i = clamp(i, 0, len(m.order)-1)
			m.layer, m.head = m.order[i].Layer, m.order[i].Head
		}
	case m.view == gridView:
		switch {
		case key.Matches(msg, k.Up):
			m.layer--
		case key.Matches(msg, k.Down):
			m.layer++
		case key.Matches(msg, k.Left):
			m.head--
		case key.Matches(msg, k.Right):
			m.head++
		case key.Matches(msg, k.PageUp), key.Matches(msg, k.PageDown):
			// A page of layer bands: the layers on screen.
			gw, gh := m.mainArea(gridView)
			n := m.gridGeometry(gw, gh).visL
			if key.Matches(msg, k.PageUp) {
				n = -n
			}
			m.layer += n
			m.gridTop += n
		case key.Matches(msg, k.Top):
			m.layer = 0
		case key.Matches(msg, k.Bottom):
			m.layer = m.layers() - 1
		}
		m.layer = clamp(m.layer, 0, m.layers()-1)
	default:
		switch {
		case key.Matches(msg, k.Up):
			m.query--
		case key.Matches(msg, k.Down):
			m.query++
		case key.Matches(msg, k.PageUp):
			m.query -= page
		case key.Matches(msg, k.PageDown):
			m.query += page
		case key.Matches(msg, k.Top):
			m.query = 0
		case key.Matches(msg, k.Bottom):
			m.query, _ = m.mapSize()
		case key.Matches(msg, k.Left):
			if m.view == tokenView {
				m.query--
			} else {
				m.key--
			}
		case key.Matches(msg, k.Right):
			if m.view == tokenView {
				m.query++
			} else {
				m.key++
			}
		case key.Matches(msg, k.KeysLeft):
			m.key -= max((m.width-panelW)/m.zoom/2, 1)
		case key.Matches(msg, k.KeysRight):
			m.key += max((m.width-panelW)/m.zoom/2, 1)
		case key.Matches(msg, k.Peak):
			if a := m.attn(); m.query >= 0 && m.query < len(a) && len(a[m.query]) > 0 {
				m.key = topIndices(a[m.query], 1)[0]
			}
		}
	}
}

// click handles a left click: in the help it closes it, in the grid it opens the head
// clicked, in the head view's detail it puts the cursors on the cell clicked. It reports
// whether the state may have changed.
func (m *Model) click(ms tea.Mouse) bool {
	if ms.Button != tea.MouseLeft || m.width < minWidth || m.height < minHeight || m.layers() == 0 {
		return false
	}
	if m.showHelp {
		m.showHelp = false
		return true
	}
	w, h := m.mainArea(m.view)
	x, y := ms.X, ms.Y-1 // y: the line of the body (the title is line 0)
	if x < 0 || x >= w || y < 0 || y >= h {
		return false
	}
	switch {
	case m.view == gridView && m.table:
		order := m.tableOrder()
		i := m.tableTop + y - 1 // below the header
		if y < 1 || y > m.tableRows() || i >= len(order) {
			return false
		}
		m.layer, m.head = order[i].Layer, order[i].Head
		m.settle()
		m.openHead()
	case m.view == gridView:
		g := m.gridGeometry(w, h)
		if y < 1 || x < g.labelW {
			return false
		}
		l, i := g.top+(y-1)/g.th, (x-g.labelW)/(g.tw+1)
		if l >= min(g.top+g.visL, m.layers()) || i >= g.visH || g.left+i >= m.headsIn(l) {
			return false
		}
		m.layer, m.head = l, g.left+i
		m.settle() // the layer's sequences, before the head view's cursors are placed
		m.openHead()
	case m.view == headView && !m.fit && m.keyLen() > 0:
		d := m.headGeometry(w, h)
		q, k := m.mapSize()
		if y >= d.mapH || d.rowTop+y >= q {
			return false
		}
		m.query = d.rowTop + y
		if x >= d.labelW && d.colLeft+(x-d.labelW)/m.zoom < k {
			m.key = d.colLeft + (x-d.labelW)/m.zoom
		}
	default:
		return false
	}
	return true
}

// wheel handles the mouse wheel: it scrolls the help, moves through the layers (and, to
// the side, the heads) in the grid, and through the queries (keys) in the other views.
func (m *Model) wheel(ms tea.Mouse) bool {
	if m.width < minWidth || m.height < minHeight {
		return false
	}
	step := map[tea.MouseButton]int{tea.MouseWheelUp: -1, tea.MouseWheelDown: 1, tea.MouseWheelLeft: -1, tea.MouseWheelRight: 1}[ms.Button]
	across := ms.Button == tea.MouseWheelLeft || ms.Button == tea.MouseWheelRight
	switch {
	case step == 0:
		return false
	case m.showHelp:
		m.helpTop += 3 * step
	case m.view == gridView && across:
		m.head += step
	case m.view == gridView:
		m.layer = clamp(m.layer+step, 0, m.layers()-1)
	case across:
		m.key += step
	default:
		m.query += 3 * step
	}
	return true
}

// clamp is v bounded to [lo, hi], or lo when the range is empty.
func clamp(v, lo, hi int) int { return max(min(v, hi), lo) }

// settle brings the state back to one View can draw after any change: the layer, head,
// query and key cursors within the selected map (an encoder–decoder's layers differ in
// both axes' lengths), every scroll offset such that its cursor is in view, the caches
// that the screen needs filled, and the screen drawn but for its bottom line.
func (m *Model) settle() {
	m.layer = clamp(m.layer, 0, m.layers()-1)
	m.head = clamp(m.head, 0, m.headsIn(m.layer)-1)
	if sd := m.res().QuerySide(m.layer); sd != m.qSide {
		m.sideQuery[m.qSide], m.query, m.qSide = m.query, m.sideQuery[sd], sd
	}
	if sd := m.res().KeySide(m.layer); sd != m.kSide {
		m.sideKey[m.kSide], m.key, m.kSide = m.key, m.sideKey[sd], sd
	}
	q, k := m.mapSize()
	m.query = clamp(m.query, 0, q-1)
	m.key = clamp(m.key, 0, k-1)
	m.zoom = clamp(m.zoom, 1, 4)
	if m.showHelp {
		m.helpTop = clamp(m.helpTop, 0, m.helpScroll())
	} else {
		m.helpTop = 0
	}

	gw, gh := m.mainArea(gridView)
	g := m.gridGeometry(gw, gh)
	m.gridLeft, m.gridTop = g.left, g.top
	if m.table && m.view == gridView && !m.showHelp && m.width >= minWidth && m.height >= minHeight {
		m.fillTable()
		m.tableTop = scrollTo(m.tableTop, m.tableIndex(m.order), m.tableRows(), len(m.order))
	}
	hw, hh := m.mainArea(headView)
	d := m.headGeometry(hw, hh)
	m.rowTop, m.colLeft = d.rowTop, d.colLeft

	if m.width >= minWidth && m.height >= minHeight && m.layers() > 0 && m.headsIn(m.layer) > 0 {
		m.fillScores(m.layer, m.head)
		if m.view == gridView && m.table && !m.showHelp {
			m.fillTable()
		} else if m.view == gridView && !m.showHelp {
			m.fillThumbnails(g)
			// The marks of text scores need every visible head's scores (entropy over a
			// 1024-token map is a million logarithms per head); induction and
			// duplicate-token marks come from the probe and need none.
			if _, ok := m.sortBy.Threshold(); ok && m.sortBy != analysis.Induction && m.sortBy != analysis.DuplicateToken {
				for l := g.top; l < g.top+g.visL; l++ {
					for h := g.left; h < min(g.left+g.visH, m.headsIn(l)); h++ {
						m.fillScores(l, h)
					}
				}
			}
		}
	}
	if key := (topKey{m.state, m.gen}); !m.topOK || key != m.topFor {
		m.top, m.topFor, m.topOK = m.renderTop(), key, true
		m.frame = m.top + m.renderHelpLine()
	}
}

// fillScores computes and caches head (l, h)'s text scores.
func (m *Model) fillScores(l, h int) {
	if m.textScores == nil {
		m.textScores = make([][]*analysis.HeadScores, m.layers())
		for l := range m.textScores {
			m.textScores[l] = make([]*analysis.HeadScores, m.headsIn(l))
		}
	}
	if m.textScores[l][h] == nil {
		s := m.computeTextScores(l, h)
		m.textScores[l][h] = &s
	}
}

// computeTextScores computes head (l, h)'s scores on the current run (entropy over a
// 1024-token map costs a million logarithms: fillScores caches them); the probe scores are
// left NaN.
func (m *Model) computeTextScores(l, h int) analysis.HeadScores {
	a := m.res().Attn[l][h]
	sc := analysis.HeadScores{
		Layer: l, Head: h,
		Induction: math.NaN(), DuplicateToken: math.NaN(),
		PrevToken: math.NaN(), FirstToken: math.NaN(), Self: math.NaN(), Entropy: math.NaN(),
		InductionNoSink: math.NaN(), DuplicateNoSink: math.NaN(),
		PrevTokenNoSink: math.NaN(), SelfNoSink: math.NaN(),
	}
	if len(a) == 0 || len(a[0]) == 0 {
		return sc
	}
	sc.FirstToken, sc.Entropy = analysis.FirstTokenScore(a), analysis.EntropyScore(a)
	// Previous-token and self compare positions of one sequence: cross-attention (target
	// queries, source keys) has neither, even when the two lengths agree. (A map that is
	// not square gets NaN from analysis itself.)
	if m.oneSequence(l) {
		sc.PrevToken, sc.Self = analysis.PrevTokenScore(a), analysis.SelfScore(a)
		sc.PrevTokenNoSink, sc.SelfNoSink = analysis.PrevTokenNoSinkScore(a), analysis.SelfNoSinkScore(a)
	}
	return sc
}

// headScores returns a head's scores without changing the model: text scores from the
// current run (cached by fillScores, else computed), probe scores when the probe has
// finished.
func (m *Model) headScores(l, h int) analysis.HeadScores {
	var s analysis.HeadScores
	if l < len(m.textScores) && h < len(m.textScores[l]) && m.textScores[l][h] != nil {
		s = *m.textScores[l][h]
	} else {
		s = m.computeTextScores(l, h)
	}
	s.Induction, s.DuplicateToken = m.probeScore(l, h)
	s.InductionNoSink, s.DuplicateNoSink = m.probeNoSink(l, h)
	return s
}

// probeNoSink returns a head's sink-discounted induction and duplicate-token scores (see
// analysis.InductionNoSinkScore), NaN where probeScore has none.
func (m *Model) probeNoSink(l, h int) (induction, duplicate float64) {
	if !m.oneSequence(l) {
		return math.NaN(), math.NaN()
	}
	for _, p := range m.probe {
		if p.Layer == l && p.Head == h {
			return p.InductionNoSink, p.DuplicateNoSink
		}
	}
	return math.NaN(), math.NaN()
}

// probePending reports whether the probe is still running.
func (m *Model) probePending() bool { return m.cfg.Probe != nil && m.probe == nil && m.probeErr == nil }

// probeScore returns a head's induction and duplicate-token scores: NaN until the probe
// has finished, and for cross-attention (the probe's scores compare positions of one
// sequence).
func (m *Model) probeScore(l, h int) (induction, duplicate float64) {
	if !m.oneSequence(l) {
		return math.NaN(), math.NaN()
	}
	for _, p := range m.probe {
		if p.Layer == l && p.Head == h {
			return p.Induction, p.DuplicateToken
		}
	}
	return math.NaN(), math.NaN()
}

// ranked lists every head, best first by the current sort score (lowest first for
// entropy, where low means focused). It fills the score cache.
func (m *Model) ranked() []analysis.HeadScores {
	for l := 0; l < m.layers(); l++ {
		for h := 0; h < m.headsIn(l); h++ {
			m.fillScores(l, h)
		}
	}
	return m.sortedHeads()
}

// tableOrder is the score table's rows: the cache settle fills, or, for a state settle
// has not seen, computed without storing anything.
func (m *Model) tableOrder() []analysis.HeadScores {
	if m.order != nil && m.orderFor == (topKey{state{sortBy: m.sortBy}, m.gen}) {
		return m.order
	}
	return m.sortedHeads()
}

// fillTable fills the score table's cache (every head's scores, sorted).
func (m *Model) fillTable() {
	if key := (topKey{state{sortBy: m.sortBy}, m.gen}); m.order == nil || m.orderFor != key {
		m.order, m.orderFor = m.ranked(), key
	}
}

// tableIndex is the selected head's row in order (0 when it is not there).
func (m *Model) tableIndex(order []analysis.HeadScores) int {
	for i, s := range order {
		if s.Layer == m.layer && s.Head == m.head {
			return i
		}
	}
	return 0
}

// sortedHeads is every head's scores (from the cache where filled), sorted as ranked
// sorts them; it changes nothing.
func (m *Model) sortedHeads() []analysis.HeadScores {
	var all []analysis.HeadScores
	for l := 0; l < m.layers(); l++ {
		for h := 0; h < m.headsIn(l); h++ {
			all = append(all, m.headScores(l, h))
		}
	}
	by := m.sortBy
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i].Get(by), all[j].Get(by)
		if math.IsNaN(b) {
			return !math.IsNaN(a)
		}
		if by == analysis.Entropy {
			return a < b
		}
		return a > b
	})
	return all
}

// marked reports whether a head reaches the current sort score's threshold.
func (m *Model) marked(l, h int) bool {
	t, ok := m.sortBy.Threshold()
	if !ok {
		return false
	}
	var v float64
	switch m.sortBy {
	case analysis.Induction:
		v, _ = m.probeScore(l, h)
	case analysis.DuplicateToken:
		_, v = m.probeScore(l, h)
	default:
		v = m.headScores(l, h).Get(m.sortBy)
	}
	return !math.IsNaN(v) && v >= t
}

// jumpToNextBest selects the best head by the sort score, then the next best at each
// press, wrapping around.
func (m *Model) jumpToNextBest() {
	all := m.ranked()
	if len(all) == 0 {
		return
	}
	if math.IsNaN(all[0].Get(m.sortBy)) {
		m.setStatus("%s scores are not ready yet", m.sortBy)
		return
	}
	next := m.jumpRank % len(all)
	m.jumpRank = next + 1
	m.layer, m.head = all[next].Layer, all[next].Head
	m.setStatus("#%d by %s: %s = %.3f", next+1, m.sortBy, all[next].Name(), all[next].Get(m.sortBy))
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
