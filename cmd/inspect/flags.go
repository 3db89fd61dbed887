package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tokenizer"
)

// runFlags are the flags shared by the commands that run a model.
type runFlags struct {
	text, textFile, ids, tokenizer string
	device, ortLib                 string
	out                            string
	format                         string
	// logitsOnly opens the model without exposing attention (commands that need logits only).
	logitsOnly bool
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
}

// loaded is a model opened for running, with its tokenizer when one was found.
type loaded struct {
	model *onnxgraph.Model
	sess  *session.Session
	tok   *tokenizer.Tokenizer // nil when running on ids without a tokenizer
}

func (l *loaded) close() {
	if l.sess != nil {
		l.sess.Close()
	}
	if l.tok != nil {
		l.tok.Close()
	}
}

// open loads the model at path and creates its session.
func (f *runFlags) open(path string) (*loaded, error) {
	switch f.device {
	case "auto", "cpu", "cuda":
	default:
		return nil, usagef("--device must be auto, cpu or cuda, not %q", f.device)
	}
	m, err := onnxgraph.Load(path)
	if err != nil {
		return nil, err
	}
	sess, err := session.Open(m, session.Options{
		LibPath:    f.ortLib,
		Device:     f.device,
		Notice:     func(s string) { fmt.Fprintln(os.Stderr, "inspect: "+s) },
		LogitsOnly: f.logitsOnly,
	})
	if err != nil {
		return nil, err
	}
	return &loaded{model: m, sess: sess}, nil
}

// openAndRun loads the model at path, encodes the prompt and runs it once. The caller
// closes the returned model.
func (f *runFlags) openAndRun(path string) (*loaded, []int64, *session.Result, error) {
	l, err := f.open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	ids, err := f.prompt(l)
	if err != nil {
		l.close()
		return nil, nil, nil, err
	}
	res, err := l.sess.Run(ids)
	if err != nil {
		l.close()
		return nil, nil, nil, err
	}
	return l, ids, res, nil
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
		ids, err := parseIDs(f.ids)
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
	tok, err := tokenizer.Find(l.model.Path, f.tokenizer, l.sess.Limits.Vocab)
	if err != nil {
		return nil, err
	}
	l.tok = tok
	ids, _, err := tok.EncodeDefault(text)
	if err != nil {
		return nil, fmt.Errorf("tokenizing the prompt: %w", err)
	}
	if err := tok.CheckVocab(ids, l.sess.Limits.Vocab); err != nil {
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

// parseIDs parses "1,2, 3" into ids.
func parseIDs(s string) ([]int64, error) {
	var ids []int64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, err := strconv.ParseInt(part, 10, 64)
		if err != nil || id < 0 {
			return nil, usagef("--ids takes comma-separated non-negative integers; %q is not one", part)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, usagef("--ids is empty")
	}
	return ids, nil
}
