package main

import (
	"bytes"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/analysis"
)

// The table's pattern column names each head by analysis.HeadScores.Label: a head with a
// big first-token share is named by what it does besides, with the sink share beside it;
// "sink" only for a head that does nothing else. The sort and the '*' marks are the raw
// scores'.
func TestHeadsTableSinkLabels(t *testing.T) {
	nan := math.NaN()
	scores := []analysis.HeadScores{
		// previous-token behind a sink: raw prev-token 0.25, 0.712 once key 0 is discounted.
		{Layer: 0, Head: 0, Induction: 0.01, PrevToken: 0.25, DuplicateToken: 0, FirstToken: 0.62, Self: 0.05, Entropy: 1,
			InductionNoSink: 0.02, PrevTokenNoSink: 0.712, DuplicateNoSink: 0, SelfNoSink: 0.1},
		// a pure sink: nothing left once key 0 is discounted.
		{Layer: 0, Head: 1, Induction: 0, PrevToken: 0.02, FirstToken: 0.95, Self: 0.03, Entropy: 0.2,
			InductionNoSink: nan, PrevTokenNoSink: nan, DuplicateNoSink: nan, SelfNoSink: nan},
		// an induction head without a sink.
		{Layer: 1, Head: 0, Induction: 0.8, PrevToken: 0.02, FirstToken: 0.1, Self: 0.1, Entropy: 2,
			InductionNoSink: 0.81, PrevTokenNoSink: 0.02, DuplicateNoSink: 0.05, SelfNoSink: 0.11},
		// nothing.
		{Layer: 1, Head: 1, Induction: 0.1, PrevToken: 0.1, FirstToken: 0.1, Self: 0.1, Entropy: 3,
			InductionNoSink: 0.1, PrevTokenNoSink: 0.1, DuplicateNoSink: 0.1, SelfNoSink: 0.1},
	}
	var buf bytes.Buffer
	if err := writeHeadsTable(&buf, scores, analysis.FirstToken); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 5 || !strings.HasSuffix(lines[0], "pattern, first token discounted (≥ 0.4)") || !strings.Contains(lines[0], "first_token↓") {
		t.Fatalf("table:\n%s", buf.String())
	}
	want := []struct{ head, first, pattern string }{
		{"L0H1", "0.950*", "sink 0.950"},
		{"L0H0", "0.620*", "prev-token 0.712, sink 0.620"},
		{"L1H0", "0.100", "induction 0.810"},
		{"L1H1", "0.100", ""},
	}
	for i, w := range want {
		line := lines[i+1]
		f := strings.Fields(line)
		if f[0] != w.head || f[4] != w.first || strings.TrimSpace(line[strings.Index(line, f[6])+len(f[6]):]) != w.pattern {
			t.Errorf("row %d %q: want %s, first_token %s, pattern %q", i, line, w.head, w.first, w.pattern)
		}
	}
}

// On the trained 2-layer demo model (little attention on the first token), discounting
// the first token keeps every head the plain scores call an induction head labelled
// induction, with a discounted score at least its plain one.
func TestHeadsTableDemoInductionLabels(t *testing.T) {
	demo := filepath.Join("models", "demo", "model.onnx")
	out, stderr, code := inspect(t, "heads", demo, "--device", "cpu", "--format", "table")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 7 || !strings.HasPrefix(f[0], "L") || !strings.HasSuffix(f[1], "*") {
			continue
		}
		n++
		plain, _ := strconv.ParseFloat(strings.TrimSuffix(f[1], "*"), 64)
		if len(f) < 9 || f[7] != "induction" {
			t.Errorf("%s: induction %s but pattern %q", f[0], f[1], strings.Join(f[7:], " "))
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSuffix(f[8], ","), 64); err != nil || v < plain {
			t.Errorf("%s: discounted induction %q below the plain %g", f[0], f[8], plain)
		}
	}
	if n == 0 {
		t.Errorf("no induction head in the demo's table:\n%s", out)
	}
}
