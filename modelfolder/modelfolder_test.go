package modelfolder

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/onnxgraph"
)

// Folders resolve to the file the documented order picks, the encoder beside a split
// decoder, and the tokenizer and config beside the model or one level up.
func TestResolve(t *testing.T) {
	cases := []struct {
		name  string
		files []string // created empty, relative to the folder
		arg   string   // MODEL relative to the folder ("" = the folder)
		file  string   // --file
		// want: the chosen file, the encoder ("" none), the others offered, tokenizer and
		// config ("" none), relative to the folder.
		path, encoder, others, tokenizer, config string
		beside                                   string // EncoderBeside, relative
		err                                      string // a part of the error, "" for none
	}{
		{name: "model.onnx", files: []string{"model.onnx", "tokenizer.json", "config.json"},
			path: "model.onnx", tokenizer: "tokenizer.json", config: "config.json"},
		{name: "hub layout", files: []string{"config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx", "onnx/model_fp16.onnx", "onnx/model_quantized.onnx"},
			path: "onnx/model.onnx", others: "onnx/model_fp16.onnx,onnx/model_quantized.onnx", tokenizer: "tokenizer.json", config: "config.json"},
		{name: "folder before onnx/", files: []string{"model.onnx", "onnx/model.onnx"}, path: "model.onnx", others: "onnx/model.onnx"},
		{name: "variants by order", files: []string{"onnx/model_q4.onnx", "onnx/model_int8.onnx", "onnx/model_fp16.onnx"},
			path: "onnx/model_fp16.onnx", others: "onnx/model_int8.onnx,onnx/model_q4.onnx"},
		{name: "quantized before int8", files: []string{"model_int8.onnx", "model_quantized.onnx"}, path: "model_quantized.onnx", others: "model_int8.onnx"},
		{name: "split merged decoder", files: []string{"encoder_model.onnx", "decoder_model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx", "config.json"},
			path: "decoder_model_merged.onnx", encoder: "encoder_model.onnx", others: "decoder_model.onnx,decoder_with_past_model.onnx", config: "config.json"},
		{name: "split plain decoder", files: []string{"encoder_model.onnx", "decoder_model.onnx"}, path: "decoder_model.onnx", encoder: "encoder_model.onnx"},
		{name: "split variant pairs its encoder", files: []string{"onnx/encoder_model.onnx", "onnx/encoder_model_quantized.onnx", "onnx/decoder_model_merged_quantized.onnx", "tokenizer.json"},
			path: "onnx/decoder_model_merged_quantized.onnx", encoder: "onnx/encoder_model_quantized.onnx", others: "onnx/encoder_model.onnx", tokenizer: "tokenizer.json"},
		{name: "decoder alone", files: []string{"decoder_model.onnx", "decoder_with_past_model.onnx"}, path: "decoder_model.onnx", others: "decoder_with_past_model.onnx"},
		{name: "encoder alone", files: []string{"encoder_model.onnx"}, path: "encoder_model.onnx"},
		{name: "one file of any name", files: []string{"weird.onnx", "config.json"}, path: "weird.onnx", config: "config.json"},
		{name: "known name beside an unknown one", files: []string{"model.onnx", "other.onnx"}, path: "model.onnx", others: "other.onnx"},
		{name: "--file", files: []string{"onnx/model.onnx", "onnx/model_fp16.onnx"}, file: "model_fp16.onnx", path: "onnx/model_fp16.onnx"},
		{name: "--file with onnx/", files: []string{"onnx/model.onnx", "onnx/model_fp16.onnx"}, file: "onnx/model_fp16.onnx", path: "onnx/model_fp16.onnx"},
		{name: "--file a decoder", files: []string{"encoder_model.onnx", "decoder_model.onnx", "decoder_model_merged.onnx"}, file: "decoder_model.onnx", path: "decoder_model.onnx", encoder: "encoder_model.onnx"},
		{name: "--file the encoder", files: []string{"encoder_model.onnx", "decoder_model.onnx"}, file: "encoder_model.onnx", path: "encoder_model.onnx"},
		// A decoder given as a file runs alone; its notice names the encoder beside it.
		{name: "a decoder file given", files: []string{"encoder_model.onnx", "decoder_model.onnx"}, arg: "decoder_model.onnx", path: "decoder_model.onnx", beside: "encoder_model.onnx"},
		{name: "a merged decoder file given", files: []string{"onnx/encoder_model_fp16.onnx", "onnx/decoder_model_merged_fp16.onnx"}, arg: "onnx/decoder_model_merged_fp16.onnx", path: "onnx/decoder_model_merged_fp16.onnx", beside: "onnx/encoder_model_fp16.onnx"},
		{name: "a lone decoder file given", files: []string{"decoder_model.onnx"}, arg: "decoder_model.onnx", path: "decoder_model.onnx"},
		// onnx/'s named model wins over a top-level file of another name, which is listed.
		{name: "named in onnx/ over unnamed on top", files: []string{"foo.onnx", "onnx/model.onnx"}, path: "onnx/model.onnx", others: "foo.onnx"},
		{name: "unnamed in onnx/ beside named on top", files: []string{"model.onnx", "onnx/foo.onnx"}, path: "model.onnx", others: "onnx/foo.onnx"},
		{name: "one unnamed in onnx/", files: []string{"onnx/foo.onnx"}, path: "onnx/foo.onnx"},
		{name: "unnamed on top and in onnx/", files: []string{"foo.onnx", "onnx/bar.onnx"}, err: "holds several .onnx models (foo.onnx, onnx/bar.onnx) and none of the names"},
		{name: "only a with-past decoder", files: []string{"decoder_with_past_model.onnx"}, err: "holds only decoder_with_past_model.onnx, which needs past state and is never chosen by itself; give it with --file decoder_with_past_model.onnx"},
		{name: "--file a with-past decoder", files: []string{"decoder_with_past_model.onnx"}, file: "decoder_with_past_model.onnx", path: "decoder_with_past_model.onnx"},
		{name: "a file given", files: []string{"onnx/model.onnx", "tokenizer.json", "config.json"}, arg: "onnx/model.onnx", path: "onnx/model.onnx", tokenizer: "tokenizer.json", config: "config.json"},
		{name: "beside wins over above", files: []string{"onnx/model.onnx", "onnx/config.json", "config.json"}, path: "onnx/model.onnx", config: "onnx/config.json"},
		{name: "no rule to choose", files: []string{"a.onnx", "b.onnx"}, err: "holds several .onnx models (a.onnx, b.onnx) and none of the names"},
		{name: "empty folder", files: []string{"README.md"}, err: "holds no .onnx model"},
		{name: "--file missing", files: []string{"model.onnx"}, file: "model_fp16.onnx", err: "--file model_fp16.onnx: DIR holds no such file; its models are model.onnx"},
		{name: "--file on a file", files: []string{"model.onnx"}, arg: "model.onnx", file: "x.onnx", err: "--file picks a model inside a folder"},
		{name: "missing", files: []string{"model.onnx"}, arg: "nope.onnx", err: "does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range c.files {
				p := filepath.Join(dir, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				body := ""
				if filepath.Base(f) == "config.json" {
					body = "{}"
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, err := Resolve(filepath.Join(dir, c.arg), c.file)
			if c.err != "" {
				want := strings.ReplaceAll(c.err, "DIR", dir)
				if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v, want one line containing %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rel := func(p string) string {
				if p == "" {
					return ""
				}
				r, _ := filepath.Rel(dir, p)
				return r
			}
			got := []string{rel(m.Path), rel(m.Encoder), strings.Join(m.Others, ","), rel(m.Tokenizer), rel(m.ConfigPath), rel(m.EncoderBeside)}
			want := []string{c.path, c.encoder, c.others, c.tokenizer, c.config, c.beside}
			if !slices.Equal(got, want) {
				t.Errorf("path, encoder, others, tokenizer, config, encoder beside = %q, want %q", got, want)
			}
			if (m.Notice() != "") != (c.others != "" || c.encoder != "" || c.beside != "") {
				t.Errorf("notice %q", m.Notice())
			}
		})
	}
}

// The notice names the chosen file, the others and --file in one line.
func TestNotice(t *testing.T) {
	m := &Model{Folder: "hub/tiny", Path: "hub/tiny/onnx/model.onnx", Others: []string{"onnx/model_fp16.onnx"}, Config: &Config{ModelType: "gpt2"}}
	want := "hub/tiny (gpt2) holds several models; using onnx/model.onnx (the others: onnx/model_fp16.onnx; --file NAME picks one)"
	if got := m.Notice(); got != want {
		t.Errorf("notice %q, want %q", got, want)
	}
	m = &Model{Folder: "t5", Path: "t5/decoder_model_merged.onnx", Encoder: "t5/encoder_model.onnx"}
	if got, want := m.Notice(), "t5: running encoder_model.onnx and decoder_model_merged.onnx as one encoder–decoder"; got != want {
		t.Errorf("notice %q, want %q", got, want)
	}
}

// config.json gives the model type, the vocabulary and the positions under any of their
// names; it completes the graph's limits and lowers positions the graph overstates.
func TestConfig(t *testing.T) {
	cases := []struct {
		json  string
		want  Config
		graph onnxgraph.Limits
		lim   onnxgraph.Limits
		err   string
	}{
		{json: `{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_ctx":1024}`, want: Config{"gpt2", 50257, 1024, false},
			lim: onnxgraph.Limits{Vocab: 50257, Positions: 1024}},
		{json: `{"model_type":"bart","vocab_size":64,"max_position_embeddings":32,"is_encoder_decoder":true}`, want: Config{"bart", 64, 32, true},
			graph: onnxgraph.Limits{Vocab: 64, Positions: 34}, lim: onnxgraph.Limits{Vocab: 64, Positions: 32}},
		{json: `{"model_type":"t5","vocab_size":32128}`, want: Config{ModelType: "t5", Vocab: 32128},
			graph: onnxgraph.Limits{Vocab: 32100}, lim: onnxgraph.Limits{Vocab: 32100}},
		{json: `{"n_ctx":256,"vocab_size":"many"}`, want: Config{Positions: 256}, graph: onnxgraph.Limits{Positions: 512, FixedLen: 8}, lim: onnxgraph.Limits{Positions: 256, FixedLen: 8}},
		{json: `{"vocab_size":-3,"n_positions":1.5}`, want: Config{}},
		{json: `[1,2]`, err: "is not a JSON object"},
		{json: `{"vocab_size":`, err: "is not a JSON object"},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(p, []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := ReadConfig(p)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.json, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if *cfg != c.want {
			t.Errorf("%s: %+v, want %+v", c.json, *cfg, c.want)
		}
		if got := cfg.Limits(c.graph); got != c.lim {
			t.Errorf("%s: limits %+v, want %+v", c.json, got, c.lim)
		}
	}
	var none *Config
	if got := none.Limits(onnxgraph.Limits{Vocab: 5}); got.Vocab != 5 {
		t.Errorf("no config changed the limits: %+v", got)
	}
}
