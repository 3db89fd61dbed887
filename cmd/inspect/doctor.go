package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/session"
)

func newDoctorCmd() *cobra.Command {
	var ortLib string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Show which onnxruntime library is used, its version and execution providers",
		Args:  exactArgs(0, "doctor takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := newStdout()
			fmt.Fprintf(out, "attnscope: %s/%s, %s\n", runtime.GOOS, runtime.GOARCH, runtime.Version())
			path, err := session.Init(ortLib)
			if err != nil {
				out.Commit()
				return err
			}
			fmt.Fprintf(out, "onnxruntime library: %s\n", path)
			fmt.Fprintf(out, "onnxruntime version: %s (the Go binding expects %s)\n", session.Version(), session.WantVersion)
			fmt.Fprintf(out, "execution providers: CPU: available\n")
			if ok, why := session.CUDAStatus(); ok {
				fmt.Fprintf(out, "                     CUDA: available (--device auto uses it)\n")
			} else {
				fmt.Fprintf(out, "                     CUDA: not available (%s)\n", why)
			}
			return out.Commit()
		},
	}
	cmd.Flags().StringVar(&ortLib, "ort-lib", "", "path of the onnxruntime shared library (default: searched)")
	return cmd
}
