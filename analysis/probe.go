package analysis

import (
	"fmt"
	"math/rand/v2"

	"github.com/attnscope/attnscope/result"
)

// Defaults of the probe: 50 tokens per copy (Olsson et al., ARENA), 10 sequences.
const (
	DefaultProbeLen = 50
	DefaultProbes   = 10
)

// ProbeOptions say how to draw a probe.
type ProbeOptions struct {
	// N is the number of random tokens per copy (0: DefaultProbeLen).
	N int
	// K is the number of sequences (0: DefaultProbes).
	K int
	// Seed makes the draw repeatable.
	Seed uint64
	// Vocab: ids are drawn from 0 … Vocab−1.
	Vocab int
	// BOS, when ≥ 0, is put in front of every sequence (and never drawn).
	BOS int64
	// Positions is the model's position table (0: unknown); N shrinks so that the probe fits.
	Positions int
	// Special reports ids that must not be drawn (special tokens); nil draws from all.
	Special func(id int64) bool
}

// MaxProbeTokens bounds a probe's size, K sequences × their length: a probe's ids are held
// in memory (8 bytes each) and every token is run through the model.
const MaxProbeTokens = 1 << 22

// ProbeSizeError is NewProbe's refusal of a probe larger than MaxProbeTokens.
type ProbeSizeError struct {
	Sequences, Len, Max int
}

func (e *ProbeSizeError) Error() string {
	return fmt.Sprintf("a probe of %d sequences of %d tokens holds %d tokens, more than the limit of %d", e.Sequences, e.Len, int64(e.Sequences)*int64(e.Len), e.Max)
}

// ProbeRunError is an error of a run of the probe's sequences (not of the prompt's):
// its message is Err's, and errors.As sees through it.
type ProbeRunError struct {
	// Len is the probe's sequence length.
	Len int
	Err error
}

func (e *ProbeRunError) Error() string { return e.Err.Error() }
func (e *ProbeRunError) Unwrap() error { return e.Err }

// Probe is K sequences of "N random tokens, then the same N again", each after a BOS
// token when BOS ≥ 0.
type Probe struct {
	N    int
	BOS  int64
	Seed uint64
	IDs  [][]int64
}

// Start is the position of the first copy's first token: 1 after a BOS token, else 0.
func (p *Probe) Start() int {
	if p.BOS >= 0 {
		return 1
	}
	return 0
}

// Len is the length of every sequence.
func (p *Probe) Len() int { return p.Start() + 2*p.N }

// NewProbe draws a probe. N is reduced to fit Positions (the caller can compare with what
// it asked for); ids are distinct within a copy when the vocabulary has enough of them. A
// probe of more than MaxProbeTokens tokens in all is refused with a *ProbeSizeError.
func NewProbe(o ProbeOptions) (*Probe, error) {
	if o.N == 0 {
		o.N = DefaultProbeLen
	}
	if o.K == 0 {
		o.K = DefaultProbes
	}
	if o.N < 2 || o.K < 1 {
		return nil, fmt.Errorf("a probe needs at least 2 tokens per copy and 1 sequence (asked: %d tokens, %d sequences)", o.N, o.K)
	}
	start := 0
	if o.BOS >= 0 {
		start = 1
	}
	if o.Positions > 0 && start+2*o.N > o.Positions {
		o.N = (o.Positions - start) / 2
		if o.N < 2 {
			return nil, fmt.Errorf("the model's %d positions are too few for a repeated-token probe", o.Positions)
		}
	}
	if total := int64(o.K) * int64(start+2*o.N); total > MaxProbeTokens {
		return nil, &ProbeSizeError{Sequences: o.K, Len: start + 2*o.N, Max: MaxProbeTokens}
	}
	if o.Vocab <= 0 {
		return nil, fmt.Errorf("the vocabulary size is unknown, so probe tokens cannot be drawn")
	}
	var cand []int64
	for id := int64(0); id < int64(o.Vocab); id++ {
		if id == o.BOS || (o.Special != nil && o.Special(id)) {
			continue
		}
		cand = append(cand, id)
	}
	if len(cand) == 0 {
		return nil, fmt.Errorf("every id of the vocabulary is a special token; no probe tokens to draw")
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	p := &Probe{N: o.N, BOS: o.BOS, Seed: o.Seed}
	for k := 0; k < o.K; k++ {
		half := draw(rng, cand, o.N)
		seq := make([]int64, 0, start+2*o.N)
		if start == 1 {
			seq = append(seq, o.BOS)
		}
		seq = append(seq, half...)
		seq = append(seq, half...)
		p.IDs = append(p.IDs, seq)
	}
	return p, nil
}

// draw picks n ids from cand, without replacement when cand has at least n.
func draw(rng *rand.Rand, cand []int64, n int) []int64 {
	out := make([]int64, n)
	if n > len(cand) {
		for i := range out {
			out[i] = cand[rng.IntN(len(cand))]
		}
		return out
	}
	seen := make(map[int]bool, n)
	for i := range out {
		j := rng.IntN(len(cand))
		for seen[j] {
			j = rng.IntN(len(cand))
		}
		seen[j] = true
		out[i] = cand[j]
	}
	return out
}

// Runner runs a model on token ids (package session's Session is one). Results are handed
// back with Recycle once no longer used, so that their memory serves the next run.
type Runner interface {
	Run(ids []int64) (*result.Result, error)
	// RunBatch runs sequences of one length together; the results share memory, so all of
	// them are handed back at once (RecycleBatch).
	RunBatch(batch [][]int64) ([]*result.Result, error)
	Recycle(res *result.Result)
	RecycleBatch(rs []*result.Result)
}

// RunProbe runs the probe's sequences: as one batch when batched (Runner.RunBatch), else
// one after another. All results are held at once: ScoreHeads and ProbeScores run a probe
// in batches that fit a memory budget instead.
func RunProbe(s Runner, p *Probe, batched bool) ([]*result.Result, error) {
	if batched {
		return s.RunBatch(p.IDs)
	}
	out := make([]*result.Result, len(p.IDs))
	for i, ids := range p.IDs {
		res, err := s.Run(ids)
		if err != nil {
			return nil, err
		}
		out[i] = res
	}
	return out, nil
}

// ProbeScores runs the probe on s (in batches whose outputs fit DefaultBudget, see
// ScoreHeads) and returns every head's induction and duplicate-token scores; the other
// scores are NaN: take them from the prompt with TextScores and combine the two with
// Merge. The runs' buffers go back to the session.
func ProbeScores(s Runner, p *Probe) ([]HeadScores, error) {
	acc := NewAccumulator()
	err := runProbe(s, p, measure(s, p.IDs[0]), DefaultBudget(), false, func(runs []*result.Result) error {
		for _, r := range runs {
			if err := acc.AddProbe(r, p.N, p.Start()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return acc.Scores(), nil
}
