package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/charmbracelet/x/term"

	"github.com/attnscope/attnscope/internal/outfile"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/tableio"
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
// external-data files, the other .onnx models beside it (a split encoder–decoder's
// encoder and decoders, variants), the folder's config.json, tokenizer_config.json and
// tokenizer.json (beside the model and one level up, the Hub's layout), the tokenizer
// files it may use (tokFlag's, and those beside the model that tokenizer.Find looks for),
// and extra: files a command reads besides (circuits' --vocab-from, say:
// input{"the --vocab-from file being read", path}).
func modelInputs(m *onnxgraph.Model, tokFlag string, extra ...input) []input {
	in := []input{{"the model itself", m.Path}}
	dirs := []string{m.Dir()}
	for _, p := range m.Parts() { // a split encoder–decoder's two files
		in = append(in, input{"the model itself", p})
		if d := filepath.Dir(p); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		for _, p := range onnxFilesIn(d) {
			in = append(in, input{"a model file beside the model (" + filepath.Base(p) + ")", p})
		}
		for _, name := range []string{"config.json", "tokenizer_config.json", "tokenizer.json"} {
			what := "the tokenizer"
			if name == "config.json" {
				what = "the model folder's config.json"
			}
			in = append(in, input{what, filepath.Join(d, name)}, input{what, filepath.Join(filepath.Dir(d), name)})
		}
	}
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
	return append(in, extra...)
}

// onnxFilesIn are the .onnx files in dir (none when it cannot be read).
func onnxFilesIn(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.EqualFold(filepath.Ext(e.Name()), ".onnx") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// inputs are the files a run of the model with these flags reads: modelInputs, the
// --text-file, the --ablate-ref and every --input array.
func (f *runFlags) inputs(m *onnxgraph.Model) []input {
	return append(modelInputs(m, f.tokenizer), f.flagInputs()...)
}

// flagInputs are the files the run's flags name for reading: every --input array, the
// --text-file and the --ablate-ref.
func (f *runFlags) flagInputs() []input {
	var in []input
	for _, fl := range f.inputFlags {
		if name, file, ok := strings.Cut(fl, "="); ok && file != "" {
			in = append(in, input{"the --input " + strings.TrimSpace(name) + " array being read", file})
		}
	}
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

// resolveFormat settles the format a table command writes, from --format and --out's
// extension, before anything is loaded: --format when given (one of allowed), else the
// format --out's extension names (.csv, .npz, .parquet or .pq, .json), else csv. A
// --format the command does not write, and an --out whose extension names another format
// than --format, are usage errors; so is a binary format (npz, parquet) for a terminal.
// It stores the result in f.format.
func (f *runFlags) resolveFormat(command string, allowed ...string) error {
	given := f.flags != nil && f.flags.Changed("format")
	byExt, extOK := tableio.FromPath(f.out)
	if f.out == "-" {
		extOK = false
	}
	format := strings.ToLower(strings.TrimSpace(f.format))
	switch {
	case given && !slices.Contains(allowed, format):
		return usagef("%s writes %s; --format %q is not one of them", command, orList(allowed), f.format)
	case given && extOK && format != string(byExt):
		return usagef("--out %s names %s %s file but --format is %s; make them agree, or leave --format out to write %s", f.out, article(string(byExt)), byExt, format, byExt)
	case !given && extOK && !slices.Contains(allowed, string(byExt)):
		return usagef("%s writes %s; --out %s names %s %s file", command, orList(allowed), f.out, article(string(byExt)), byExt)
	case !given && extOK:
		format = string(byExt)
	case !given:
		format = "csv"
	}
	if (format == string(tableio.NPZ) || format == string(tableio.Parquet)) && (f.out == "" || f.out == "-") && term.IsTerminal(os.Stdout.Fd()) {
		return usagef("--format %s is binary and stdout is a terminal; give --out FILE.%s or redirect stdout", format, format)
	}
	f.format = format
	return nil
}

// article is "an" before npz (said en-pee-zed), else "a".
func article(format string) string {
	if format == "npz" {
		return "an"
	}
	return "a"
}

// orList joins formats as "csv, npz, parquet or json".
func orList(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// tableFormats are the formats every table command writes (see tableio).
var tableFormats = []string{"csv", "npz", "parquet", "json"}

// formatUsage is --format's help for a table command; extra names its own formats
// ("table (sorted, thresholds flagged)").
func formatUsage(extra string) string {
	s := "output format: csv, npz (numpy), parquet or json"
	if extra != "" {
		s += ", or " + extra
	}
	return s + " (default: from --out's extension, else csv)"
}

// writeTable writes t to out in the resolved format (csv, npz, parquet or json).
func writeTable(out io.Writer, format string, t *tableio.Table) error {
	return tableio.Write(out, tableio.Format(format), t)
}
