package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

// modelDir makes a model folder holding model.onnx and links to the named fixture files.
func modelDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("not read"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range files {
		if strings.HasPrefix(target, "{") { // literal JSON content
			if err := os.WriteFile(filepath.Join(dir, name), []byte(target), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		abs, err := filepath.Abs(filepath.Join(sharedTokenizerDir, target))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			testutil.Skip(t, "../shared/fixtures/gpt2-tokenizer is absent: %v", err)
		}
		if err := os.Symlink(abs, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFind(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		flag       string // relative to the model folder
		modelVocab int
		wantSource string // prefix
		wantErr    string
	}{
		{name: "tokenizer.json beside the model", files: map[string]string{"tokenizer.json": "tokenizer.json"},
			wantSource: "tokenizer.json "},
		{name: "tokenizer.json wins over vocab.json+merges.txt",
			files:      map[string]string{"tokenizer.json": "tokenizer.json", "vocab.json": "vocab.json", "merges.txt": "merges.txt"},
			wantSource: "tokenizer.json "},
		{name: "vocab.json+merges.txt", files: map[string]string{"vocab.json": "vocab.json", "merges.txt": "merges.txt"},
			wantSource: "vocab.json + merges.txt in "},
		{name: "vocab.json without merges.txt falls back to GPT-2", files: map[string]string{"vocab.json": "vocab.json"},
			modelVocab: 50257, wantSource: "GPT-2 r50k_base"},
		{name: "nothing, GPT-2 sized vocabulary", modelVocab: 50257, wantSource: "GPT-2 r50k_base"},
		{name: "nothing, other vocabulary", modelVocab: 1000,
			wantErr: "no tokenizer found beside "},
		{name: "flag wins", files: map[string]string{"tokenizer.json": "tokenizer.json", "other/tokenizer.json": "alt-pykeio-ort/tokenizer.json"},
			flag: "other/tokenizer.json", wantSource: "tokenizer.json "},
		{name: "flag names a folder", files: map[string]string{"other/tokenizer.json": "alt-pykeio-ort/tokenizer.json"},
			flag: "other", wantSource: "tokenizer.json "},
		{name: "flag names a missing file", flag: "nope.json", wantErr: "cannot read tokenizer"},
		{name: "flag names a file that is not a tokenizer", files: map[string]string{"bad.json": `{"model": {}}`},
			flag: "bad.json", wantErr: "is not a tokenizer.json that Hugging Face tokenizers can load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := modelDir(t, nil)
			for name, target := range tt.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(target, "{") {
					os.WriteFile(filepath.Join(dir, name), []byte(target), 0o644)
					continue
				}
				abs, _ := filepath.Abs(filepath.Join(sharedTokenizerDir, target))
				if _, err := os.Stat(abs); err != nil {
					testutil.Skip(t, "../shared/fixtures/gpt2-tokenizer is absent: %v", err)
				}
				if err := os.Symlink(abs, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			flag := ""
			if tt.flag != "" {
				flag = filepath.Join(dir, tt.flag)
			}
			tk, err := Find(filepath.Join(dir, "model.onnx"), flag, tt.modelVocab)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Count(err.Error(), "\n") > 0 {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tk.Close()
			if !strings.HasPrefix(tk.Source(), tt.wantSource) {
				t.Errorf("Source() = %q, want prefix %q", tk.Source(), tt.wantSource)
			}
			if tt.flag != "" && !strings.Contains(tk.Source(), filepath.Join(dir, "other")) {
				t.Errorf("Source() = %q, want the flag's file", tk.Source())
			}
			ids, _, err := tk.Encode("Hello world", false)
			if err != nil || !slices.Equal(ids, []int64{15496, 995}) {
				t.Errorf("Encode = %v, %v", ids, err)
			}
		})
	}
}

func TestFindNoModelNoVocab(t *testing.T) {
	_, err := Find("", "", 0)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	var nf *NotFoundError
	if !errors.As(err, &nf) || nf.Model != "" || err.Error() != "no tokenizer found for the model (looked for tokenizer.json, vocab.json + merges.txt)" {
		t.Errorf("error %q (%#v): want a *NotFoundError whose one sentence names no flag", err, nf)
	}
}

func TestEncodeDefault(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		text   string
		want   []int64
		errHas string
	}{
		{name: "no tokenizer_config.json: post-processor decides (GPT-2 adds nothing)",
			files: map[string]string{"tokenizer.json": "alt-pykeio-ort/tokenizer.json"},
			text:  "Hello world", want: []int64{15496, 995}},
		{name: "config without add_bos_token: post-processor decides",
			files: map[string]string{"tokenizer.json": "tokenizer.json", "tokenizer_config.json": "tokenizer_config.json"},
			text:  "Hello world", want: []int64{15496, 995}},
		{name: "add_bos_token",
			files: map[string]string{"tokenizer.json": "alt-pykeio-ort/tokenizer.json",
				"tokenizer_config.json": `{"add_bos_token": true, "bos_token": "<|endoftext|>"}`},
			text: "Hello world", want: []int64{50256, 15496, 995}},
		{name: "add_bos_token and add_eos_token, tokens as objects",
			files: map[string]string{"tokenizer.json": "alt-pykeio-ort/tokenizer.json",
				"tokenizer_config.json": `{"add_bos_token": true, "add_eos_token": true, "bos_token": {"content": "<|endoftext|>"}, "eos_token": {"content": "<|endoftext|>"}}`},
			text: "Hello world", want: []int64{50256, 15496, 995, 50256}},
		{name: "add_bos_token false",
			files: map[string]string{"tokenizer.json": "alt-pykeio-ort/tokenizer.json",
				"tokenizer_config.json": `{"add_bos_token": false, "bos_token": "<|endoftext|>"}`},
			text: "Hello world", want: []int64{15496, 995}},
		{name: "bos token unknown",
			files: map[string]string{"tokenizer.json": "alt-pykeio-ort/tokenizer.json",
				"tokenizer_config.json": `{"add_bos_token": true, "bos_token": "<s>"}`},
			text: "Hello", errHas: `names bos_token "<s>", which the tokenizer does not know`},
		{name: "config with the GPT-2 fallback",
			files: map[string]string{"tokenizer_config.json": `{"add_bos_token": true, "bos_token": "<|endoftext|>"}`},
			text:  "Hello world", want: []int64{50256, 15496, 995}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := modelDir(t, tt.files)
			tk, err := Find(filepath.Join(dir, "model.onnx"), "", GPT2VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			defer tk.Close()
			ids, offsets, err := tk.EncodeDefault(tt.text)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, tt.want) || len(offsets) != len(ids) {
				t.Errorf("EncodeDefault = %v %v, want %v", ids, offsets, tt.want)
			}
		})
	}
}

// BERT's post-processor puts [CLS] … [SEP] around the text; EncodeDefault keeps it.
func TestEncodeDefaultBERT(t *testing.T) {
	tk, _ := loadGolden(t, "bert-base-uncased")
	ids, _, err := tk.EncodeDefault("hello world")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{101, 7592, 2088, 102}; !slices.Equal(ids, want) {
		t.Errorf("got %v, want %v", ids, want)
	}
}

func TestEncodeRefusesWhatTheLibraryCannotTake(t *testing.T) {
	tk, err := GPT2()
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	tests := []struct {
		text, errHas string
	}{
		{"a\x00b", "NUL byte at byte 1"},
		{"ok \xff", "not valid UTF-8 (at byte 3)"},
		{"\xe2\x80", "not valid UTF-8 (at byte 0)"},
	}
	for _, tt := range tests {
		_, _, err := tk.Encode(tt.text, false)
		if err == nil || !strings.Contains(err.Error(), tt.errHas) {
			t.Errorf("Encode(%q) err = %v, want %q", tt.text, err, tt.errHas)
		}
	}
}

func TestCheckVocab(t *testing.T) {
	tk, _ := loadGolden(t, "gpt2") // 50295 tokens: CodeGen whitespace tokens above GPT-2's 50257
	ids, _, err := tk.Encode("def f():\n        return 1", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.CheckVocab(ids, 0); err != nil {
		t.Errorf("unknown model vocabulary: %v", err)
	}
	if err := tk.CheckVocab(ids, tk.VocabSize()); err != nil {
		t.Errorf("matching vocabulary: %v", err)
	}
	err = tk.CheckVocab(ids, GPT2VocabSize)
	want := "token '␣␣␣␣␣␣␣␣' (id 50280, position 4) is outside the model's vocabulary of 50257 ids"
	var ve *VocabError
	if !errors.As(err, &ve) || err.Error() != want || ve.ID != 50280 || ve.Pos != 4 || ve.Vocab != GPT2VocabSize {
		t.Errorf("err = %v\nwant a *VocabError saying %q (ids %v)", err, want, ids)
	}
	if err := CheckVocab([]int64{3, -1}, nil, 10); err == nil || !strings.Contains(err.Error(), "'#-1' (id -1, position 1)") {
		t.Errorf("negative id: %v", err)
	}
}

func TestDecode(t *testing.T) {
	gpt2, err := GPT2()
	if err != nil {
		t.Fatal(err)
	}
	defer gpt2.Close()
	inputs := goldenInputs(t)
	for _, name := range []string{"gpt2-builtin", "gpt2", "llama3-8b-instruct"} {
		t.Run(name, func(t *testing.T) {
			tk := gpt2
			if name != "gpt2-builtin" {
				tk, _ = loadGolden(t, name)
			}
			for _, in := range inputs {
				ids, _, err := tk.Encode(in.Text, false)
				if err != nil {
					t.Fatal(err)
				}
				if got := tk.Decode(ids); got != in.Text {
					t.Errorf("Decode(Encode(%q)) = %q", short(in.Text), short(got))
				}
			}
		})
	}
	// Partial characters decode to U+FFFD; unknown ids are skipped.
	id, _ := gpt2.TokenID("âĢ")
	if got := gpt2.Decode([]int64{id}); got != "\uFFFD" {
		t.Errorf("partial character: %q", got)
	}
	if got := gpt2.Decode([]int64{15496, 1 << 40, -3}); got != "Hello" {
		t.Errorf("with unknown ids: %q", got)
	}
}

// A --tokenizer file without a tokenizer_config.json beside it follows the model folder's.
func TestFindFlagUsesModelFolderConfig(t *testing.T) {
	dir := modelDir(t, map[string]string{
		"tokenizer_config.json": `{"add_bos_token": true, "bos_token": "<|endoftext|>"}`,
	})
	flag, err := filepath.Abs(filepath.Join(sharedTokenizerDir, "alt-pykeio-ort", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(flag); err != nil {
		testutil.Skip(t, "../shared/fixtures/gpt2-tokenizer is absent: %v", err)
	}
	tk, err := Find(filepath.Join(dir, "model.onnx"), flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	ids, _, err := tk.EncodeDefault("Hello world")
	if err != nil || !slices.Equal(ids, []int64{50256, 15496, 995}) {
		t.Errorf("EncodeDefault = %v, %v", ids, err)
	}
}
