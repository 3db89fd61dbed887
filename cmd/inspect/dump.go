package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/internal/outfile"
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
			only, err := layerHead(cmd, layer, head)
			if err != nil {
				return err
			}
			return runDump(args[0], &f, png, only)
		},
	}
	f.register(cmd)
	f.registerOutput(cmd, "output format: csv", "csv")
	cmd.Flags().StringVar(&png, "png", "", "save a picture instead of printing CSV (CSV too with --out): the head given by --layer and --head, else every head as a grid; FILE.png is a PNG, FILE.svg an SVG")
	cmd.Flags().IntVar(&layer, "layer", 0, "only this layer (default: all)")
	cmd.Flags().IntVar(&head, "head", 0, "only this head (default: all)")
	return cmd
}

// runDump runs the model at path on the prompt and writes the CSV (stdout or --out)
// and, when png is given, the picture of the chosen head or of all of them.
func runDump(path string, f *runFlags, png string, only selection) error {
	var format pictureFormat
	if png != "" {
		var err error
		if format, err = pictureFormatOf(png); err != nil {
			return err
		}
	}
	if png != "" && (only.layer >= 0) != (only.head >= 0) {
		return usagef("--png draws one head when both --layer and --head are given, else the whole grid")
	}
	if png != "" && f.out != "" && filepath.Clean(png) == filepath.Clean(f.out) {
		return usagef("--png and --out name the same file %s; give each its own", png)
	}
	l, err := f.open(path)
	if err != nil {
		return err
	}
	defer l.close()
	// Outputs are opened before the run, so that a refused path costs no run.
	inputs := f.inputs(l.model)
	var pngOut, csvOut output
	if png != "" {
		if pngOut, err = openOutput("--png", png, inputs); err != nil {
			return err
		}
		defer pngOut.Abort()
	}
	if png == "" || f.out != "" { // with --png, the CSV only with --out
		// The picture, when it exists already (or is a hard link), is as much the user's as
		// the model; a new one is caught by comparing where both would land.
		if png != "" {
			inputs = append(inputs, input{"the --png picture", png})
		}
		if csvOut, err = openOutput("--out", f.out, inputs); err != nil {
			return err
		}
		defer csvOut.Abort()
		if sameTarget(pngOut, csvOut) {
			return usagef("--png and --out name the same file %s; give each its own", png)
		}
	}
	res, err := f.runAndWarn(l)
	if err != nil {
		return err
	}
	if err := only.check(res); err != nil {
		return err
	}
	if pngOut != nil {
		what, err := writePicture(pngOut, format, modelTitle(l.model.Path), promptLine(f), l, res, only)
		if err != nil {
			return err
		}
		if err := pngOut.Commit(); err != nil {
			return err
		}
		if png != "-" {
			fmt.Fprintf(os.Stderr, "inspect: wrote %s (%s)\n", png, what)
		}
	}
	if csvOut == nil {
		return nil
	}
	if err := writeAttentionCSV(csvOut, res, l.labels, only); err != nil {
		return err
	}
	return csvOut.Commit()
}

// selection is the layer and head --layer and --head chose; −1 means all.
type selection struct{ layer, head int }

// layerHead reads --layer and --head: all (−1) when not given, a usage error when given
// negative.
func layerHead(cmd *cobra.Command, layer, head int) (selection, error) {
	sel := selection{-1, -1}
	if cmd.Flags().Changed("layer") {
		if layer < 0 {
			return sel, usagef("--layer %d is not a layer; layers are numbered from 0 (leave --layer out for all)", layer)
		}
		sel.layer = layer
	}
	if cmd.Flags().Changed("head") {
		if head < 0 {
			return sel, usagef("--head %d is not a head; heads are numbered from 0 (leave --head out for all)", head)
		}
		sel.head = head
	}
	return sel, nil
}

// check refuses a layer or head the result does not have.
func (s selection) check(res *result.Result) error {
	if s.layer >= len(res.Attn) {
		return usagef("--layer %d does not exist; the model has %d layers (0…%d)", s.layer, len(res.Attn), len(res.Attn)-1)
	}
	for l := range res.Attn {
		if (s.layer < 0 || l == s.layer) && s.head >= res.Heads(l) {
			return usagef("--head %d does not exist; layer %d has %d heads (0…%d)", s.head, l, res.Heads(l), res.Heads(l)-1)
		}
	}
	return nil
}

// writeAttentionCSV writes the dump CSV, labelling each layer's queries and keys with the
// tokens of the sequence they run over (res.QueryTokens, res.KeyTokens: in cross-attention
// target tokens for queries, source tokens for keys). Weights are printed with the fewest
// digits that read back as the same float32.
func writeAttentionCSV(w io.Writer, res *result.Result, labels func([]int64) []string, only selection) error {
	quotedLabels := memoLabels(func(ids []int64) []string {
		var quoted []string
		for _, l := range labels(ids) {
			quoted = append(quoted, csvField(l))
		}
		return quoted
	})
	if _, err := io.WriteString(w, "layer,head,query,key,query_token,key_token,weight\n"); err != nil {
		return err
	}
	var buf []byte
	for l, heads := range res.Attn {
		if only.layer >= 0 && l != only.layer {
			continue
		}
		queries, keys := quotedLabels(res.QueryTokens(l)), quotedLabels(res.KeyTokens(l))
		for h, rows := range heads {
			if only.head >= 0 && h != only.head {
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

// pictureFormat is the kind of picture --png writes.
type pictureFormat int

const (
	formatPNG pictureFormat = iota
	formatSVG
)

// pictureFormatOf reads the picture's format from its file name's extension: .png or .svg
// (either case); "-", stdout, is PNG. Any other name is a usage error, found before the
// model runs.
func pictureFormatOf(path string) (pictureFormat, error) {
	if path == "-" {
		return formatPNG, nil
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		return formatPNG, nil
	case ".svg":
		return formatSVG, nil
	}
	ext := filepath.Ext(path)
	if ext == "" {
		return 0, usagef("--png %s has no extension to choose the picture's format by; name it FILE.png for a PNG or FILE.svg for an SVG", path)
	}
	return 0, usagef("--png %s: %s pictures are not supported; name the file .png for a PNG or .svg for an SVG", path, ext)
}

// modelTitle names the model in a picture's title: config.json's "model" (or "name")
// beside the model when it has one, else the model's folder when the file is the usual
// model.onnx, else the file's name without .onnx.
func modelTitle(path string) string {
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "config.json")); err == nil {
		var cfg struct{ Model, Name any }
		if json.Unmarshal(b, &cfg) == nil {
			for _, v := range []any{cfg.Model, cfg.Name} {
				if s, ok := v.(string); ok && strings.TrimSpace(s) != "" {
					return strings.TrimSpace(s)
				}
			}
		}
	}
	base := filepath.Base(path)
	if dir := filepath.Base(filepath.Dir(path)); strings.EqualFold(base, "model.onnx") && dir != "." && dir != string(filepath.Separator) {
		return dir
	}
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// headTitle is a single head's title: "attn2l · L1 H0 · self-attention (query × key)".
func headTitle(model string, res *result.Result, layer, head int) string {
	kind := "self-attention (query × key)"
	if res.Cross(layer) {
		kind = "cross-attention (target × source)"
	} else if res.QuerySide(layer) == result.SourceSide {
		kind = "encoder self-attention (query × key)"
	}
	return fmt.Sprintf("%s · L%d H%d · %s", model, layer, head, kind)
}

// headScoresLine lists a head's text scores for its picture's subtitle.
func headScoresLine(res *result.Result, layer, head int) string {
	a := res.Attn[layer][head]
	var parts []string
	if res.OneSequence(layer) {
		parts = append(parts, fmt.Sprintf("%s %.2f", analysis.PrevToken, analysis.PrevTokenScore(a)), fmt.Sprintf("%s %.2f", analysis.Self, analysis.SelfScore(a)))
	}
	parts = append(parts, fmt.Sprintf("%s %.2f", analysis.FirstToken, analysis.FirstTokenScore(a)), fmt.Sprintf("%s %.2f", analysis.Entropy, analysis.EntropyScore(a)))
	return "scores: " + strings.Join(parts, ", ")
}

// promptLine is the prompt as the picture's subtitle starts with it: quoted, cut to 60
// characters with …, and followed by "; " ("" without a prompt text).
func promptLine(f *runFlags) string {
	p := f.promptText()
	if p == "" {
		return ""
	}
	return strconv.Quote(heatmap.Cut(p, 60)) + "; "
}

// writePicture draws one head (layer and head both chosen) or the whole grid on w, as PNG
// or SVG, and says what it drew ("L1H0, 12×12", "grid, 2 layers × 4 heads") for the
// "wrote" line.
func writePicture(w io.Writer, format pictureFormat, model, prompt string, l *loaded, res *result.Result, only selection) (string, error) {
	if only.layer >= 0 && only.head >= 0 {
		m := res.Attn[only.layer][only.head]
		qName, kName := heatmap.AxisNames(res.Cross(only.layer))
		fig := heatmap.Figure{
			Title:    headTitle(model, res, only.layer, only.head),
			Subtitle: fmt.Sprintf("%s%d tokens; %s", prompt, len(res.Tokens), headScoresLine(res, only.layer, only.head)),
			Matrix:   m, QueryLabels: l.labels(res.QueryTokens(only.layer)), KeyLabels: l.labels(res.KeyTokens(only.layer)),
			QueryAxis: qName, KeyAxis: kName, Scale: heatmap.Sqrt,
		}
		if res.Source != nil {
			fig.Subtitle = fmt.Sprintf("%s%d source, %d target tokens; %s", prompt, len(res.Source), len(res.Tokens), headScoresLine(res, only.layer, only.head))
		}
		write := heatmap.WritePNG
		if format == formatSVG {
			write = heatmap.WriteSVG
		}
		cols := 0
		if len(m) > 0 {
			cols = len(m[0])
		}
		return fmt.Sprintf("L%dH%d, %d×%d", only.layer, only.head, len(m), cols), write(w, fig)
	}
	cross := make([]bool, len(res.Attn))
	heads := 0
	for i := range cross {
		cross[i] = res.Cross(i)
		heads = max(heads, res.Heads(i))
	}
	tokens := fmt.Sprintf("%d tokens", len(res.Tokens))
	if res.Source != nil {
		tokens = fmt.Sprintf("%d source, %d target tokens", len(res.Source), len(res.Tokens))
	}
	fig := heatmap.GridFigure{Title: fmt.Sprintf("%s · every head · %s", model, tokens), Subtitle: strings.TrimSuffix(prompt, "; "), Attn: res.Attn, Cross: cross, Scale: heatmap.Sqrt}
	write := heatmap.WriteGridPNG
	if format == formatSVG {
		write = heatmap.WriteGridSVG
	}
	return fmt.Sprintf("grid, %d layers × %d heads", len(res.Attn), heads), write(w, fig)
}

// sameTarget reports whether two outputs would end in the same file (their resolved
// paths: "d/../a.png", "./a.png" and a link to it are one file).
func sameTarget(a, b output) bool {
	fa, okA := a.(*outfile.File)
	fb, okB := b.(*outfile.File)
	if !okA || !okB {
		return false
	}
	pa, errA := filepath.Abs(fa.Path())
	pb, errB := filepath.Abs(fb.Path())
	return errA == nil && errB == nil && pa == pb
}
