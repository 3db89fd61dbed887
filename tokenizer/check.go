package tokenizer

import "fmt"

// CheckVocab returns a *VocabError naming the first id outside [0, modelVocab): a tokenizer with
// more tokens than the model's embedding (added tokens) would make the model fail or read the
// wrong row. labels names tokens in the message (nil: ids only). modelVocab <= 0 means unknown:
// nothing is checked.
func CheckVocab(ids []int64, labels func(int64) string, modelVocab int) error {
	if modelVocab <= 0 {
		return nil
	}
	for pos, id := range ids {
		if id >= 0 && id < int64(modelVocab) {
			continue
		}
		name := fmt.Sprintf("#%d", id)
		if labels != nil {
			name = labels(id)
		}
		return &VocabError{Token: name, ID: id, Pos: pos, Vocab: modelVocab}
	}
	return nil
}

// CheckVocab is CheckVocab with this tokenizer's labels.
func (t *Tokenizer) CheckVocab(ids []int64, modelVocab int) error {
	return CheckVocab(ids, t.Label, modelVocab)
}
