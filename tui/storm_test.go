package tui

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/result"
)

// randomMap is a q×k map of random rows that sum to 1.
func randomMap(rng *rand.Rand, q, k int) [][]float32 {
	a := make([][]float32, q)
	for i := range a {
		a[i] = make([]float32, k)
		sum := float32(0)
		for j := range a[i] {
			a[i][j] = rng.Float32() * rng.Float32()
			sum += a[i][j]
		}
		for j := range a[i] {
			a[i][j] /= sum
		}
	}
	return a
}

// labelsN are n labels, some wide, some empty, some with control characters.
func labelsN(rng *rand.Rand, prefix string, n int) []string {
	pool := []string{"the", "␣cat", "", "日本語", "↵", "\t", "x\x1b[31m", "a-very-long-token-label-indeed"}
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + pool[rng.IntN(len(pool))]
	}
	return out
}

// randomRun is a one-sequence run of T tokens over L layers of H heads, with logits.
func randomRun(rng *rand.Rand, L, H, T int) *Run {
	res := &result.Result{Vocab: 7}
	for i := 0; i < T; i++ {
		res.Tokens = append(res.Tokens, int64(i%7))
		for v := 0; v < 7; v++ {
			res.Logits = append(res.Logits, rng.Float32()*4)
		}
	}
	for l := 0; l < L; l++ {
		var heads [][][]float32
		for h := 0; h < H; h++ {
			heads = append(heads, randomMap(rng, T, T))
		}
		res.Attn = append(res.Attn, heads)
	}
	return &Run{Prompt: strings.Repeat("w ", T), Result: res, Labels: labelsN(rng, "", T)}
}

// randomPairRun is an encoder–decoder run with S source and T target tokens whose layers
// are, in a random order, encoder self-attention (S×S), decoder self-attention (T×T) and
// cross-attention (T×S), each kind at least once; logits only sometimes.
func randomPairRun(rng *rand.Rand, S, T int) *Run {
	res := &result.Result{}
	for i := 0; i < S; i++ {
		res.Source = append(res.Source, int64(i))
	}
	for i := 0; i < T; i++ {
		res.Tokens = append(res.Tokens, int64(i))
	}
	if rng.IntN(2) == 0 {
		res.Vocab = 5
		for range T * 5 {
			res.Logits = append(res.Logits, rng.Float32())
		}
	}
	kinds := [][2]result.Side{
		{result.SourceSide, result.SourceSide},
		{result.TargetSide, result.TargetSide},
		{result.TargetSide, result.SourceSide},
	}
	for range rng.IntN(4) {
		kinds = append(kinds, kinds[rng.IntN(3)])
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	n := map[result.Side]int{result.SourceSide: S, result.TargetSide: T}
	H := 1 + rng.IntN(4)
	for _, sd := range kinds {
		var heads [][][]float32
		for range H {
			heads = append(heads, randomMap(rng, n[sd[0]], n[sd[1]]))
		}
		res.Attn = append(res.Attn, heads)
		res.Sides = append(res.Sides, sd)
	}
	return &Run{Prompt: "source text", Result: res, Labels: labelsN(rng, "T", T), SourceLabels: labelsN(rng, "S", S)}
}

// keyMsg is the key press whose String() is s (a binding's key name).
func keyMsg(s string) tea.KeyPressMsg {
	named := map[string]rune{
		"enter": tea.KeyEnter, "esc": tea.KeyEscape, "tab": tea.KeyTab, "backspace": tea.KeyBackspace,
		"up": tea.KeyUp, "down": tea.KeyDown, "left": tea.KeyLeft, "right": tea.KeyRight,
		"home": tea.KeyHome, "end": tea.KeyEnd, "pgup": tea.KeyPgUp, "pgdown": tea.KeyPgDown,
		"delete": tea.KeyDelete,
	}
	var mod tea.KeyMod
	for _, p := range []struct {
		prefix string
		mod    tea.KeyMod
	}{{"ctrl+", tea.ModCtrl}, {"alt+", tea.ModAlt}} {
		if rest, ok := strings.CutPrefix(s, p.prefix); ok && rest != "" {
			mod, s = p.mod, rest
		}
	}
	if c, ok := named[s]; ok {
		return tea.KeyPressMsg{Code: c, Mod: mod}
	}
	if s == "space" {
		return tea.KeyPressMsg{Code: tea.KeySpace, Text: " "}
	}
	r, _ := utf8.DecodeRuneInString(s)
	if mod != 0 {
		return tea.KeyPressMsg{Code: r, Mod: mod}
	}
	return tea.KeyPressMsg{Code: r, Text: s}
}

// boundKeys are every key name the key map binds.
func boundKeys() []string {
	var out []string
	v := reflect.ValueOf(newKeyMap())
	for i := range v.NumField() {
		out = append(out, v.Field(i).Interface().(key.Binding).Keys()...)
	}
	return out
}

// The key presses the storm sends do match the bindings they name.
func TestKeyMsgMatchesBindings(t *testing.T) {
	keys := boundKeys()
	if len(keys) < 30 {
		t.Fatalf("only %d bound keys found", len(keys))
	}
	for _, k := range append(keys, editorKeys...) {
		if got := keyMsg(k).String(); got != k {
			t.Errorf("keyMsg(%q).String() = %q", k, got)
		}
	}
}

// editorKeys are the prompt editor's own keys.
var editorKeys = []string{"backspace", "delete", "left", "right", "home", "end", "ctrl+a", "ctrl+e",
	"ctrl+u", "ctrl+k", "ctrl+w", "alt+backspace", "alt+left", "alt+right", "ctrl+left", "ctrl+right"}

// chooser feeds a storm its decisions: a seeded generator, or a fuzzer's bytes.
type chooser interface {
	// intn is a number in [0, n); ok is false when the choices have run out.
	intn(n int) (v int, ok bool)
}

type rngChooser struct{ *rand.Rand }

func (c rngChooser) intn(n int) (int, bool) { return c.IntN(n), true }

type bytesChooser struct{ b []byte }

func (c *bytesChooser) intn(n int) (int, bool) {
	if len(c.b) < 2 {
		return 0, false
	}
	v := int(c.b[0])<<8 | int(c.b[1])
	c.b = c.b[2:]
	return v % n, true
}

// storm drives a Model with random messages and checks every frame.
type storm struct {
	t       testing.TB
	c       chooser
	rng     *rand.Rand // for the runs' contents
	m       *Model
	pair    bool
	pending []tea.Msg // results of commands, delivered later
	keys    []string
	steps   int
	ablated int // steps that ended with heads off shown
	// made is the latest good run of each prompt (what Ablate ablates); released counts
	// the releases of each run.
	made     map[string]*Run
	mu       sync.Mutex
	released map[*Run]int
}

// likeRun is a run of base's tokens and shape with other maps and logits, and, half the
// time, no labels (the UI takes base's).
func likeRun(rng *rand.Rand, base *Run) *Run {
	b := base.Result
	res := &result.Result{Tokens: b.Tokens, Source: b.Source, Sides: b.Sides, Vocab: b.Vocab}
	if b.Logits != nil {
		res.Logits = make([]float32, len(b.Logits))
		for i := range res.Logits {
			res.Logits[i] = rng.Float32() * 4
		}
	}
	for _, heads := range b.Attn {
		var out [][][]float32
		for _, a := range heads {
			k := 0
			if len(a) > 0 {
				k = len(a[0])
			}
			out = append(out, randomMap(rng, len(a), k))
		}
		res.Attn = append(res.Attn, out)
	}
	r := &Run{Result: res}
	if rng.IntN(2) == 0 {
		r.Prompt, r.Labels, r.Pieces, r.SourceLabels = base.Prompt, base.Labels, base.Pieces, base.SourceLabels
	}
	return r
}

// newStorm starts a storm; withAblate gives the model a Config.Ablate.
func newStorm(t testing.TB, c chooser, seed uint64, pair bool, S, T int, p heatmap.Profile, withAblate bool) *storm {
	s := &storm{t: t, c: c, rng: rand.New(rand.NewPCG(seed, 1)), pair: pair, keys: boundKeys(),
		made: map[string]*Run{}, released: map[*Run]int{}}
	var first *Run
	if pair {
		first = randomPairRun(s.rng, S, T)
	} else {
		first = randomRun(s.rng, 1+s.rng.IntN(3), 1+s.rng.IntN(5), T)
	}
	s.made[first.Prompt] = first
	rerun := func(_ context.Context, prompt string) (*Run, error) {
		n := 1 + len(strings.Fields(prompt))%9
		var r *Run
		switch {
		case strings.Contains(prompt, "fail"):
			return nil, errors.New("the model cannot run this")
		case strings.Contains(prompt, "ragged"):
			r := randomRun(s.rng, 1, 1, 3)
			r.Result.Attn[0][0][1] = r.Result.Attn[0][0][1][:1]
			return r, nil
		case pair:
			r = randomPairRun(s.rng, 1+s.rng.IntN(n), n)
		default:
			r = randomRun(s.rng, 1+s.rng.IntN(3), 1+s.rng.IntN(3), n)
		}
		r.Prompt = prompt
		s.made[prompt] = r
		return r, nil
	}
	// Ablate ablates the latest run of the prompt; it fails for four heads off.
	abl := func(_ context.Context, prompt string, off []ablate.Head) (*Run, error) {
		base := s.made[prompt]
		if base == nil {
			t.Fatalf("Ablate(%q): the prompt was never run", prompt)
		}
		if len(off) == 0 || !slices.IsSortedFunc(off, ablate.Compare) {
			t.Fatalf("Ablate(%q, %v): not a sorted set", prompt, off)
		}
		for _, h := range off {
			if h.Layer >= len(base.Result.Attn) || h.Head >= base.Result.Heads(h.Layer) {
				t.Fatalf("Ablate(%q, %v): the run has no %s", prompt, off, h)
			}
		}
		if len(off) == 4 {
			return nil, errors.New("four heads cannot be switched off")
		}
		return likeRun(s.rng, base), nil
	}
	release := func(r *Run) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.released[r]++
	}
	probe := func(context.Context) ([]analysis.HeadScores, error) {
		var out []analysis.HeadScores
		for l := range first.Result.Attn {
			for h := range first.Result.Attn[l] {
				out = append(out, analysis.HeadScores{Layer: l, Head: h, Induction: s.rng.Float64(), DuplicateToken: s.rng.Float64()})
			}
		}
		return out, nil
	}
	cfg := Config{ModelName: "storm.onnx", Device: "CPU", Profile: p, Initial: first, Rerun: rerun, Probe: probe,
		Release: release, SaveDir: t.TempDir(), Label: func(id int64) string { return fmt.Sprintf("id%d", id) }}
	if pair {
		// An encoder–decoder's editor edits the source and the target (tab switches); a
		// target with "fail" in it fails the run too.
		first.Target = "the target"
		cfg.RerunPair = func(ctx context.Context, src, tgt string) (*Run, error) {
			if strings.Contains(tgt, "fail") {
				return nil, errors.New("the model cannot run this target")
			}
			return rerun(ctx, src)
		}
	}
	s.m = New(cfg)
	if withAblate {
		s.m.cfg.Ablate = abl
	}
	s.do(s.m.Init())
	return s
}

// do runs a command at once and keeps its message for later delivery.
func (s *storm) do(cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case nil, tea.QuitMsg:
	default:
		s.pending = append(s.pending, msg)
	}
}

var stormSizes = [][2]int{{1, 1}, {300, 100}, {40, 10}, {39, 10}, {40, 9}, {80, 24}, {100, 30}, {79, 12}, {120, 40}, {200, 60}}

// step sends one random message; false when the chooser has run out.
func (s *storm) step() bool {
	kind, ok := s.c.intn(100)
	if !ok {
		return false
	}
	var msg tea.Msg
	switch {
	case kind < 60:
		i, _ := s.c.intn(len(s.keys))
		msg = keyMsg(s.keys[i])
	case kind < 70:
		i, _ := s.c.intn(len(editorKeys))
		msg = keyMsg(editorKeys[i])
	case kind < 78:
		words := []string{"a", "fail", "ragged", "q", "e", " ", "日", "x"}
		i, _ := s.c.intn(len(words))
		msg = keyMsg(words[i])
	case kind < 84:
		x, _ := s.c.intn(320)
		y, _ := s.c.intn(110)
		b, _ := s.c.intn(5)
		mouse := tea.Mouse{X: x - 10, Y: y - 5, Button: []tea.MouseButton{tea.MouseLeft, tea.MouseWheelUp, tea.MouseWheelDown, tea.MouseWheelLeft, tea.MouseRight}[b]}
		if b == 0 || b == 4 {
			msg = tea.MouseClickMsg(mouse)
		} else {
			msg = tea.MouseWheelMsg(mouse)
		}
	case kind < 88:
		if i, _ := s.c.intn(len(stormSizes) + 1); i < len(stormSizes) {
			msg = tea.WindowSizeMsg{Width: stormSizes[i][0], Height: stormSizes[i][1]}
		} else {
			w, _ := s.c.intn(300)
			h, _ := s.c.intn(100)
			msg = tea.WindowSizeMsg{Width: w + 1, Height: h + 1}
		}
	case kind < 90:
		n, _ := s.c.intn(200)
		msg = tea.PasteMsg{Content: strings.Repeat("pasted words\n", n)}
	case len(s.pending) > 0:
		msg, s.pending = s.pending[0], s.pending[1:]
	default:
		msg = keyMsg("enter")
	}
	_, cmd := s.m.Update(msg)
	s.do(cmd)
	s.steps++
	if s.m.shownOff != "" {
		s.ablated++
	}
	s.check(fmt.Sprintf("step %d (%T %v)", s.steps, msg, msg))
	return true
}

// check asserts the frame's size, the cursors' bounds and that the cached screen is what
// drawing afresh gives.
func (s *storm) check(what string) {
	t, m := s.t, s.m
	t.Helper()
	frame := m.render()
	w, h := m.width, m.height
	lines := strings.Split(frame, "\n")
	switch {
	case w <= 0 || h <= 0:
		if frame != "" {
			t.Fatalf("%s: a frame at %d×%d", what, w, h)
		}
	case w < minWidth || h < minHeight:
		if len(lines) != 1 || ansi.StringWidth(frame) > w {
			t.Fatalf("%s at %d×%d: %q", what, w, h, ansi.Strip(frame))
		}
	default:
		if len(lines) != h {
			t.Fatalf("%s at %d×%d: %d lines", what, w, h, len(lines))
		}
		for i, l := range lines {
			if lw := ansi.StringWidth(l); lw > w {
				t.Fatalf("%s at %d×%d: line %d is %d cells wide: %q", what, w, h, i, lw, ansi.Strip(l))
			}
		}
		if !m.topOK || m.top != m.renderTop() || m.frame != m.top+m.renderHelpLine() {
			t.Fatalf("%s at %d×%d: the cached screen differs from the state's", what, w, h)
		}
	}
	// The run shown is clean exactly when no head is shown off; every head off exists.
	if (m.shownOff == "") != (m.run == m.clean) {
		t.Fatalf("%s: heads shown off %q, but the run shown is clean: %v", what, m.shownOff, m.run == m.clean)
	}
	for _, set := range []string{m.off, m.shownOff} {
		for _, h := range offHeads(set) {
			if h.Layer >= m.layers() || h.Head >= m.headsIn(h.Layer) {
				t.Fatalf("%s: %s is off, but the run has no such head", what, h)
			}
		}
	}
	if m.cfg.Ablate == nil && (m.off != "" || m.shownOff != "") {
		t.Fatalf("%s: heads off without Ablate", what)
	}
	s.mu.Lock()
	for r, n := range s.released {
		if n > 1 || r == m.run || r == m.clean {
			s.mu.Unlock()
			t.Fatalf("%s: a run released %d times, shown %v, clean %v", what, n, r == m.run, r == m.clean)
		}
	}
	s.mu.Unlock()
	q, k := m.mapSize()
	if m.layer < 0 || m.layer >= max(m.layers(), 1) || m.head < 0 || m.head >= max(m.headsIn(m.layer), 1) ||
		m.query < 0 || m.query >= max(q, 1) || m.key < 0 || m.key >= max(k, 1) {
		t.Fatalf("%s: cursor L%dH%d q%d k%d outside a %d×%d map", what, m.layer, m.head, m.query, m.key, q, k)
	}
}

// Property: for random source and target lengths (1 and unequal included), random key
// storms (every bound key, editor keys, typed text, pastes, finished runs and probes,
// resizes from 1×1 to 300×100, mouse clicks and wheels anywhere) never panic, and every frame has exactly height lines none
// wider than width, on one-sequence and encoder–decoder runs.
func TestKeyStorms(t *testing.T) {
	storms := 60
	if testing.Short() {
		storms = 12
	}
	lengths := []int{1, 2, 3, 5, 8, 13, 40, 130}
	profiles := []heatmap.Profile{heatmap.NoColor, heatmap.ANSI16, heatmap.ANSI256, heatmap.TrueColor}
	ablated := 0
	for i := range storms {
		seed := uint64(i)
		rng := rand.New(rand.NewPCG(seed, 2))
		pair := i%2 == 1
		S, T := lengths[rng.IntN(len(lengths))], lengths[rng.IntN(len(lengths))]
		name := fmt.Sprintf("seed %d pair=%v S=%d T=%d", seed, pair, S, T)
		t.Run(name, func(t *testing.T) {
			s := newStorm(t, rngChooser{rng}, seed, pair, S, T, profiles[i%len(profiles)], i%3 != 2)
			s.m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
			for range 250 {
				s.step()
			}
			s.m.bg.stop() // the releases done, none of a run shown or twice
			s.check("after the storm")
			ablated += s.ablated
		})
	}
	if ablated == 0 {
		t.Error("no storm showed an ablated run")
	}
	t.Logf("%d steps ended with heads off shown", ablated)
}

// FuzzKeyStorm runs TestKeyStorms' storm from a fuzzer's bytes.
func FuzzKeyStorm(f *testing.F) {
	f.Add(true, uint8(2), uint8(5), []byte("\x00\x00\x00\x01\x00\x02enter\x00\x00\x00\x10"))
	f.Add(false, uint8(1), uint8(1), []byte("abcdefghijklmnopqrstuvwxyz0123456789"))
	f.Add(true, uint8(7), uint8(1), []byte{0, 85, 0, 3, 0, 60, 0, 0, 0, 40, 0, 1, 0, 2})
	f.Fuzz(func(t *testing.T, pair bool, s8, t8 uint8, b []byte) {
		S, T := 1+int(s8)%64, 1+int(t8)%64
		s := newStorm(t, &bytesChooser{b}, uint64(len(b)), pair, S, T, heatmap.ANSI256, true)
		s.m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
		s.check("first frame")
		for s.step() {
		}
	})
}
