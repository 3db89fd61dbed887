package tui

import "charm.land/bubbles/v2/key"

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
	Help, Quit            key.Binding
}

func newKeyMap() keyMap {
	b := func(keys []string, help, desc string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, desc))
	}
	return keyMap{
		Up:        b([]string{"up", "k"}, "↑/k", "up: layer / query"),
		Down:      b([]string{"down", "j"}, "↓/j", "down: layer / query"),
		Left:      b([]string{"left", "h"}, "←/h", "left: head / key / token"),
		Right:     b([]string{"right", "l"}, "→/l", "right: head / key / token"),
		Top:       b([]string{"g", "home"}, "g", "first query"),
		Bottom:    b([]string{"G", "end"}, "G", "last query"),
		PageUp:    b([]string{"pgup", "ctrl+u"}, "pgup", "page up"),
		PageDown:  b([]string{"pgdown", "ctrl+d"}, "pgdn", "page down"),
		KeysLeft:  b([]string{"["}, "[", "head: keys a page left"),
		KeysRight: b([]string{"]"}, "]", "head: keys a page right"),
		Peak:      b([]string{"m"}, "m", "head: key cursor to the row's largest weight"),
		Open:      b([]string{"enter"}, "enter", "open the selected head"),
		Back:      b([]string{"esc", "backspace"}, "esc", "back to the grid"),
		NextView:  b([]string{"tab"}, "tab", "grid → head → tokens"),
		Zoom:      b([]string{"z"}, "z", "head: whole map / detail"),
		ZoomIn:    b([]string{"+", "="}, "+", "wider key cells"),
		ZoomOut:   b([]string{"-"}, "-", "narrower key cells"),
		Scale:     b([]string{"s"}, "s", "scale: linear / sqrt / log"),
		Direction: b([]string{"r"}, "r", "tokens: attends to / attended by"),
		Sort:      b([]string{"o"}, "o", "score to mark and jump by"),
		Jump:      b([]string{"n"}, "n", "jump to the next-best head"),
		Edit:      b([]string{"e", "/"}, "e", "edit the prompt"),
		Save:      b([]string{"p"}, "p", "save the head as PNG"),
		SaveGrid:  b([]string{"P"}, "P", "save the grid as PNG"),
		Ablate:    b([]string{"x"}, "x", "switch the head off / on (ablate)"),
		Restore:   b([]string{"X"}, "X", "switch every head back on"),
		Help:      b([]string{"?"}, "?", "help"),
		Quit:      b([]string{"q", "ctrl+c"}, "q", "quit"),
	}
}

// ShortHelp is the one-line help at the bottom of the screen.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Open, k.NextView, k.Edit, k.Scale, k.Save, k.Help, k.Quit}
}

// FullHelp is the help overlay, in columns.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Left, k.Right, k.Top, k.Bottom, k.PageUp, k.PageDown, k.KeysLeft, k.KeysRight, k.Peak},
		{k.Open, k.Back, k.NextView, k.Zoom, k.ZoomIn, k.ZoomOut, k.Scale, k.Direction, k.Ablate, k.Restore},
		{k.Sort, k.Jump, k.Edit, k.Save, k.SaveGrid, k.Help, k.Quit},
	}
}
