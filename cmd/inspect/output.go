package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/attnscope/attnscope/internal/outfile"
	"github.com/attnscope/attnscope/onnxgraph"
)

// output is where a command writes its data: stdout, or a file written as outfile.Create
// does (atomically, never over the run's inputs). Commit makes it final; Abort, safe
// after Commit, discards a file's data.
type output interface {
	io.Writer
	io.StringWriter
	Commit() error
	Abort()
}

// stdoutOutput buffers stdout; Commit flushes it.
type stdoutOutput struct{ *bufio.Writer }

func (o stdoutOutput) Commit() error { return o.Flush() }
func (o stdoutOutput) Abort()        {}

func newStdout() output { return stdoutOutput{bufio.NewWriterSize(os.Stdout, 1<<16)} }

// input is a file a run reads, which no output may replace.
type input struct {
	what string // "the model itself", "the model's external-data file", "the tokenizer"
	path string
}

// modelInputs are the files a run of m reads, or that belong with it: the model, its
// external-data files and the tokenizer files it may use (tokFlag's, and those beside the
// model that tokenizer.Find looks for).
func modelInputs(m *onnxgraph.Model, tokFlag string) []input {
	in := []input{{"the model itself", m.Path}}
	for _, f := range m.ExternalDataFiles() {
		in = append(in, input{"the model's external-data file", filepath.Join(m.Dir(), f)})
	}
	var toks []string
	if tokFlag != "" {
		toks = append(toks, tokFlag, filepath.Join(tokFlag, "tokenizer.json"))
	}
	// tokenizer.Load reads a file's (or a folder's) tokenizer_config.json beside it.
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"} {
		toks = append(toks, filepath.Join(m.Dir(), name))
		if tokFlag != "" {
			toks = append(toks, filepath.Join(filepath.Dir(tokFlag), name), filepath.Join(tokFlag, name))
		}
	}
	for _, p := range toks {
		in = append(in, input{"the tokenizer", p})
	}
	return in
}

// inputs are the files a run of the model with these flags reads: modelInputs, the
// --text-file and the --ablate-ref.
func (f *runFlags) inputs(m *onnxgraph.Model) []input {
	in := modelInputs(m, f.tokenizer)
	if f.textFile != "" {
		in = append(in, input{"the --text-file being read", f.textFile})
	}
	if f.ablation.ref != "" {
		in = append(in, input{"the --ablate-ref being read", f.ablation.ref})
	}
	return in
}

// openOutput opens what path, given with flag (--out, --png, --save), names: stdout for ""
// or "-", else the file, refusing (a usage error) one that is any of inputs.
func openOutput(flag, path string, inputs []input) (output, error) {
	if path == "" || path == "-" {
		return newStdout(), nil
	}
	protect := make([]string, len(inputs))
	for i, in := range inputs {
		protect[i] = in.path
	}
	f, err := outfile.Create(path, protect...)
	var pe *outfile.ProtectedError
	var fe *outfile.FolderError
	switch {
	case errors.As(err, &pe):
		what := "a file this run reads"
		for _, in := range inputs {
			if in.path == pe.Protected {
				what = in.what
				break
			}
		}
		if filepath.Clean(path) == filepath.Clean(pe.Protected) {
			return nil, usagef("%s %s would overwrite %s; choose another file", flag, path, what)
		}
		return nil, usagef("%s %s would overwrite %s (%s, the same file); choose another file", flag, path, what, pe.Protected)
	case errors.As(err, &fe):
		return nil, usagef("%s %s is a folder; give a file name", flag, path)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return f, nil
}
