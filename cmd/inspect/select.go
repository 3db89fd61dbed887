package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/attnscope/attnscope/analysis"
	pick "github.com/attnscope/attnscope/internal/selection"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/result"
)

// selectFlags are --layer and --head of the commands that print attention or head scores
// (dump, heads): lists and ranges such as 0,3-5. Only the chosen layers are exposed (the
// session is opened with them, see session.Options.Layers), so a run's memory follows
// them; heads are a filter on the rows, every head of a chosen layer being computed
// anyway. The browser has no such flags: it exposes every layer.
type selectFlags struct {
	layer, head string
	flags       *pflag.FlagSet
	// only is what parse read; nil lists (all) until then.
	only selection
}

// register adds --layer and --head to cmd.
func (s *selectFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	s.flags = fl
	fl.StringVar(&s.layer, "layer", "", "only these layers: numbers and ranges such as 0,3-5 (default: all); only they are run for their attention and kept in memory")
	fl.StringVar(&s.head, "head", "", "only these heads, such as 0,2-3 (default: all); a filter on the rows: every head of a chosen layer is computed anyway")
}

// parse reads --layer and --head (their syntax only: whether the layers exist is checked
// when the model is open, the heads after the run) into s.only, and returns it.
func (s *selectFlags) parse() (selection, error) {
	s.only = selection{}
	var err error
	if s.flags != nil && s.flags.Changed("layer") {
		if s.only.layers, err = pick.Parse("--layer", "layer", s.layer); err != nil {
			return s.only, usageError{err}
		}
	}
	if s.flags != nil && s.flags.Changed("head") {
		if s.only.heads, err = pick.Parse("--head", "head", s.head); err != nil {
			return s.only, usageError{err}
		}
	}
	return s.only, nil
}

// selection is the layers and heads --layer and --head chose, sorted; nil means all.
type selection struct{ layers, heads []int }

// layer reports whether layer l was chosen.
func (s selection) layer(l int) bool { return s.layers == nil || slices.Contains(s.layers, l) }

// head reports whether head h was chosen.
func (s selection) head(h int) bool { return s.heads == nil || slices.Contains(s.heads, h) }

// one returns the layer and head when each flag named exactly one.
func (s selection) one() (layer, head int, ok bool) {
	if len(s.layers) == 1 && len(s.heads) == 1 {
		return s.layers[0], s.heads[0], true
	}
	return 0, 0, false
}

// check refuses a head that a chosen layer of the result does not have (the layers were
// checked when the model was opened: see layerError).
func (s selection) check(res *result.Result) error {
	for l := range res.Attn {
		if !s.layer(l) || !res.Exposed(l) {
			continue
		}
		if err := pick.Check("--head", s.heads, res.Heads(l), fmt.Sprintf("layer %d", l), "head"); err != nil {
			return usageError{err}
		}
	}
	return nil
}

// headsOf keeps the scores of the chosen heads (the layers not chosen were never run).
func (s selection) headsOf(scores []analysis.HeadScores) []analysis.HeadScores {
	if s.heads == nil {
		return scores
	}
	var out []analysis.HeadScores
	for _, h := range scores {
		if s.head(h.Head) {
			out = append(out, h)
		}
	}
	return out
}

// checkHeads refuses a chosen head that a layer of the scores does not have.
func (s selection) checkHeads(scores []analysis.HeadScores) error {
	count := map[int]int{}
	var layers []int
	for _, h := range scores {
		if count[h.Layer] == 0 {
			layers = append(layers, h.Layer)
		}
		count[h.Layer] = max(count[h.Layer], h.Head+1)
	}
	for _, l := range layers {
		if err := pick.Check("--head", s.heads, count[l], fmt.Sprintf("layer %d", l), "head"); err != nil {
			return usageError{err}
		}
	}
	return nil
}

// layerError turns the session's refusal of a --layer the model does not have into a usage
// error that names the flag; other errors pass.
func layerError(err error) error {
	var le *onnxgraph.LayerError
	if errors.As(err, &le) {
		return usageError{pick.Check("--layer", []int{le.Layer}, le.Layers, "the model", "layer")}
	}
	return err
}

// memLimit is --max-memory: the most memory one run's outputs may take.
type memLimit struct {
	bytes int64
	given bool
	text  string // as given ("8GiB")
	// layers is set on the commands that have --layer: only they are told which layers
	// would fit.
	layers bool
}

// parseMaxMemory reads --max-memory; not given, it is analysis.RunLimit (a quarter of the
// machine's memory).
func (f *runFlags) parseMaxMemory() (memLimit, error) {
	if f.flags == nil || !f.flags.Changed("max-memory") {
		return memLimit{bytes: analysis.RunLimit()}, nil
	}
	b, err := pick.ParseSize("--max-memory", f.maxMemory)
	if err != nil {
		return memLimit{}, usageError{err}
	}
	return memLimit{bytes: b, given: true, text: strings.TrimSpace(f.maxMemory)}, nil
}

// limit is the budget in bytes (RunLimit for a loaded value made without open).
func (m memLimit) limit() int64 {
	if m.bytes <= 0 {
		return analysis.RunLimit()
	}
	return m.bytes
}

// String names the limit in a sentence: "--max-memory 4GiB" (as given), or its default.
func (m memLimit) String() string {
	if m.given {
		return "--max-memory " + m.text
	}
	return fmt.Sprintf("--max-memory's default of %s (a quarter of this machine's memory)", pick.Size(m.limit()))
}

// headsBudget names the budget of `inspect heads` in a sentence: --max-memory when given,
// else the default budget of a batch of probes (analysis.DefaultBudget), which also bounds
// one run there.
func (m memLimit) headsBudget() string {
	if m.given {
		return m.String()
	}
	return fmt.Sprintf("the %s that heads allows one run or batch by default (see --max-memory)", pick.Size(analysis.DefaultBudget()))
}

// checkSize refuses, in one sentence that says which layers would fit, a run of T tokens
// whose outputs exceed --max-memory (see analysis.CheckRunSize); what names the sequence.
// A --max-memory given is checked at any length, by a two-token measuring run where the
// session cannot tell its output sizes (analysis.CheckRunSizeMeasured); the default only
// from 512 tokens on.
func (l *loaded) checkSize(what string, T int) error {
	check := analysis.CheckRunSize
	if l.limit.given {
		check = analysis.CheckRunSizeMeasured
	}
	err := check(l.sess, what, T, l.limit.limit())
	var le *analysis.LimitError
	if errors.As(err, &le) {
		return memoryRefusal(le, l.limit.String(), shorter(what, le.MaxTokens), l.limit.layers)
	}
	return err
}

// shorter is the advice to shorten a sequence (what: "prompt", "source", …) to at most n
// tokens (0: unknown).
func shorter(what string, n int) string {
	if n > 0 {
		return fmt.Sprintf("give a shorter %s (at most %s tokens fit)", what, pick.Count(n))
	}
	return "give a shorter " + what
}

// noneFits ends the advice of a refusal where not even the shortest run fits.
const noneFits = "raise --max-memory"

// memoryRefusal words a refused run: what it needs, the limit (named as budget says), and
// what would fit — a leading part of the layers, or fewer tokens (shorter says how to get
// them): "the 12 layers at 4,096 tokens need 9.0 GiB of attention outputs (9.8 GiB with
// the logits), more than --max-memory 4GiB; --layer 0-4 would fit, or give a shorter
// prompt (at most 2,217 tokens fit)". Without layers (a command that has no --layer) only
// fewer tokens are suggested. A shorter that ends in noneFits (nothing shorter fits) is
// the whole advice. A usage error: the fix is in the flags.
func memoryRefusal(le *analysis.LimitError, budget, shorter string, layers bool) error {
	tokens := pick.Count(le.Tokens)
	if le.Layers == nil {
		return usageError{fmt.Errorf("a %s of %s tokens needs %s of outputs (attention and logits), more than %s; %s", le.What, tokens, pick.Size(le.Bytes), budget, shorter)}
	}
	at := tokens + " tokens"
	if le.What != "prompt" {
		at = fmt.Sprintf("a %s of %s tokens", le.What, tokens)
	}
	subject := fmt.Sprintf("layer %d at %s needs", le.Layers[0], at)
	if n := len(le.Layers); n > 1 {
		which := ""
		if le.Layers[0] != 0 || le.Layers[n-1] != n-1 {
			which = " " + pick.Format(le.Layers) // not simply the model's first n layers
		}
		subject = fmt.Sprintf("the %d layers%s at %s need", n, which, at)
	}
	with := ""
	if other := le.Bytes - le.Attention; other > 0 && le.Attention > 0 {
		with = fmt.Sprintf(" (%s with the logits)", pick.Size(le.Bytes))
	}
	msg := fmt.Sprintf("%s %s of attention outputs%s, more than %s", subject, pick.Size(le.Attention), with, budget)
	none := strings.HasSuffix(shorter, noneFits) // shorter is the whole advice
	switch {
	case !layers && none:
		msg += "; " + shorter
	case !layers:
		msg += fmt.Sprintf("; %s, or raise --max-memory", shorter)
	case len(le.Fit) > 0:
		msg += fmt.Sprintf("; --layer %s would fit, or %s", pick.Format(le.Fit), shorter)
	case len(le.Layers) == 1 && none:
		msg += "; " + shorter
	case len(le.Layers) == 1:
		msg += fmt.Sprintf("; %s, or raise --max-memory", shorter)
	case none:
		msg += fmt.Sprintf("; not even layer %d alone fits, and %s", le.Layers[0], shorter)
	default:
		msg += fmt.Sprintf("; not even layer %d alone fits at this length: %s, or raise --max-memory", le.Layers[0], shorter)
	}
	return usageError{errors.New(msg)}
}
