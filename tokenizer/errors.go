package tokenizer

import (
	"errors"
	"fmt"
)

// ErrNotFound is wrapped by Find's *NotFoundError when no tokenizer was found for a model.
var ErrNotFound = errors.New("no tokenizer found")

// NotFoundError says that Find found no tokenizer for a model: none was given, none lies
// beside the model (Model; "" for a model without a file), and its vocabulary (Vocab, 0 when
// unknown) is not GPT-2's.
type NotFoundError struct {
	Model string
	Vocab int
}

func (e *NotFoundError) Error() string {
	where := "for the model"
	if e.Model != "" {
		where = "beside " + e.Model
	}
	return fmt.Sprintf("%v %s (looked for tokenizer.json, vocab.json + merges.txt)", ErrNotFound, where)
}

func (e *NotFoundError) Unwrap() error { return ErrNotFound }

// VocabError says that token ID at position Pos of an encoded prompt is outside the model's
// vocabulary of Vocab ids (see CheckVocab): the tokenizer is not the model's, or has more
// tokens than its embedding.
type VocabError struct {
	Token string // the token's label, or #id without labels
	ID    int64
	Pos   int
	Vocab int
}

func (e *VocabError) Error() string {
	return fmt.Sprintf("token '%s' (id %d, position %d) is outside the model's vocabulary of %d ids", e.Token, e.ID, e.Pos, e.Vocab)
}

// ConfigTokenError says that a tokenizer_config.json (Path) asks for a special token (Key:
// bos_token or eos_token) it does not name (Token ""), or names one the tokenizer does not
// know.
type ConfigTokenError struct {
	Path  string
	Key   string
	Token string
}

func (e *ConfigTokenError) Error() string {
	if e.Token == "" {
		return fmt.Sprintf("%s asks for a %s but does not name one", e.Path, e.Key)
	}
	return fmt.Sprintf("%s names %s %q, which the tokenizer does not know", e.Path, e.Key, e.Token)
}
