// Command inspect opens a transformer exported to ONNX, exposes every attention head's
// probabilities, runs it with onnxruntime and prints them (dump), summarises the graph
// (graph) or checks the installation (doctor).
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
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
	fmt.Fprintln(os.Stderr, "inspect: "+oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return exitUsage
	}
	return exitFailure
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
	root := &cobra.Command{
		Use:   "inspect [MODEL]",
		Short: "Look at the attention of a transformer exported to ONNX",
		Long: `inspect exposes every attention head's probabilities of an ONNX transformer and
runs it with onnxruntime (CUDA when available, CPU otherwise).

With a MODEL (or none: the built-in 2-layer demo model) it opens the attention browser in
the terminal; the subcommands print the same numbers for scripts.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("inspect takes at most one MODEL, or a command (see inspect --help)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			return browse(&f, color, path)
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	f.register(root)
	root.Flags().StringVar(&color, "color", "auto", "colours: auto, truecolor, 256, 16 or none (NO_COLOR also turns them off)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDumpCmd(), newGraphCmd(), newDoctorCmd(), newHeadsCmd(), newTokensCmd())
	return root
}
