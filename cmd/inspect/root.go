package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unicode"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/term"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/models"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/timeline"
	"github.com/attnscope/attnscope/tui"
)

// defaultPrompt is used for a model given without --text or --ids: a phrase that repeats,
// so induction heads have something to do.
const defaultPrompt = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."

// browse opens the TUI on the model at path (the embedded demo model when path is "").
func browse(f *runFlags, color, path string) error {
	profile, err := colorProfile(color)
	if err != nil {
		return err
	}
	if !term.IsTerminal(os.Stdout.Fd()) || !term.IsTerminal(os.Stdin.Fd()) {
		return fmt.Errorf("the attention browser needs a terminal; in scripts use `inspect dump`, `inspect heads` or `inspect tokens`")
	}
	if path != "" && timeline.IsTimeline(path) {
		return browseTimeline(f, profile, path, func(cfg tui.Config) error {
			return tui.Browse(cfg, tea.WithColorProfile(teaProfile(profile)))
		})
	}
	cfg, l, err := f.browseConfig(profile, path)
	if err != nil {
		return err
	}
	// tui.Browse returns only once the probe and the re-runs have all returned, so the
	// session and the tokenizer are never closed under one of them.
	defer l.close()
	return tui.Browse(cfg, tea.WithColorProfile(teaProfile(profile)))
}

// browseConfig opens the model at path (the embedded demo model when path is ""), runs
// the first prompt and returns the UI's configuration with the loaded model, which the
// caller closes once the UI has returned (on an error it is closed already).
func (f *runFlags) browseConfig(profile heatmap.Profile, path string) (tui.Config, *loaded, error) {
	var err error
	prompt := defaultPrompt
	name := displayName(path)
	if path == "" {
		name = "built-in demo"
		if path, err = models.DemoPath(); err != nil {
			return tui.Config{}, nil, fmt.Errorf("cannot unpack the built-in demo model: %w", err)
		}
		prompt = models.DemoPrompt()
	}
	f.ablation.always = true // for the x key
	l, err := f.open(path)
	if err != nil {
		return tui.Config{}, nil, err
	}
	cfg, err := f.firstRun(l, profile, name, prompt)
	if err != nil {
		l.close()
		return tui.Config{}, nil, err
	}
	return cfg, l, nil
}

// firstRun runs the prompt (prompt when none was given) on l and returns the UI's
// configuration.
func (f *runFlags) firstRun(l *loaded, profile heatmap.Profile, name, prompt string) (tui.Config, error) {
	if !f.given("text", f.text) && !f.given("ids", f.ids) && !f.given("text-file", f.textFile) {
		f.text = prompt
	}
	ids, err := f.prompt(l)
	if err != nil {
		if f.text == prompt && l.tok == nil {
			return tui.Config{}, fmt.Errorf("%s has no tokenizer beside it, so give the prompt as ids with --ids 1,2,3 (or a tokenizer with --tokenizer)", filepath.Base(l.model.Path))
		}
		return tui.Config{}, err
	}
	// An encoder–decoder keeps its --target while the prompt (its source) is edited.
	if l.target, err = f.targetSeq(l); err != nil {
		return tui.Config{}, err
	}
	if err := f.applyAblation(l, ids); err != nil {
		return tui.Config{}, err
	}
	text := f.promptText()
	var offsets [][2]int
	if l.tok != nil && f.ids == "" {
		_, offsets, _ = l.tok.EncodeDefault(text)
	}
	first, err := l.newRun(text, ids, offsets)
	if err != nil {
		return tui.Config{}, err
	}
	cfg := tui.Config{ModelName: name, Profile: profile, Initial: first}
	locked := f.bind(l, &cfg)
	if l.sess.Seq2Seq() {
		f.pairRerun(l, &cfg, first, locked)
	}
	return cfg, nil
}

// bind sets the funcs of cfg that run l (Device, Release, Probe, Label, Circuits, Rerun,
// RerunIDs when the prompt was given as ids, Ablate or AblateWhy), and returns the lock
// they take: they run in the background, one at a time on the session.
func (f *runFlags) bind(l *loaded, cfg *tui.Config) (locked func() func()) {
	var mu sync.Mutex
	locked = func() func() { mu.Lock(); return mu.Unlock }
	cfg.Device = l.sess.Device
	cfg.Release = func(r *tui.Run) { defer locked()(); l.sess.Recycle(r.Result) }
	cfg.Probe = func(ctx context.Context) ([]analysis.HeadScores, error) {
		defer locked()()
		return probeScores(ctx, l)
	}
	cfg.Label = l.label
	cfg.Circuits = browserCircuits(l.model)
	if l.tok != nil {
		cfg.Rerun = func(ctx context.Context, text string) (*tui.Run, error) {
			defer locked()()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			ids, offsets, err := l.tok.EncodeDefault(text)
			if err != nil {
				return nil, err
			}
			if err := l.tok.CheckVocab(ids, l.sess.Limits.Vocab); err != nil {
				return nil, err
			}
			return l.newRun(text, ids, offsets) // runIDs refuses more tokens than the positions

		}
	}
	if f.text == "" && f.textFile == "" && f.ids != "" {
		// Given as ids, the prompt is edited and re-run as ids (as text, "5,17,23" would
		// be tokenized into other tokens).
		cfg.RerunIDs = func(ctx context.Context, ids []int64) (*tui.Run, error) {
			defer locked()()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := checkIDs(l, "the ids", ids); err != nil {
				return nil, err
			}
			return l.newRun(joinIDs(ids), ids, nil)
		}
	}
	mode, _ := f.ablation.check()
	if cfg.AblateWhy = l.ablateWhy(mode); cfg.AblateWhy == "" {
		cfg.Ablate = func(ctx context.Context, prompt string, off []ablate.Head) (*tui.Run, error) {
			defer locked()()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if prompt != l.last.prompt {
				return nil, fmt.Errorf("the prompt changed before its heads could be switched off; press x again")
			}
			if err := l.sess.SetAblation(l.withBase(off)); err != nil {
				return nil, err
			}
			defer l.sess.SetAblation(l.base)
			return l.newRun(prompt, l.last.ids, l.last.offsets)
		}
	}
	return locked
}

// pairRerun lets the browser edit an encoder–decoder's target beside its source (the
// prompt): the first run's Target is --target (or, with --ids, --target-ids as ids; the
// prompt when neither was given), and the config's RerunPair (RerunPairIDs for ids) runs
// a new pair. A prompt given as text with --target-ids keeps its target fixed (the editor
// edits the source alone, as text).
func (f *runFlags) pairRerun(l *loaded, cfg *tui.Config, first *tui.Run, locked func() func()) {
	switch {
	case cfg.RerunIDs != nil:
		first.Target = first.Prompt
		if l.target != nil {
			first.Target = joinIDs(l.target)
		}
		cfg.RerunPairIDs = func(ctx context.Context, src, tgt []int64) (*tui.Run, error) {
			defer locked()()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := checkIDs(l, "the source ids", src); err != nil {
				return nil, err
			}
			if err := checkIDs(l, "--target-ids", tgt); err != nil {
				return nil, fmt.Errorf("the target ids: %w", errors.Unwrap(err))
			}
			r, err := l.newPair(joinIDs(src), src, nil, tgt)
			if r != nil {
				r.Target = joinIDs(tgt)
			}
			return r, err
		}
	case l.tok != nil && !f.given("target-ids", f.targetIDs):
		first.Target = first.Prompt
		if f.target != "" {
			first.Target = f.target
		}
		encode := func(what, text string) ([]int64, [][2]int, error) {
			ids, offsets, err := l.tok.EncodeDefault(text)
			if err == nil {
				err = l.tok.CheckVocab(ids, l.sess.Limits.Vocab)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("the %s: %w", what, err)
			}
			return ids, offsets, nil
		}
		cfg.RerunPair = func(ctx context.Context, src, tgt string) (*tui.Run, error) {
			defer locked()()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			ids, offsets, err := encode("source", src)
			if err != nil {
				return nil, err
			}
			tids, _, err := encode("target", tgt)
			if err != nil {
				return nil, err
			}
			r, err := l.newPair(src, ids, offsets, tids)
			if r != nil {
				r.Target = tgt
			}
			return r, err
		}
	}
}

// newPair runs an encoder–decoder on a new source (ids, as newRun takes them) and target,
// which becomes the target of later runs (ablations included) once it has run.
func (l *loaded) newPair(prompt string, ids []int64, offsets [][2]int, target []int64) (*tui.Run, error) {
	old := l.target
	l.target = target
	r, err := l.newRun(prompt, ids, offsets)
	if err != nil {
		l.target = old
	}
	return r, err
}

// joinIDs writes ids as the ids editor shows them: 5,17,23.
func joinIDs(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

// displayName names a model for the title and status lines: the name in the config.json
// beside it ("model", "_name_or_path" or "name", the first given), else its folder's name
// for the usual model.onnx, else its file name.
func displayName(path string) string {
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "config.json")); err == nil {
		var cfg map[string]any
		if json.Unmarshal(b, &cfg) == nil {
			for _, k := range []string{"model", "_name_or_path", "name"} {
				v, _ := cfg[k].(string)
				v = strings.TrimSpace(strings.Map(func(r rune) rune {
					if unicode.IsControl(r) {
						return -1
					}
					return r
				}, v))
				if v != "" {
					return v
				}
			}
		}
	}
	if base := filepath.Base(path); base != "model.onnx" {
		return base
	}
	return filepath.Base(filepath.Dir(path))
}

// promptText is the prompt as the UI shows it for editing: --text, the --text-file's
// contents as f.prompt read them (the file is read once: a FIFO cannot be read again), or
// --ids.
func (f *runFlags) promptText() string {
	switch {
	case f.text != "":
		return f.text
	case f.textFile != "":
		return f.fileText
	}
	return f.ids
}

// newRun runs ids (an encoder–decoder's source, see runIDs) and packages the result for
// the UI. offsets, when given, are the tokens' byte offsets in prompt: each token's piece
// of text then runs up to the next token's start, so the prompt view shows the text
// exactly as typed.
func (l *loaded) newRun(prompt string, ids []int64, offsets [][2]int) (*tui.Run, error) {
	res, err := l.runIDs(ids)
	if err != nil {
		return nil, err
	}
	l.last.prompt, l.last.ids, l.last.offsets = prompt, ids, offsets
	run := &tui.Run{Prompt: prompt, Result: res, Labels: l.labels(res.Tokens)}
	if res.Source != nil {
		run.SourceLabels = l.labels(res.Source)
	}
	if len(offsets) == len(ids) && l.target == nil { // the pieces are the prompt's tokens
		run.Pieces = make([]string, len(ids))
		for i, o := range offsets {
			end := len(prompt)
			if i+1 < len(offsets) {
				end = offsets[i+1][0]
			}
			if o[1] > o[0] && o[0] >= 0 && end >= o[0] && end <= len(prompt) {
				run.Pieces[i] = prompt[o[0]:end]
			} else {
				run.Pieces[i] = run.Labels[i] // a special token, which has no text
			}
		}
	}
	return run, nil
}

// label is the display label of any vocabulary id.
func (l *loaded) label(id int64) string {
	if l.tok != nil {
		return l.tok.Label(id)
	}
	return strconv.FormatInt(id, 10)
}

// probeScores runs the standard induction probe (analysis.DefaultProbes sequences of
// analysis.DefaultProbeLen random tokens twice, seed 0, after the tokenizer's BOS token if
// it adds one) and returns every head's scores. Once ctx is cancelled no further run of
// the model starts, and the answer is ctx's error.
func probeScores(ctx context.Context, l *loaded) ([]analysis.HeadScores, error) {
	opts, err := l.probeOptions(0, 0, 0, -1, true)
	if err != nil {
		return nil, err
	}
	probe, err := analysis.NewProbe(opts)
	if err != nil {
		return nil, err
	}
	return analysis.ProbeScores(ctxRunner{ctx, l.sess}, probe)
}

// ctxRunner is a model runner that starts no run once its context is cancelled.
type ctxRunner struct {
	ctx context.Context
	analysis.Runner
}

func (r ctxRunner) Run(ids []int64) (*result.Result, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	return r.Runner.Run(ids)
}

func (r ctxRunner) RunBatch(batch [][]int64) ([]*result.Result, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	return r.Runner.RunBatch(batch)
}

// colorProfile resolves --color: auto detects the terminal's profile, and any non-empty
// NO_COLOR means no colours (the detection library honours only "1" and "true").
func colorProfile(flag string) (heatmap.Profile, error) {
	if flag != "auto" {
		p, err := heatmap.ParseProfile(flag)
		if err != nil {
			return 0, usageError{err}
		}
		return p, nil
	}
	if os.Getenv("NO_COLOR") != "" {
		return heatmap.NoColor, nil
	}
	switch colorprofile.Detect(os.Stdout, os.Environ()) {
	case colorprofile.TrueColor:
		return heatmap.TrueColor, nil
	case colorprofile.ANSI256:
		return heatmap.ANSI256, nil
	case colorprofile.ANSI:
		return heatmap.ANSI16, nil
	}
	return heatmap.NoColor, nil
}

func teaProfile(p heatmap.Profile) colorprofile.Profile {
	switch p {
	case heatmap.TrueColor:
		return colorprofile.TrueColor
	case heatmap.ANSI256:
		return colorprofile.ANSI256
	case heatmap.ANSI16:
		return colorprofile.ANSI
	}
	return colorprofile.ASCII
}
