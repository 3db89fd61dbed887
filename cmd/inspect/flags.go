package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

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
}

func (f *runFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.text, "text", "", "prompt text, tokenized with the model's tokenizer")
	fl.StringVar(&f.textFile, "text-file", "", "read the prompt text from this file")
	fl.StringVar(&f.ids, "ids", "", "token ids instead of text, comma-separated (e.g. 5,17,23)")
	fl.StringVar(&f.tokenizer, "tokenizer", "", "tokenizer.json to use (default: the one beside the model)")
	fl.StringVar(&f.device, "device", "auto", "where to run: auto, cpu or cuda")
	fl.StringVar(&f.ortLib, "ort-lib", "", "path of the onnxruntime shared library (default: searched)")
	fl.StringVar(&f.out, "out", "", "write to this file (atomically) instead of stdout")
	fl.StringVar(&f.format, "format", "csv", "output format: csv")
	fl.StringVar(&f.target, "target", "", "encoder–decoder models: the target (decoder) text, the prompt being the source (default: the prompt)")
	fl.StringVar(&f.targetIDs, "target-ids", "", "encoder–decoder models: target token ids instead of text, comma-separated")
}

// loaded is a model opened for running, with its tokenizer when one was found.
type loaded struct {
	model *onnxgraph.Model
	sess  *session.Session
	tok   *tokenizer.Tokenizer // nil when running on ids without a tokenizer
	// target is an encoder–decoder's target ids; nil: the prompt is both source and target.
	target []int64
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
	m, err := onnxgraph.Load(modelPath(path))
	if err != nil {
		return nil, err
	}
	sess, err := session.Open(m, session.Options{
		LibPath: f.ortLib,
		Device:  f.device,
		Notice:  func(s string) { fmt.Fprintln(os.Stderr, "inspect: "+s) },
	})
	if err != nil {
		return nil, err
	}
	return &loaded{model: m, sess: sess}, nil
}

// openAndRun loads the model at path, encodes the prompt and runs it once, and warns on
// stderr when the result's maps are degenerate (see result.Result.Degenerate). For an
// encoder–decoder the prompt is the source and --target or --target-ids the target (the
// prompt again, with a notice, when neither is given). The returned ids are the result's
// Tokens: the target of an encoder–decoder. The caller closes the returned model.
func (f *runFlags) openAndRun(path string) (*loaded, []int64, *result.Result, error) {
	l, err := f.open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	res, err := f.run(l)
	if err != nil {
		l.close()
		return nil, nil, nil, err
	}
	warnDegenerate(os.Stderr, res)
	return l, res.Tokens, res, nil
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
	return l.runIDs(ids)
}

// runIDs runs the prompt's ids: as the source of an encoder–decoder, with l.target (or the
// ids again) as its target.
func (l *loaded) runIDs(ids []int64) (*result.Result, error) {
	if !l.sess.Seq2Seq() {
		return l.sess.Run(ids)
	}
	tgt := l.target
	if tgt == nil {
		tgt = ids
	}
	return l.sess.RunPair(ids, tgt)
}

// targetSeq returns an encoder–decoder's target ids from --target or --target-ids, or
// nil, with a notice on stderr that the prompt is both source and target, when neither is
// given. It refuses the flags for a model with one sequence.
func (f *runFlags) targetSeq(l *loaded) ([]int64, error) {
	given := f.target != "" || f.targetIDs != ""
	switch {
	case !l.sess.Seq2Seq() && given:
		return nil, usagef("--target and --target-ids are for encoder–decoder models, and %s takes one sequence; give the prompt alone", filepath.Base(l.model.Path))
	case !l.sess.Seq2Seq():
		return nil, nil
	case f.target != "" && f.targetIDs != "":
		return nil, usagef("give at most one of --target or --target-ids")
	case f.targetIDs != "":
		return parseIDs("--target-ids", f.targetIDs)
	case f.target != "":
		return f.encode(l, "target", f.target)
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
// tokenizer when text must be encoded or labels can be had.
func (f *runFlags) prompt(l *loaded) ([]int64, error) {
	given := 0
	for _, s := range []string{f.ids, f.text, f.textFile} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		return nil, usagef("give exactly one of --text, --text-file or --ids")
	}
	if f.ids != "" {
		ids, err := parseIDs("--ids", f.ids)
		if err != nil {
			return nil, err
		}
		// Labels are nicer with a tokenizer, but ids alone must work without one.
		if tok, err := tokenizer.Find(l.model.Path, f.tokenizer, l.sess.Limits.Vocab); err == nil {
			l.tok = tok
		} else if f.tokenizer != "" {
			return nil, err
		}
		return ids, nil
	}
	text := f.text
	if f.textFile != "" {
		b, err := os.ReadFile(f.textFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read --text-file: %w", err)
		}
		text = string(b)
	}
	return f.encode(l, "prompt", text)
}

// encode tokenizes text (the prompt or the target, as what says) with the model's
// tokenizer, loading it into l first if needed, and checks the ids against the vocabulary.
func (f *runFlags) encode(l *loaded, what, text string) ([]int64, error) {
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

// parseIDs parses "1,2, 3", given with flag, into ids.
func parseIDs(flag, s string) ([]int64, error) {
	var ids []int64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, err := strconv.ParseInt(part, 10, 64)
		if err != nil || id < 0 {
			return nil, usagef("%s takes comma-separated non-negative integers; %q is not one", flag, part)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, usagef("%s is empty", flag)
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
