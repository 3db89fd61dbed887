package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/internal/outfile"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

func newGraphCmd() *cobra.Command {
	var save, file string
	cmd := &cobra.Command{
		Use:   "graph [MODEL] [--save OUT.onnx]",
		Short: "List the attention sites found in the model, and the softmaxes rejected",
		Args:  modelArgs("graph"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := loadModel(firstArg(args), file)
			if err != nil {
				return err
			}
			att, findErr := onnxgraph.FindAttention(m)
			out := newStdout()
			printGraph(out, m, att)
			if err := out.Commit(); err != nil {
				return err
			}
			if findErr != nil {
				return findErr
			}
			if save == "" {
				return nil
			}
			return saveExposed(m, att, save)
		},
	}
	cmd.Flags().StringVar(&save, "save", "", "write the rewritten model (attention as outputs attn.L0…) to this file")
	cmd.Flags().StringVar(&file, "file", "", "when MODEL is a folder: the model file in it (or in its onnx/ subfolder) to read, instead of the one chosen by name")
	return cmd
}

func printGraph(w io.Writer, m *onnxgraph.Model, att *onnxgraph.Attention) {
	mp := m.Proto
	var opsets []string
	for _, o := range mp.GetOpsetImport() {
		d := o.GetDomain()
		if d == "" {
			d = "ai.onnx"
		}
		opsets = append(opsets, fmt.Sprintf("%s:%d", d, o.GetVersion()))
	}
	name := filepath.Base(m.Path)
	if parts := m.Parts(); len(parts) == 2 { // a split encoder–decoder, joined
		name = filepath.Base(parts[0]) + " + " + filepath.Base(parts[1])
	}
	fmt.Fprintf(w, "model: %s (producer %s %s, IR %d, opsets %s, %d nodes)\n",
		name, orDash(mp.GetProducerName()), mp.GetProducerVersion(), mp.GetIrVersion(), strings.Join(opsets, " "), len(m.Graph().GetNode()))
	var ins []string
	for _, in := range onnxgraph.Inputs(m) {
		ins = append(ins, fmt.Sprintf("%s (%s)", in.Name, in.Role))
	}
	fmt.Fprintf(w, "inputs: %s\n", strings.Join(ins, ", "))
	lim := onnxgraph.ModelLimits(m)
	fmt.Fprintf(w, "limits: vocabulary %s, positions %s, fixed length %s\n", orUnknown(lim.Vocab), orUnknown(lim.Positions), orNone(lim.FixedLen))
	fmt.Fprintf(w, "attention sites: %d\n", len(att.Sites))
	if len(att.Sites) > 0 {
		fmt.Fprintf(w, "%-5s  %-8s  %-34s  %-9s  %-5s  %-5s  %s\n", "layer", "output", "form", "shape", "heads", "kind", "node")
	}
	var hows []string
	for _, s := range att.Sites {
		shape := "?"
		switch s.Rank {
		case 3:
			shape = "[B·H,Q,K]"
		case 4:
			shape = "[B,H,Q,K]"
		}
		heads := "run"
		if s.Heads > 0 {
			heads = fmt.Sprint(s.Heads)
		}
		kind := "self"
		if s.Cross {
			kind = "cross"
		}
		node := s.Node
		if s.Where() != "" {
			node += " (" + s.Where() + ")"
		}
		fmt.Fprintf(w, "L%-4d  %-8s  %-34s  %-9s  %-5s  %-5s  %s\n", s.Layer, s.Output, s.Form, shape, heads, kind, node)
		if h := siteHow(s); !slices.Contains(hows, h) {
			hows = append(hows, h)
		}
		if h := ablationHow(m, s); !slices.Contains(hows, h) {
			hows = append(hows, h)
		}
	}
	for _, h := range hows {
		fmt.Fprintln(w, h)
	}
	if len(att.Rejected) > 0 {
		fmt.Fprintf(w, "softmaxes rejected: %d\n", len(att.Rejected))
		for _, r := range att.Rejected {
			fmt.Fprintf(w, "  %s: %s\n", r.Node, r.Reason)
		}
	}
}

// saveExposed writes the rewritten model to path, atomically, and never over the model,
// its external-data files or the tokenizer files beside it.
func saveExposed(m *onnxgraph.Model, att *onnxgraph.Attention, path string) error {
	if path == "-" {
		return usagef("--save writes a file; give its name")
	}
	out, err := openOutput("--save", path, modelInputs(m, ""))
	if err != nil {
		return err
	}
	defer out.Abort()
	if files := m.ExternalDataFiles(); len(files) > 0 && !sameDir(m.Path, out.(*outfile.File).Path()) {
		return usagef("the model keeps its weights in %s beside it, which the saved model refers to by relative path; save it into the model's folder (%s)", strings.Join(files, ", "), m.Dir())
	}
	if err := onnxgraph.Save(m, att, out); err != nil {
		return err
	}
	if err := out.Commit(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "inspect: wrote %s (%d attention outputs)\n", path, len(att.Sites))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orUnknown(n int) string {
	if n == 0 {
		return "unknown"
	}
	return fmt.Sprint(n)
}

func orNone(n int) string {
	if n == 0 {
		return "none"
	}
	return fmt.Sprint(n)
}

// sameDir reports whether files a and b are in one folder (after symlinks).
func sameDir(a, b string) bool {
	sa, errA := os.Stat(filepath.Dir(a))
	sb, errB := os.Stat(filepath.Dir(b))
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// ablationHow says in one line whether and how a site's heads can be switched off.
func ablationHow(m *onnxgraph.Model, s onnxgraph.Site) string {
	switch {
	case s.If != nil:
		return fmt.Sprintf("ablation of %s sites%s: refused, a layer inside an If (a merged decoder) cannot get mask inputs", s.Form, where(s))
	case s.Form != onnxgraph.FormSoftmax && s.Form != onnxgraph.FormMSAttention:
		return fmt.Sprintf("ablation of %s sites: refused, the fused kernel keeps the probabilities inside", s.Form)
	case onnxgraph.AblationError(m, s, false) != nil:
		return fmt.Sprintf("ablation of %s sites%s: refused, %v", s.Form, where(s), onnxgraph.AblationError(m, s, false))
	case onnxgraph.AblationError(m, s, true) != nil:
		return fmt.Sprintf("ablation of %s sites%s: zero (a mask before ×V); not mean: %v", s.Form, where(s), onnxgraph.AblationError(m, s, true))
	}
	return fmt.Sprintf("ablation of %s sites%s: zero and mean (a mask before ×V, z at the ×V MatMul)", s.Form, where(s))
}

func where(s onnxgraph.Site) string {
	if s.Where() == "" {
		return ""
	}
	return " " + s.Where()
}

// siteHow says how a site's probabilities reach its output, in one line.
func siteHow(s onnxgraph.Site) string {
	how := fmt.Sprintf("probabilities of %s sites: %s", s.Form, s.Form.How())
	if s.Where() != "" {
		how = fmt.Sprintf("probabilities of %s sites %s: %s, each branch's threaded out as an extra output of the If (an empty tensor from a branch without that layer)", s.Form, s.Where(), s.Form.How())
	}
	if onnxgraph.NeedsFloat32Copy(s.ElemType) && s.Form != onnxgraph.FormMHA { // MHA's Softmax is float32 already
		how += fmt.Sprintf(", cast from %s to float32", strings.ToLower(pb.TensorProto_DataType(s.ElemType).String()))
	}
	return how
}
