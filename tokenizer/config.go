package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// tokenizerConfig is what EncodeDefault and vocab.json+merges.txt loading use from a
// transformers tokenizer_config.json.
type tokenizerConfig struct {
	path           string
	AddBOS         *bool            `json:"add_bos_token"`
	AddEOS         *bool            `json:"add_eos_token"`
	AddPrefixSpace *bool            `json:"add_prefix_space"`
	BOS            tokenString      `json:"bos_token"`
	EOS            tokenString      `json:"eos_token"`
	AddedTokens    map[string]added `json:"added_tokens_decoder"`
}

type added struct {
	Content    string `json:"content"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	SingleWord bool   `json:"single_word"`
	Special    bool   `json:"special"`
}

// tokenString is a token written either as "<s>" or as {"content": "<s>", ...}.
type tokenString string

func (s *tokenString) UnmarshalJSON(b []byte) error {
	var str string
	if json.Unmarshal(b, &str) == nil {
		*s = tokenString(str)
		return nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(b, &obj) == nil {
		*s = tokenString(obj.Content)
	}
	return nil // null or an unknown shape: no token
}

// readConfig reads dir/tokenizer_config.json (see readFile); nil, nil where there is none.
func readConfig(dir string) (*tokenizerConfig, error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	data, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cfg tokenizerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", path, err)
	}
	cfg.path = path
	return &cfg, nil
}

// EncodeDefault encodes text the way transformers' tokenizer(text) does for this model: with
// the special tokens that the tokenizer adds around a text. Where the model folder's
// tokenizer_config.json sets add_bos_token or add_eos_token, those settings decide instead
// (as transformers' Llama and GPT-2 tokenizers do): the text is encoded without the
// post-processor's tokens, then bos_token and/or eos_token are put around it. A token the
// file asks for but does not name, or names but the tokenizer does not know, is a
// *ConfigTokenError.
func (t *Tokenizer) EncodeDefault(text string) (ids []int64, offsets [][2]int, err error) {
	cfg := t.config
	if cfg == nil || (cfg.AddBOS == nil && cfg.AddEOS == nil) {
		return t.Encode(text, true)
	}
	ids, offsets, err = t.Encode(text, false)
	if err != nil {
		return nil, nil, err
	}
	if cfg.AddBOS != nil && *cfg.AddBOS {
		id, err := t.configToken(string(cfg.BOS), "bos_token")
		if err != nil {
			return nil, nil, err
		}
		ids = append([]int64{id}, ids...)
		offsets = append([][2]int{{0, 0}}, offsets...)
	}
	if cfg.AddEOS != nil && *cfg.AddEOS {
		id, err := t.configToken(string(cfg.EOS), "eos_token")
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, id)
		offsets = append(offsets, [2]int{len(text), len(text)})
	}
	return ids, offsets, nil
}

func (t *Tokenizer) configToken(tok, key string) (int64, error) {
	if tok == "" {
		return 0, &ConfigTokenError{Path: t.config.path, Key: key}
	}
	id, ok := t.TokenID(tok)
	if !ok {
		return 0, &ConfigTokenError{Path: t.config.path, Key: key, Token: tok}
	}
	return id, nil
}
