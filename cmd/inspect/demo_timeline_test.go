package main

import (
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/timeline"
)

// The demo's shipped timeline (models/demo/timeline, written by scripts/train-demo.sh)
// spans the formation of its induction heads: scored by heads --timeline, the best
// layer-1 induction score is under 0.1 at the first step and at least 0.4 at the last,
// and it rises between steps 10000 and 10100 (where the card's figure shows the jump).
func TestDemoTimelineSpansThePhaseChange(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "models", "demo", "timeline")
	tl, err := timeline.Open(dir)
	if err != nil {
		t.Fatalf("the demo's timeline: %v", err)
	}
	if len(tl.Steps) < 12 {
		t.Fatalf("the demo's timeline has %d steps, want at least 12", len(tl.Steps))
	}
	out, stderr, code := inspect(t, "heads", "--timeline", dir, "--device", "cpu", "--layer", "1")
	if code != 0 {
		t.Fatalf("heads --timeline: exit %d: %s", code, stderr)
	}
	rows := readCSV(t, out)
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	best := map[int64]float64{} // step → best layer-1 induction score
	for _, r := range rows[1:] {
		step, _ := strconv.ParseInt(r[col["step"]], 10, 64)
		v, err := strconv.ParseFloat(r[col["induction"]], 64)
		if err != nil || math.IsNaN(v) {
			t.Fatalf("step %d: induction %q", step, r[col["induction"]])
		}
		if r[col["layer"]] != "1" {
			t.Fatalf("--layer 1 gave a row of layer %s", r[col["layer"]])
		}
		if old, ok := best[step]; !ok || v > old {
			best[step] = v
		}
	}
	first, last := tl.Steps[0].Step, tl.Steps[len(tl.Steps)-1].Step
	if len(best) != len(tl.Steps) {
		t.Fatalf("scores for %d steps, the timeline has %d", len(best), len(tl.Steps))
	}
	if best[first] >= 0.1 {
		t.Errorf("best layer-1 induction at the first step (%d) is %.3f, want < 0.1", first, best[first])
	}
	if best[last] < 0.4 {
		t.Errorf("best layer-1 induction at the last step (%d) is %.3f, want ≥ 0.4", last, best[last])
	}
	if b, a := best[10000], best[10100]; !(b < 0.4 && a >= 0.4) {
		t.Errorf("best layer-1 induction %.3f at step 10000 and %.3f at step 10100: want the rise through 0.4 there", b, a)
	}
}
