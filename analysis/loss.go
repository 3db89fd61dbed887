package analysis

import (
	"container/heap"
	"math"
	"runtime"
	"sync"

	"github.com/attnscope/attnscope/result"
)

// LogitsRow is the logits at position p (nil when the run has no logits).
func LogitsRow(res *result.Result, p int) []float32 {
	if res.Logits == nil || res.Vocab == 0 || p < 0 || (p+1)*res.Vocab > len(res.Logits) {
		return nil
	}
	return res.Logits[p*res.Vocab : (p+1)*res.Vocab]
}

// LogSumExp is ln Σ exp(row), computed stably.
func LogSumExp(row []float32) float64 {
	m := float32(math.Inf(-1))
	for _, v := range row {
		if v > m {
			m = v
		}
	}
	sum := 0.0
	for _, v := range row {
		sum += math.Exp(float64(v - m))
	}
	return float64(m) + math.Log(sum)
}

// TokenLoss is the cross-entropy (nats) of the logits at position p against token p+1;
// NaN at the last position or without logits.
func TokenLoss(res *result.Result, p int) float64 {
	row := LogitsRow(res, p)
	if row == nil || p+1 >= len(res.Tokens) {
		return math.NaN()
	}
	next := res.Tokens[p+1]
	if next < 0 || int(next) >= len(row) {
		return math.NaN()
	}
	return LogSumExp(row) - float64(row[next])
}

// TokenLosses is TokenLoss at every position (the last is NaN). Every position is a pass
// over the vocabulary (for GPT-2's 50257 ids at 1024 tokens, half a second on one core), so
// positions are split over the cores: between runs onnxruntime leaves them idle.
func TokenLosses(res *result.Result) []float64 {
	T := len(res.Tokens)
	out := make([]float64, T)
	workers := min(runtime.GOMAXPROCS(0), max(1, T/8))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := w; p < T; p += workers {
				out[p] = TokenLoss(res, p)
			}
		}()
	}
	wg.Wait()
	return out
}

// LossSummary is what a prompt's per-token losses (TokenLosses) say in two numbers: their
// mean over the positions that have one (NaN when none does), and the prompt's
// in-context-learning score, the loss at the late position minus at the early one
// (ICLPositions); iclOK is false when the prompt is too short for it (icl is then NaN).
func LossSummary(losses []float64) (mean, icl float64, iclOK bool) {
	mean, icl = math.NaN(), math.NaN()
	sum, n := 0.0, 0
	for _, l := range losses {
		if !math.IsNaN(l) {
			sum += l
			n++
		}
	}
	if n > 0 {
		mean = sum / float64(n)
	}
	if early, late, ok := ICLPositions(len(losses)); ok {
		icl, iclOK = losses[late]-losses[early], true
	}
	return mean, icl, iclOK
}

// Prediction is one entry of a top-k list.
type Prediction struct {
	ID    int64
	Logit float32
	Prob  float64 // softmax probability over the whole row
}

// TopK returns the k highest-scoring ids of one logits row, highest first, with their
// probabilities (ties: lower id first).
func TopK(row []float32, k int) []Prediction {
	if k > len(row) {
		k = len(row)
	}
	if k <= 0 {
		return nil
	}
	h := make(minHeap, 0, k)
	for i, v := range row {
		if len(h) < k {
			heap.Push(&h, Prediction{ID: int64(i), Logit: v})
		} else if v > h[0].Logit {
			h[0] = Prediction{ID: int64(i), Logit: v}
			heap.Fix(&h, 0)
		}
	}
	lse := LogSumExp(row)
	out := make([]Prediction, len(h))
	for i := len(out) - 1; i >= 0; i-- {
		p := heap.Pop(&h).(Prediction)
		p.Prob = math.Exp(float64(p.Logit) - lse)
		out[i] = p
	}
	return out
}

// minHeap keeps the k best predictions with the worst on top.
type minHeap []Prediction

func (h minHeap) Len() int { return len(h) }
func (h minHeap) Less(i, j int) bool {
	if h[i].Logit != h[j].Logit {
		return h[i].Logit < h[j].Logit
	}
	return h[i].ID > h[j].ID
}
func (h minHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)   { *h = append(*h, x.(Prediction)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ICLPositions are the early and late positions of the in-context-learning score for
// sequences of T tokens: 50 and 500 (Olsson et al.) when T ≥ 502, else the last position
// that has a loss (T−2) and a tenth of it. ok is false when T < 3.
func ICLPositions(T int) (early, late int, ok bool) {
	if T >= 502 {
		return 50, 500, true
	}
	if T < 3 {
		return 0, 0, false
	}
	late = T - 2
	return late / 10, late, true
}

// ICL accumulates the in-context-learning score over runs: the mean loss at Late minus the
// mean loss at Early. Only the two positions' losses are computed.
type ICL struct {
	Early, Late int
	sumEarly    float64
	sumLate     float64
	n           int
}

// Add adds one run's losses at Early and Late; runs too short or without logits are skipped.
func (c *ICL) Add(res *result.Result) {
	e, l := TokenLoss(res, c.Early), TokenLoss(res, c.Late)
	if math.IsNaN(e) || math.IsNaN(l) {
		return
	}
	c.sumEarly += e
	c.sumLate += l
	c.n++
}

// N is the number of runs added.
func (c *ICL) N() int { return c.n }

// Score is mean loss at Late − mean loss at Early (NaN with no runs), with both means.
func (c *ICL) Score() (score, early, late float64) {
	if c.n == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	early, late = c.sumEarly/float64(c.n), c.sumLate/float64(c.n)
	return late - early, early, late
}
