package main

import (
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
	"github.com/attnscope/attnscope/tableio"
)

func newDumpCmd() *cobra.Command {
	var f runFlags
	var flt dumpFilter
	var png string
	cmd := &cobra.Command{
		Use:   "dump [MODEL] (--text TEXT | --text-file FILE | --ids 1,2,3) [--target TEXT | --target-ids 1,2,3]",
		Short: "Print every head's attention weights as CSV (or npz, Parquet, JSON)",
		Long: `dump runs the model on the prompt and prints one CSV row per (layer, head, query, key):
layer,head,query,key,query_token,key_token,weight,query_id,key_id

For an encoder–decoder the prompt is the source and --target (or --target-ids) the target;
without them the prompt is both. Encoder layers run over source positions, decoder layers
over target positions, and in cross-attention layers the query is a target position and the
key a source position, labelled with their own tokens.

query_id and key_id are the token ids of the query and key positions (last, so that readers
by column name of the older seven columns keep working). --format parquet (or --out FILE.parquet) writes the same columns, one row group per layer,
token columns dictionary-encoded; --format json one document with dense [head][query][key]
weights per layer; --format npz (or --out FILE.npz) numpy arrays: ids, tokens (target_ids,
target_tokens for an encoder–decoder), layers, layer_kinds, and per layer attn.L{n}, float32
[heads, queries, keys] (cross-attention: [heads, target, source]).

Long prompts: --causal-only drops the masked keys after the query (key > query) in causal
self-attention layers (an encoder's self-attention and cross-attention, where nothing is
masked, are written whole); --min-weight W keeps weights of at least W; --top-k K keeps
each query row's K largest weights. They apply to csv, parquet and json; npz arrays are
always dense, so they are refused there.

--layer and --head take lists and ranges (0,3-5). Only the chosen layers are exposed and
run for their attention, so memory follows them; --head filters the rows (every head of a
chosen layer is computed anyway). --max-memory SIZE (default: a quarter of the machine's
memory) refuses a prompt whose outputs would not fit, saying which --layer would.`,
		Args: modelArgs("dump"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.resolveFormat("dump", tableFormats...); err != nil {
				return err
			}
			if err := flt.check(cmd, f.format); err != nil {
				return err
			}
			only, err := f.sel.parse()
			if err != nil {
				return err
			}
			return runDump(firstArg(args), &f, png, only, flt.Filter)
		},
	}
	f.register(cmd)
	f.registerOutput(cmd, formatUsage(""), "csv")
	flt.register(cmd)
	cmd.Flags().StringVar(&png, "png", "", "save a picture instead of printing CSV (CSV too with --out): the head given by --layer and --head, else every head as a grid; FILE.png is a PNG, FILE.svg an SVG")
	f.sel.register(cmd)
	return cmd
}

// runDump runs the model at path on the prompt and writes the CSV (stdout or --out)
// and, when png is given, the picture of the chosen head or of all of them.
func runDump(path string, f *runFlags, png string, only selection, flt tableio.Filter) error {
	var format pictureFormat
	if png != "" {
		var err error
		if format, err = pictureFormatOf(png); err != nil {
			return err
		}
	}
	if _, _, one := only.one(); png != "" && only.heads != nil && !one {
		return usagef("--png draws one head when --layer and --head each name one, else the grid of every head of the --layer layers")
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
	a := attentionOf(res, l.labels, only)
	if flt.CausalOnly {
		for _, L := range a.Layers {
			if L.Kind == tableio.Self && !L.Causal {
				notice("--causal-only: layer %d attends to later positions (nothing is masked, as in an encoder), so its rows are written whole", L.Layer)
				break
			}
		}
	}
	if err := tableio.WriteAttention(csvOut, tableio.Format(f.format), a, flt); err != nil {
		return err
	}
	return csvOut.Commit()
}

// dumpFilter is dump's --causal-only, --min-weight and --top-k.
type dumpFilter struct{ tableio.Filter }

func (d *dumpFilter) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&d.CausalOnly, "causal-only", false, "drop the masked keys after the query (key > query) in causal self-attention layers; encoder and cross-attention layers are written whole")
	fl.Float32Var(&d.MinWeight, "min-weight", 0, "keep only weights of at least this (csv, parquet, json)")
	fl.IntVar(&d.TopK, "top-k", 0, "keep only each query row's K largest weights, in key order (csv, parquet, json; 0: all)")
}

// check refuses a negative --min-weight or --top-k, and any of the filters for npz, whose
// arrays are dense.
func (d *dumpFilter) check(cmd *cobra.Command, format string) error {
	if d.MinWeight < 0 || d.MinWeight != d.MinWeight {
		return usagef("--min-weight must be a weight of 0 or more, not %v", d.MinWeight)
	}
	if d.TopK < 0 {
		return usagef("--top-k must be 1 or more (0, the default, keeps every key), not %d", d.TopK)
	}
	if format == string(tableio.NPZ) {
		for _, name := range []string{"causal-only", "min-weight", "top-k"} {
			if cmd.Flags().Changed(name) {
				return usagef("--%s shrinks csv, parquet and json dumps; npz holds dense [heads, queries, keys] arrays, so leave --%s out (or mask them in numpy, e.g. np.tril)", name, name)
			}
		}
	}
	return nil
}

// attentionOf is the dump of res: the layers and heads only chose (a layer the session did
// not expose is left out), each axis labelled with the tokens of the sequence it runs over
// (res.QueryTokens, res.KeyTokens: in cross-attention target tokens for queries, source
// tokens for keys). A target-side self-attention layer is Causal when every weight above
// its diagonal is 0 in every head (a decoder's mask).
func attentionOf(res *result.Result, labels func([]int64) []string, only selection) *tableio.Attention {
	labels = tableio.Memo(labels)
	a := &tableio.Attention{IDs: res.Tokens, Tokens: labels(res.Tokens)}
	if res.Source != nil {
		a.IDs, a.Tokens = res.Source, labels(res.Source)
		a.TargetIDs, a.TargetTokens = res.Tokens, labels(res.Tokens)
		if a.TargetTokens == nil {
			a.TargetTokens = []string{}
		}
	}
	for l, heads := range res.Attn {
		if !only.layer(l) || heads == nil { // a layer not exposed (--layer) has no maps
			continue
		}
		L := tableio.Layer{Layer: l, Kind: tableio.Self,
			QueryIDs: res.QueryTokens(l), KeyIDs: res.KeyTokens(l),
			QueryTokens: labels(res.QueryTokens(l)), KeyTokens: labels(res.KeyTokens(l))}
		switch {
		case res.Cross(l):
			L.Kind = tableio.Cross
		case res.QuerySide(l) == result.SourceSide:
			L.Kind = tableio.Encoder
		}
		for h, rows := range heads {
			if only.head(h) {
				L.Heads = append(L.Heads, h)
				L.Maps = append(L.Maps, rows)
			}
		}
		L.Causal = L.Kind == tableio.Self && upperZero(heads)
		a.Layers = append(a.Layers, L)
	}
	return a
}

// upperZero reports whether every weight above the diagonal is 0 in every head.
func upperZero(heads [][][]float32) bool {
	for _, rows := range heads {
		for q, row := range rows {
			for _, v := range row[min(q+1, len(row)):] {
				if v != 0 {
					return false
				}
			}
		}
	}
	return true
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
	if layer, head, one := only.one(); one {
		m := res.Attn[layer][head]
		qName, kName := heatmap.AxisNames(res.Cross(layer))
		fig := heatmap.Figure{
			Title:    headTitle(model, res, layer, head),
			Subtitle: fmt.Sprintf("%s%d tokens; %s", prompt, len(res.Tokens), headScoresLine(res, layer, head)),
			Matrix:   m, QueryLabels: l.labels(res.QueryTokens(layer)), KeyLabels: l.labels(res.KeyTokens(layer)),
			QueryAxis: qName, KeyAxis: kName, Scale: heatmap.Sqrt,
		}
		if res.Source != nil {
			fig.Subtitle = fmt.Sprintf("%s%d source, %d target tokens; %s", prompt, len(res.Source), len(res.Tokens), headScoresLine(res, layer, head))
		}
		write := heatmap.WritePNG
		if format == formatSVG {
			write = heatmap.WriteSVG
		}
		cols := 0
		if len(m) > 0 {
			cols = len(m[0])
		}
		return fmt.Sprintf("L%dH%d, %d×%d", layer, head, len(m), cols), write(w, fig)
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
	return fmt.Sprintf("grid, %d layers × %d heads", len(res.Layers()), heads), write(w, fig)
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
