package tokenizer

import (
	"os"
	"regexp"
	"testing"
)

// bindingVersion (and the #error check in tokenizer.go) must name go.mod's version of
// github.com/daulet/tokenizers, the version scripts/build-tokenizers.sh builds.
func TestBindingVersion(t *testing.T) {
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/daulet/tokenizers\s+(v\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod does not require github.com/daulet/tokenizers")
	}
	if string(m[1]) != bindingVersion {
		t.Errorf("go.mod has github.com/daulet/tokenizers %s, tokenizer.go says %s: update bindingVersion and the #error check", m[1], bindingVersion)
	}
	src, err := os.ReadFile("tokenizer.go")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`__has_include\("libtokenizers-` + regexp.QuoteMeta(bindingVersion) + `\.h"\)`).Match(src) {
		t.Errorf("tokenizer.go's #error check does not name libtokenizers-%s.h", bindingVersion)
	}
}
