package tokenizer

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestRenderBytes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"word", "the", "the"},
		{"leading space", " the", "␣the"},
		{"spaces only", "   ", "␣␣␣"},
		{"newline", "\n", "↵"},
		{"two newlines", "\n\n", "↵↵"},
		{"crlf", "\r\n", "␍↵"},
		{"tab", "\tx", "⇥x"},
		{"empty", "", "∅"},
		{"partial 2 of 3 bytes", "\xe2\x80", "<e2 80>"},
		{"continuation byte", "\x99", "<99>"},
		{"partial after text", "a\xf0\x9f", "a<f0 9f>"},
		{"partial both sides", "\x80 x\xe2", "<80>␣x<e2>"},
		{"invalid byte ff", "\xff\xfe", "<ff fe>"},
		{"whole euro sign", "€", "€"},
		{"emoji", "😀", "😀"},
		{"cjk", "日本", "日本"},
		{"accented", "é", "é"},
		{"combining mark alone", "\u0301", "◌\u0301"},
		{"combining mark after letter", "e\u0301", "e\u0301"},
		{"C0 control", "\x01", "<U+0001>"},
		{"escape", "\x1b[31m", "<U+001B>[31m"},
		{"DEL", "\x7f", "<U+007F>"},
		{"C1 control NEL", "\u0085", "<U+0085>"},
		{"zero width space", "a\u200bb", "a<U+200B>b"},
		{"ZWJ", "\u200d", "<U+200D>"},
		{"BOM", "\ufeff", "<U+FEFF>"},
		{"bidi override", "\u202e", "<U+202E>"},
		{"no-break space", "\u00a0", "<U+00A0>"},
		{"ideographic space", "\u3000", "<U+3000>"},
		{"line separator", "\u2028", "<U+2028>"},
		{"special token", "<|endoftext|>", "<|endoftext|>"},
		{"bert special", "[CLS]", "[CLS]"},
		{"wordpiece continuation", "##ing", "##ing"},
		{"replacement char in text", "\uFFFD", "\uFFFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RenderBytes([]byte(tt.in))
			if got != tt.want {
				t.Errorf("RenderBytes(%q) = %q, want %q", tt.in, got, tt.want)
			}
			checkLabel(t, got)
		})
	}
}

// checkLabel fails unless label is printable: valid UTF-8, no control or format characters, no
// U+FFFD standing for broken bytes.
func checkLabel(t testing.TB, label string) {
	t.Helper()
	if !utf8.ValidString(label) {
		t.Fatalf("label %q is not valid UTF-8", label)
	}
	if label == "" {
		t.Fatalf("empty label")
	}
	for _, r := range label {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			t.Fatalf("label %q holds control character %U", label, r)
		}
	}
}

// Labels of real tokens: byte-level tokens as text, special tokens by name.
func TestLabel(t *testing.T) {
	gpt2, err := GPT2()
	if err != nil {
		t.Fatal(err)
	}
	defer gpt2.Close()
	tests := []struct {
		name  string
		tk    func(t *testing.T) *Tokenizer
		token string // as written in the vocabulary
		want  string
	}{
		{"gpt2 word with leading space", builtin(gpt2), "Ġthe", "␣the"},
		{"gpt2 word", builtin(gpt2), "the", "the"},
		{"gpt2 newline", builtin(gpt2), "Ċ", "↵"},
		{"gpt2 two newlines", builtin(gpt2), "ĊĊ", "↵↵"},
		{"gpt2 tab", builtin(gpt2), "ĉ", "⇥"},
		{"gpt2 carriage return", builtin(gpt2), "č", "␍"},
		{"gpt2 space", builtin(gpt2), "Ġ", "␣"},
		{"gpt2 first 2 bytes of a 3-byte char", builtin(gpt2), "âĢ", "<e2 80>"},
		{"gpt2 a lone continuation byte", builtin(gpt2), "Ļ", "<99>"},
		{"gpt2 byte 0", builtin(gpt2), "Ā", "<U+0000>"},
		{"gpt2 accented word", builtin(gpt2), "Ġcaf\u00c3\u00a9", "␣café"},
		{"gpt2 special", builtin(gpt2), "<|endoftext|>", "<|endoftext|>"},
		{"codegen whitespace added token", golden2("gpt2"), "    ", "␣␣␣␣"},
		{"codegen tab added token", golden2("gpt2"), "\t\t", "⇥⇥"},
		{"bert special", golden2("bert-base-uncased"), "[CLS]", "[CLS]"},
		{"bert wordpiece", golden2("bert-base-uncased"), "##ing", "##ing"},
		{"bert plain", golden2("bert-base-uncased"), "hello", "hello"},
		{"llama3 special", golden2("llama3-8b-instruct"), "<|begin_of_text|>", "<|begin_of_text|>"},
		{"llama3 newline run", golden2("llama3-8b-instruct"), "ĊĊ", "↵↵"},
		{"cohere special", golden2("cohere"), "<BOS_TOKEN>", "<BOS_TOKEN>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := tt.tk(t)
			id, ok := tk.TokenID(tt.token)
			if !ok {
				t.Fatalf("%q is not in the vocabulary", tt.token)
			}
			if got := tk.Label(id); got != tt.want {
				t.Errorf("Label(%d = %q) = %q, want %q", id, tt.token, got, tt.want)
			}
		})
	}
	if got := gpt2.Label(1 << 40); got != "<id:1099511627776>" {
		t.Errorf("Label(unknown) = %q", got)
	}
	if got := gpt2.Label(-1); got != "<id:-1>" {
		t.Errorf("Label(-1) = %q", got)
	}
}

func builtin(tk *Tokenizer) func(*testing.T) *Tokenizer {
	return func(*testing.T) *Tokenizer { return tk }
}

func golden2(name string) func(*testing.T) *Tokenizer {
	return func(t *testing.T) *Tokenizer {
		tk, _ := loadGolden(t, name)
		return tk
	}
}

// Every id of every tokenizer has a printable label.
func TestEveryLabelPrintable(t *testing.T) {
	gpt2, err := GPT2()
	if err != nil {
		t.Fatal(err)
	}
	defer gpt2.Close()
	check := func(t *testing.T, tk *Tokenizer) {
		n := 0
		for id := range tk.vocab.tokens {
			checkLabel(t, tk.Label(id))
			n++
		}
		t.Logf("%d labels", n)
	}
	t.Run("gpt2-builtin", func(t *testing.T) { check(t, gpt2) })
	for _, name := range goldenNames {
		t.Run(name, func(t *testing.T) {
			tk, _ := loadGolden(t, name)
			check(t, tk)
		})
	}
}

// Labels of an encoding, joined, read as the text (byte-level tokenizers lose nothing).
func TestLabelsSpellTheText(t *testing.T) {
	gpt2, err := GPT2()
	if err != nil {
		t.Fatal(err)
	}
	defer gpt2.Close()
	ids, _, err := gpt2.Encode("Hello world\n\tcafé 😀", false)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(gpt2.Labels(ids), "|")
	want := "Hello|␣world|↵|⇥|c|af|é|␣<f0 9f 98>|<80>"
	if got != want {
		t.Errorf("labels %q, want %q", got, want)
	}
}
