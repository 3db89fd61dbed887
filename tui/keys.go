package tui

import (
	"strings"

	"charm.land/bubbles/v2/key"
	"github.com/charmbracelet/x/ansi"
)

// keyMap holds every binding; the help line and the help overlay are generated from it.
type keyMap struct {
	Up, Down, Left, Right key.Binding
	Top, Bottom           key.Binding
	PageUp, PageDown      key.Binding
	KeysLeft, KeysRight   key.Binding
	Peak                  key.Binding
	Open, Back, NextView  key.Binding
	Zoom, ZoomIn, ZoomOut key.Binding
	Scale, Direction      key.Binding
	Sort, Jump            key.Binding
	Edit, Save, SaveGrid  key.Binding
	Ablate, Restore       key.Binding
	Table, Circuits       key.Binding
	Help, Quit            key.Binding
	// A training timeline's (see TimelineConfig): shown and active in timeline mode only.
	StepBack, StepNext key.Binding
	JumpBack, JumpNext key.Binding
}

func newKeyMap() keyMap {
	b := func(keys []string, help, desc string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, desc))
	}
	return keyMap{
		Up:        b([]string{"up", "k"}, "↑/k", "up: layer / query"),
		Down:      b([]string{"down", "j"}, "↓/j", "down: layer / query"),
		Left:      b([]string{"left", "h"}, "←/h", "left: head (←) / key / token"),
		Table:     b([]string{"h"}, "h", "grid: table of head scores"),
		Circuits:  b([]string{"c"}, "c", "panel: scores / circuits"),
		Right:     b([]string{"right", "l"}, "→/l", "right: head / key / token"),
		Top:       b([]string{"g", "home"}, "g", "first layer / query"),
		Bottom:    b([]string{"G", "end"}, "G", "last layer / query"),
		PageUp:    b([]string{"pgup", "ctrl+u"}, "pgup", "page up: layers / queries"),
		PageDown:  b([]string{"pgdown", "ctrl+d"}, "pgdn", "page down: layers / queries"),
		KeysLeft:  b([]string{"["}, "[", "head: keys a page left"),
		KeysRight: b([]string{"]"}, "]", "head: keys a page right"),
		Peak:      b([]string{"m"}, "m", "head: key cursor to row's peak"),
		Open:      b([]string{"enter"}, "enter", "open head at its sharpest row"),
		Back:      b([]string{"esc", "backspace"}, "esc", "back to the grid"),
		NextView:  b([]string{"tab"}, "tab", "grid → head → tokens"),
		Zoom:      b([]string{"z"}, "z", "head: whole map / detail"),
		ZoomIn:    b([]string{"+", "="}, "+", "wider key cells"),
		ZoomOut:   b([]string{"-"}, "-", "narrower key cells"),
		Scale:     b([]string{"s"}, "s", "scale: linear / sqrt / log"),
		Direction: b([]string{"r"}, "r", "tokens: attends to / by"),
		Sort:      b([]string{"o"}, "o", "score to mark and jump by"),
		Jump:      b([]string{"n"}, "n", "jump to the next-best head"),
		Edit:      b([]string{"e", "/"}, "e", "edit the prompt"),
		Save:      b([]string{"p"}, "p", "save the head as PNG"),
		SaveGrid:  b([]string{"P"}, "P", "save the grid as PNG"),
		Ablate:    b([]string{"x"}, "x", "switch head off / on (ablate)"),
		Restore:   b([]string{"X"}, "X", "switch every head back on"),
		Help:      b([]string{"?"}, "?", "help (↑/↓ scroll it)"),
		Quit:      b([]string{"q", "ctrl+c"}, "q", "quit"),
		StepBack:  b([]string{"<"}, "<", "timeline: previous step"),
		StepNext:  b([]string{">"}, ">", "timeline: next step"),
		JumpBack:  b([]string{"{"}, "{", "timeline: biggest change before"),
		JumpNext:  b([]string{"}"}, "}", "timeline: biggest change after"),
	}
}

// barItem is one key of the bottom key bar: its key, a short description, and its rank
// (lower is more important: the bar drops the highest ranks first when it is narrow).
type barItem struct {
	key, desc string
	rank      int
}

// barItems are the bottom key bar's keys for view v, in the order drawn; help and quit
// come last and rank 0: they are the last to go.
func barItems(v view, paged, table, timeline bool) []barItem {
	var items []barItem
	switch {
	case v == gridView && table:
		items = []barItem{{"enter", "open", 1}, {"↑↓", "select", 6}, {"o", "sort", 5}, {"h", "thumbnails", 8}}
	case v == gridView:
		items = []barItem{{"enter", "open", 1}, {"↑↓←→", "select", 6}, {"h", "table", 8}}
		if paged {
			items = append(items, barItem{"pgup/pgdn", "layers", 2})
		}
	case v == headView:
		items = []barItem{{"esc", "grid", 1}, {"z", "fit", 5}, {"m", "peak", 8}}
	default:
		items = []barItem{{"esc", "grid", 1}, {"r", "direction", 5}}
	}
	items = append(items,
		barItem{"tab", "view", 4}, barItem{"e", "edit", 2}, barItem{"x", "ablate", 7},
		barItem{"p", "save", 3}, barItem{"s", "scale", 9}, barItem{"c", "circuits", 11})
	if v != gridView || !table {
		items = append(items, barItem{"o", "sort", 10})
	}
	if timeline {
		items = append(items, barItem{"<>", "step", 1}, barItem{"{}", "jump", 6})
	}
	items = append(items,
		barItem{"?", "help", 0}, barItem{"q", "quit", 0})
	return items
}

// keyBar draws items on one line of at most w cells: the items of the highest rank are
// dropped until the rest fit (help and quit, rank 0, stay), and no item is ever cut.
func keyBar(items []barItem, w int) string {
	const sep = "  "
	draw := func(maxRank int) (string, int) {
		var b strings.Builder
		n := 0
		b.WriteString(" ")
		n++
		first := true
		for _, it := range items {
			if it.rank > maxRank {
				continue
			}
			if !first {
				b.WriteString(sep)
				n += len(sep)
			}
			first = false
			b.WriteString(sgrBold + it.key + sgrReset + " " + it.desc)
			n += ansi.StringWidth(it.key) + 1 + ansi.StringWidth(it.desc)
		}
		return b.String(), n
	}
	maxRank := 0
	for _, it := range items {
		maxRank = max(maxRank, it.rank)
	}
	for r := maxRank; r > 0; r-- {
		if s, n := draw(r); n <= w {
			return s
		}
	}
	s, _ := draw(0)
	return s
}

// FullHelp is the help overlay, in columns.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Left, k.Right, k.Top, k.Bottom, k.PageUp, k.PageDown, k.KeysLeft, k.KeysRight, k.Peak},
		{k.Open, k.Back, k.NextView, k.Zoom, k.ZoomIn, k.ZoomOut, k.Scale, k.Direction, k.Ablate, k.Restore},
		{k.Table, k.Circuits, k.Sort, k.Jump, k.Edit, k.Save, k.SaveGrid, k.Help, k.Quit},
	}
}

// TimelineHelp is the help overlay's keys of timeline mode.
func (k keyMap) TimelineHelp() []key.Binding {
	return []key.Binding{k.StepBack, k.StepNext, k.JumpBack, k.JumpNext}
}
