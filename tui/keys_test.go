package tui

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/attnscope/attnscope/heatmap"
)

// screenLines is the model's frame without escapes, split into lines.
func screenLines(m *Model) []string { return strings.Split(ansi.Strip(m.render()), "\n") }

// The bottom key bar always fits on one line, always ends with "? help" and "q quit", and
// never cuts an item: at any width each item shown is whole, and the narrower the window
// the fewer items (the least important go first).
func TestKeyBarFits(t *testing.T) {
	whole := map[string]bool{}
	for _, v := range []view{gridView, headView, tokenView} {
		for _, table := range []bool{false, true} {
			for _, it := range barItems(v, true, table, false) {
				whole[it.key+" "+it.desc] = true
			}
		}
	}
	for _, keys := range [][]string{nil, {"enter"}, {"tab", "tab"}, {"h"}} {
		prev := 1 << 30
		for w := 300; w >= minWidth; w-- {
			m := newModel(heatmap.ANSI256, fakeRun(3, 12, 20))
			m.Update(tea.WindowSizeMsg{Width: w, Height: 24})
			for _, k := range keys {
				m.Update(press(k))
			}
			lines := screenLines(m)
			bar := strings.TrimSpace(lines[len(lines)-1])
			if ansi.StringWidth(lines[len(lines)-1]) > w {
				t.Fatalf("%v at width %d: the bar is wider: %q", keys, w, bar)
			}
			if !strings.HasSuffix(bar, "? help  q quit") {
				t.Fatalf("%v at width %d: the bar lacks help and quit at its end: %q", keys, w, bar)
			}
			items := strings.Split(bar, "  ")
			for _, it := range items {
				if !whole[it] {
					t.Fatalf("%v at width %d: %q is not a whole item of the bar %q", keys, w, it, bar)
				}
			}
			if len(items) > prev {
				t.Fatalf("%v at width %d: more items (%d) than at the wider window (%d)", keys, w, len(items), prev)
			}
			prev = len(items)
			if w == 80 && keys == nil {
				for _, want := range []string{"enter open", "e edit", "p save"} {
					if !strings.Contains(bar, want) {
						t.Errorf("at 80 columns the grid's bar lacks %q: %q", want, bar)
					}
				}
			}
		}
	}
}

// The help overlay lists every key at every size: in two or more columns when they fit,
// one when narrow, and scrolled with ↑/↓ when taller than the window; any other key
// closes it and q quits.
func TestHelpOverlayReflows(t *testing.T) {
	var descs []string
	for _, col := range newKeyMap().FullHelp() {
		for _, b := range col {
			descs = append(descs, b.Help().Desc)
		}
	}
	for _, want := range []string{"quit", "save the head as PNG", "save the grid as PNG", "edit the prompt", "switch head off / on (ablate)", "switch every head back on"} {
		if !slices.Contains(descs, want) {
			t.Fatalf("the help lacks %q", want)
		}
	}
	for _, size := range [][2]int{{40, 10}, {50, 24}, {80, 24}, {120, 40}, {200, 60}} {
		m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		m.Update(press("?"))
		seen := strings.Join(screenLines(m), "\n")
		for range 60 * min(m.helpScroll(), 1) {
			m.Update(press("down"))
			if !m.showHelp {
				t.Fatalf("at %v: ↓ closed the help", size)
			}
			seen += strings.Join(screenLines(m), "\n")
		}
		for _, d := range descs {
			if !strings.Contains(seen, d) {
				t.Errorf("at %v: the help never shows %q", size, d)
			}
		}
		if m.helpScroll() > 0 && !strings.Contains(seen, "↑/↓ scroll") {
			t.Errorf("at %v: a help taller than the window does not say it scrolls", size)
		}
		m.Update(press("enter"))
		if m.showHelp || m.view != gridView {
			t.Fatalf("at %v: enter did not (only) close the help", size)
		}
	}
	// At 80×24 both columns show: p and q are on the first screen, with the arrows.
	m := newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	m.Update(press("?"))
	screen := strings.Join(screenLines(m), "\n")
	for _, want := range []string{"p     save the head as PNG", "q     quit", "↑/k   up", "x     switch head off"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the help at 80×24 lacks %q:\n%s", want, screen)
		}
	}
	// Narrow: one column, each line whole.
	m.Update(tea.WindowSizeMsg{Width: 45, Height: 24})
	for _, l := range screenLines(m)[2:12] {
		n := 0
		for _, d := range descs {
			if strings.Contains(l, d) {
				n++
			}
		}
		if n > 1 {
			t.Errorf("at 45 columns the help is not one column: %q", l)
		}
	}
	if _, cmd := m.Update(press("q")); cmd == nil || cmd() != tea.Quit() {
		t.Fatal("q in the help does not quit")
	}
}

// enter opens the head view on the row with the sharpest attention (the highest largest
// weight; of equals, the last row), with the key cursor on its peak, both on screen.
func TestOpenAtSharpestRow(t *testing.T) {
	const T = 150
	run := fakeRun(1, 2, T)
	a := run.Result.Attn[0][1]
	for i := range a {
		for j := range a[i] {
			a[i][j] = 0
		}
		a[i][0] = 0.5 // every row's peak below the sharp rows'
		if i > 0 {
			a[i][1] = 0.49
		}
	}
	sharp := func(q, k int) {
		for j := range a[q] {
			a[q][j] = 0
		}
		a[q][k] = 0.97
		a[q][0] += 0.03
	}
	sharp(20, 17)
	sharp(40, 33) // a tie with row 20: the last wins
	for _, size := range [][2]int{{80, 24}, {60, 12}, {200, 60}} {
		m := newModel(heatmap.ANSI256, run)
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		m.Update(press("right")) // L0H1
		m.Update(press("enter"))
		if m.view != headView || m.query != 40 || m.key != 33 {
			t.Fatalf("at %v: enter opened %s at query %d key %d, want head view at 40, 33", size, m.view, m.query, m.key)
		}
		w, h := m.mainArea(headView)
		d := m.headGeometry(w, h)
		if m.query < d.rowTop || m.query >= d.rowTop+d.mapH || m.key < d.colLeft || m.key >= d.colLeft+d.nk {
			t.Fatalf("at %v: the cursor (40, 33) is off screen: rows from %d (%d), keys from %d (%d)", size, d.rowTop, d.mapH, d.colLeft, d.nk)
		}
		if screen := ansi.Strip(m.render()); size[0] >= 120 && !strings.Contains(screen, "A[40,33] = 0.9700") {
			t.Fatalf("at %v: the legend does not show the peak:\n%s", size, screen)
		}
		m.Update(press("z")) // fit stays
		if !m.fit {
			t.Fatalf("at %v: z no longer fits the map", size)
		}
	}
	// A causal map's first row (1.0 on itself, whatever the head) is left out.
	causal := fakeRun(1, 1, 6)
	c := causal.Result.Attn[0][0]
	for i := range c {
		for j := range c[i] {
			c[i][j] = 0
			if j <= i {
				c[i][j] = 1 / float32(i+1)
			}
		}
	}
	c[3] = []float32{0.1, 0.8, 0.1, 0, 0, 0}
	m := newModel(heatmap.ANSI256, causal)
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("enter"))
	if m.query != 3 || m.key != 1 {
		t.Fatalf("causal map: opened at (%d, %d), want (3, 1), not the first row", m.query, m.key)
	}
	if q, k := sharpestRow(nil); q != -1 || k != -1 {
		t.Fatalf("sharpestRow(nil) = %d, %d", q, k)
	}
}

// After a run given as ids, e edits the ids (the editor and status say so) and enter
// re-runs the same kind: RerunIDs gets the ids, not their text as a prompt.
func TestEditIDs(t *testing.T) {
	initial := fakeRun(2, 3, 3)
	initial.Prompt = "5,17,23"
	var got [][]int64
	texts := 0
	m := New(Config{ModelName: "m", Device: "CPU", Initial: initial,
		Rerun: func(_ context.Context, prompt string) (*Run, error) {
			texts++
			return fakeRun(2, 3, len(prompt)), nil
		},
		RerunIDs: func(_ context.Context, ids []int64) (*Run, error) {
			got = append(got, ids)
			r := fakeRun(2, 3, len(ids))
			r.Prompt = "joined"
			return r, nil
		}})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("e"))
	screen := ansi.Strip(m.render())
	if !m.editing || m.editor.value() != "5,17,23" || !strings.Contains(screen, "ids> 5,17,23") || !strings.Contains(screen, "editing ids") {
		t.Fatalf("e after ids: editing %v, editor %q:\n%s", m.editing, m.editor.value(), screen)
	}
	_, cmd := m.Update(press("enter"))
	if cmd == nil {
		t.Fatal("enter does not run the ids")
	}
	m.Update(cmd())
	if texts != 0 || len(got) != 1 || !slices.Equal(got[0], []int64{5, 17, 23}) || m.tokens() != 3 {
		t.Fatalf("re-run: %d text runs, ids runs %v, %d tokens", texts, got, m.tokens())
	}
	// Spaces work as separators; anything else is refused with a sentence.
	for _, c := range []struct {
		text string
		ok   bool
	}{{"1, 2 3", true}, {"1,x,3", false}, {" , ", false}} {
		m.Update(press("e"))
		m.Update(keyMsg("ctrl+u"))
		m.Update(tea.PasteMsg{Content: c.text})
		_, cmd := m.Update(press("enter"))
		if cmd != nil {
			m.Update(cmd())
		}
		if failed := strings.HasPrefix(m.status, "error: "); failed == c.ok {
			t.Fatalf("ids %q: status %q", c.text, m.status)
		}
	}
	if !slices.Equal(got[1], []int64{1, 2, 3}) || len(got) != 2 {
		t.Fatalf("ids runs %v", got)
	}
	// Without RerunIDs the editor edits text.
	m = newModel(heatmap.ANSI256, fakeRun(2, 3, 8))
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(press("e"))
	if screen := ansi.Strip(m.render()); !strings.Contains(screen, "prompt> ") || strings.Contains(screen, "editing ids") {
		t.Fatalf("a text prompt is edited as ids:\n%s", screen)
	}
}

// The status line names the model, the device and the run's time, and gives them up for a
// long message before the token count.
func TestStatusNamesModelDeviceTime(t *testing.T) {
	run := fakeRun(2, 3, 8)
	run.Result.RunTime = 1530e6
	m := New(Config{ModelName: "gpt2-small", Device: "CUDA", Initial: run})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	lines := screenLines(m)
	status := lines[len(lines)-2]
	for _, want := range []string{"gpt2-small", "CUDA", "8 tokens", "run 1.53 s"} {
		if !strings.Contains(status, want) {
			t.Errorf("status line %q lacks %q", status, want)
		}
	}
	m.Update(tea.WindowSizeMsg{Width: 40, Height: 30})
	lines = screenLines(m)
	if status := lines[len(lines)-2]; !strings.Contains(status, "8 tokens") || strings.HasSuffix(strings.TrimSpace(status), "…") {
		t.Errorf("narrow status line %q", status)
	}
}

// The selected head's score mark stays visible under the grid cursor.
func TestMarkUnderCursor(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 4, 12))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	m.Update(press("o")) // mark by prev_token: heads with l+h even
	if !m.marked(0, 0) || m.marked(0, 1) {
		t.Fatal("the fake run's previous-token heads are not marked")
	}
	row := func() string {
		for _, l := range screenLines(m) {
			if strings.HasPrefix(l, "L0") {
				return l
			}
		}
		t.Fatal("no L0 row")
		return ""
	}
	if n := strings.Count(row(), "•"); n != 2 {
		t.Fatalf("the selected marked head L0H0 hides its mark: %d marks in %q", n, row())
	}
	m.Update(press("right")) // L0H1, not marked: the cursor shows
	if n := strings.Count(row(), "•"); n != 2 || !strings.Contains(row(), "▶") {
		t.Fatalf("L0H1 selected: %q", row())
	}
}

// The mouse: a click on a thumbnail opens its head, a click on a cell of the head view
// moves both cursors there, the wheel moves through layers and queries and scrolls the
// help; the keyboard still does all of it.
func TestMouse(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(3, 4, 40))
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	if m.View().MouseMode != tea.MouseModeCellMotion {
		t.Fatal("the view does not ask for mouse events")
	}
	w, h := m.mainArea(gridView)
	g := m.gridGeometry(w, h)
	// L1H2: its thumbnail's second line, third column.
	m.Update(tea.MouseClickMsg{X: g.labelW + 2*(g.tw+1) + 3, Y: 1 + 1 + (1-g.top)*g.th + 1, Button: tea.MouseLeft})
	if m.view != headView || m.layer != 1 || m.head != 2 {
		t.Fatalf("a click on L1H2's thumbnail: %s view, L%dH%d", m.view, m.layer, m.head)
	}
	w, h = m.mainArea(headView)
	d := m.headGeometry(w, h)
	m.Update(tea.MouseClickMsg{X: d.labelW + 5*m.zoom, Y: 1 + 3, Button: tea.MouseLeft})
	if m.query != d.rowTop+3 || m.key != d.colLeft+5 {
		t.Fatalf("a click on cell (%d, %d): cursor at (%d, %d)", d.rowTop+3, d.colLeft+5, m.query, m.key)
	}
	q := m.query
	m.Update(tea.MouseWheelMsg{X: 10, Y: 10, Button: tea.MouseWheelDown})
	if m.query != q+3 {
		t.Fatalf("the wheel moved the query from %d to %d", q, m.query)
	}
	m.Update(tea.MouseClickMsg{X: 10, Y: 10, Button: tea.MouseRight}) // ignored
	m.Update(press("esc"))
	m.Update(tea.MouseWheelMsg{X: 10, Y: 10, Button: tea.MouseWheelDown})
	if m.view != gridView || m.layer != 2 {
		t.Fatalf("the wheel in the grid: %s view, layer %d", m.view, m.layer)
	}
	// A click outside any thumbnail changes nothing.
	before := m.state
	m.Update(tea.MouseClickMsg{X: 0, Y: 0, Button: tea.MouseLeft})
	m.Update(tea.MouseClickMsg{X: 119, Y: 39, Button: tea.MouseLeft})
	if m.state != before {
		t.Fatal("a click off the thumbnails changed the state")
	}
	// The help scrolls with the wheel at 80×24 and closes on a click.
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	m.Update(press("?"))
	m.Update(tea.MouseWheelMsg{X: 10, Y: 10, Button: tea.MouseWheelDown})
	if !m.showHelp || m.helpTop == 0 {
		t.Fatalf("the wheel in the help: shown %v, top %d", m.showHelp, m.helpTop)
	}
	m.Update(tea.MouseClickMsg{X: 10, Y: 10, Button: tea.MouseLeft})
	if m.showHelp {
		t.Fatal("a click does not close the help")
	}
}

// Thumbnails follow the window and the prompt: larger in a larger window, never larger
// than the map, with the map's aspect; when the layers do not fit at a readable height
// (30 layers × 9 heads at 160×50) the grid pages by bands of layers (PgUp/PgDn, said in
// the key bar) instead of shrinking them to a line.
func TestGridThumbnailsFollowWindow(t *testing.T) {
	geom := func(run *Run, w, h int) (*Model, gridGeom) {
		m := newModel(heatmap.ANSI256, run)
		m.Update(tea.WindowSizeMsg{Width: w, Height: h})
		gw, gh := m.mainArea(gridView)
		return m, m.gridGeometry(gw, gh)
	}
	_, small := geom(fakeRun(2, 4, 64), 80, 24)
	_, large := geom(fakeRun(2, 4, 64), 200, 60)
	if large.tw <= small.tw || large.th <= small.th {
		t.Fatalf("thumbnails %d×%d at 80×24 and %d×%d at 200×60", small.tw, small.th, large.tw, large.th)
	}
	// Square maps: a line is two rows of the map, so th is about tw/2.
	if d := 2*large.th - large.tw; d < -2 || d > 2 {
		t.Fatalf("a square map's thumbnail is %d×%d", large.tw, large.th)
	}
	// A four-token prompt: four keys, two lines.
	if _, g := geom(fakeRun(2, 2, 4), 200, 60); g.tw > 4 || g.th > 2 {
		t.Fatalf("a 4×4 map gets %d×%d thumbnails", g.tw, g.th)
	}
	m, g := geom(fakeRun(30, 9, 64), 160, 50)
	if g.th < minThumbH || g.visL >= 30 {
		t.Fatalf("30 layers at 160×50: %d lines each, %d layers shown", g.th, g.visL)
	}
	lines := screenLines(m)
	if bar := lines[len(lines)-1]; !strings.Contains(bar, "pgup/pgdn layers") {
		t.Fatalf("the paged grid's key bar does not say how to page: %q", bar)
	}
	m.Update(keyMsg("pgdown"))
	if m.layer != g.visL || m.gridTop != g.visL {
		t.Fatalf("pgdown: layer %d, top %d; want both %d", m.layer, m.gridTop, g.visL)
	}
	if !strings.Contains(strings.Join(screenLines(m), "\n"), fmt.Sprintf("L%d ", g.visL)) {
		t.Fatal("the next band's first layer is not on screen")
	}
	m.Update(keyMsg("pgup"))
	if m.layer != 0 || m.gridTop != 0 {
		t.Fatalf("pgup: layer %d, top %d", m.layer, m.gridTop)
	}
	// Every layer fits: no paging said.
	m, _ = geom(fakeRun(2, 4, 64), 120, 40)
	if lines := screenLines(m); strings.Contains(lines[len(lines)-1], "pgup") {
		t.Fatal("an unpaged grid offers paging")
	}
}

// h turns the grid into a table of every head's scores, sorted by the sort score (o
// cycles it); ↑/↓ move through the rows in that order, enter opens the selected head, a
// click on a row opens it, h goes back to the thumbnails.
func TestScoreTable(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(3, 4, 12))
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(m.Init()()) // the probe: L1H2 has induction 0.9
	m.Update(press("h"))
	screen := strings.Join(screenLines(m), "\n")
	if !m.table || !strings.Contains(screen, "table view") || !strings.Contains(screen, "12 heads, sorted by induction") {
		t.Fatalf("h does not show the table:\n%s", screen)
	}
	lines := screenLines(m)
	if !strings.Contains(lines[1], "induct▼") || !strings.Contains(lines[2], "L1H2") || !strings.Contains(lines[2], "0.900") {
		t.Fatalf("the table is not sorted by induction:\n%s", screen)
	}
	for l := 0; l < 3; l++ {
		for h := 0; h < 4; h++ {
			if !strings.Contains(screen, fmt.Sprintf("L%dH%d", l, h)) {
				t.Fatalf("the table lacks L%dH%d:\n%s", l, h, screen)
			}
		}
	}
	// The first row, then down: the table's order, not the grid's.
	m.Update(press("g"))
	if m.layer != 1 || m.head != 2 {
		t.Fatalf("g in the table selects L%dH%d, want the top row L1H2", m.layer, m.head)
	}
	m.Update(press("down"))
	second := m.order[1]
	if m.layer != second.Layer || m.head != second.Head {
		t.Fatalf("down selects L%dH%d, want the second row %s", m.layer, m.head, second.Name())
	}
	// o re-sorts: by prev_token the heads with l+h even (1.0) come first.
	m.Update(press("o"))
	lines = screenLines(m)
	if !strings.Contains(lines[1], "prev▼") {
		t.Fatalf("o does not sort by prev_token:\n%s", strings.Join(lines, "\n"))
	}
	for _, s := range m.order[:6] {
		if (s.Layer+s.Head)%2 != 0 {
			t.Fatalf("by prev_token %s is among the first six", s.Name())
		}
	}
	m.Update(press("g"))
	want := m.order[0]
	m.Update(press("enter"))
	if m.view != headView || m.layer != want.Layer || m.head != want.Head {
		t.Fatalf("enter opens %s L%dH%d, want the head view of %s", m.view, m.layer, m.head, want.Name())
	}
	m.Update(press("esc"))
	if !m.table || m.view != gridView {
		t.Fatal("esc does not return to the table")
	}
	// A click on the third row opens it.
	third := m.order[2]
	m.Update(tea.MouseClickMsg{X: 5, Y: 1 + 1 + 2, Button: tea.MouseLeft})
	if m.view != headView || m.layer != third.Layer || m.head != third.Head {
		t.Fatalf("a click on the third row opens L%dH%d, want %s", m.layer, m.head, third.Name())
	}
	m.Update(press("esc"))
	m.Update(press("h"))
	if m.table || !strings.Contains(strings.Join(screenLines(m), "\n"), "grid view") {
		t.Fatal("h does not go back to the thumbnails")
	}
	// In the head view h still moves the key cursor left.
	m.Update(press("enter"))
	k := m.key
	m.Update(press("h"))
	if m.table || m.key != max(k-1, 0) {
		t.Fatalf("h in the head view: table %v, key %d → %d", m.table, k, m.key)
	}
}

// The score table drawn for a state Update has not settled (the table switched on, the
// sort changed behind its back) is drawn right and stores nothing.
func TestScoreTableUnsettled(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(4, 5, 20))
	m.Update(tea.WindowSizeMsg{Width: 90, Height: 20})
	m.table, m.sortBy, m.layer, m.head = true, 1, 3, 4
	before := snap(m)
	frame := m.render()
	if snap(m) != before {
		t.Fatal("View changed the model")
	}
	m.Update(tea.WindowSizeMsg{Width: 90, Height: 20})
	if m.render() != frame {
		t.Fatalf("the settled table differs from the one drawn before settling:\n%s\n%s", ansi.Strip(frame), ansi.Strip(m.render()))
	}
	if m.order == nil {
		t.Fatal("Update did not fill the table's cache")
	}
}

// The head view's key labels sit right under a short map, not at the bottom of the window.
func TestKeyLabelsUnderShortMap(t *testing.T) {
	m := newModel(heatmap.NoColor, fakeRun(1, 1, 5))
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 40})
	m.Update(press("enter"))
	lastRow, labels := -1, -1
	for i, l := range strings.Split(m.View().Content, "\n") {
		l = ansi.Strip(l)
		if strings.Contains(l, "␣the ") && lastRow < 0 {
			lastRow = i // the fifth query row: the map's last
		}
		if rest := strings.TrimLeft(l, " "); labels < 0 && len(l)-len(rest) >= 4 && strings.HasPrefix(rest, "T ") {
			labels = i // the first row of the vertical key labels
		}
	}
	if lastRow < 0 || labels != lastRow+1 {
		t.Fatalf("the map ends on line %d and the key labels start on line %d; want them right under it:\n%s", lastRow, labels, m.View().Content)
	}
}
