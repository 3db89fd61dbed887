// Command inspect opens a transformer exported to ONNX, exposes every attention head's
// probabilities, runs it with onnxruntime and prints them (dump), summarises the graph
// (graph) or checks the installation (doctor).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/internal/outfile"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tokenizer"
)

// Exit codes of the CLI contract.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	// A reader that goes away (`inspect dump … | head`) makes writes fail with EPIPE, which
	// run treats as a quiet end instead of dying by SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	// Ctrl-C during a write to --out leaves no temporary file behind.
	outfile.CleanupOnSignal()
	os.Exit(run(os.Args[1:]))
}

// run executes the CLI with args and returns the process exit code. Every error is
// printed as one line on stderr.
func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, syscall.EPIPE):
		return exitOK
	}
	err = advise(err)
	fmt.Fprintln(os.Stderr, "inspect: "+oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return exitUsage
	}
	return exitFailure
}

// advise adds to the library packages' typed errors, which state facts, what to do about
// them in terms of this command's flags; ids the model cannot take and devices that do not
// exist become usage errors.
func advise(err error) error {
	var (
		lib   *session.LibraryError
		dev   *session.DeviceError
		ids   *session.IDsError
		noTok *tokenizer.NotFoundError
		vocab *tokenizer.VocabError
		file  *tokenizer.FileError
		limit *analysis.LimitError
		none  *onnxgraph.NoAttentionError
		heads *ablate.SelectionError
		given *session.GivenInputError
	)
	switch {
	case errors.As(err, &lib) && lib.Err != nil:
		return fmt.Errorf("%w: run `make setup` (or scripts/setup.sh), or pass the right library with --ort-lib PATH", err)
	case errors.As(err, &lib) && lib.Given:
		return fmt.Errorf("--ort-lib %s does not exist; give the path of libonnxruntime.so (onnxruntime %s), or leave --ort-lib out to search for it", lib.Path, session.WantVersion)
	case errors.As(err, &lib):
		return fmt.Errorf("%w; run `make setup` to fetch onnxruntime %s into lib/, or pass --ort-lib PATH or set %s", err, session.WantVersion, session.LibraryEnv)
	case errors.As(err, &dev) && dev.Reason == "":
		return usagef("--device must be auto, cpu or cuda, not %q", dev.Device)
	case errors.As(err, &dev):
		return fmt.Errorf("%w; use --device cpu, or install the GPU build of onnxruntime and pass it with --ort-lib", err)
	case errors.As(err, &ids):
		switch ids.Problem {
		case session.TooLong:
			return usagef("%v; shorten it", err)
		case session.OutOfVocab:
			return usagef("%v; give ids below %d", err, ids.Limit)
		case session.WrongLength:
			return usagef("%v; give exactly %d", err, ids.Limit)
		}
		return usageError{err}
	case errors.As(err, &given):
		return usagef("--input %s: %s", given.Name, given.Problem)
	case errors.As(err, &heads):
		return usagef("--ablate: %v", err)
	case errors.As(err, &limit):
		return usagef("%v; give a shorter %s", err, limit.What)
	case errors.As(err, &noTok):
		return fmt.Errorf("%w; pass --tokenizer PATH to a tokenizer.json, or give token ids with --ids", err)
	case errors.As(err, &vocab):
		return fmt.Errorf("%w; use the tokenizer the model was trained with (--tokenizer PATH) or give ids below %d with --ids", err, vocab.Vocab)
	case errors.As(err, &file):
		return fmt.Errorf("%w; give a tokenizer.json with --tokenizer PATH", err)
	case errors.As(err, &none) && len(none.Fused) == 0 && len(none.Nested) == 0 && len(none.Rejected) > 0:
		return fmt.Errorf("%w; run `inspect graph MODEL` for the full list", err)
	}
	return err
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// isCobraUsage recognises the argument errors cobra produces itself.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "requires at most"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func newRootCmd() *cobra.Command {
	var f runFlags
	var color string
	var showVersion bool
	root := &cobra.Command{
		Use:   "inspect [MODEL | TIMELINE_DIR]",
		Short: "Look at the attention of a transformer exported to ONNX",
		Long: `inspect exposes every attention head's probabilities of an ONNX transformer and
runs it with onnxruntime (CUDA when available, CPU otherwise).

With a MODEL (or none: the built-in 2-layer demo model) it opens the attention browser in
the terminal; the subcommands print the same numbers for scripts. With a training
timeline's folder (export.train --timeline; models/demo/timeline) it opens the browser on
the last step with a step bar: < and > move a step, { and } jump to where the selected
head's score changes most.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				if err := mistypedCommand(cmd, args[0]); err != nil {
					return err
				}
			}
			if len(args) > 1 {
				return usagef("inspect takes at most one MODEL, or a command (see inspect --help)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				return printVersion(os.Stdout, f.ortLib)
			}
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			return browse(&f, color, path)
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SuggestionsMinimumDistance = 2
	f.register(root)
	root.Flags().StringVar(&color, "color", "auto", "colours: auto, truecolor, 256, 16 or none (NO_COLOR also turns them off)")
	root.Flags().BoolVar(&showVersion, "version", false, "print the versions of attnscope and onnxruntime, and the commit")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDumpCmd(), newGraphCmd(), newDoctorCmd(), newHeadsCmd(), newTokensCmd(), newAblateCmd(), newCircuitsCmd())
	return root
}

// mistypedCommand refuses a first argument that is no file or folder but is close to a
// command's name (`inspect dupm`, `inspect haeds`), naming the command meant. Anything
// else is left to be a MODEL path.
func mistypedCommand(root *cobra.Command, arg string) error {
	if _, err := os.Stat(arg); err == nil || strings.ContainsAny(arg, "/.") {
		return nil
	}
	if s := root.SuggestionsFor(arg); len(s) > 0 {
		return usagef("unknown command %q; did you mean `inspect %s`?", arg, strings.Join(s, "` or `inspect "))
	}
	return nil
}

// printVersion writes attnscope's version and commit (from the build information Go
// records) and the onnxruntime version (when the library loads).
func printVersion(w io.Writer, ortLib string) error {
	v := version
	commit := "unknown (built without version control information)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		// A real module version (`go install …@v1.2.3`), not the pseudo-version Go makes up
		// from a commit (v0.0.0-2026…-8bdf652d3983): the commit line says that.
		if mv := bi.Main.Version; v == "" && mv != "" && mv != "(devel)" && !strings.HasPrefix(mv, "v0.0.0-") {
			v = mv
		}
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			commit = rev
			if modified == "true" {
				commit += " (with uncommitted changes)"
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	fmt.Fprintf(w, "attnscope %s\ncommit: %s\n", v, commit)
	fmt.Fprintf(w, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if path, err := session.Init(ortLib); err != nil {
		fmt.Fprintf(w, "onnxruntime: not found or not loadable (inspect doctor says why; --ort-lib PATH or %s=PATH names the library)\n", session.LibraryEnv)
	} else {
		fmt.Fprintf(w, "onnxruntime: %s (%s)\n", session.Version(), path)
	}
	return nil
}

// version is attnscope's version, set at build time with -ldflags "-X main.version=…"; when
// empty, the module version Go recorded (a `go install …@v1.2.3`) or "devel".
var version = ""
