package session

import (
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// Options configure Open.
type Options struct {
	// LibPath is the onnxruntime shared library (--ort-lib); "" searches (see FindLibrary).
	LibPath string
	// Device is "auto" (CUDA when available, else CPU), "cpu" or "cuda".
	Device string
	// Threads is onnxruntime's intra-op thread count; 0 lets onnxruntime choose.
	Threads int
	// Notice receives one-line notices (such as a fallback to CPU); nil discards them.
	Notice func(string)
	// OptimizedModelPath, when set, makes onnxruntime write the graph it optimised there.
	OptimizedModelPath string
	// LogitsOnly runs the model as it is, without exposing attention: for per-token
	// losses, and as the baseline of the benchmarks. Result.Attn is then empty.
	LogitsOnly bool
}

// Session is an onnxruntime session over a model whose attention has been exposed. A
// Session is not safe for concurrent use.
type Session struct {
	Model     *onnxgraph.Model
	Attention *onnxgraph.Attention
	Limits    onnxgraph.Limits
	// Device is "CPU" or "CUDA": where the session runs.
	Device string
	// Library is the path of the onnxruntime library in use.
	Library string
	// CreateTime is how long onnxruntime took to create the session.
	CreateTime time.Duration

	inputs  []onnxgraph.Input
	outputs []string // logits (when the model has a main output) then attn.L0…
	logits  string   // "" when the model has no output worth calling logits
	sess    *ort.DynamicAdvancedSession
	// idsErr says why Run cannot fill the model's inputs from token ids (nil when it can).
	idsErr error
	// templates are the output shapes as functions of the sequence length T (a -1 stands
	// for T), learned from two tiny probe runs at Open, so that Run can hand onnxruntime
	// pre-allocated Go buffers instead of copying every output; nil when unknown.
	templates [][]int64
	// spare holds buffers handed back with Recycle, for the next Run to reuse.
	spare [][]float32
	// nAttn is the number of attention outputs, which follow the logits in outputs.
	nAttn int
	// batchDependent names an operator that makes a sequence's results depend on its
	// batch (dynamic quantization); RunBatch then runs sequences one by one.
	batchDependent string
	// step is set for a single-step decoder (token ids of fixed length 1 plus past state),
	// which Run feeds one token at a time; nil otherwise.
	step *stepPlan
	// seq2seq is true for an encoder–decoder: token ids for a source and a target.
	seq2seq bool
	// sides are, per layer, the sequences along the query and key axes as the graph tells
	// them; nil for a model with one sequence.
	sides [][2]Side
}

// Side names the sequence along one axis of an attention map.
type Side uint8

const (
	// TargetSide is Result.Tokens: a one-sequence model's prompt, an encoder–decoder's
	// target (the decoder's ids).
	TargetSide Side = iota
	// SourceSide is Result.Source: an encoder–decoder's source (the encoder's ids).
	SourceSide
)

// Open finds the attention in m, exposes it, and creates an onnxruntime session.
func Open(m *onnxgraph.Model, opts Options) (*Session, error) {
	att, err := onnxgraph.FindAttention(m)
	if err != nil {
		return nil, err
	}
	return OpenExposed(m, att, opts)
}

// OpenExposed is Open for a model whose attention has already been found.
func OpenExposed(m *onnxgraph.Model, att *onnxgraph.Attention, opts Options) (*Session, error) {
	lib, err := Init(opts.LibPath)
	if err != nil {
		return nil, err
	}
	s := &Session{Model: m, Attention: att, Library: lib, Limits: onnxgraph.ModelLimits(m)}
	s.inputs = onnxgraph.Inputs(m)
	var unknown []string
	for _, in := range s.inputs {
		if in.Role == onnxgraph.RoleUnknown {
			unknown = append(unknown, fmt.Sprintf("%s (%s%v)", in.Name, typeName(in.ElemType), in.Dims))
		}
	}
	switch {
	case len(unknown) > 0:
		s.idsErr = fmt.Errorf("the model needs input(s) %s that are not token ids, masks, positions or past state, so attnscope cannot fill them from a prompt; export the model with token ids as its only required input (weights as initializers, an encoder-decoder as one graph)", strings.Join(unknown, ", "))
	case !hasRole(s.inputs, onnxgraph.RoleIDs):
		s.idsErr = fmt.Errorf("the model has no token-id input (its inputs: %s), so it cannot be run on a prompt", inputNames(s.inputs))
	}
	for _, in := range s.inputs {
		if in.Role == onnxgraph.RoleAttentionMask && len(in.Dims) == 4 && in.ElemType == int32(pb.TensorProto_FLOAT) && opts.Notice != nil {
			opts.Notice(fmt.Sprintf("the model takes a [batch,1,T,T] attention mask (%s); attnscope passes a causal one (0 on and below the diagonal, %d above)", in.Name, MaskedScore))
		}
	}
	s.seq2seq = hasRole(s.inputs, onnxgraph.RoleIDs) && hasRole(s.inputs, onnxgraph.RoleDecoderIDs)
	s.logits = logitsOutput(m, !opts.LogitsOnly)
	s.batchDependent = onnxgraph.BatchDependentOp(m)
	if s.logits != "" {
		s.outputs = append(s.outputs, s.logits)
	}
	data := m.RuntimeBytes()
	if opts.LogitsOnly {
		if s.logits == "" {
			return nil, fmt.Errorf("the model has no float32 logits output to run for")
		}
		s.Attention = &onnxgraph.Attention{}
	} else {
		for _, site := range att.Sites {
			s.outputs = append(s.outputs, site.Output)
		}
		s.nAttn = len(att.Sites)
		if data, err = onnxgraph.Expose(m, att); err != nil {
			return nil, err
		}
		if s.seq2seq {
			s.sides = siteSides(att, s.inputs)
		}
	}
	if s.idsErr == nil && s.Limits.FixedLen == 1 && hasRole(s.inputs, onnxgraph.RolePast) {
		if s.step, err = s.planSteps(); err != nil {
			s.idsErr = err
		} else {
			s.Limits.FixedLen = 0 // Run takes prompts of any length, one token per step
		}
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("creating session options: %w", err)
	}
	defer so.Destroy()
	if opts.Threads > 0 {
		if err := so.SetIntraOpNumThreads(opts.Threads); err != nil {
			return nil, fmt.Errorf("setting threads: %w", err)
		}
	}
	// The weights stay in the model's file (and any external-data files beside it): they
	// are found relative to the model's folder, since the session is created from bytes.
	if err := so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", m.Dir()); err != nil {
		return nil, fmt.Errorf("setting the external-data folder: %w", err)
	}
	if opts.OptimizedModelPath != "" {
		if err := so.SetOptimizedModelFilePath(opts.OptimizedModelPath); err != nil {
			return nil, fmt.Errorf("setting the optimised-model path: %w", err)
		}
	}
	s.Device = "CPU"
	switch strings.ToLower(opts.Device) {
	case "", "auto":
		if err := appendCUDA(so); err == nil {
			s.Device = "CUDA"
		} else if hasNvidiaDriver() && opts.Notice != nil {
			opts.Notice(fmt.Sprintf("CUDA is not usable (%s); running on CPU", firstLine(err)))
		}
	case "cuda":
		if err := appendCUDA(so); err != nil {
			return nil, fmt.Errorf("--device cuda was asked for but CUDA is not available (%s); use --device cpu, or install the GPU build of onnxruntime and pass it with --ort-lib", firstLine(err))
		}
		s.Device = "CUDA"
	case "cpu":
	default:
		return nil, fmt.Errorf("unknown device %q; use auto, cpu or cuda", opts.Device)
	}
	var inputNames []string
	for _, in := range s.inputs {
		inputNames = append(inputNames, in.Name)
	}
	start := time.Now()
	s.sess, err = ort.NewDynamicAdvancedSessionWithONNXData(data, inputNames, s.outputs, so)
	if err != nil && strings.Contains(err.Error(), "Type Error") {
		// PyTorch 1.13 at opset 10 writes Equal on floats, valid only from opset 11.
		if fixed, ok, _ := onnxgraph.RelabelOpset10(data); ok {
			if s.sess, err = ort.NewDynamicAdvancedSessionWithONNXData(fixed, inputNames, s.outputs, so); err == nil && opts.Notice != nil {
				opts.Notice("the model declares opset 10 but uses opset-11 operators; running it as opset 11")
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("onnxruntime cannot load the model: %s", firstLine(err))
	}
	s.CreateTime = time.Since(start)
	if s.idsErr == nil && s.step == nil {
		s.templates = s.probeShapes()
	}
	return s, nil
}

// probeShapes runs the model on two tiny prompts (or once at its fixed length) and
// returns the output shapes as templates in T, or nil when they do not follow T simply.
func (s *Session) probeShapes() [][]int64 {
	lengths := []int{2, 3}
	if s.Limits.FixedLen > 0 {
		lengths = []int{s.Limits.FixedLen}
	}
	var seen [][]ort.Shape
	for _, T := range lengths {
		res, err := s.Run(make([]int64, T))
		if err != nil || res.converted {
			return nil
		}
		seen = append(seen, res.shapes)
	}
	templates := make([][]int64, len(s.outputs))
	for i := range s.outputs {
		a := seen[0][i]
		templates[i] = append([]int64(nil), a...)
		if len(seen) == 1 {
			continue
		}
		b := seen[1][i]
		if len(a) != len(b) {
			return nil
		}
		for d := range a {
			switch {
			case a[d] == b[d]:
			case a[d] == int64(lengths[0]) && b[d] == int64(lengths[1]):
				templates[i][d] = -1
			default:
				return nil
			}
		}
	}
	return templates
}

// Recycle hands the buffers of a result that is no longer used back to the session, so
// that the next Run of the same length writes into them instead of allocating (the
// attention of GPT-2-small at T = 1024 is 576 MiB). res must not be used afterwards.
func (s *Session) Recycle(res *Result) {
	if res == nil {
		return
	}
	s.spare = append(s.spare, res.buffers...)
	res.buffers, res.Logits, res.Attn = nil, nil, nil
}

// buffers returns one slice per size, reusing recycled ones of exactly that size. Spare
// buffers of other sizes (an earlier prompt length) are released to the operating system
// before allocating, so a long prompt after a short one does not hold both.
func (s *Session) buffers(sizes []int64) [][]float32 {
	out := make([][]float32, len(sizes))
	missing := false
	for i, n := range sizes {
		for j, b := range s.spare {
			if int64(len(b)) == n {
				out[i] = b
				s.spare = append(s.spare[:j], s.spare[j+1:]...)
				break
			}
		}
		missing = missing || out[i] == nil
	}
	if missing && len(s.spare) > 0 {
		s.spare = nil
		debug.FreeOSMemory()
	}
	for i, n := range sizes {
		if out[i] == nil {
			out[i] = make([]float32, n)
		}
	}
	return out
}

// Close releases the onnxruntime session.
func (s *Session) Close() error {
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	return err
}

// Result is one run of the model on one sequence: everything every view needs.
type Result struct {
	// Tokens are the input ids; for an encoder–decoder, the target (the decoder's ids).
	Tokens []int64
	// Source are an encoder–decoder's source ids (the encoder's); nil for a model with one
	// sequence.
	Source []int64
	// Logits are row-major [len(Tokens)][Vocab]; nil when the model's main output is not
	// per-token logits (an encoder's hidden state, a classifier's scores).
	Logits []float32
	// Vocab is the logits' last dimension (0 when Logits is nil).
	Vocab int
	// Attn is [layer][head][query][key]; rows sum to 1. Queries and keys run over Tokens,
	// except in an encoder–decoder's encoder layers (Source on both axes) and its
	// cross-attention layers (Tokens × Source): see QueryTokens and KeyTokens.
	Attn [][][][]float32
	// RunTime is the wall time of the onnxruntime call (the sum over the steps of a model
	// fed one token at a time).
	RunTime time.Duration
	// Present holds, after RunTensors on a single-step decoder, its present key/value
	// outputs by output name, ready to be fed back as past inputs; nil otherwise.
	Present map[string]*pb.TensorProto

	// Sides are, per layer, the sequences along the query and key axes of an
	// encoder–decoder's maps; nil for a one-sequence run, whose maps run over Tokens.
	Sides [][2]Side

	shapes  []ort.Shape // of every output, in the session's output order
	buffers [][]float32 // backing memory of Logits and Attn, for Recycle
	// converted is true when an output was not float32 and had to be converted (such
	// outputs cannot be pre-allocated as float32).
	converted bool
}

// Heads is the head count of layer l.
func (r *Result) Heads(l int) int { return len(r.Attn[l]) }

// QuerySide is the sequence along layer l's query axis: SourceSide for an
// encoder–decoder's encoder layers, TargetSide otherwise.
func (r *Result) QuerySide(l int) Side { return r.side(l, 0) }

// KeySide is the sequence along layer l's key axis: SourceSide for an encoder–decoder's
// encoder and cross-attention layers, TargetSide otherwise.
func (r *Result) KeySide(l int) Side { return r.side(l, 1) }

// QueryTokens are the ids along layer l's query axis: r.Source or r.Tokens itself, as
// QuerySide says.
func (r *Result) QueryTokens(l int) []int64 { return r.SideTokens(r.QuerySide(l)) }

// KeyTokens are the ids along layer l's key axis: r.Source or r.Tokens itself, as KeySide
// says.
func (r *Result) KeyTokens(l int) []int64 { return r.SideTokens(r.KeySide(l)) }

// SideTokens are the ids of one side: Source for SourceSide, else Tokens.
func (r *Result) SideTokens(sd Side) []int64 {
	if sd == SourceSide {
		return r.Source
	}
	return r.Tokens
}

// Cross reports whether layer l is cross-attention: queries from the target (Tokens),
// keys from the source (Source).
func (r *Result) Cross(l int) bool { return r.QuerySide(l) == TargetSide && r.KeySide(l) == SourceSide }

func (r *Result) side(l, axis int) Side {
	if l >= 0 && l < len(r.Sides) {
		return r.Sides[l][axis]
	}
	return TargetSide
}

// CheckIDs says, in one sentence, why ids cannot be run, or returns nil.
func (s *Session) CheckIDs(ids []int64) error {
	if len(ids) == 0 {
		return fmt.Errorf("no tokens to run; give a prompt with --text or ids with --ids")
	}
	if s.Limits.FixedLen > 0 && len(ids) != s.Limits.FixedLen {
		return fmt.Errorf("the model takes exactly %d tokens (its input has a fixed length), but %d were given", s.Limits.FixedLen, len(ids))
	}
	if s.Limits.Positions > 0 && len(ids) > s.Limits.Positions {
		return fmt.Errorf("the prompt has %d tokens but the model's position table holds %d; shorten the prompt", len(ids), s.Limits.Positions)
	}
	for i, id := range ids {
		if id < 0 || (s.Limits.Vocab > 0 && id >= int64(s.Limits.Vocab)) {
			return fmt.Errorf("token id %d at position %d is outside the model's vocabulary of %d ids (0…%d)", id, i, s.Limits.Vocab, s.Limits.Vocab-1)
		}
	}
	return nil
}

// Run runs the model on one sequence of token ids (batch 1), with an all-ones attention
// mask, positions 0…T−1, zero token types and an empty past. An encoder–decoder gets ids
// as both its source and its target (RunPair gives them apart). A single-step decoder
// (token ids of fixed length 1 plus past state) is fed ids one token at a time, each
// step's present state becoming the next step's past; its result is what a run on the
// whole prompt would give: [H,T,T] attention with zeros right of the diagonal, T rows of
// logits.
func (s *Session) Run(ids []int64) (*Result, error) {
	if s.seq2seq {
		return s.RunPair(ids, ids)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.CheckIDs(ids); err != nil {
		return nil, err
	}
	if s.step != nil {
		return s.runSteps(ids)
	}
	return s.runFeed(feed{K: 1, src: ids, tgt: ids, S: len(ids), T: len(ids)})
}

// RunPair runs an encoder–decoder on a source sequence (its token-id input, such as
// input_ids) and a target sequence (its decoder token ids, such as decoder_input_ids).
// Masks and positions follow the sequence they belong to: decoder_attention_mask and
// decoder position ids the target, attention_mask and encoder_attention_mask the source.
// The result's Tokens are the target and its Source the source.
func (s *Session) RunPair(src, tgt []int64) (*Result, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if !s.seq2seq {
		return nil, fmt.Errorf("the model takes one sequence of token ids, not a source and a target; run it on one prompt")
	}
	if err := s.CheckIDs(src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if err := s.CheckIDs(tgt); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	return s.runFeed(feed{K: 1, src: src, tgt: tgt, S: len(src), T: len(tgt)})
}

// Seq2Seq reports whether the model is an encoder–decoder with source and target token
// ids (see RunPair).
func (s *Session) Seq2Seq() bool { return s.seq2seq }

// ready says why the session cannot run token ids, or returns nil.
func (s *Session) ready() error {
	if s.sess == nil {
		return errClosed
	}
	return s.idsErr
}

// feed is what the inputs of a run on token ids are built from: K sequences of source and
// target ids, each flat ([K·S] and [K·T]); both are the same for a model with one sequence.
type feed struct {
	K        int
	src, tgt []int64
	S, T     int
}

// runFeed builds every input from f, runs, and returns one result per sequence.
func (s *Session) runFeed(f feed) (*Result, error) {
	rs, err := s.runFeedBatch(f)
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

func (s *Session) runFeedBatch(f feed) ([]*Result, error) {
	inputs := make([]ort.Value, len(s.inputs))
	defer destroyAll(inputs)
	for i, in := range s.inputs {
		v, err := s.buildInput(in, f)
		if err != nil {
			return nil, err
		}
		inputs[i] = v
	}
	results, err := s.run(inputs, f.K, f.T, f.S)
	if err != nil {
		return nil, err
	}
	for b, res := range results {
		res.Tokens = append([]int64(nil), f.tgt[b*f.T:(b+1)*f.T]...)
		if s.seq2seq {
			res.Source = append([]int64(nil), f.src[b*f.S:(b+1)*f.S]...)
			res.Sides = resultSides(s.sides, res.Attn, f.S, f.T)
		}
	}
	return results, nil
}

// RunTensors runs the model on the given input tensors (every model input, by name), for
// models whose inputs are not token ids, or for inputs saved with a model (an ONNX test
// case's input_N.pb). T is the query length the attention is expected to have, used only
// to tell per-token logits from other outputs; Result.Tokens is nil.
func (s *Session) RunTensors(tensors map[string]*pb.TensorProto, T int) (*Result, error) {
	if s.sess == nil {
		return nil, errClosed
	}
	inputs := make([]ort.Value, len(s.inputs))
	defer destroyAll(inputs)
	for i, in := range s.inputs {
		t, ok := tensors[in.Name]
		if !ok {
			return nil, fmt.Errorf("no tensor given for the model's input %s", in.Name)
		}
		v, err := valueFromProto(t)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", in.Name, err)
		}
		inputs[i] = v
	}
	// The tensors may hold past state or any other shapes the templates do not foresee:
	// onnxruntime allocates the outputs.
	res, err := s.run(inputs, 1, T, -1)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// run runs prepared [K,T] inputs (K = 1 for Run and RunTensors) and splits every output
// into K per-sequence views; S is the source length of an encoder–decoder (T otherwise;
// −1 when the inputs are not built from ids, so that output shapes are unknown).
// Outputs are pre-allocated from the shape templates learned at Open (when S = T): all of
// them for one sequence; for K sequences those whose first dimension is fixed (batch 1,
// or heads for the [B·H,Q,K] form), which becomes K times larger. Present outputs (of a
// single-step decoder) are returned in Result.Present when K = 1.
func (s *Session) run(inputs []ort.Value, K, T, S int) ([]*Result, error) {
	outputs := make([]ort.Value, len(s.outputs))
	defer destroyAll(outputs)
	buffers := make([][]float32, len(s.outputs))
	k := 0
	if s.logits != "" {
		k = 1
	}
	nOut := k + s.nAttn // the outputs read as float32; presents follow
	if s.templates != nil && S == T {
		var shapes []ort.Shape
		var sizes []int64
		var which []int
		for i, tmpl := range s.templates {
			if K > 1 && (len(tmpl) == 0 || tmpl[0] <= 0) {
				continue
			}
			sh := make(ort.Shape, len(tmpl))
			for d, v := range tmpl {
				if sh[d] = v; v < 0 {
					sh[d] = int64(T)
				}
			}
			sh[0] *= int64(K)
			shapes, sizes, which = append(shapes, sh), append(sizes, sh.FlattenedSize()), append(which, i)
		}
		for j, buf := range s.buffers(sizes) {
			i := which[j]
			buffers[i] = buf
			t, err := ort.NewTensor(shapes[j], buf)
			if err != nil {
				return nil, fmt.Errorf("allocating output %s: %w", s.outputs[i], err)
			}
			outputs[i] = t
		}
	}
	start := time.Now()
	if err := s.sess.Run(inputs, outputs); err != nil {
		if K == 1 {
			return nil, fmt.Errorf("onnxruntime failed to run the model on %d tokens: %s", T, firstLine(err))
		}
		return nil, fmt.Errorf("onnxruntime failed to run the model on a batch of %d × %d tokens: %s", K, T, firstLine(err))
	}
	elapsed := time.Since(start)
	results := make([]*Result, K)
	for b := range results {
		results[b] = &Result{RunTime: elapsed}
	}
	converted := false
	shapes := make([]ort.Shape, len(outputs))
	for i, v := range outputs {
		shapes[i] = v.GetShape().Clone()
		if i >= nOut {
			if K == 1 {
				t, err := protoFromValue(s.outputs[i], v)
				if err != nil {
					return nil, fmt.Errorf("reading output %s: %w", s.outputs[i], err)
				}
				if results[0].Present == nil {
					results[0].Present = map[string]*pb.TensorProto{}
				}
				results[0].Present[s.outputs[i]] = t
			}
			continue
		}
		if buffers[i] == nil {
			data, isFloat32, err := toFloat32(v)
			if err != nil {
				return nil, fmt.Errorf("reading output %s: %w", s.outputs[i], err)
			}
			buffers[i] = data
			converted = converted || !isFloat32
		}
		if K > 1 && (len(shapes[i]) == 0 || shapes[i][0]%int64(K) != 0 || len(buffers[i])%K != 0) {
			return nil, fmt.Errorf("output %s has shape %v, which does not split into %d sequences", s.outputs[i], shapes[i], K)
		}
	}
	for b, res := range results {
		res.converted = converted
		res.shapes = make([]ort.Shape, len(outputs))
		for i := range outputs[:nOut] {
			sh := shapes[i].Clone()
			if K > 1 {
				sh[0] /= int64(K)
			}
			res.shapes[i] = sh
			n := len(buffers[i]) / K
			chunk := buffers[i][b*n : (b+1)*n : (b+1)*n]
			if i < k {
				if len(sh) == 3 && sh[0] == 1 && int(sh[1]) == T {
					res.Logits, res.Vocab = chunk, int(sh[2])
				}
				continue
			}
			l := i - k
			a, err := attentionView(chunk, sh, T)
			if err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", l, s.Attention.Sites[l].Node, err)
			}
			res.Attn = append(res.Attn, a)
		}
	}
	results[0].buffers = buffers
	return results, nil
}

// buildInput makes the tensor for one model input from f: [K,S] for the source's ids,
// mask, positions and token types, [K,T] for the target's, an empty past, a false
// use_cache_branch.
func (s *Session) buildInput(in onnxgraph.Input, f feed) (ort.Value, error) {
	K, T, flat := f.K, f.S, f.src
	if in.Role == onnxgraph.RoleDecoderIDs || (s.seq2seq && followsTarget(in.Name)) {
		T, flat = f.T, f.tgt
	}
	shape := ort.NewShape(int64(K), int64(T))
	switch in.Role {
	case onnxgraph.RoleIDs, onnxgraph.RoleDecoderIDs:
		return intTensor(in, shape, flat)
	case onnxgraph.RoleUseCacheBranch:
		sh := make(ort.Shape, len(in.Dims))
		for i, d := range in.Dims {
			sh[i] = max(d, 1)
		}
		return ort.NewTensor(sh, make([]bool, sh.FlattenedSize()))
	case onnxgraph.RoleAttentionMask:
		if len(in.Dims) == 4 {
			return causalMask(in, K, T)
		}
		if in.ElemType == int32(pb.TensorProto_FLOAT) {
			return ort.NewTensor(shape, make([]float32, K*T)) // additive: 0 keeps
		}
		vals := make([]int64, K*T)
		for i := range vals {
			vals[i] = 1
		}
		return intTensor(in, shape, vals)
	case onnxgraph.RolePositionIDs:
		vals := make([]int64, K*T)
		for i := range vals {
			vals[i] = int64(i % T)
		}
		return intTensor(in, shape, vals)
	case onnxgraph.RoleTokenTypeIDs:
		return intTensor(in, shape, make([]int64, K*T))
	case onnxgraph.RolePast:
		sh := make(ort.Shape, len(in.Dims))
		batchParam := s.batchParam()
		for i, d := range in.Dims {
			switch {
			case d >= 0:
				sh[i] = d
			case in.Params[i] != "" && in.Params[i] == batchParam, strings.Contains(strings.ToLower(in.Params[i]), "batch"):
				sh[i] = int64(K)
			default:
				sh[i] = 0
			}
		}
		switch in.ElemType {
		case int32(pb.TensorProto_FLOAT):
			return ort.NewTensor(sh, []float32{})
		case int32(pb.TensorProto_FLOAT16):
			return newFloat16Tensor(sh, nil)
		}
		return nil, fmt.Errorf("past input %s has type %s, which attnscope cannot fill", in.Name, typeName(in.ElemType))
	}
	return nil, fmt.Errorf("cannot fill input %s", in.Name)
}

// followsTarget says whether a mask, position or token-type input of an encoder–decoder
// belongs to the target (decoder_attention_mask, decoder_position_ids…) rather than the
// source (attention_mask, encoder_attention_mask…).
func followsTarget(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "decoder") || strings.HasPrefix(n, "tgt") || strings.HasPrefix(n, "target")
}

// siteSides tells, per site of an encoder–decoder, which sequences its queries and keys run
// over: cross-attention (Site.Cross) is target × source; a self-attention computed from
// the target ids is the decoder's (target × target), else the encoder's (source × source).
func siteSides(att *onnxgraph.Attention, inputs []onnxgraph.Input) [][2]Side {
	decoder := map[string]bool{}
	for _, in := range inputs {
		if in.Role == onnxgraph.RoleDecoderIDs {
			decoder[in.Name] = true
		}
	}
	sides := make([][2]Side, len(att.Sites))
	for l, site := range att.Sites {
		sides[l] = [2]Side{SourceSide, SourceSide}
		if site.Cross {
			sides[l] = [2]Side{TargetSide, SourceSide}
			continue
		}
		for _, name := range site.Inputs {
			if decoder[name] {
				sides[l] = [2]Side{TargetSide, TargetSide}
			}
		}
	}
	return sides
}

// resultSides are the sides of one run's layers: those the graph tells, unless a layer's
// map has the shape of another reading (only possible when S ≠ T), which then wins.
func resultSides(graph [][2]Side, attn [][][][]float32, S, T int) [][2]Side {
	length := func(sd Side) int {
		if sd == SourceSide {
			return S
		}
		return T
	}
	out := make([][2]Side, len(attn))
	for l, heads := range attn {
		if l < len(graph) {
			out[l] = graph[l]
		}
		if len(heads) == 0 || len(heads[0]) == 0 {
			continue
		}
		dims := [2]int{len(heads[0]), len(heads[0][0])}
		for axis, n := range dims {
			if n != length(out[l][axis]) {
				if other := 1 - out[l][axis]; n == length(other) {
					out[l][axis] = other
				}
			}
		}
	}
	return out
}

// MaskedScore is what a [batch,1,T,T] float mask holds above the diagonal (see
// causalMask); 0 on and below it.
const MaskedScore = -10000

// causalMask fills a Megatron-style [K,1,T,T] float mask: 0 where query i may see key j
// (j ≤ i), MaskedScore where it may not. Models add it to the scores, or fill the scores
// where it is non-zero; both read it the same way. Other element types are refused: bool
// masks mean "keep" in some exporters and "mask" in others.
func causalMask(in onnxgraph.Input, K, T int) (ort.Value, error) {
	if in.ElemType != int32(pb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("the model takes a 4-D %s attention mask (%s), whose meaning (keep or mask) attnscope cannot tell; export it with a 2-D [batch, sequence] mask or a float one", typeName(in.ElemType), in.Name)
	}
	vals := make([]float32, K*T*T)
	for k := 0; k < K; k++ {
		for i := 0; i < T; i++ {
			for j := i + 1; j < T; j++ {
				vals[(k*T+i)*T+j] = MaskedScore
			}
		}
	}
	return ort.NewTensor(ort.NewShape(int64(K), 1, int64(T), int64(T)), vals)
}

// attentionView turns one layer's probabilities, [B,H,Q,K] (first batch element) or
// [H,Q,K] (batch 1), into [head][query][key] slices over the same memory.
func attentionView(data []float32, sh ort.Shape, T int) ([][][]float32, error) {
	var H, Q, K int
	switch len(sh) {
	case 4:
		// Batches larger than 1 come only from RunTensors; the first element is kept.
		H, Q, K = int(sh[1]), int(sh[2]), int(sh[3])
		data = data[:H*Q*K]
	case 3:
		H, Q, K = int(sh[0]), int(sh[1]), int(sh[2])
	default:
		return nil, fmt.Errorf("probabilities of shape %v: expected [1,heads,query,key] or [heads,query,key]", sh)
	}
	if len(data) != H*Q*K {
		return nil, fmt.Errorf("probabilities of shape %v hold %d values", sh, len(data))
	}
	heads := make([][][]float32, H)
	for h := range heads {
		heads[h] = make([][]float32, Q)
		for q := range heads[h] {
			off := (h*Q + q) * K
			heads[h][q] = data[off : off+K : off+K]
		}
	}
	return heads, nil
}

func (s *Session) batchParam() string {
	for _, in := range s.inputs {
		if in.Role == onnxgraph.RoleIDs && len(in.Params) > 0 {
			return in.Params[0]
		}
	}
	return ""
}

func intTensor(in onnxgraph.Input, shape ort.Shape, vals []int64) (ort.Value, error) {
	switch in.ElemType {
	case int32(pb.TensorProto_INT64):
		return ort.NewTensor(shape, vals)
	case int32(pb.TensorProto_INT32):
		v32 := make([]int32, len(vals))
		for i, v := range vals {
			v32[i] = int32(v)
		}
		return ort.NewTensor(shape, v32)
	case int32(pb.TensorProto_BOOL):
		vb := make([]bool, len(vals))
		for i, v := range vals {
			vb[i] = v != 0
		}
		return ort.NewTensor(shape, vb)
	}
	return nil, fmt.Errorf("input %s has type %s; attnscope fills integer inputs only", in.Name, typeName(in.ElemType))
}

// toFloat32 returns an onnxruntime-allocated output's values as float32, converting
// float16 and float64; isFloat32 says whether it was float32 to begin with.
func toFloat32(v ort.Value) (data []float32, isFloat32 bool, err error) {
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return t.GetData(), true, nil
	case *ort.Tensor[float64]:
		d := t.GetData()
		out := make([]float32, len(d))
		for i, x := range d {
			out[i] = float32(x)
		}
		return out, false, nil
	case *ort.CustomDataTensor:
		if t.DataType() != ort.TensorElementDataTypeFloat16 {
			break
		}
		b := t.GetData()
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = halfToFloat(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
		return out, false, nil
	}
	return nil, false, fmt.Errorf("output of unsupported type %T", v)
}

// halfToFloat converts an IEEE 754 binary16 value to float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(frac) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

// destroyAll releases values, skipping empty slots (including typed nil pointers, which
// the binding can leave behind when converting an output fails).
func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v == nil {
			continue
		}
		if c, ok := v.(*ort.CustomDataTensor); ok && c == nil {
			continue
		}
		v.Destroy()
	}
}

// logitsOutput is the output to read logits from: the model's main output (see
// onnxgraph.MainOutput) when it is float32; when it is float16, bfloat16 or double, the
// float32 copy Expose adds (onnxgraph.LogitsOutput) if the model is exposed, else "".
func logitsOutput(m *onnxgraph.Model, exposed bool) string {
	main, et := onnxgraph.MainOutput(m), onnxgraph.MainOutputType(m)
	switch {
	case et == int32(pb.TensorProto_UNDEFINED) || et == int32(pb.TensorProto_FLOAT):
		return main
	case onnxgraph.NeedsFloat32Copy(et) && exposed && main != "":
		return onnxgraph.LogitsOutput
	}
	return ""
}

func hasRole(ins []onnxgraph.Input, r onnxgraph.Role) bool {
	for _, in := range ins {
		if in.Role == r {
			return true
		}
	}
	return false
}

func inputNames(ins []onnxgraph.Input) string {
	var n []string
	for _, in := range ins {
		n = append(n, in.Name)
	}
	return strings.Join(n, ", ")
}

func typeName(et int32) string {
	if name, ok := pb.TensorProto_DataType_name[et]; ok {
		return strings.ToLower(name)
	}
	return fmt.Sprintf("type %d", et)
}
