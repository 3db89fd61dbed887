package tui

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"

	"github.com/attnscope/attnscope/heatmap"
)

// A 200×60 grid frame of GPT-2-small's shape (12 layers × 12 heads) at T = 256, drawn
// from cached thumbnails (every frame after the first; the issue's ≤ 2 ms target) and
// with every thumbnail pooled anew (first frame, resize, new prompt); and what View costs
// once Update has drawn the frame (what Bubble Tea pays for every message).
func BenchmarkGridFrame(b *testing.B) {
	m := newModel(heatmap.ANSI256, fakeRun(12, 12, 256))
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	b.Run("cached", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			m.renderTop()
		}
	})
	b.Run("first", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			m.thumbs, m.topOK = nil, false
			m.settle()
		}
	})
	b.Run("view", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			m.View()
		}
	})
}

// A frame after moving the query cursor in the head view at T = 256 (Update, which draws
// it, and View).
func BenchmarkCursorMoveFrame(b *testing.B) {
	m := newModel(heatmap.ANSI256, fakeRun(12, 12, 256))
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	m.Update(press("enter"))
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			m.Update(press("up"))
		} else {
			m.Update(press("down"))
		}
		m.View()
	}
}

// countingWriter counts what the program writes to the terminal.
type countingWriter struct{ n atomic.Int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// TestBytesPerCursorMove measures what Bubble Tea v2's cell-diffing renderer sends for one
// cursor move in the head view (256 colours, 200×60): a few hundred bytes, not the ~100 KB
// of a full frame, which is what makes the UI usable over SSH.
func TestBytesPerCursorMove(t *testing.T) {
	m := newModel(heatmap.ANSI256, fakeRun(2, 4, 40))
	out := &countingWriter{}
	in, _ := io.Pipe()
	p := tea.NewProgram(m, tea.WithOutput(out), tea.WithInput(in), tea.WithWindowSize(200, 60),
		tea.WithColorProfile(colorprofile.ANSI256), tea.WithoutSignals())
	done := make(chan struct{})
	go func() { p.Run(); close(done) }()
	settle := func() int {
		last := int64(-1)
		for out.n.Load() != last {
			last = out.n.Load()
			time.Sleep(100 * time.Millisecond)
		}
		return int(last)
	}
	p.Send(press("enter"))
	first := settle()
	p.Send(press("up"))
	moved := settle() - first
	p.Quit()
	<-done
	t.Logf("head view: %d bytes for the first frames, %d bytes for one cursor move", first, moved)
	if moved == 0 || moved > 4096 {
		t.Fatalf("a cursor move wrote %d bytes", moved)
	}
	var buf bytes.Buffer
	buf.WriteString(m.render())
	if moved*10 > buf.Len() {
		t.Errorf("a cursor move (%d bytes) costs more than a tenth of a full frame (%d bytes)", moved, buf.Len())
	}
}
