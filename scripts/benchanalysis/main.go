// Command benchanalysis times the head census and corpus mode of `inspect heads` against
// plain forward passes of the same model, and prints JSON lines:
//
//   - probe: one forward pass of the probe batch (K sequences of BOS + 2N tokens) as one
//     [K,T] run (session.RunBatch) and as K runs one after another;
//   - census: everything `inspect heads MODEL` does once the session is open: draw the
//     probe, run it as one batch, score it, tokenize and run the built-in sample, score it;
//   - corpus: windows of T tokens of a text file, as plain forward passes (logits only, the
//     model as it is), as forward passes with attention exposed but nothing scored, and
//     through analysis.ScoreCorpus (tokenizing, exposing, scoring, ICL), in tokens/s.
//
// Medians of -reps runs after one warm-up, the cases of each group timed in turn. scripts/bench_analysis.sh runs it and writes
// the Analysis section of BENCHMARKS.md.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/attnscope/attnscope/analysis"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tokenizer"
)

func main() {
	modelPath := flag.String("model", "build/bench/gpt2-small/model.onnx", "ONNX model")
	corpusPath := flag.String("corpus", "../shared/data/wikitext-2/test.txt", "text for corpus mode")
	probes := flag.Int("probes", analysis.DefaultProbes, "probe sequences")
	probeLen := flag.Int("probe-len", analysis.DefaultProbeLen, "tokens per copy")
	T := flag.Int("T", 128, "corpus window")
	windows := flag.Int("windows", 24, "corpus windows per timed pass")
	reps := flag.Int("reps", 3, "timed runs")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchanalysis:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*modelPath, *corpusPath, *probes, *probeLen, *T, *windows, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "benchanalysis:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// interleaved warms every f up once, then times them in turn, reps rounds, so that a change
// in the machine's load hits all of them alike; it returns each one's median and minimum (ms).
func interleaved(reps int, fs ...func() error) (med, lo []float64, err error) {
	for _, f := range fs {
		if err := f(); err != nil {
			return nil, nil, err
		}
	}
	ts := make([][]float64, len(fs))
	for r := 0; r < reps; r++ {
		for i, f := range fs {
			t := time.Now()
			if err := f(); err != nil {
				return nil, nil, err
			}
			ts[i] = append(ts[i], ms(time.Since(t)))
		}
	}
	for _, x := range ts {
		sort.Float64s(x)
		med, lo = append(med, x[len(x)/2]), append(lo, x[0])
	}
	return med, lo, nil
}

func open(path string, logitsOnly bool) (*session.Session, error) {
	m, err := onnxgraph.Load(path)
	if err != nil {
		return nil, err
	}
	return session.Open(m, session.Options{Device: "cpu", LogitsOnly: logitsOnly})
}

func run(modelPath, corpusPath string, K, N, T, W, reps int) error {
	s, err := open(modelPath, false)
	if err != nil {
		return err
	}
	defer s.Close()
	tok, err := tokenizer.Find(modelPath, "", s.Limits.Vocab)
	if err != nil {
		return err
	}
	defer tok.Close()
	bos := int64(-1)
	if s.Limits.Vocab == tokenizer.GPT2VocabSize {
		bos = 50256 // <|endoftext|>, as TransformerLens and ARENA put before GPT-2 probes
	}
	opts := analysis.ProbeOptions{N: N, K: K, Vocab: s.Limits.Vocab, BOS: bos, Positions: s.Limits.Positions, Special: tok.IsSpecial}
	probe, err := analysis.NewProbe(opts)
	if err != nil {
		return err
	}
	emit(map[string]any{"what": "setup", "model_bytes": s.Model.Size, "ort": session.Version(), "layers": len(s.Attention.Sites),
		"K": K, "N": probe.N, "probe_len": probe.Len(), "bos": bos, "T": T, "windows": W, "reps": reps})

	// One forward pass of the probe batch (batched and one by one), and the whole census.
	probeRun := func(batched bool) func() error {
		return func() error {
			rs, err := analysis.RunProbe(s, probe, batched)
			if err == nil {
				s.RecycleBatch(rs)
			}
			return err
		}
	}
	var heads int
	census := func() error {
		p, err := analysis.NewProbe(opts)
		if err != nil {
			return err
		}
		acc := analysis.NewAccumulator()
		rs, err := analysis.RunProbe(s, p, true)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if err := acc.AddProbe(r, p.N, p.Start()); err != nil {
				return err
			}
		}
		s.RecycleBatch(rs)
		ids, _, err := tok.EncodeDefault(analysis.NaturalText)
		if err != nil {
			return err
		}
		res, err := s.Run(ids)
		if err != nil {
			return err
		}
		acc.AddText(res)
		s.Recycle(res)
		heads = len(acc.Scores())
		return nil
	}
	med, lo, err := interleaved(reps, probeRun(true), probeRun(false), census)
	if err != nil {
		return err
	}
	emit(map[string]any{"what": "probe_forward", "batched": true, "median_ms": med[0], "min_ms": lo[0]})
	emit(map[string]any{"what": "probe_forward", "batched": false, "median_ms": med[1], "min_ms": lo[1]})
	sample, _, _ := tok.EncodeDefault(analysis.NaturalText)
	emit(map[string]any{"what": "census", "median_ms": med[2], "min_ms": lo[2], "heads": heads, "sample_tokens": len(sample)})

	// Corpus mode: the text that makes W windows, the windows themselves for the baselines.
	text, err := os.ReadFile(corpusPath)
	if err != nil {
		return err
	}
	var windows [][]int64
	var pending []int64
	cut := 0
	for cut < len(text) && len(windows) < W {
		end := min(cut+512, len(text))
		for end < len(text) && text[end-1] != '\n' {
			end++
		}
		ids, _, err := tok.Encode(string(text[cut:end]), false)
		if err != nil {
			return err
		}
		cut = end
		pending = append(pending, ids...)
		for len(pending) >= T && len(windows) < W {
			windows = append(windows, append([]int64(nil), pending[:T]...))
			pending = pending[T:]
		}
	}
	text = text[:cut]
	plain, err := open(modelPath, true)
	if err != nil {
		return err
	}
	defer plain.Close()
	tokens := float64(len(windows) * T)
	forward := func(sess *session.Session) func() error {
		return func() error {
			for _, w := range windows {
				res, err := sess.Run(w)
				if err != nil {
					return err
				}
				sess.Recycle(res)
			}
			return nil
		}
	}
	scored := 0 // tokens corpus mode ran (its own tokenization of the same text)
	score := func() error {
		acc := analysis.NewAccumulator()
		early, late, _ := analysis.ICLPositions(T)
		icl := &analysis.ICL{Early: early, Late: late}
		st, err := analysis.ScoreCorpus(s, bytes.NewReader(text), analysis.CorpusOptions{
			Window: T, BOS: -1,
			Encode: func(t string) ([]int64, error) { ids, _, err := tok.Encode(t, false); return ids, err },
		}, acc, icl)
		scored = st.Tokens
		return err
	}
	med, lo, err = interleaved(reps, forward(plain), forward(s), score)
	if err != nil {
		return err
	}
	for i, mode := range []string{"plain", "attn", "score"} {
		n := tokens
		if mode == "score" {
			n = float64(scored)
		}
		emit(map[string]any{"what": "corpus", "mode": mode, "median_ms": med[i], "min_ms": lo[i], "tokens": n, "tokens_per_s": n / med[i] * 1000})
	}
	return nil
}
