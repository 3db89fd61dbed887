package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/result"
)

func newTokensCmd() *cobra.Command {
	var f runFlags
	var topK int
	cmd := &cobra.Command{
		Use:   "tokens MODEL (--text TEXT | --text-file FILE | --ids 1,2,3)",
		Short: "Print each position's loss and top prediction",
		Long: `tokens runs the model on the prompt and prints one CSV row per position:
pos,id,token,loss,top1_id,top1_token,top1_prob

loss is the cross-entropy (nats) of the logits at pos against the token at pos+1 (empty at
the last position); top1 is the model's most likely next token there. --format table prints
the same with the --top-k best predictions and the in-context-learning score. For an
encoder–decoder the positions are the target's (--target or --target-ids; the prompt when
neither is given), the prompt being the source.`,
		Args: exactArgs(1, "tokens needs one MODEL file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.format != "csv" && f.format != "table" {
				return usagef("tokens writes csv or table; --format %q is not supported", f.format)
			}
			if topK < 1 {
				return usagef("--top-k must be at least 1")
			}
			// Attention is exposed too, so that degenerate maps (a model fed in a shape it
			// was not exported for, whose losses mean nothing) are warned about.
			l, out, err := f.openTable(args[0])
			if err != nil {
				return err
			}
			defer l.close()
			defer out.Abort()
			res, err := f.runAndWarn(l)
			if err != nil {
				return err
			}
			if res.Logits == nil {
				return fmt.Errorf("the model's output is not per-token logits, so there is no loss to compute")
			}
			if f.format == "table" {
				err = writeTokensTable(out, l, res, topK)
			} else {
				err = writeTokensCSV(out, l, res)
			}
			if err != nil {
				return err
			}
			return out.Commit()
		},
	}
	f.register(cmd)
	f.registerOutput(cmd, "output format: csv, or table (with --top-k predictions and the in-context-learning score)", "csv")
	cmd.Flags().IntVar(&topK, "top-k", 5, "predictions per position in --format table")
	return cmd
}

// writeTokensCSV writes one row per position: pos,id,token,loss,top1_id,top1_token,top1_prob.
func writeTokensCSV(w io.Writer, l *loaded, res *result.Result) error {
	ids, labels, losses := res.Tokens, l.labels(res.Tokens), analysis.TokenLosses(res)
	if _, err := io.WriteString(w, "pos,id,token,loss,top1_id,top1_token,top1_prob\n"); err != nil {
		return err
	}
	var buf []byte
	for p, id := range ids {
		t := analysis.TopK(analysis.LogitsRow(res, p), 1)[0]
		buf = buf[:0]
		buf = strconv.AppendInt(buf, int64(p), 10)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, id, 10)
		buf = append(buf, ',')
		buf = append(buf, csvField(labels[p])...)
		buf = append(buf, ',')
		if !math.IsNaN(losses[p]) {
			buf = strconv.AppendFloat(buf, losses[p], 'g', 8, 64)
		}
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, t.ID, 10)
		buf = append(buf, ',')
		buf = append(buf, csvField(l.label(t.ID))...)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, t.Prob, 'g', 8, 64)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// writeTokensTable writes each position's loss and topK predictions, and the
// in-context-learning score.
func writeTokensTable(w io.Writer, l *loaded, res *result.Result, topK int) error {
	ids, labels, losses := res.Tokens, l.labels(res.Tokens), analysis.TokenLosses(res)
	fmt.Fprintf(w, "%5s %8s %-16s %8s  %s\n", "pos", "id", "token", "loss", "next-token predictions")
	for p, id := range ids {
		loss := ""
		if !math.IsNaN(losses[p]) {
			loss = strconv.FormatFloat(losses[p], 'f', 3, 64)
		}
		var preds []string
		for _, pr := range analysis.TopK(analysis.LogitsRow(res, p), topK) {
			preds = append(preds, fmt.Sprintf("%s %.3f", l.label(pr.ID), pr.Prob))
		}
		if _, err := fmt.Fprintf(w, "%5d %8d %-16s %8s  %s\n", p, id, labels[p], loss, strings.Join(preds, " · ")); err != nil {
			return err
		}
	}
	if early, late, ok := analysis.ICLPositions(len(ids)); ok {
		score := losses[late] - losses[early]
		_, err := fmt.Fprintf(w, "\nin-context-learning score: %.4f (loss %.4f at position %d − %.4f at position %d; one sequence)\n", score, losses[late], late, losses[early], early)
		return err
	}
	return nil
}
