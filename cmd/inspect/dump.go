package main

import (
	"encoding/csv"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/result"
)

func newDumpCmd() *cobra.Command {
	var f runFlags
	var layer, head int
	var png string
	cmd := &cobra.Command{
		Use:   "dump MODEL (--text TEXT | --text-file FILE | --ids 1,2,3) [--target TEXT | --target-ids 1,2,3]",
		Short: "Print every head's attention weights as CSV",
		Long: `dump runs the model on the prompt and prints one CSV row per (layer, head, query, key):
layer,head,query,key,query_token,key_token,weight

For an encoder–decoder the prompt is the source and --target (or --target-ids) the target;
without them the prompt is both. Encoder layers run over source positions, decoder layers
over target positions, and in cross-attention layers the query is a target position and the
key a source position, labelled with their own tokens.`,
		Args: exactArgs(1, "dump needs one MODEL file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.format != "csv" {
				return usagef("dump writes csv only; --format %q is not supported", f.format)
			}
			l, ids, res, err := f.openAndRun(args[0])
			if err != nil {
				return err
			}
			defer l.close()
			if png != "" {
				if err := writePNG(png, l, res, ids, layer, head); err != nil {
					return err
				}
				if f.out == "" {
					return nil // the picture was asked for; the CSV only with --out
				}
			}
			out, err := openOutput(f.out)
			if err != nil {
				return err
			}
			if err := writeAttentionCSV(out, res, l.labels, layer, head); err != nil {
				out.abort()
				return err
			}
			return out.commit()
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&png, "png", "", "save a PNG instead of printing CSV (CSV too with --out): the head given by --layer and --head, else every head as a grid")
	cmd.Flags().IntVar(&layer, "layer", -1, "only this layer (default: all)")
	cmd.Flags().IntVar(&head, "head", -1, "only this head (default: all)")
	return cmd
}

// writeAttentionCSV writes the dump CSV, labelling each layer's queries and keys with the
// tokens of the sequence they run over (res.QueryTokens, res.KeyTokens: in cross-attention
// target tokens for queries, source tokens for keys). Weights are printed with the fewest
// digits that read back as the same float32.
func writeAttentionCSV(w *output, res *result.Result, labels func([]int64) []string, onlyLayer, onlyHead int) error {
	if onlyLayer >= len(res.Attn) {
		return usagef("--layer %d does not exist; the model has %d layers (0…%d)", onlyLayer, len(res.Attn), len(res.Attn)-1)
	}
	quotedLabels := memoLabels(func(ids []int64) []string {
		var quoted []string
		for _, l := range labels(ids) {
			quoted = append(quoted, csvField(l))
		}
		return quoted
	})
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
		queries, keys := quotedLabels(res.QueryTokens(l)), quotedLabels(res.KeyTokens(l))
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
					buf = append(buf, tokenField(queries, q)...)
					buf = append(buf, ',')
					buf = append(buf, tokenField(keys, k)...)
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

// memoLabels returns labels that computes each distinct sequence's labels once (a result's
// layers share their Tokens and Source slices).
func memoLabels(labels func([]int64) []string) func([]int64) []string {
	type key struct {
		first *int64
		n     int
	}
	cache := map[key][]string{}
	return func(ids []int64) []string {
		if len(ids) == 0 {
			return nil
		}
		k := key{&ids[0], len(ids)}
		if out, ok := cache[k]; ok {
			return out
		}
		out := labels(ids)
		cache[k] = out
		return out
	}
}

// tokenField is the label of position i; positions beyond the labelled tokens (a map
// whose axis is longer than its sequence, from given tensors) are left empty.
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

// writePNG saves one head (layer and head both given) or the whole grid as a PNG, atomically.
func writePNG(path string, l *loaded, res *result.Result, ids []int64, layer, head int) error {
	title := fmt.Sprintf("%s — %d tokens", filepath.Base(l.model.Path), len(ids))
	out, err := openOutput(path)
	if err != nil {
		return err
	}
	switch {
	case layer >= 0 && head >= 0:
		if layer >= len(res.Attn) || head >= res.Heads(layer) {
			out.abort()
			return usagef("L%dH%d does not exist; the model has %d layers of %d heads", layer, head, len(res.Attn), res.Heads(0))
		}
		err = heatmap.WritePNG(out, heatmap.Figure{Title: fmt.Sprintf("%s — L%dH%d", title, layer, head),
			Matrix: res.Attn[layer][head], QueryLabels: l.labels(res.QueryTokens(layer)), KeyLabels: l.labels(res.KeyTokens(layer)), Scale: heatmap.Sqrt})
	case layer >= 0 || head >= 0:
		err = usagef("--png draws one head when both --layer and --head are given, else the whole grid")
	default:
		err = heatmap.WriteGridPNG(out, heatmap.GridFigure{Title: title, Attn: res.Attn, Scale: heatmap.Sqrt})
	}
	if err != nil {
		out.abort()
		return err
	}
	return out.commit()
}
