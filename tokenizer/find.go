package tokenizer

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	hf "github.com/daulet/tokenizers"
	"github.com/pkoukk/tiktoken-go-loader/assets"
)

// GPT2VocabSize is the vocabulary size that makes Find fall back to GPT-2's encoding.
const GPT2VocabSize = 50257

// Find returns the tokenizer for the model at modelPath (a model file or its folder; "" when
// there is none, e.g. a bundled model), trying in order:
//
//  1. flagPath, a tokenizer the user named, when not empty (a tokenizer.json or a folder
//     with one);
//  2. tokenizer.json beside the model;
//  3. vocab.json and merges.txt beside the model (GPT-2-style byte-level BPE);
//  4. GPT-2's r50k_base encoding (built in) when the model declares modelVocab = 50257 ids.
//
// Otherwise the error is a *NotFoundError (wrapping ErrNotFound). Files are read as Load
// reads them (see readFile).
// The tokenizer_config.json beside the tokenizer, else the model folder's, where present, sets
// EncodeDefault's special tokens.
func Find(modelPath, flagPath string, modelVocab int) (*Tokenizer, error) {
	dir := ""
	if modelPath != "" {
		dir = filepath.Dir(modelPath)
		if st, err := os.Stat(modelPath); err == nil && st.IsDir() {
			dir = modelPath
		}
	}
	if flagPath != "" {
		t, err := Load(flagPath)
		if err != nil {
			return nil, err
		}
		if t.config == nil && dir != "" {
			// No tokenizer_config.json beside the flag's file: the model folder's applies.
			if t.config, err = readConfig(dir); err != nil {
				t.Close()
				return nil, err
			}
		}
		return t, nil
	}
	if dir != "" {
		if p := filepath.Join(dir, "tokenizer.json"); exists(p) {
			return Load(p)
		}
		vocabPath, mergesPath := filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt")
		if exists(vocabPath) && exists(mergesPath) {
			return LoadVocabMerges(vocabPath, mergesPath)
		}
	}
	if modelVocab == GPT2VocabSize {
		t, err := GPT2()
		if err != nil {
			return nil, err
		}
		if dir != "" {
			if t.config, err = readConfig(dir); err != nil {
				t.Close()
				return nil, err
			}
		}
		return t, nil
	}
	return nil, &NotFoundError{Model: modelPath, Vocab: modelVocab}
}

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// LoadVocabMerges builds a GPT-2-style byte-level BPE tokenizer from vocab.json and merges.txt,
// as transformers' GPT2TokenizerFast does; added tokens and add_prefix_space come from a
// tokenizer_config.json beside vocab.json, where present, else <|endoftext|> is the special
// token when the vocabulary has it.
func LoadVocabMerges(vocabPath, mergesPath string) (*Tokenizer, error) {
	vdata, err := readFile(vocabPath)
	if err != nil {
		return nil, err
	}
	var vocabMap map[string]int64
	if err := json.Unmarshal(vdata, &vocabMap); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object of token ids: %v", vocabPath, err)
	}
	mdata, err := readFile(mergesPath)
	if err != nil {
		return nil, err
	}
	merges := []string{}
	sc := bufio.NewScanner(bytes.NewReader(mdata))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || (n == 1 && strings.HasPrefix(line, "#version")) {
			continue
		}
		if len(strings.Fields(line)) != 2 {
			return nil, fmt.Errorf("%s line %d is not a merge of two tokens: %q", mergesPath, n, line)
		}
		merges = append(merges, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", mergesPath, err)
	}
	cfg, err := readConfig(filepath.Dir(vocabPath))
	if err != nil {
		return nil, err
	}

	type addedToken struct {
		ID         int64  `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	addedTokens := []addedToken{}
	prefixSpace := false
	if cfg != nil && len(cfg.AddedTokens) > 0 {
		for key, a := range cfg.AddedTokens {
			var id int64
			if _, err := fmt.Sscan(key, &id); err != nil {
				return nil, fmt.Errorf("%s: added_tokens_decoder key %q is not an id", cfg.path, key)
			}
			addedTokens = append(addedTokens, addedToken{id, a.Content, a.SingleWord, a.LStrip, a.RStrip, a.Normalized, a.Special})
		}
		slices.SortFunc(addedTokens, func(a, b addedToken) int { return cmp.Compare(a.ID, b.ID) })
	} else if id, ok := vocabMap["<|endoftext|>"]; ok {
		addedTokens = append(addedTokens, addedToken{ID: id, Content: "<|endoftext|>", Special: true})
	}
	if cfg != nil && cfg.AddPrefixSpace != nil {
		prefixSpace = *cfg.AddPrefixSpace
	}

	byteLevel := func(prefix bool, trim bool) map[string]any {
		return map[string]any{"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": trim, "use_regex": true}
	}
	doc := map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   addedTokens,
		"normalizer":     nil,
		"pre_tokenizer":  byteLevel(prefixSpace, true),
		"post_processor": byteLevel(true, false),
		"decoder":        byteLevel(true, true),
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "",
			"end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
			"vocab": vocabMap, "merges": merges,
		},
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	t, err := fromJSON(data, fmt.Sprintf("vocab.json + merges.txt in %s", filepath.Dir(vocabPath)))
	if err != nil {
		return nil, fmt.Errorf("cannot build a tokenizer from %s and %s: %v", vocabPath, mergesPath, err)
	}
	t.config = cfg
	return t, nil
}

// gpt2Pattern is GPT-2's pre-tokenization regex (encoder.py; Hugging Face's ByteLevel uses it
// too).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// GPT2 returns GPT-2's byte-level BPE (tiktoken's r50k_base, embedded by
// github.com/pkoukk/tiktoken-go-loader) with <|endoftext|> = 50256: the same ids as GPT-2's
// tokenizer.json, for models that ship without a tokenizer.
func GPT2() (*Tokenizer, error) {
	model, err := assets.Assets.ReadFile("r50k_base.tiktoken")
	if err != nil {
		return nil, fmt.Errorf("the built-in GPT-2 encoding is missing: %v", err)
	}
	specials := map[int64]string{50256: "<|endoftext|>"}
	v, err := parseTiktoken(model, specials)
	if err != nil {
		return nil, fmt.Errorf("the built-in GPT-2 encoding is damaged: %v", err)
	}
	// The binding reads tiktoken files from disk only.
	dir, err := os.MkdirTemp("", "attnscope-r50k-")
	if err != nil {
		return nil, fmt.Errorf("cannot write the built-in GPT-2 encoding to a temporary folder: %v", err)
	}
	defer os.RemoveAll(dir)
	modelPath, cfgPath := filepath.Join(dir, "r50k_base.tiktoken"), filepath.Join(dir, "tokenizer_config.json")
	cfg := map[string]any{
		"added_tokens_decoder": map[string]any{"50256": map[string]any{
			"content": "<|endoftext|>", "lstrip": false, "normalized": false, "rstrip": false,
			"single_word": false, "special": true}},
		"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
		"model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer",
	}
	cdata, _ := json.Marshal(cfg)
	if err := os.WriteFile(modelPath, model, 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the built-in GPT-2 encoding: %v", err)
	}
	if err := os.WriteFile(cfgPath, cdata, 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the built-in GPT-2 encoding: %v", err)
	}
	lib, err := hf.FromTiktoken(modelPath, cfgPath, gpt2Pattern)
	if err != nil {
		return nil, fmt.Errorf("cannot load the built-in GPT-2 encoding: %v", err)
	}
	return &Tokenizer{lib: lib, vocab: v, source: "GPT-2 r50k_base (built in)", tiktoken: true}, nil
}
