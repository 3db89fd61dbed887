package main

import (
	"encoding/csv"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/session"
)

func newDumpCmd() *cobra.Command {
	var f runFlags
	var layer, head int
	cmd := &cobra.Command{
		Use:   "dump MODEL (--text TEXT | --text-file FILE | --ids 1,2,3)",
		Short: "Print every head's attention weights as CSV",
		Long: `dump runs the model on the prompt and prints one CSV row per (layer, head, query, key):
layer,head,query,key,query_token,key_token,weight`,
		Args: exactArgs(1, "dump needs one MODEL file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.format != "csv" {
				return usagef("dump writes csv only; --format %q is not supported", f.format)
			}
			l, err := f.open(args[0])
			if err != nil {
				return err
			}
			defer l.close()
			ids, err := f.prompt(l)
			if err != nil {
				return err
			}
			res, err := l.sess.Run(ids)
			if err != nil {
				return err
			}
			out, err := openOutput(f.out)
			if err != nil {
				return err
			}
			if err := writeAttentionCSV(out, res, l.labels(ids), layer, head); err != nil {
				out.abort()
				return err
			}
			return out.commit()
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&layer, "layer", -1, "only this layer (default: all)")
	cmd.Flags().IntVar(&head, "head", -1, "only this head (default: all)")
	return cmd
}

// writeAttentionCSV writes the dump CSV. Weights are printed with the fewest digits that
// read back as the same float32.
func writeAttentionCSV(w *output, res *session.Result, labels []string, onlyLayer, onlyHead int) error {
	if onlyLayer >= len(res.Attn) {
		return usagef("--layer %d does not exist; the model has %d layers (0…%d)", onlyLayer, len(res.Attn), len(res.Attn)-1)
	}
	quoted := make([]string, len(labels))
	for i, l := range labels {
		quoted[i] = csvField(l)
	}
	if _, err := w.WriteString("layer,head,query,key,query_token,key_token,weight\n"); err != nil {
		return err
	}
	var buf []byte
	for l, heads := range res.Attn {
		if onlyLayer >= 0 && l != onlyLayer {
			continue
		}
		if onlyHead >= len(heads) {
			return usagef("--head %d does not exist; layer %d has %d heads", onlyHead, l, len(heads))
		}
		for h, rows := range heads {
			if onlyHead >= 0 && h != onlyHead {
				continue
			}
			for q, row := range rows {
				for k, v := range row {
					buf = buf[:0]
					buf = strconv.AppendInt(buf, int64(l), 10)
					buf = append(buf, ',')
					buf = strconv.AppendInt(buf, int64(h), 10)
					buf = append(buf, ',')
					buf = strconv.AppendInt(buf, int64(q), 10)
					buf = append(buf, ',')
					buf = strconv.AppendInt(buf, int64(k), 10)
					buf = append(buf, ',')
					buf = append(buf, tokenField(quoted, q)...)
					buf = append(buf, ',')
					buf = append(buf, tokenField(quoted, k)...)
					buf = append(buf, ',')
					buf = strconv.AppendFloat(buf, float64(v), 'g', -1, 32)
					buf = append(buf, '\n')
					if _, err := w.Write(buf); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// tokenField is the label of position i; keys beyond the prompt (a model with a longer
// key axis, e.g. cross-attention) are left empty.
func tokenField(quoted []string, i int) string {
	if i < len(quoted) {
		return quoted[i]
	}
	return ""
}

// csvField quotes s as encoding/csv would.
func csvField(s string) string {
	var b strings.Builder
	cw := csv.NewWriter(&b)
	cw.Write([]string{s})
	cw.Flush()
	return strings.TrimSuffix(b.String(), "\n")
}

// exactArgs is cobra.ExactArgs with a usage error in our words.
func exactArgs(n int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s (see `%s --help`)", msg, cmd.CommandPath())
		}
		return nil
	}
}
