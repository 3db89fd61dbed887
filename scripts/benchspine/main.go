// Command benchspine times one onnxruntime session over a model, with or without the
// exposed attention, and prints JSON lines: session creation, forward time per sequence
// length (median and min of -reps runs after one warm-up), and the process's peak RSS.
// scripts/bench.sh runs it once per mode, so each process's peak RSS is its own.
// -device cuda runs the session on onnxruntime's CUDA provider (scripts/gpu-check.sh);
// its lines then carry "device":"cuda", and the default, cpu, prints what it always did.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
)

func main() {
	modelPath := flag.String("model", "", "ONNX model")
	mode := flag.String("mode", "attn", "attn (attention exposed) or plain (logits only)")
	lengths := flag.String("T", "128,512,1024", "sequence lengths")
	reps := flag.Int("reps", 5, "timed runs per length")
	device := flag.String("device", "cpu", "cpu or cuda (onnxruntime's CUDA provider; fails when it cannot load)")
	flag.Parse()
	if err := run(*modelPath, *mode, *lengths, *reps, *device); err != nil {
		fmt.Fprintln(os.Stderr, "benchspine:", err)
		os.Exit(1)
	}
}

// deviceKey is set to "cuda" by -device cuda: every line then names the device.
var deviceKey string

func emit(v map[string]any) {
	if deviceKey != "" {
		v["device"] = deviceKey
	}
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func run(path, mode, lengths string, reps int, device string) error {
	switch device {
	case "cpu":
	case "cuda":
		deviceKey = device
	default:
		return fmt.Errorf("-device must be cpu or cuda, not %q", device)
	}
	start := time.Now()
	m, err := onnxgraph.Load(path)
	if err != nil {
		return err
	}
	load := time.Since(start)
	att, err := onnxgraph.FindAttention(m)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := onnxgraph.Expose(m, att); err != nil {
		return err
	}
	exposeTime := time.Since(t0)
	s, err := session.OpenExposed(m, att, session.Options{Device: device, LogitsOnly: mode == "plain"})
	if err != nil {
		return err
	}
	defer s.Close()
	emit(map[string]any{"mode": mode, "load_ms": ms(load), "expose_ms": ms(exposeTime), "create_ms": ms(s.CreateTime), "model_bytes": m.Size, "ort": session.Version()})
	rng := rand.New(rand.NewSource(0))
	for _, f := range strings.Split(lengths, ",") {
		T, err := strconv.Atoi(f)
		if err != nil {
			return err
		}
		ids := make([]int64, T)
		for i := range ids {
			ids[i] = rng.Int63n(int64(s.Limits.Vocab))
		}
		if _, err := s.Run(ids); err != nil { // warm-up; learns output shapes
			return err
		}
		var times []float64
		for r := 0; r < reps; r++ {
			t := time.Now()
			res, err := s.Run(ids)
			if err != nil {
				return err
			}
			times = append(times, ms(time.Since(t)))
			if mode == "attn" && len(res.Attn) != len(att.Sites) {
				return fmt.Errorf("run returned %d layers", len(res.Attn))
			}
			s.Recycle(res) // as the TUI does when a new prompt replaces the old one
		}
		sort.Float64s(times)
		emit(map[string]any{"mode": mode, "T": T, "median_ms": times[len(times)/2], "min_ms": times[0]})
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	emit(map[string]any{"mode": mode, "peak_rss_mb": float64(ru.Maxrss) / 1024})
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
