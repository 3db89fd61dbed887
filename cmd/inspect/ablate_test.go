package main

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// ablationCSV parses out and returns its rows by their first column, and the header.
func ablationCSV(t *testing.T, out string) (map[string][]string, []string) {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("not a CSV with rows (%v):\n%s", err, out)
	}
	byName := map[string][]string{}
	for _, r := range rows[1:] {
		byName[r[0]] = r
	}
	return byName, rows[0]
}

func number(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return v
}

// inspect ablate writes a clean row and a row per head; the deltas are the row's loss minus
// the clean loss; --effects adds a column per head and score; --pairs pairs the heads.
func TestAblateSweep(t *testing.T) {
	ids := "1,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8"
	out, stderr, code := inspect(t, "ablate", model("attn2l"), "--ids", ids)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rows, header := ablationCSV(t, out)
	if got := strings.Join(header, ","); got != "ablated,loss,loss_delta,icl_delta,top1_changed" {
		t.Fatalf("header %q", got)
	}
	if len(rows) != 1+8 {
		t.Fatalf("%d rows, want the clean one and 8 heads", len(rows))
	}
	clean := number(t, rows["none"][1])
	for name, r := range rows {
		if d := number(t, r[1]) - clean - number(t, r[2]); d > 1e-6 || d < -1e-6 {
			t.Errorf("%s: loss_delta %s is not loss − clean loss", name, r[2])
		}
		if name != "none" && number(t, r[2]) == 0 {
			t.Errorf("%s: switching the head off changed nothing", name)
		}
	}
	out, stderr, code = inspect(t, "ablate", model("attn2l"), "--ids", ids, "--heads", "L0H1,L1", "--effects", "--probes", "2", "--probe-len", "8")
	if code != 0 {
		t.Fatalf("--effects: exit %d: %s", code, stderr)
	}
	rows, header = ablationCSV(t, out)
	if len(header) != 5+2*8 || header[5] != "induction_delta.L0H0" || header[5+8] != "prev_token_delta.L0H0" {
		t.Fatalf("--effects header %v", header)
	}
	if len(rows) != 1+5 {
		t.Fatalf("--heads L0H1,L1: %d rows, want 6", len(rows))
	}
	for _, v := range rows["none"][5:] {
		if number(t, v) != 0 {
			t.Fatalf("the clean row's effects are not 0: %v", rows["none"])
		}
	}
	out, _, code = inspect(t, "ablate", model("attn2l"), "--ids", ids, "--heads", "L0H0,L0H1,L1H0", "--pairs")
	rows, _ = ablationCSV(t, out)
	if code != 0 || len(rows) != 1+3 || rows["L0H0,L0H1"] == nil {
		t.Fatalf("--pairs: exit %d, rows %v", code, rows)
	}
}

// --ablate on the other commands switches the heads off: tokens' losses change, and the
// same heads through inspect ablate give the same mean loss.
func TestAblateFlag(t *testing.T) {
	ids := "3,9,27,17,3,9,27,17"
	plain, _, _ := inspect(t, "tokens", model("gpt2tiny"), "--ids", ids)
	off, stderr, code := inspect(t, "tokens", model("gpt2tiny"), "--ids", ids, "--ablate", "L1H2,L0H0")
	if code != 0 || !strings.Contains(stderr, "L0H0,L1H2 zero-ablated") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if plain == off {
		t.Fatal("--ablate changed nothing")
	}
	mean, stderr, code := inspect(t, "tokens", model("gpt2tiny"), "--ids", ids, "--ablate", "L1H2", "--ablate-mode", "mean")
	if code != 0 || mean == off || mean == plain {
		t.Fatalf("mean ablation: exit %d (%s), or its losses equal another run's", code, stderr)
	}
	one, _, _ := inspect(t, "tokens", model("gpt2tiny"), "--ids", ids, "--ablate", "L1H2")
	sweep, _, _ := inspect(t, "ablate", model("gpt2tiny"), "--ids", ids, "--heads", "L1H2")
	rows, _ := ablationCSV(t, sweep)
	if rows["L1H2"] == nil {
		t.Fatalf("no L1H2 row: %v", rows)
	}
	if got, want := meanLoss(t, one), number(t, rows["L1H2"][1]); got-want > 1e-5 || want-got > 1e-5 {
		t.Errorf("tokens --ablate L1H2 has mean loss %g, ablate's row says %g", got, want)
	}
}

// meanLoss is the mean of the loss column of a tokens CSV (the last position has none).
func meanLoss(t *testing.T, out string) float64 {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	sum, n := 0.0, 0
	for _, r := range rows[1:] {
		if r[3] != "" {
			sum += number(t, r[3])
			n++
		}
	}
	return sum / float64(n)
}

// Bad ablations get one sentence: a head or layer the model lacks and a malformed
// selection are usage errors (exit 2); a fused form that cannot be masked and mean ablation
// flags that do not go together say why.
func TestAblateBadInput(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tokens", model("attn2l"), "--ids", "1,2", "--ablate", "L1H4"}, 2, "layer 1 has 4 heads (H0–H3)"},
		{[]string{"dump", model("attn2l"), "--ids", "1,2", "--ablate", "L2"}, 2, "the model has 2 layers"},
		{[]string{"heads", model("attn2l"), "--ablate", "H1"}, 2, "write a head as L1H5"},
		{[]string{"ablate", model("attn2l"), "--ids", "1,2", "--heads", "L0H7"}, 2, "layer 0 has 4 heads"},
		{[]string{"ablate", model("attn2l"), "--ids", "1,2", "--ablate", "L0H1"}, 2, "give them with --heads"},
		{[]string{"tokens", model("attn2l"), "--ids", "1,2", "--ablate", "L0H1", "--ablate-mode", "resample"}, 2, "use zero or mean"},
		{[]string{"tokens", model("attn2l"), "--ids", "1,2", "--ablate", "L0H1", "--ablate-ref", "x.txt"}, 2, "add --ablate-mode mean"},
		{[]string{"ablate", model("gqa"), "--ids", "1,2,3"}, 1, "fused GQA node"},
		{[]string{"tokens", model("gqa"), "--ids", "1,2,3", "--ablate", "L0H0"}, 1, "never leave the kernel"},
		{[]string{"dump", model("fp16step"), "--ids", "1,2,3", "--ablate", "all"}, 1, "single-step decoder"},
		{[]string{"ablate", model("fp16step"), "--ids", "1,2,3"}, 1, "single-step decoder"},
		{[]string{"tokens", model("attn2l"), "--ids", "1,2", "--ablate-mode", "mean", "--ablate-ref", "x.txt"}, 2, "give the heads to switch off with --ablate"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args[:1], " ")+" "+strings.Join(c.args[2:], " "), func(t *testing.T) {
			_, stderr, code := inspect(t, c.args...)
			if code != c.code || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line containing %q", code, stderr, c.code, c.want)
			}
		})
	}
}

// --out never replaces the --ablate-ref file the run reads.
func TestAblateRefIsProtected(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "ref.txt")
	if err := os.WriteFile(ref, []byte("hello there"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"ablate", "dump"} {
		args := []string{cmd, model("attn2l"), "--ids", "1,2,3", "--ablate-mode", "mean", "--ablate-ref", ref, "--out", ref}
		if cmd == "dump" {
			args = append(args, "--ablate", "L0H0")
		}
		_, stderr, code := inspect(t, args...)
		if code != 2 || !strings.Contains(stderr, "would overwrite the --ablate-ref") {
			t.Errorf("%s: exit %d, %q", cmd, code, stderr)
		}
		if b, _ := os.ReadFile(ref); string(b) != "hello there" {
			t.Fatalf("%s replaced the reference with %q", cmd, b)
		}
	}
}
