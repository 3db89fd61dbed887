package tui

import (
	"context"
	"slices"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/heatmap"
)

// typeText sends s to the model one key at a time.
func typeText(m *Model, s string) {
	for _, r := range s {
		m.Update(press(string(r)))
	}
}

// editorLine is the screen's editor line (the one that starts with label), "" when none.
func editorLine(m *Model, label string) string {
	for _, l := range strings.Split(ansi.Strip(m.View().Content), "\n") {
		if strings.HasPrefix(l, label) {
			return l
		}
	}
	return ""
}

// In an encoder–decoder's prompt editor tab switches between the source and the target,
// the label says which, and enter re-runs both through RerunPair.
func TestEditSourceAndTarget(t *testing.T) {
	first := fakePairRun()
	first.Target = "T0 T1 T2"
	type pair struct{ src, tgt string }
	var got []pair
	m := New(Config{ModelName: "m", Profile: heatmap.NoColor, Initial: first,
		Rerun: func(context.Context, string) (*Run, error) {
			t.Error("an encoder–decoder was re-run through Rerun")
			return fakePairRun(), nil
		},
		RerunPair: func(_ context.Context, src, tgt string) (*Run, error) {
			got = append(got, pair{src, tgt})
			r := fakePairRun()
			r.Prompt = src
			return r, nil
		}})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("e"))
	if l := editorLine(m, "source> "); !strings.Contains(l, "S0 S1 S2 S3") {
		t.Fatalf("the editor does not open on the source: %q", l)
	}
	typeText(m, " S4")
	m.Update(press("tab"))
	if l := editorLine(m, "target> "); !strings.Contains(l, "T0 T1 T2") {
		t.Fatalf("tab does not switch to the target: %q\n%s", l, ansi.Strip(m.View().Content))
	}
	typeText(m, " T3")
	m.Update(press("tab"))
	if l := editorLine(m, "source> "); !strings.Contains(l, "S0 S1 S2 S3 S4") {
		t.Fatalf("tab does not switch back to the source, as edited: %q", l)
	}
	m.Update(press("tab")) // enter from the target's side runs the same pair
	_, cmd := m.Update(press("enter"))
	if cmd == nil || !m.running {
		t.Fatal("enter does not start a run")
	}
	m.Update(cmd())
	if want := []pair{{"S0 S1 S2 S3 S4", "T0 T1 T2 T3"}}; !slices.Equal(got, want) {
		t.Fatalf("RerunPair got %q, want %q", got, want)
	}
	if m.run.Prompt != "S0 S1 S2 S3 S4" || m.run.Target != "T0 T1 T2 T3" {
		t.Fatalf("the run shown: source %q, target %q", m.run.Prompt, m.run.Target)
	}
	// e again opens the run's source, tab its target.
	m.Update(press("e"))
	m.Update(press("tab"))
	if l := editorLine(m, "target> "); !strings.Contains(l, "T0 T1 T2 T3") {
		t.Fatalf("the editor lost the target: %q", l)
	}
	// An empty target runs nothing.
	m.Update(keyMsg("ctrl+u"))
	if _, cmd := m.Update(press("enter")); cmd != nil || !strings.Contains(ansi.Strip(m.View().Content), "the target is empty") {
		t.Fatal("an empty target was run")
	}
}

// For an ids-only encoder–decoder the editor edits the source and target ids, and enter
// re-runs them through RerunPairIDs.
func TestEditSourceAndTargetIDs(t *testing.T) {
	first := fakePairRun()
	first.Prompt, first.Target = "20,21,22,23", "10,11,12"
	var src, tgt []int64
	m := New(Config{ModelName: "m", Profile: heatmap.NoColor, Initial: first,
		RerunIDs: func(context.Context, []int64) (*Run, error) {
			t.Error("an encoder–decoder was re-run through RerunIDs")
			return fakePairRun(), nil
		},
		RerunPairIDs: func(_ context.Context, s, tg []int64) (*Run, error) {
			src, tgt = s, tg
			r := fakePairRun()
			r.Prompt = "20,21,22,23"
			return r, nil
		}})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("e"))
	if l := editorLine(m, "source ids> "); !strings.Contains(l, "20,21,22,23") {
		t.Fatalf("the editor does not open on the source ids: %q", l)
	}
	m.Update(press("tab"))
	if l := editorLine(m, "target ids> "); !strings.Contains(l, "10,11,12") {
		t.Fatalf("tab does not switch to the target ids: %q", l)
	}
	typeText(m, ",13")
	_, cmd := m.Update(press("enter"))
	if cmd == nil {
		t.Fatal("enter does not start a run")
	}
	m.Update(cmd())
	if !slices.Equal(src, []int64{20, 21, 22, 23}) || !slices.Equal(tgt, []int64{10, 11, 12, 13}) {
		t.Fatalf("RerunPairIDs got %v, %v", src, tgt)
	}
	if m.run.Target != "10,11,12,13" {
		t.Fatalf("the run's target %q", m.run.Target)
	}
	// Bad target ids are the run's error, and e offers both again.
	m.Update(press("e"))
	m.Update(press("tab"))
	typeText(m, ",x")
	_, cmd = m.Update(press("enter"))
	m.Update(cmd())
	if !strings.Contains(m.status, "target:") {
		t.Fatalf("status %q", m.status)
	}
	m.Update(press("e"))
	m.Update(press("tab"))
	if l := editorLine(m, "target ids> "); !strings.Contains(l, "10,11,12,13,x") {
		t.Fatalf("the failed target is not offered again: %q", l)
	}
}

// A one-sequence model's editor is unchanged: one prompt, no tab switch.
func TestEditOneSequenceHasNoTarget(t *testing.T) {
	m := newModel(heatmap.NoColor, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("e"))
	m.Update(press("tab"))
	if m.editTarget || editorLine(m, "prompt> ") == "" {
		t.Fatal("tab switched a one-sequence model's editor")
	}
}

// View leaves an encoder–decoder's editor alone, on either sequence.
func TestViewIsPureEditingTarget(t *testing.T) {
	for _, keys := range [][]string{{"e"}, {"e", "tab"}, {"e", "tab", "x", "tab"}} {
		first := fakePairRun()
		first.Target = "T0 T1 T2"
		m := New(Config{ModelName: "m", Profile: heatmap.ANSI256, Initial: first,
			RerunPair: func(context.Context, string, string) (*Run, error) { return fakePairRun(), nil }})
		m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
		for _, k := range keys {
			m.Update(press(k))
		}
		before := snap(m)
		first1, second := m.View().Content, m.View().Content
		if after := snap(m); after != before || first1 != second {
			t.Fatalf("%v: View changed the model or drew differently", keys)
		}
	}
}
