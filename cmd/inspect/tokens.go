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
	"github.com/attnscope/attnscope/tableio"
)

func newTokensCmd() *cobra.Command {
	var f runFlags
	var topK int
	cmd := &cobra.Command{
		Use:   "tokens [MODEL] (--text TEXT | --text-file FILE | --ids 1,2,3)",
		Short: "Print each position's loss and top prediction",
		Long: `tokens runs the model on the prompt and prints one CSV row per position:
pos,id,token,loss,top1_id,top1_token,top1_prob

loss is the cross-entropy (nats) of the logits at pos against the token at pos+1 (empty at
the last position); top1 is the model's most likely next token there. --format table prints
the same with the --top-k best predictions and the in-context-learning score. For an
encoder–decoder the positions are the target's (--target or --target-ids; the prompt when
neither is given), the prompt being the source. --format npz, parquet or json (or an --out
named .npz, .parquet, .json) writes the same columns as numpy arrays, a Parquet file or a
JSON array of objects.`,
		Args: modelArgs("tokens"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.resolveFormat("tokens", append(tableFormats, "table")...); err != nil {
				return err
			}
			if topK < 1 {
				return usagef("--top-k must be at least 1")
			}
			// Attention is exposed too, so that degenerate maps (a model fed in a shape it
			// was not exported for, whose losses mean nothing) are warned about.
			l, out, err := f.openTable(firstArg(args))
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
				err = writeTable(out, f.format, tokensTable(l, res))
			}
			if err != nil {
				return err
			}
			return out.Commit()
		},
	}
	f.register(cmd)
	f.registerOutput(cmd, formatUsage("table (with --top-k predictions and the in-context-learning score)"), "csv")
	cmd.Flags().IntVar(&topK, "top-k", 5, "predictions per position in --format table")
	return cmd
}

// tokensTable is one row per position: pos,id,token,loss,top1_id,top1_token,top1_prob
// (loss empty in CSV, NaN elsewhere, at the last position).
func tokensTable(l *loaded, res *result.Result) *tableio.Table {
	ids, labels, losses := res.Tokens, l.labels(res.Tokens), analysis.TokenLosses(res)
	n := len(ids)
	pos, topID := make([]int64, n), make([]int64, n)
	topTok, prob := make([]string, n), make([]float64, n)
	for p := range ids {
		t := analysis.TopK(analysis.LogitsRow(res, p), 1)[0]
		pos[p], topID[p], topTok[p], prob[p] = int64(p), t.ID, l.label(t.ID), t.Prob
	}
	loss := tableio.Floats("loss", losses, 8)
	loss.NaN = ""
	token, top1 := tableio.Strings("token", labels), tableio.Strings("top1_token", topTok)
	token.Dict, top1.Dict = true, true
	return (&tableio.Table{}).Add(
		tableio.Ints("pos", pos), tableio.Ints("id", ids), token, loss,
		tableio.Ints("top1_id", topID), top1, tableio.Floats("top1_prob", prob, 8))
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
