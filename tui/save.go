package tui

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/internal/outfile"
)

// PNG encoders, replaced in tests.
var (
	writeHeadPNG = heatmap.WritePNG
	writeGridPNG = heatmap.WriteGridPNG
)

// savePNG writes the selected head, or the grid, as a PNG in Config.SaveDir under a name
// no file has yet (attnscope-MODEL-L0H1.png, then …-2.png, …), atomically: an encoding
// failure leaves nothing behind, and no existing file is ever replaced. The status line
// says where it went.
func (m *Model) savePNG(grid bool) {
	if m.layers() == 0 || m.headsIn(m.layer) == 0 {
		m.setStatus("cannot save: the run has no attention maps")
		return
	}
	base := strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == filepath.Separator {
			return '-'
		}
		return r
	}, strings.TrimSuffix(m.cfg.ModelName, ".onnx"))
	name := fmt.Sprintf("attnscope-%s-L%dH%d.png", base, m.layer, m.head)
	if grid {
		name = fmt.Sprintf("attnscope-%s-grid.png", base)
	}
	off := ""
	if m.shownOff != "" {
		off = " — " + strings.ReplaceAll(m.shownOff, ",", " ") + " off"
	}
	title := fmt.Sprintf("%s L%dH%d — %q%s", m.cfg.ModelName, m.layer, m.head, shorten(m.run.Prompt, 60), off)
	write := func(w io.Writer) error {
		return writeHeadPNG(w, heatmap.Figure{Title: title, Matrix: m.attn(), QueryLabels: m.queryLabels(), KeyLabels: m.keyLabels(), Scale: m.scale})
	}
	if grid {
		title = fmt.Sprintf("%s — %q%s", m.cfg.ModelName, shorten(m.run.Prompt, 60), off)
		write = func(w io.Writer) error {
			return writeGridPNG(w, heatmap.GridFigure{Title: title, Attn: m.res().Attn, Scale: m.scale})
		}
	}
	dir := m.cfg.SaveDir
	if dir == "" {
		dir = "."
	}
	path, err := outfile.CreateNew(dir, name, write)
	if err != nil {
		m.setStatus("cannot save the PNG: %v", err)
		return
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	m.setStatus("saved %s", path)
}
