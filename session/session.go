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
}

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
	s.logits = mainOutput(m)
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
		if data, err = onnxgraph.Expose(m, att); err != nil {
			return nil, err
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
	if s.idsErr == nil {
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
	// Tokens are the input ids.
	Tokens []int64
	// Logits are row-major [len(Tokens)][Vocab]; nil when the model's main output is not
	// per-token logits (an encoder's hidden state, a classifier's scores).
	Logits []float32
	// Vocab is the logits' last dimension (0 when Logits is nil).
	Vocab int
	// Attn is [layer][head][query][key]; rows sum to 1.
	Attn [][][][]float32
	// RunTime is the wall time of the onnxruntime call.
	RunTime time.Duration

	shapes  []ort.Shape // of every output, in the session's output order
	buffers [][]float32 // backing memory of Logits and Attn, for Recycle
	// converted is true when an output was not float32 and had to be converted (such
	// outputs cannot be pre-allocated as float32).
	converted bool
}

// Heads is the head count of layer l.
func (r *Result) Heads(l int) int { return len(r.Attn[l]) }

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
// mask, positions 0…T−1, zero token types and an empty past.
func (s *Session) Run(ids []int64) (*Result, error) {
	if s.sess == nil {
		return nil, errClosed
	}
	if s.idsErr != nil {
		return nil, s.idsErr
	}
	if err := s.CheckIDs(ids); err != nil {
		return nil, err
	}
	inputs := make([]ort.Value, len(s.inputs))
	defer destroyAll(inputs)
	for i, in := range s.inputs {
		v, err := s.buildInput(in, ids, 1, len(ids))
		if err != nil {
			return nil, err
		}
		inputs[i] = v
	}
	res, err := s.run(inputs, 1, len(ids))
	if err != nil {
		return nil, err
	}
	res[0].Tokens = append([]int64(nil), ids...)
	return res[0], nil
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
	res, err := s.run(inputs, 1, T)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// run runs prepared [K,T] inputs (K = 1 for Run and RunTensors) and splits every output
// into K per-sequence views. Outputs are pre-allocated from the shape templates learned at
// Open: all of them for one sequence; for K sequences those whose first dimension is fixed
// (batch 1, or heads for the [B·H,Q,K] form), which becomes K times larger.
func (s *Session) run(inputs []ort.Value, K, T int) ([]*Result, error) {
	outputs := make([]ort.Value, len(s.outputs))
	defer destroyAll(outputs)
	buffers := make([][]float32, len(s.outputs))
	if s.templates != nil {
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
	k := 0
	if s.logits != "" {
		k = 1
	}
	for b, res := range results {
		res.converted = converted
		res.shapes = make([]ort.Shape, len(outputs))
		for i := range outputs {
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

// buildInput makes the [K,T] tensor for one model input; flat holds the K sequences' ids
// one after another.
func (s *Session) buildInput(in onnxgraph.Input, flat []int64, K, T int) (ort.Value, error) {
	shape := ort.NewShape(int64(K), int64(T))
	switch in.Role {
	case onnxgraph.RoleIDs:
		return intTensor(in, shape, flat)
	case onnxgraph.RoleAttentionMask:
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
			return ort.NewCustomDataTensor(sh, []byte{}, ort.TensorElementDataTypeFloat16)
		}
		return nil, fmt.Errorf("past input %s has type %s, which attnscope cannot fill", in.Name, typeName(in.ElemType))
	}
	return nil, fmt.Errorf("cannot fill input %s", in.Name)
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

// mainOutput picks the output that holds logits: one named "logits", else the first;
// "" when that output is not float32 (onnxruntime_go v1.27.0 copies only half of a
// float16 output it allocates, so such logits are left out rather than read wrongly).
func mainOutput(m *onnxgraph.Model) string {
	outs := m.Graph().GetOutput()
	if len(outs) == 0 {
		return ""
	}
	main := outs[0]
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o.GetName()), "logits") {
			main = o
			break
		}
	}
	if et := main.GetType().GetTensorType().GetElemType(); et != 0 && et != int32(pb.TensorProto_FLOAT) {
		return ""
	}
	return main.GetName()
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
