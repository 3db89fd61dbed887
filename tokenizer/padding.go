package tokenizer

import (
	"bytes"
	"encoding/json"
)

// ignoredSettings are the top-level tokenizer.json fields that attnscope never applies. Many
// sentence-transformers files pad every text to 128 tokens and cut longer ones there: the
// pads would run through the model as text (with attention mask 1), and the cut would hide
// the rest of the prompt. transformers' tokenizer(text) does not apply them either.
var ignoredSettings = map[string]bool{"padding": true, "truncation": true}

// withoutPadding returns a tokenizer.json with its top-level padding and truncation values
// replaced by null, every other byte as it was. Data that is not a JSON object comes back
// unchanged, for the library to refuse with its own message.
func withoutPadding(data []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return data
	}
	type span struct{ start, end int64 }
	var drop []span
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return data
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return data
		}
		if name, ok := key.(string); ok && ignoredSettings[name] {
			end := dec.InputOffset()
			drop = append(drop, span{end - int64(len(value)), end})
		}
	}
	if len(drop) == 0 {
		return data
	}
	out := make([]byte, 0, len(data))
	at := int64(0)
	for _, d := range drop {
		out = append(out, data[at:d.start]...)
		out = append(out, "null"...)
		at = d.end
	}
	return append(out, data[at:]...)
}
