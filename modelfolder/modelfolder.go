// Package modelfolder resolves a MODEL argument — an .onnx file, or a folder laid out as
// exporters and the Hugging Face Hub lay out ONNX models — to the file (or, for a split
// encoder–decoder, the two files) to run, and finds the tokenizer.json and config.json
// that go with it.
//
// In a folder, the model is looked for in the folder itself, then in its onnx/ subfolder
// (the Hub's layout, with config.json and tokenizer.json one level up). Of the files there,
// the first in this order is chosen:
//
//  1. model.onnx
//  2. decoder_model_merged.onnx, then decoder_model.onnx — run together with
//     encoder_model.onnx as one encoder–decoder when that file is beside them (optimum's
//     layout for T5, BART, Marian, Whisper), else alone (a decoder-only language model)
//  3. encoder_model.onnx alone
//
// and, for each of these names, its variants in the order "" (full precision), _fp32,
// _fp16, _optimized, _quantized, _int8, _uint8, _q8, _q4, _q4f16, _bnb4
// (model_fp16.onnx, decoder_model_merged_quantized.onnx…): the closest to the trained
// weights first; optimized graphs may fuse attention where it cannot be seen. A split
// decoder's variant takes the encoder of the same variant when there is one.
// The folder itself is searched first: a named model there wins over the onnx/ subfolder's,
// and one in onnx/ wins over a top-level file of another name (every file not chosen is
// named in Notice). decoder_with_past_model.onnx (which needs past state) is never chosen
// by itself, not even as a folder's only model. A folder (with its onnx/ subfolder) whose
// one .onnx file has another name uses it; a folder whose several .onnx files follow none
// of these names is refused, naming them. Any file can be picked with an explicit name
// (the CLI's --file NAME). A decoder_model*.onnx given as a file path rather than a folder
// runs alone (see Resolve).
package modelfolder

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/timeline"
)

// Stems are the model names in the order they are chosen (see the package comment).
var Stems = []string{"model", "decoder_model_merged", "decoder_model", "encoder_model"}

// Variants are the suffixes of a stem's variants, in the order they are chosen.
var Variants = []string{"", "_fp32", "_fp16", "_optimized", "_quantized", "_int8", "_uint8", "_q8", "_q4", "_q4f16", "_bnb4"}

// Model is what a MODEL argument resolved to.
type Model struct {
	// Path is the .onnx file to run: a split encoder–decoder's decoder.
	Path string
	// Encoder is a split encoder–decoder's encoder file; "" for a model in one file.
	Encoder string
	// EncoderBeside is, for a decoder file named as MODEL (which runs alone), the encoder
	// file beside it that its folder would join it with; "" otherwise.
	EncoderBeside string
	// Folder is the folder MODEL named; "" when MODEL was a file.
	Folder string
	// Others are the other .onnx files that could have been chosen (paths relative to
	// Folder), when the choice was made by the order; nil when there was no choice.
	Others []string
	// Tokenizer is the tokenizer.json beside the model or in the folder above it (the
	// Hub's layout, a training timeline's step); "" when there is none.
	Tokenizer string
	// ConfigPath is the config.json found the same way ("" when none), and Config what it
	// says (nil when none).
	ConfigPath string
	Config     *Config
}

// Config is what attnscope reads of a Hugging Face config.json.
type Config struct {
	// ModelType is model_type ("gpt2", "bart", "t5"…); "" when absent.
	ModelType string
	// Vocab is vocab_size; 0 when absent.
	Vocab int
	// Positions is max_position_embeddings, n_positions or n_ctx (the first given); 0
	// when absent.
	Positions int
	// EncoderDecoder is is_encoder_decoder.
	EncoderDecoder bool
}

// Split reports whether the model is an encoder–decoder exported as two files.
func (m *Model) Split() bool { return m.Encoder != "" }

// Notice is the line to tell the user which file was chosen, when there was a choice or
// two files run as one; "" otherwise.
func (m *Model) Notice() string {
	what := ""
	if m.Config != nil && m.Config.ModelType != "" {
		what = " (" + m.Config.ModelType + ")"
	}
	using := "using " + m.rel(m.Path)
	if m.Split() {
		using = fmt.Sprintf("running %s and %s as one encoder–decoder", m.rel(m.Encoder), m.rel(m.Path))
	}
	switch {
	case m.EncoderBeside != "":
		return fmt.Sprintf("running %s alone, as a decoder fed encoder_hidden_states by --input (give its folder to run it with %s as one encoder–decoder)", m.Path, filepath.Base(m.EncoderBeside))
	case len(m.Others) > 0:
		return fmt.Sprintf("%s%s holds several models; %s (the others: %s; --file NAME picks one)", m.Folder, what, using, strings.Join(m.Others, ", "))
	case m.Split():
		return fmt.Sprintf("%s%s: %s", m.displayDir(), what, using)
	}
	return ""
}

func (m *Model) displayDir() string {
	if m.Folder != "" {
		return m.Folder
	}
	return filepath.Dir(m.Path)
}

// rel is path relative to the folder MODEL named (or the file's folder).
func (m *Model) rel(path string) string {
	if r, err := filepath.Rel(m.displayDir(), path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// Resolve resolves path (an .onnx file or a folder) and, for a folder, file (a name
// inside it or its onnx/ subfolder that overrides the order; "" for none). A file named
// as path runs alone, whatever its name: a decoder_model*.onnx named so is the decoder by
// itself (its encoder_hidden_states come from elsewhere), while the folder, or --file
// decoder_model*.onnx, joins it with the encoder_model.onnx beside it. Every error is one
// sentence.
func Resolve(path, file string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("model file %s does not exist", path)
		}
		return nil, fmt.Errorf("cannot read model %s: %v", path, err)
	}
	m := &Model{}
	if !st.IsDir() {
		if file != "" {
			return nil, fmt.Errorf("--file picks a model inside a folder, but %s is a file; give its folder, or the file you mean as MODEL", path)
		}
		m.Path = path
		// A decoder named as a file runs alone (its encoder_hidden_states given with the
		// CLI's --input); its folder, or --file, runs it with its encoder.
		if stem, variant, ok := split(filepath.Base(path)); ok && strings.HasPrefix(stem, "decoder_model") {
			m.EncoderBeside = encoderFor(filepath.Dir(path), variant)
		}
	} else {
		m.Folder = path
		if err := m.choose(file); err != nil {
			return nil, err
		}
	}
	m.findFiles()
	if m.ConfigPath != "" {
		cfg, err := ReadConfig(m.ConfigPath)
		if err != nil {
			return nil, err
		}
		m.Config = cfg
	}
	return m, nil
}

// choose picks the model file of m.Folder (see the package comment).
func (m *Model) choose(file string) error {
	dirs := []string{m.Folder, filepath.Join(m.Folder, "onnx")}
	if file != "" {
		for _, d := range dirs {
			p := filepath.Join(d, file)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				m.Path = p
				if stem, variant, ok := split(filepath.Base(p)); ok && strings.HasPrefix(stem, "decoder_model") && stem != "decoder_with_past_model" {
					m.Encoder = encoderFor(filepath.Dir(p), variant)
				}
				return nil
			}
		}
		all := m.onnxFiles(dirs)
		if len(all) == 0 {
			return fmt.Errorf("--file %s: %s holds no such file, and no .onnx model at all", file, m.Folder)
		}
		return fmt.Errorf("--file %s: %s holds no such file; its models are %s", file, m.Folder, strings.Join(all, ", "))
	}
	all := m.onnxFiles(dirs) // both folders' models, relative to m.Folder
	if len(all) == 0 {
		return fmt.Errorf("%s holds no .onnx model (looked in it and in its onnx/ subfolder); give the model file", m.Folder)
	}
	for _, d := range dirs {
		best, ok := pick(onnxNames(d))
		if !ok {
			continue
		}
		m.Path = filepath.Join(d, best)
		if stem, variant, _ := split(best); strings.HasPrefix(stem, "decoder_model") {
			m.Encoder = encoderFor(d, variant)
		}
		for _, n := range all {
			if p := filepath.Join(m.Folder, n); p != m.Path && p != m.Encoder {
				m.Others = append(m.Others, n)
			}
		}
		return nil
	}
	if len(all) == 1 {
		if stem, _, _ := split(filepath.Base(all[0])); stem == "decoder_with_past_model" {
			return fmt.Errorf("%s holds only %s, which needs past state and is never chosen by itself; give it with --file %s to run it anyway", m.Folder, all[0], filepath.Base(all[0]))
		}
		m.Path = filepath.Join(m.Folder, all[0])
		return nil
	}
	return fmt.Errorf("%s holds several .onnx models (%s) and none of the names attnscope chooses by (model.onnx, decoder_model_merged.onnx, decoder_model.onnx, encoder_model.onnx and their _fp16, _quantized… variants); pick one with --file NAME", m.Folder, strings.Join(all, ", "))
}

// onnxFiles are the .onnx files in dirs, relative to m.Folder.
func (m *Model) onnxFiles(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		for _, n := range onnxNames(d) {
			r, _ := filepath.Rel(m.Folder, filepath.Join(d, n))
			out = append(out, r)
		}
	}
	return out
}

// onnxNames are the names of the .onnx files in dir, sorted.
func onnxNames(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(strings.ToLower(e.Name()), ".onnx") {
			if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && !st.IsDir() {
				names = append(names, e.Name())
			}
		}
	}
	slices.Sort(names)
	return names
}

// pick returns the first of names in the order of Stems and Variants. An
// encoder_model.onnx is picked only when no decoder is there.
func pick(names []string) (string, bool) {
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, stem := range Stems {
		for _, v := range Variants {
			if n := stem + v + ".onnx"; have[n] {
				return n, true
			}
		}
	}
	return "", false
}

// split parses name as one of Stems (or decoder_with_past_model) and one of Variants.
func split(name string) (stem, variant string, ok bool) {
	base, found := strings.CutSuffix(name, ".onnx")
	if !found {
		return "", "", false
	}
	stems := append(slices.Clone(Stems), "decoder_with_past_model")
	// Longest stems first: decoder_model_merged before decoder_model.
	slices.SortFunc(stems, func(a, b string) int { return len(b) - len(a) })
	for _, s := range stems {
		if rest, ok := strings.CutPrefix(base, s); ok && slices.Contains(Variants, rest) {
			return s, rest, true
		}
	}
	return "", "", false
}

// encoderFor is the encoder beside a split decoder of the given variant: the encoder of
// the same variant, else encoder_model.onnx; "" when there is none.
func encoderFor(dir, variant string) string {
	for _, n := range []string{"encoder_model" + variant + ".onnx", "encoder_model.onnx"} {
		p := filepath.Join(dir, n)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// findFiles looks for tokenizer.json and config.json beside the model, then in the
// folder MODEL named, then — for a model in an onnx/ subfolder or in a step folder of a
// training timeline (package timeline) — in the folder above.
func (m *Model) findFiles() {
	dir := filepath.Dir(m.Path)
	dirs := []string{dir}
	if m.Folder != "" && filepath.Clean(m.Folder) != filepath.Clean(dir) {
		dirs = append(dirs, m.Folder)
	}
	if up := filepath.Dir(dir); (filepath.Base(dir) == "onnx" || timeline.IsTimeline(up)) && !slices.Contains(dirs, up) {
		dirs = append(dirs, up) // the Hub's layout, or a training timeline's step
	}
	find := func(name string) string {
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
		return ""
	}
	m.Tokenizer = find("tokenizer.json")
	m.ConfigPath = find("config.json")
}

// ReadConfig reads what attnscope uses of a config.json (see Config). attnscope's own
// exports write n_positions and vocab_size under the same names. A file that is not a
// JSON object is an error of one sentence.
func ReadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object (%v); fix or remove it", path, err)
	}
	c := &Config{}
	c.ModelType, _ = raw["model_type"].(string)
	c.Vocab = intField(raw, "vocab_size")
	for _, k := range []string{"max_position_embeddings", "n_positions", "n_ctx"} {
		if v := intField(raw, k); v > 0 {
			c.Positions = v
			break
		}
	}
	c.EncoderDecoder, _ = raw["is_encoder_decoder"].(bool)
	return c, nil
}

// intField is raw[key] when it is a positive whole number below 2³¹, else 0.
func intField(raw map[string]any, key string) int {
	f, ok := raw[key].(float64)
	if !ok || f <= 0 || f != float64(int64(f)) || f >= 1<<31 {
		return 0
	}
	return int(f)
}

// Limits are the graph's limits (onnxgraph.ModelLimits) completed by config.json: its
// vocabulary where the graph does not tell one; its positions where the graph does not,
// or where they are fewer than the graph's table (BART's table has two rows more than
// the positions it takes).
func (c *Config) Limits(graph onnxgraph.Limits) onnxgraph.Limits {
	if c == nil {
		return graph
	}
	if graph.Vocab == 0 {
		graph.Vocab = c.Vocab
	}
	if c.Positions > 0 && (graph.Positions == 0 || c.Positions < graph.Positions) {
		graph.Positions = c.Positions
	}
	return graph
}

// Load loads the resolved model: its one file, or a split encoder–decoder's two joined
// into one graph (onnxgraph.JoinEncoderDecoder).
func Load(m *Model) (*onnxgraph.Model, error) {
	if !m.Split() {
		return onnxgraph.Load(m.Path)
	}
	enc, err := onnxgraph.Load(m.Encoder)
	if err != nil {
		return nil, err
	}
	dec, err := onnxgraph.Load(m.Path)
	if err != nil {
		return nil, err
	}
	return onnxgraph.JoinEncoderDecoder(enc, dec)
}
