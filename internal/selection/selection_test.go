package selection

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		spec string
		want []int
		err  string // "" when the spec is good
	}{
		{"3", []int{3}, ""},
		{"0", []int{0}, ""},
		{"0,3-5", []int{0, 3, 4, 5}, ""},
		{"2-2", []int{2}, ""},
		{" 5 , 1-2 ", []int{1, 2, 5}, ""},
		{"3,1,3,2-3", []int{1, 2, 3}, ""}, // sorted, each once
		{"007", []int{7}, ""},
		{"", nil, "--layer is empty; give numbers and ranges, e.g. --layer 0,3-5"},
		{"  ", nil, "--layer is empty"},
		{"3-1", nil, "--layer 3-1 is a backwards range; write it low to high: 1-3"},
		{"x", nil, `--layer takes numbers from 0 and ranges such as 0,3-5; "x" is neither`},
		{"-1", nil, "--layer -1 is not a layer; layers are numbered from 0 (leave --layer out for all)"},
		{"-1-3", nil, `"-1-3" is neither`},
		{"1-", nil, `"1-" is neither`},
		{"1-2-3", nil, `"1-2-3" is neither`},
		{"+1", nil, `"+1" is neither`},
		{"1.5", nil, `"1.5" is neither`},
		{"1,,2", nil, `--layer "1,,2" has an empty entry`},
		{"1,", nil, "has an empty entry"},
		{"99999999999", nil, "is neither"},
		{"0-99999999", nil, "spans more than a million numbers"},
	} {
		got, err := Parse("--layer", "layer", c.spec)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("Parse(%q): %v", c.spec, err)
		case c.err == "" && !slices.Equal(got, c.want):
			t.Errorf("Parse(%q) = %v, want %v", c.spec, got, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("Parse(%q) = %v, %v; want the error %q", c.spec, got, err, c.err)
		case c.err != "" && regexp.MustCompile(`[.;] [A-Z]`).MatchString(err.Error()):
			t.Errorf("Parse(%q): %q is more than one sentence", c.spec, err)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		list []int
		n    int
		err  string
	}{
		{[]int{0, 11}, 12, ""},
		{[]int{0, 12}, 12, "--layer 12 does not exist; the model has 12 layers (0-11)"},
		{[]int{3}, 1, "--layer 3 does not exist; the model has 1 layer (0)"},
		{[]int{0}, 0, "--layer 0 does not exist; the model has no layers"},
		{nil, 0, ""},
	} {
		err := Check("--layer", c.list, c.n, "the model", "layer")
		if c.err == "" && err != nil || c.err != "" && (err == nil || err.Error() != c.err) {
			t.Errorf("Check(%v, %d) = %v, want %q", c.list, c.n, err, c.err)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		list []int
		want string
	}{
		{nil, ""},
		{[]int{4}, "4"},
		{[]int{0, 1, 2, 3, 5}, "0-3,5"},
		{[]int{0, 2, 4}, "0,2,4"},
		{[]int{1, 2, 7, 8, 9}, "1-2,7-9"},
	} {
		if got := Format(c.list); got != c.want {
			t.Errorf("Format(%v) = %q, want %q", c.list, got, c.want)
		}
		if c.want != "" { // Parse reads it back
			if back, err := Parse("--layer", "layer", c.want); err != nil || !slices.Equal(back, c.list) {
				t.Errorf("Parse(Format(%v)) = %v, %v", c.list, back, err)
			}
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		s    string
		want int64
		err  string
	}{
		{"8GiB", 8 << 30, ""},
		{"8gib", 8 << 30, ""},
		{"500MB", 500e6, ""},
		{"1.5 GB", 1.5e9, ""},
		{"2G", 2 << 30, ""},
		{"64Mi", 64 << 20, ""},
		{"4096", 4096, ""},
		{"12kB", 12000, ""},
		{"", 0, `--max-memory takes a size such as 8GiB, 500MB or 2G; "" is not one`},
		{"lots", 0, "is not one"},
		{"8 GiBs", 0, "is not one"},
		{"-1GB", 0, "is not one"},
		{"0", 0, "--max-memory 0 is not a size attnscope can use"},
		{"1e30", 0, "is not one"},
		{"99999999999TB", 0, "--max-memory 99999999999TB is too large (attnscope counts up to 4194304.0 TiB); give a size such as --max-memory 8GiB"},
		{"99999999TiB", 0, "is too large"},
		{"0.5", 0, "--max-memory 0.5 is not a size attnscope can use; give at least 1 byte"},
	} {
		got, err := ParseSize("--max-memory", c.s)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.s, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("ParseSize(%q) = %d, %v; want the error %q", c.s, got, err, c.err)
		}
	}
}

func TestSizeAndCount(t *testing.T) {
	for _, c := range []struct {
		b    int64
		want string
	}{{60 << 30, "60.0 GiB"}, {512 << 20, "512.0 MiB"}, {3000, "2.9 KiB"}, {12, "12 bytes"}, {3 << 40, "3.0 TiB"}} {
		if got := Size(c.b); got != c.want {
			t.Errorf("Size(%d) = %q, want %q", c.b, got, c.want)
		}
	}
	for _, c := range []struct {
		n    int
		want string
	}{{4096, "4,096"}, {12, "12"}, {1000000, "1,000,000"}, {100, "100"}, {-4096, "-4,096"}} {
		if got := Count(c.n); got != c.want {
			t.Errorf("Count(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
