// Command benchtui measures the attention browser's time to first frame for a model: from
// nothing to the first 200×60 screen in memory (load, session, run, layout and render of
// the grid), as JSON lines. The terminal's own drawing is not included.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/attnscope/attnscope/heatmap"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tui"
)

func main() {
	T := flag.Int("T", 64, "prompt length (random ids)")
	flag.Parse()
	for _, path := range flag.Args() {
		if err := measure(path, *T); err != nil {
			fmt.Fprintln(os.Stderr, "benchtui:", err)
			os.Exit(1)
		}
	}
}

func measure(path string, T int) error {
	start := time.Now()
	m, err := onnxgraph.Load(path)
	if err != nil {
		return err
	}
	s, err := session.Open(m, session.Options{Device: "cpu"})
	if err != nil {
		return err
	}
	defer s.Close()
	opened := time.Since(start)
	if s.Limits.FixedLen > 0 {
		T = s.Limits.FixedLen
	}
	if s.Limits.Positions > 0 {
		T = min(T, s.Limits.Positions)
	}
	vocab := max(s.Limits.Vocab, 2)
	rng := rand.New(rand.NewSource(0))
	ids := make([]int64, T)
	labels := make([]string, T)
	for i := range ids {
		ids[i] = rng.Int63n(int64(vocab))
		labels[i] = strconv.FormatInt(ids[i], 10)
	}
	res, err := s.Run(ids)
	if err != nil {
		return err
	}
	ran := time.Since(start)
	ui := tui.New(tui.Config{ModelName: path, Device: s.Device, Profile: heatmap.ANSI256, Initial: &tui.Run{Prompt: "ids", Result: res, Labels: labels}})
	ui.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	frame := ui.View().Content
	total := time.Since(start)
	b, _ := json.Marshal(map[string]any{
		"model": path, "T": T, "layers": len(res.Attn), "heads": res.Heads(0),
		"open_ms": ms(opened), "run_ms": ms(ran - opened), "frame_ms": ms(total - ran), "first_frame_ms": ms(total),
		"frame_bytes": len(frame),
	})
	fmt.Println(string(b))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
