package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/models"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/result"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tokenizer"
)

// runFlags are the flags shared by the commands that run a model.
type runFlags struct {
	text, textFile, ids, tokenizer string
	device, ortLib                 string
	out                            string
	format                         string
	// target and targetIDs are an encoder–decoder's target sequence.
	target, targetIDs string
	// ablation is --ablate, --ablate-mode and --ablate-ref (see ablation.go).
	ablation ablationFlags
	// sel is --layer and --head, on the commands that register them (see select.go);
	// maxMemory is --max-memory.
	sel       selectFlags
	maxMemory string
	// file is --file (a model inside a MODEL folder); inputFlags are the --input NAME=FILE.npy
	// flags; demo is set when no MODEL was given and the built-in demo runs (see loadModel).
	file       string
	inputFlags []string
	demo       bool
	// fileText is the --text-file's contents, read once by prompt (a FIFO or a terminal
	// cannot be read twice), for the browser to show and edit.
	fileText string
	// flags is where the flags were registered: Changed tells an empty value given
	// (--ids '') from a flag not given.
	flags *pflag.FlagSet
}

// register adds the flags of the commands that run a model: the prompt, the tokenizer,
// the device and library, an encoder–decoder's target.
func (f *runFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.flags = fl
	fl.StringVar(&f.text, "text", "", "prompt text, tokenized with the model's tokenizer")
	fl.StringVar(&f.textFile, "text-file", "", "read the prompt text from this file")
	fl.StringVar(&f.ids, "ids", "", "token ids instead of text, comma-separated (e.g. 5,17,23)")
	fl.StringVar(&f.tokenizer, "tokenizer", "", "tokenizer.json to use (default: the one beside the model)")
	fl.StringVar(&f.device, "device", "auto", "where to run: auto, cpu or cuda")
	fl.StringVar(&f.ortLib, "ort-lib", "", "path of the onnxruntime shared library (default: searched)")
	fl.StringVar(&f.target, "target", "", "encoder–decoder models: the target (decoder) text, the prompt being the source (default: the prompt)")
	fl.StringVar(&f.targetIDs, "target-ids", "", "encoder–decoder models: target token ids instead of text, comma-separated")
	fl.StringVar(&f.maxMemory, "max-memory", "", "refuse a run whose outputs (attention maps, logits) would take more than this, e.g. 8GiB or 500MB (default: a quarter of the machine's memory)")
	fl.StringVar(&f.file, "file", "", "when MODEL is a folder: the model file in it (or in its onnx/ subfolder) to run, instead of the one chosen by name (see README)")
	fl.StringArrayVar(&f.inputFlags, "input", nil, "NAME=FILE.npy: feed the model input NAME from a numpy array (an input attnscope cannot build, or one to override); repeatable")
	f.ablation.register(fl)
}

// registerOutput adds --out and --format (formats lists the accepted ones, the first the
// default) for the commands that write a table.
func (f *runFlags) registerOutput(cmd *cobra.Command, usage string, formats ...string) {
	fl := cmd.Flags()
	fl.StringVar(&f.out, "out", "", "write to this file instead of stdout (atomically; never over the model, its data or its tokenizer)")
	fl.StringVar(&f.format, "format", formats[0], usage)
}

// given reports whether a string flag was set, on the command line (even to "") or by
// the program (the browser's default prompt).
func (f *runFlags) given(name, value string) bool {
	return value != "" || (f.flags != nil && f.flags.Changed(name))
}

// loaded is a model opened for running, with its tokenizer when one was found.
type loaded struct {
	model *onnxgraph.Model
	sess  *session.Session
	tok   *tokenizer.Tokenizer // nil when running on ids without a tokenizer
	// target is an encoder–decoder's target ids; nil: the prompt is both source and target.
	target []int64
	// base is the ablation --ablate set for every run (nil: none).
	base *ablate.Ablation
	// limit is --max-memory (see checkSize).
	limit memLimit
	// last is the prompt newRun ran last, its ids and their offsets in it: the browser's
	// ablated runs repeat the clean run's ids.
	last struct {
		prompt  string
		ids     []int64
		offsets [][2]int
	}
}

func (l *loaded) close() {
	if l.sess != nil {
		l.sess.Close()
	}
	if l.tok != nil {
		l.tok.Close()
	}
}

// open loads the model at path (a folder stands for the model.onnx inside it) and creates
// its session.
func (f *runFlags) open(path string) (*loaded, error) {
	switch f.device {
	case "auto", "cpu", "cuda":
	default:
		return nil, usagef("--device must be auto, cpu or cuda, not %q", f.device)
	}
	mode, err := f.ablation.check()
	if err != nil {
		return nil, err
	}
	limit, err := f.parseMaxMemory()
	if err != nil {
		return nil, err
	}
	limit.layers = f.sel.flags != nil // the command has --layer
	given, err := givenInputs(f.inputFlags)
	if err != nil {
		return nil, err
	}
	m, mf, err := loadModel(path, f.file)
	if err != nil {
		return nil, err
	}
	f.demo = path == ""
	sess, err := session.Open(m, session.Options{
		LibPath:  f.ortLib,
		Device:   f.device,
		Notice:   func(s string) { fmt.Fprintln(os.Stderr, "inspect: "+s) },
		Ablation: f.ablation.heads != "" || f.ablation.always,
		Mean:     mode == ablate.Mean,
		Layers:   f.sel.only.layers,
		Inputs:   given,
	})
	if err != nil {
		return nil, layerError(err)
	}
	l := &loaded{model: m, sess: sess, limit: limit}
	f.applyFolder(l, mf)
	return l, nil
}

// openTable opens the model at path (see open) and the --out the command writes its table
// to (see openOutput); on an error nothing stays open. The caller closes the model and
// aborts (or commits) the output.
func (f *runFlags) openTable(path string) (*loaded, output, error) {
	l, err := f.open(path)
	if err != nil {
		return nil, nil, err
	}
	out, err := openOutput("--out", f.out, f.inputs(l.model))
	if err != nil {
		l.close()
		return nil, nil, err
	}
	return l, out, nil
}

// runAndWarn encodes the prompt and runs it once (see run), and warns on stderr when the
// result's maps are degenerate (see result.Result.Degenerate). For an encoder–decoder the
// prompt is the source and --target or --target-ids the target (the prompt again, with a
// notice, when neither is given); the result's Tokens are the target.
func (f *runFlags) runAndWarn(l *loaded) (*result.Result, error) {
	res, err := f.run(l)
	if err != nil {
		return nil, err
	}
	warnDegenerate(os.Stderr, res)
	return res, nil
}

// run encodes the prompt (and an encoder–decoder's target) and runs the model once.
func (f *runFlags) run(l *loaded) (*result.Result, error) {
	ids, err := f.prompt(l)
	if err != nil {
		return nil, err
	}
	if l.target, err = f.targetSeq(l); err != nil {
		return nil, err
	}
	if err := f.applyAblation(l, ids); err != nil {
		return nil, err
	}
	return l.runIDs(ids)
}

// runIDs runs the prompt's ids: as the source of an encoder–decoder, with l.target (or the
// ids again) as its target. Ids the model cannot take are refused first, saying its limit
// (session.IDsError), then a run whose outputs would not fit in --max-memory (a long
// prompt, a model without a position table; see checkSize).
func (l *loaded) runIDs(ids []int64) (*result.Result, error) {
	if !l.sess.Seq2Seq() {
		if err := l.sess.CheckIDs(ids); err != nil {
			return nil, err
		}
		if err := l.checkSize("prompt", len(ids)); err != nil {
			return nil, err
		}
		return l.sess.Run(ids)
	}
	tgt := l.target
	if tgt == nil {
		tgt = ids
	}
	if err := l.sess.CheckPair(ids, tgt); err != nil {
		return nil, err
	}
	what, T := "source", len(ids)
	if len(tgt) > T {
		what, T = "target", len(tgt)
	}
	if err := l.checkSize(what, T); err != nil {
		return nil, err
	}
	return l.sess.RunPair(ids, tgt)
}

// targetSeq returns an encoder–decoder's target ids from --target or --target-ids, or
// nil, with a notice on stderr that the prompt is both source and target, when neither is
// given. It refuses the flags for a model with one sequence.
func (f *runFlags) targetSeq(l *loaded) ([]int64, error) {
	given := f.given("target", f.target) || f.given("target-ids", f.targetIDs)
	switch {
	case !l.sess.Seq2Seq() && given:
		return nil, usagef("--target and --target-ids are for encoder–decoder models, and %s takes one sequence; give the prompt alone", filepath.Base(l.model.Path))
	case !l.sess.Seq2Seq():
		return nil, nil
	case f.given("target", f.target) && f.given("target-ids", f.targetIDs):
		return nil, usagef("give at most one of --target or --target-ids")
	case f.given("target-ids", f.targetIDs):
		ids, err := parseIDs("--target-ids", f.targetIDs)
		if err == nil {
			err = checkIDs(l, "--target-ids", ids)
		}
		return ids, err
	case f.target != "":
		return f.encode(l, "target", f.target)
	case f.given("target", f.target):
		return nil, usagef("--target is empty; give the target text")
	}
	fmt.Fprintln(os.Stderr, "inspect: the model is an encoder–decoder and no --target was given; the prompt is used as both source and target")
	return nil, nil
}

// warnDegenerate writes a "warning: …" line to w (stderr) when res's attention maps
// cannot show what the model looks at (see result.Result.Degenerate).
func warnDegenerate(w io.Writer, res *result.Result) {
	if msg := res.Degenerate(); msg != "" {
		fmt.Fprintln(w, "warning: "+msg)
	}
}

// prompt returns the token ids to run, from --ids, --text or --text-file, and loads the
// tokenizer when text must be encoded or labels can be had. --text-file is read once (see
// readTextFile). Ids the model cannot take (outside its vocabulary, more than its
// positions) are a usage error.
func (f *runFlags) prompt(l *loaded) ([]int64, error) {
	n := 0
	for _, g := range []bool{f.given("ids", f.ids), f.given("text", f.text), f.given("text-file", f.textFile)} {
		if g {
			n++
		}
	}
	if n == 0 && f.demo { // the built-in demo runs on its own prompt, as the browser does
		f.text, n = models.DemoPrompt(), 1
	}
	if n != 1 {
		return nil, usagef("give exactly one of --text, --text-file or --ids")
	}
	switch {
	case f.given("ids", f.ids):
		ids, err := parseIDs("--ids", f.ids)
		if err != nil {
			return nil, err
		}
		if err := checkIDs(l, "--ids", ids); err != nil {
			return nil, err
		}
		// Labels are nicer with a tokenizer, but ids alone must work without one.
		if tok, err := tokenizer.Find(l.model.Path, f.tokenizer, l.sess.Limits.Vocab); err == nil {
			l.tok = tok
		} else if f.tokenizer != "" {
			return nil, err
		}
		return ids, nil
	case f.given("text", f.text) && f.text == "":
		return nil, usagef("--text is empty; give the prompt text")
	case f.given("text-file", f.textFile) && f.textFile == "":
		return nil, usagef("--text-file is empty; give the file to read the prompt from")
	case f.text != "":
		return f.encode(l, "prompt", f.text)
	}
	return f.readTextFile(l)
}

// promptCap is the most bytes read from --text-file for a model of the given positions
// (0: unknown): 1 MiB, or 256 bytes per position when that is more. No tokenizer makes a
// token of more than 256 bytes of ordinary text, so a file longer than that cannot fit.
func promptCap(positions int) int {
	return max(1<<20, positions*256)
}

// readTextFile reads --text-file once, at most promptCap bytes (a FIFO, /dev/zero or a
// huge file never grows memory without bound), keeps the text in f.fileText and encodes
// it. A file longer than the cap is refused: saying the model's limit when the part read
// already has more tokens than the model's positions, else saying the cap.
func (f *runFlags) readTextFile(l *loaded) ([]int64, error) {
	positions := l.sess.Limits.Positions
	limit := promptCap(positions)
	file, err := os.Open(f.textFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read --text-file %s: %w", f.textFile, errors.Unwrap(err))
	}
	defer file.Close()
	if st, err := file.Stat(); err == nil && st.IsDir() {
		return nil, usagef("--text-file %s is a folder; give a text file", f.textFile)
	}
	b, err := io.ReadAll(io.LimitReader(file, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read --text-file %s: %w", f.textFile, errors.Unwrap(err))
	}
	if len(b) <= limit {
		f.fileText = string(b)
		return f.encode(l, "prompt", f.fileText)
	}
	// Longer than the cap: what was read tells whether the model's positions are the limit.
	part := b[:limit]
	for len(part) > 0 && !utf8.Valid(part[max(0, len(part)-utf8.UTFMax):]) {
		part = part[:len(part)-1] // a character cut at the end
	}
	if positions > 0 {
		ids, err := f.tokenize(l, "prompt", string(part))
		if err != nil {
			return nil, err
		}
		if len(ids) > positions {
			return nil, usagef("--text-file %s has more than %d tokens but the model's position table holds %d; shorten it, or score a long text with inspect heads --window %d", f.textFile, len(ids), positions, positions)
		}
	}
	return nil, usagef("--text-file %s is longer than %d bytes, the most read for a prompt; shorten it, or score a long text with inspect heads --window", f.textFile, limit)
}

// checkIDs refuses ids, given with flag, that the model cannot take (see
// session.CheckIDs): outside its vocabulary, more than its positions, other than its fixed
// length. A target is checked as an encoder–decoder's target.
func checkIDs(l *loaded, flag string, ids []int64) error {
	check := l.sess.CheckIDs
	if flag == "--target-ids" {
		check = l.sess.CheckTarget
	}
	if err := check(ids); err != nil {
		return fmt.Errorf("%s: %w", flag, err) // a usage error: see advise
	}
	return nil
}

// encode tokenizes text (the prompt or the target, as what says) with the model's
// tokenizer (see tokenize) and refuses more tokens than the model's positions.
func (f *runFlags) encode(l *loaded, what, text string) ([]int64, error) {
	ids, err := f.tokenize(l, what, text)
	if err != nil {
		return nil, err
	}
	if p := l.sess.Limits.Positions; p > 0 && len(ids) > p {
		hint := "shorten it"
		if f.textFile != "" && what == "prompt" {
			hint = fmt.Sprintf("shorten it, or score a long text with inspect heads --window %d", p)
		}
		return nil, usagef("the %s has %d tokens but the model's position table holds %d; %s", what, len(ids), p, hint)
	}
	return ids, nil
}

// tokenize encodes text with the model's tokenizer, loading it into l first if needed,
// and checks the ids against the vocabulary.
func (f *runFlags) tokenize(l *loaded, what, text string) ([]int64, error) {
	if l.tok == nil {
		tok, err := tokenizer.Find(l.model.Path, f.tokenizer, l.sess.Limits.Vocab)
		if err != nil {
			return nil, err
		}
		l.tok = tok
	}
	ids, _, err := l.tok.EncodeDefault(text)
	if err != nil {
		return nil, fmt.Errorf("tokenizing the %s: %w", what, err)
	}
	if err := l.tok.CheckVocab(ids, l.sess.Limits.Vocab); err != nil {
		return nil, err
	}
	return ids, nil
}

// labels returns a display label per token: the tokenizer's when there is one, else the id.
func (l *loaded) labels(ids []int64) []string {
	if l.tok != nil {
		return l.tok.Labels(ids)
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.FormatInt(id, 10)
	}
	return out
}

// parseIDs parses "1,2, 3", given with flag, into ids. An empty list, an empty entry
// ("5,,17", a trailing comma) and anything but a non-negative integer are usage errors.
func parseIDs(flag, s string) ([]int64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, usagef("%s is empty; give token ids, comma-separated (e.g. %s 5,17,23)", flag, flag)
	}
	parts := strings.Split(s, ",")
	ids := make([]int64, 0, len(parts))
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, usagef("%s has an empty entry at position %d of %q; separate ids with single commas", flag, i, s)
		}
		id, err := strconv.ParseInt(part, 10, 64)
		if err != nil || id < 0 {
			return nil, usagef("%s takes comma-separated non-negative integers; %q is not one", flag, part)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// modelPath lets a model's folder stand for the model.onnx inside it.
func modelPath(path string) string {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		if inside := filepath.Join(path, "model.onnx"); fileExists(inside) {
			return inside
		}
	}
	return path
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}
