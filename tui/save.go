package tui

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/internal/outfile"
	"github.com/attnscope/attnscope/result"
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
		off = "; " + strings.ReplaceAll(m.shownOff, ",", " ") + " off"
	}
	model := pictureModelName(m.cfg.ModelName)
	prompt := fmt.Sprintf("%q%s", shorten(m.run.Prompt, 60), off)
	res := m.res()
	kind := "self-attention (query × key)"
	if res.Cross(m.layer) {
		kind = "cross-attention (target × source)"
	} else if res.QuerySide(m.layer) == result.SourceSide {
		kind = "encoder self-attention (query × key)"
	}
	title := fmt.Sprintf("%s · L%d H%d · %s", model, m.layer, m.head, kind)
	subtitle := prompt
	if v := m.headScores(m.layer, m.head).Get(m.sortBy); !math.IsNaN(v) {
		subtitle += fmt.Sprintf("; %s %.2f", m.sortBy, v)
	}
	qName, kName := heatmap.AxisNames(res.Cross(m.layer))
	write := func(w io.Writer) error {
		return writeHeadPNG(w, heatmap.Figure{Title: title, Subtitle: subtitle, Matrix: m.attn(), QueryLabels: m.queryLabels(), KeyLabels: m.keyLabels(),
			QueryAxis: qName, KeyAxis: kName, Scale: m.scale})
	}
	if grid {
		title = fmt.Sprintf("%s · every head", model)
		cross := make([]bool, m.layers())
		for l := range cross {
			cross[l] = res.Cross(l)
		}
		write = func(w io.Writer) error {
			return writeGridPNG(w, heatmap.GridFigure{Title: title, Subtitle: prompt, Attn: res.Attn, Cross: cross, Scale: m.scale})
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

// pictureModelName names the model in a picture's title: Config.ModelName without the
// usual "/model.onnx" (its folder names it) or the ".onnx" of another file.
func pictureModelName(name string) string {
	if dir, file := filepath.Split(name); file == "model.onnx" && dir != "" {
		return filepath.Base(filepath.Clean(dir))
	}
	return strings.TrimSuffix(name, ".onnx")
}
