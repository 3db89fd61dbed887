package ablate

import (
	"errors"
	"strings"
	"testing"
)

func TestParseHeads(t *testing.T) {
	heads := []int{3, 2} // L0 has 3 heads, L1 has 2
	cases := []struct {
		spec, want, err string
	}{
		{spec: "L1H1", want: "L1H1"},
		{spec: "L1H1,L0H2", want: "L0H2,L1H1"},
		{spec: " l0h0 , L0H0", want: "L0H0"},
		{spec: "L0", want: "L0H0,L0H1,L0H2"},
		{spec: "all", want: "L0H0,L0H1,L0H2,L1H0,L1H1"},
		{spec: "ALL,L1H0", want: "L0H0,L0H1,L0H2,L1H0,L1H1"},
		{spec: "", err: "no heads given"},
		{spec: "L2H0", err: "the model has 2 layers"},
		{spec: "L1H2", err: "layer 1 has 2 heads (H0–H1)"},
		{spec: "L1H", err: "write a head as L1H5"},
		{spec: "H1", err: "write a head as L1H5"},
		{spec: "L-1H0", err: "write a head as L1H5"},
		{spec: "L1H+1", err: "write a head as L1H5"},
		{spec: "L0H1,,L1H0", err: "write a head as L1H5"},
		{spec: "1,2", err: "write a head as L1H5"},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			got, err := ParseHeads(c.spec, heads)
			if c.err != "" {
				var se *SelectionError
				if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseHeads(%q) = %v, %v; want a *SelectionError containing %q", c.spec, got, err, c.err)
				}
				return
			}
			if err != nil || Join(got) != c.want {
				t.Fatalf("ParseHeads(%q) = %q, %v; want %q", c.spec, Join(got), err, c.want)
			}
			back, err := ParseHeads(Join(got), heads)
			if err != nil || Join(back) != c.want {
				t.Fatalf("Join does not read back: %q → %q, %v", c.want, Join(back), err)
			}
		})
	}
}

func TestParseHeadsUnknownCounts(t *testing.T) {
	for _, spec := range []string{"all", "L1", "L1H0"} {
		if _, err := ParseHeads(spec, []int{2, 0}); err == nil || !strings.Contains(err.Error(), "not known") {
			t.Errorf("ParseHeads(%q) with layer 1's count unknown: %v", spec, err)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"zero": Zero, "": Zero, "Mean": Mean} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseMode("resample"); err == nil {
		t.Error("ParseMode(resample) gave no error")
	}
}
