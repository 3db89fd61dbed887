// Package tui is attnscope's terminal UI: a Bubble Tea program that shows every head of a
// run as a thumbnail, one head's full map with token labels, and the prompt coloured by
// attention, with head scores and next-token predictions beside them. It works at any
// terminal size, in truecolor, 256, 16 or no colours, without a mouse.
package tui

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/key"
	"charm.land/bubbles/v2/textinput"
	tea "charm.land/bubbletea/v2"

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
}

// Config is what the UI needs from the command that starts it.
type Config struct {
	ModelName string
	Device    string
	Profile   heatmap.Profile
	Initial   *Run
	// Rerun runs the model on a new prompt (nil: the prompt cannot be edited).
	Rerun func(prompt string) (*Run, error)
	// Release is called with a run the UI no longer shows (to recycle its buffers).
	Release func(*Run)
	// Probe computes the probe-based head scores (induction, duplicate-token); it runs in
	// the background after start. nil: those scores are not shown.
	Probe func() ([]analysis.HeadScores, error)
	// Label gives the display label of any vocabulary id (for predictions); nil: the id.
	Label func(id int64) string
	// SaveDir is where PNGs are written ("" = the working directory).
	SaveDir string
}

type view int

const (
	gridView view = iota
	headView
	tokenView
)

func (v view) String() string { return [...]string{"grid", "head", "tokens"}[v] }

// Model is the Bubble Tea model.
type Model struct {
	cfg     Config
	keys    keyMap
	help    help.Model
	input   textinput.Model
	palette *heatmap.Palette

	run          *Run
	probe        []analysis.HeadScores // nil until the probe finishes
	probeErr     error
	width        int
	height       int
	view         view
	showHelp     bool
	editing      bool
	running      bool
	status       string
	statusAt     time.Time
	layer, head  int
	query, key   int // cursor in the head and token views
	rowTop       int // first visible query row (head detail)
	colLeft      int // first visible key column (head detail)
	gridTop      int // first visible layer (grid)
	gridLeft     int // first visible head (grid)
	zoom         int // cells per key in head detail (1–4)
	fit          bool
	scale        heatmap.Scale
	reverse      bool // token view: who attends to the cursor token
	sortBy       analysis.Score
	jumpRank     int // rank the next jump goes to
	thumbs       map[thumbKey][]string
	textScores   [][]*analysis.HeadScores // [layer][head], each nil until first needed
	lastRunError error
}

// New returns the UI model for a first run.
func New(cfg Config) *Model {
	in := textinput.New()
	in.Prompt = "prompt> "
	in.SetValue(cfg.Initial.Prompt)
	m := &Model{
		cfg:     cfg,
		keys:    newKeyMap(),
		help:    help.New(),
		input:   in,
		palette: heatmap.NewPalette(cfg.Profile),
		run:     cfg.Initial,
		zoom:    2,
		scale:   heatmap.Sqrt,
		sortBy:  analysis.Induction,
	}
	m.query = max(0, m.tokens()-1)
	m.warnDegenerate()
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

type runDoneMsg struct {
	run *Run
	err error
}

type probeDoneMsg struct {
	scores []analysis.HeadScores
	err    error
}

// Init starts the probe in the background.
func (m *Model) Init() tea.Cmd {
	if m.cfg.Probe == nil {
		return nil
	}
	probe := m.cfg.Probe
	return func() tea.Msg {
		s, err := probe()
		return probeDoneMsg{s, err}
	}
}

func (m *Model) res() *result.Result { return m.run.Result }
func (m *Model) layers() int         { return len(m.res().Attn) }
func (m *Model) headsIn(l int) int   { return m.res().Heads(l) }
func (m *Model) tokens() int         { return len(m.run.Labels) }

// attn is the selected head's map.
func (m *Model) attn() [][]float32 { return m.res().Attn[m.layer][m.head] }

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
func (m *Model) oneSequence(l int) bool { return m.res().QuerySide(l) == m.res().KeySide(l) }

// keys returns the key-axis length of the selected head (the query length for
// self-attention).
func (m *Model) keyLen() int {
	a := m.attn()
	if len(a) == 0 {
		return 0
	}
	return len(a[0])
}

func (m *Model) setStatus(format string, args ...any) {
	m.status = fmt.Sprintf(format, args...)
	m.statusAt = time.Now()
}

// Update handles keys, resizes and finished runs.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.SetWidth(msg.Width)
		m.input.SetWidth(max(msg.Width-len(m.input.Prompt)-1, 1))
		return m, nil
	case runDoneMsg:
		m.running = false
		if msg.err != nil {
			m.setStatus("error: %v", msg.err)
			return m, nil
		}
		old := m.run
		m.run = msg.run
		m.thumbs, m.textScores = nil, nil
		m.query = min(m.query, m.tokens()-1)
		m.query = max(m.query, 0)
		m.key = min(m.key, max(m.keyLen()-1, 0))
		m.layer = min(m.layer, m.layers()-1)
		m.head = min(m.head, m.headsIn(m.layer)-1)
		if !m.warnDegenerate() {
			m.setStatus("ran %d tokens in %s", m.tokens(), duration(msg.run.Result.RunTime))
		}
		if m.cfg.Release != nil && old != nil {
			m.cfg.Release(old)
		}
		return m, nil
	case probeDoneMsg:
		m.probe, m.probeErr = msg.scores, msg.err
		return m, nil
	case tea.KeyPressMsg:
		if m.editing {
			return m.updateEditing(msg)
		}
		return m.updateKey(msg)
	}
	return m, nil
}

func (m *Model) updateEditing(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	switch msg.String() {
	case "esc":
		m.editing = false
		m.input.Blur()
		return m, nil
	case "enter":
		m.editing = false
		m.input.Blur()
		prompt := m.input.Value()
		if strings.TrimSpace(prompt) == "" {
			m.setStatus("the prompt is empty")
			return m, nil
		}
		m.running = true
		m.setStatus("running…")
		rerun := m.cfg.Rerun
		return m, func() tea.Msg {
			r, err := rerun(prompt)
			return runDoneMsg{r, err}
		}
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(msg)
	return m, cmd
}

func (m *Model) updateKey(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	k := m.keys
	if m.showHelp {
		// Any key closes the help; q still quits.
		m.showHelp = false
		if key.Matches(msg, k.Quit) {
			return m, tea.Quit
		}
		return m, nil
	}
	switch {
	case key.Matches(msg, k.Quit):
		return m, tea.Quit
	case key.Matches(msg, k.Help):
		m.showHelp = true
	case key.Matches(msg, k.Edit):
		if m.cfg.Rerun == nil {
			m.setStatus("this model runs on ids; the prompt cannot be edited")
			break
		}
		if m.running {
			break
		}
		m.editing = true
		m.input.SetValue(m.run.Prompt)
		m.input.CursorEnd()
		return m, m.input.Focus()
	case key.Matches(msg, k.Open):
		if m.view == gridView {
			m.view = headView
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
	default:
		m.move(msg)
	}
	return m, nil
}

// move handles the cursor keys, whose meaning depends on the view.
func (m *Model) move(msg tea.KeyPressMsg) {
	k := m.keys
	page := max(m.bodyHeight()-6, 1)
	switch m.view {
	case gridView:
		switch {
		case key.Matches(msg, k.Up):
			m.layer = max(m.layer-1, 0)
		case key.Matches(msg, k.Down):
			m.layer = min(m.layer+1, m.layers()-1)
		case key.Matches(msg, k.Left):
			m.head = max(m.head-1, 0)
		case key.Matches(msg, k.Right):
			m.head++
		}
		m.head = min(m.head, m.headsIn(m.layer)-1)
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
			m.query = m.tokens() - 1
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
			if row := m.attn()[max(min(m.query, len(m.attn())-1), 0)]; len(row) > 0 {
				m.key = topIndices(row, 1)[0]
			}
		}
		m.query = max(min(m.query, len(m.attn())-1), 0)
		m.key = max(min(m.key, m.keyLen()-1), 0)
	}
}

// headScores returns a head's scores: text scores from the current run (computed when a
// head is first asked for: entropy over a 1024-token map costs a million logarithms),
// probe scores when the probe has finished.
func (m *Model) headScores(l, h int) analysis.HeadScores {
	if m.textScores == nil {
		m.textScores = make([][]*analysis.HeadScores, m.layers())
		for l := range m.textScores {
			m.textScores[l] = make([]*analysis.HeadScores, m.headsIn(l))
		}
	}
	if m.textScores[l][h] == nil {
		a := m.res().Attn[l][h]
		sc := &analysis.HeadScores{
			Layer: l, Head: h,
			PrevToken:  math.NaN(),
			FirstToken: analysis.FirstTokenScore(a),
			Self:       math.NaN(),
			Entropy:    analysis.EntropyScore(a),
		}
		// Previous-token and self compare positions of one sequence: cross-attention
		// (target queries, source keys) has neither, even when the two lengths agree. (A
		// map that is not square gets NaN from analysis itself.)
		if m.oneSequence(l) && len(a) > 0 {
			sc.PrevToken, sc.Self = analysis.PrevTokenScore(a), analysis.SelfScore(a)
		}
		m.textScores[l][h] = sc
	}
	s := *m.textScores[l][h]
	s.Induction, s.DuplicateToken = m.probeScore(l, h)
	return s
}

// probeScore returns a head's induction and duplicate-token scores, NaN until the probe
// has finished.
func (m *Model) probeScore(l, h int) (induction, duplicate float64) {
	for _, p := range m.probe {
		if p.Layer == l && p.Head == h {
			return p.Induction, p.DuplicateToken
		}
	}
	return math.NaN(), math.NaN()
}

// ranked lists every head, best first by the current sort score (lowest first for
// entropy, where low means focused).
func (m *Model) ranked() []analysis.HeadScores {
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

// savePNG writes the selected head, or the grid, as a PNG.
func (m *Model) savePNG(grid bool) {
	base := strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == filepath.Separator {
			return '-'
		}
		return r
	}, strings.TrimSuffix(m.cfg.ModelName, ".onnx"))
	name := fmt.Sprintf("attnscope-%s-L%dH%d.png", base, m.layer, m.head)
	if grid {
		name = fmt.Sprintf("attnscope-%s-grid.png", base)
	}
	path := filepath.Join(m.cfg.SaveDir, name)
	f, err := os.Create(path)
	if err != nil {
		m.setStatus("cannot save: %v", err)
		return
	}
	if grid {
		err = heatmap.WriteGridPNG(f, heatmap.GridFigure{Title: fmt.Sprintf("%s — %q", m.cfg.ModelName, shorten(m.run.Prompt, 60)), Attn: m.res().Attn, Scale: m.scale})
	} else {
		err = heatmap.WritePNG(f, heatmap.Figure{
			Title:  fmt.Sprintf("%s L%dH%d — %q", m.cfg.ModelName, m.layer, m.head, shorten(m.run.Prompt, 60)),
			Matrix: m.attn(), QueryLabels: m.queryLabels(), KeyLabels: m.keyLabels(), Scale: m.scale,
		})
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		m.setStatus("cannot save: %v", err)
		return
	}
	m.setStatus("saved %s", path)
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
