package session

import (
	"fmt"
	"strings"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/ablate"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
	"github.com/attnscope/attnscope/result"
)

// Options configure Open.
type Options struct {
	// LibPath is the onnxruntime shared library to load; "" searches (see FindLibrary).
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
	// Layers are the layers whose attention is exposed and returned (Site.Layer numbers, in
	// any order); nil exposes every layer. The others get no output at all (see
	// onnxgraph.ExposeOptions.Layers), so a run's memory follows the selection; their
	// entries in Result.Attn are nil. A layer the model does not have is an error. Every
	// head of a selected layer is computed and returned: heads cannot be picked within an
	// output.
	Layers []int
	// Ablation adds a mask input to every layer whose heads can be switched off (see
	// Ablation, CanAblate); Mean adds the inputs and outputs mean ablation needs as well.
	// Without them the graph is only exposed, and ablation is refused.
	Ablation, Mean bool
	// Inputs are tensors for model inputs, by name, used on every run instead of what
	// attnscope would build (or for inputs it cannot build, such as a speech model's
	// input_features). Each must have the input's element type and rank, and its fixed
	// dimensions; a *GivenInputError says why one does not fit.
	Inputs map[string]*pb.TensorProto
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
	outputs []string // logits (when the model has them) then attn.L0…, then presents
	logits  string   // "" when the model has no logits output (see logitsOutput)
	sess    *ort.DynamicAdvancedSession
	// idsErr says why Run cannot fill the model's inputs from token ids (nil when it can).
	idsErr error
	// templates are the output shapes as functions of the sequence length T (a -1 stands
	// for T), learned from two tiny probe runs at Open, so that Run can hand onnxruntime
	// pre-allocated Go buffers instead of copying every output; nil when unknown.
	templates [][]int64
	// stepSizes are, for a single-step decoder, the output shapes in T its first step told
	// (see stepShapes); templates stays nil, as its steps allocate their own.
	stepSizes [][]int64
	// spare holds buffers handed back with Recycle, for the next Run to reuse.
	spare [][]float32
	// nAttn is the number of attention outputs, which follow the logits in outputs;
	// attnLayer is the layer of each, attnOut each layer's index among them (−1: the layer
	// is not exposed, see Options.Layers).
	nAttn     int
	attnLayer []int
	attnOut   []int
	// batchDependent names an operator that makes a sequence's results depend on its
	// batch (dynamic quantization); RunBatch then runs sequences one by one.
	batchDependent string
	// step is set for a single-step decoder (token ids of fixed length 1 plus past state),
	// which Run feeds one token at a time; nil otherwise.
	step *stepPlan
	// seq2seq is true for an encoder–decoder: token ids for a source and a target.
	seq2seq bool
	// sides are, per layer, the sequences along the query and key axes as the graph tells
	// them; nil for a model with one sequence (set for a decoder run alone on given
	// encoder_hidden_states, see loneCrossSides).
	sides [][2]result.Side
	// abl is set when the session was opened with ablation inputs; ablation is the one
	// every run uses (nil: none).
	abl      *ablationState
	ablation *ablate.Ablation
	// nZ is the number of z outputs (mean ablation), which follow the attention outputs;
	// zLayer is the layer of each, zOut each layer's index among them (−1: none).
	nZ     int
	zLayer []int
	zOut   []int
	// headsTraced is set once tracedHeads has traced the weights; traceHeads are the head
	// counts it found (nil when the trace failed).
	headsTraced bool
	traceHeads  []int
	// stepModel is set for a single-step decoder (which cannot be ablated).
	stepModel bool
	// given are Options.Inputs (see inputFor).
	given map[string]*pb.TensorProto
}

// Open finds the attention in m, exposes it, and creates an onnxruntime session. The
// library that cannot be found or loaded is a *LibraryError, a device that cannot be used a
// *DeviceError; a model that cannot be run on token ids still opens (for RunTensors), and
// says why at its first Run.
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
		if in.Role == onnxgraph.RoleUnknown && opts.Inputs[in.Name] == nil {
			unknown = append(unknown, fmt.Sprintf("%s (%s%v)", in.Name, typeName(in.ElemType), in.Dims))
		}
	}
	switch {
	case len(unknown) > 0:
		s.idsErr = fmt.Errorf("the model needs input(s) %s that are not token ids, masks, positions or past state, so attnscope cannot fill them from a prompt; give each as a numpy array with --input NAME=FILE.npy, or export the model with token ids as its only required input (weights as initializers, an encoder-decoder as one graph)", strings.Join(unknown, ", "))
	case !hasRole(s.inputs, onnxgraph.RoleIDs):
		s.idsErr = fmt.Errorf("the model has no token-id input (its inputs: %s), so it cannot be run on a prompt", inputNames(s.inputs))
	}
	for _, in := range s.inputs {
		if in.Role == onnxgraph.RoleAttentionMask && len(in.Dims) == 4 && in.ElemType == int32(pb.TensorProto_FLOAT) && opts.Notice != nil {
			opts.Notice(fmt.Sprintf("the model takes a [batch,1,T,T] attention mask (%s); attnscope passes a causal one (0 on and below the diagonal, %d above)", in.Name, MaskedScore))
		}
	}
	if err := s.setGiven(opts.Inputs); err != nil {
		return nil, err
	}
	s.seq2seq = hasRole(s.inputs, onnxgraph.RoleIDs) && hasRole(s.inputs, onnxgraph.RoleDecoderIDs)
	s.logits = logitsOutput(m, s.Limits.Vocab, !opts.LogitsOnly)
	s.batchDependent = onnxgraph.BatchDependentOp(m)
	if s.logits != "" {
		s.outputs = append(s.outputs, s.logits)
	}
	data := m.RuntimeBytes()
	if opts.LogitsOnly {
		if s.logits == "" {
			return nil, fmt.Errorf("the model has no logits output (one whose last axis is the vocabulary) to run for")
		}
		s.Attention = &onnxgraph.Attention{}
	} else {
		layers := selectLayers(opts.Layers)
		s.attnOut = make([]int, len(att.Sites))
		for l, site := range att.Sites {
			s.attnOut[l] = -1
			if layers == nil || layers[site.Layer] {
				s.attnOut[l] = s.nAttn
				s.attnLayer = append(s.attnLayer, l)
				s.outputs = append(s.outputs, site.Output)
				s.nAttn++
			}
		}
		s.stepModel = s.Limits.FixedLen == 1 && hasRole(s.inputs, onnxgraph.RolePast)
		eo := onnxgraph.ExposeOptions{Layers: opts.Layers, Ablate: opts.Ablation && !s.stepModel, Mean: opts.Ablation && opts.Mean}
		if eo.Ablate && !eo.Mean && zTellsHeads(m, att, s.attnOut) {
			eo.Mean = true // the z outputs tell the head counts of the unexposed layers
		}
		exposed, err := onnxgraph.ExposeWith(m, att, eo)
		if err != nil {
			return nil, err
		}
		data = exposed.Bytes
		if eo.Ablate {
			if s.abl, err = newAblationState(exposed.Ablation, eo.Mean); err != nil {
				return nil, err
			}
			defer func() {
				if s.sess == nil { // the open failed after this: release the shared inputs
					s.abl.destroy()
				}
			}()
			if eo.Mean {
				s.zOut = make([]int, len(exposed.Ablation))
				for l, err := range exposed.Ablation {
					s.zOut[l] = -1
					if err == nil {
						s.outputs = append(s.outputs, onnxgraph.ZOutput(l))
						s.zOut[l] = s.nZ
						s.zLayer = append(s.zLayer, l)
						s.nZ++
					}
				}
			}
		}
		if s.seq2seq {
			s.sides = siteSides(att, s.inputs)
		} else {
			s.sides = loneCrossSides(att)
		}
	}
	if s.idsErr == nil && s.Limits.FixedLen == 1 && hasRole(s.inputs, onnxgraph.RolePast) {
		if s.step, err = s.planSteps(); err != nil {
			s.idsErr = err
		} else {
			s.Limits.FixedLen = 0 // Run takes prompts of any length, one token per step
		}
		if s.step != nil && len(s.given) > 0 {
			// Each step builds its own inputs, a mask one position longer than the last:
			// a whole prompt's array has no step to go to, and would be ignored.
			return nil, &GivenInputError{Name: firstName(s.given), Problem: "the model takes one token at a time with past state, and attnscope builds each step's inputs itself (the mask grows by one position per step), so a given array cannot be used; leave --input out, or export the model without past state"}
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
	// The weights stay in the model's file and its external-data files; onnxruntime finds
	// them in m.DataDir(), the real folder those files resolve to (symbolic links
	// followed), since the session is created from bytes.
	if err := so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", m.DataDir()); err != nil {
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
			return nil, &DeviceError{Device: opts.Device, Reason: firstLine(err)}
		}
		s.Device = "CUDA"
	case "cpu":
	default:
		return nil, &DeviceError{Device: opts.Device}
	}
	var inputNames []string
	for _, in := range s.inputs {
		inputNames = append(inputNames, in.Name)
	}
	if s.abl != nil {
		inputNames = append(inputNames, s.abl.inputNames()...)
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
		// The probe runs on inputs attnscope builds (given ones hold other lengths): it
		// learns shapes, not values, and fails, leaving no templates, where one is needed.
		given := s.given
		s.given = nil
		s.templates = s.probeShapes()
		s.given = given
	}
	if s.idsErr == nil && s.step != nil {
		s.stepSizes = s.stepShapes() // for OutputBytes: --max-memory is checked before a run
	}
	return s, nil
}

// zTellsHeads reports whether a session for zero ablation should add mean ablation's z
// outputs too: some layer left unexposed (attnOut −1) can be ablated but the graph does not
// declare its head count, which only its exposed attention or its z tells (a mask needs it),
// and every layer that can be zero-ablated can be mean-ablated (so that adding them takes no
// zero ablation away). z is [heads, T, d_head] per layer: small beside attention maps.
func zTellsHeads(m *onnxgraph.Model, att *onnxgraph.Attention, attnOut []int) bool {
	need := false
	for l, site := range att.Sites {
		if onnxgraph.AblationError(m, site, false) != nil {
			continue
		}
		if onnxgraph.AblationError(m, site, true) != nil {
			return false
		}
		need = need || attnOut[l] < 0 && site.Heads <= 0
	}
	return need
}

// selectLayers is Options.Layers as a set; nil for every layer.
func selectLayers(layers []int) map[int]bool {
	if layers == nil {
		return nil
	}
	set := map[int]bool{}
	for _, l := range layers {
		set[l] = true
	}
	return set
}

// Layers are the layers whose attention a run returns, in order (see Options.Layers): all
// of the model's unless the session was opened with a selection; none with LogitsOnly.
func (s *Session) Layers() []int { return append([]int(nil), s.attnLayer...) }

// Close releases the onnxruntime session.
func (s *Session) Close() error {
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	if s.abl != nil {
		s.abl.destroy()
	}
	return err
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

// CheckIDs says why ids cannot be run, as an *IDsError, or returns nil: none at all, a
// length other than the model's fixed one, more than its position table holds, or an id
// outside its vocabulary. Every Run, RunPair and RunBatch checks its ids with it.
func (s *Session) CheckIDs(ids []int64) error { return s.checkIDs(ids, "") }

// CheckPair is CheckIDs for an encoder–decoder's source and target (the errors name the
// sequence), as RunPair checks them.
func (s *Session) CheckPair(src, tgt []int64) error {
	if err := s.checkIDs(src, "source"); err != nil {
		return err
	}
	return s.CheckTarget(tgt)
}

// CheckTarget is CheckIDs for an encoder–decoder's target alone.
func (s *Session) CheckTarget(tgt []int64) error { return s.checkIDs(tgt, "target") }

// checkIDs is CheckIDs for the sequence seq ("source", "target", or "" for the only one).
func (s *Session) checkIDs(ids []int64, seq string) error {
	if len(ids) == 0 {
		return &IDsError{Problem: NoIDs, Seq: seq}
	}
	if s.Limits.FixedLen > 0 && len(ids) != s.Limits.FixedLen {
		return &IDsError{Problem: WrongLength, Seq: seq, Len: len(ids), Limit: s.Limits.FixedLen}
	}
	if s.Limits.Positions > 0 && len(ids) > s.Limits.Positions {
		return &IDsError{Problem: TooLong, Seq: seq, Len: len(ids), Limit: s.Limits.Positions}
	}
	for i, id := range ids {
		if id < 0 || (s.Limits.Vocab > 0 && id >= int64(s.Limits.Vocab)) {
			return &IDsError{Problem: OutOfVocab, Seq: seq, Len: len(ids), Limit: s.Limits.Vocab, Pos: i, ID: id}
		}
	}
	return nil
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
