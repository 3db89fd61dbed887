package session

import (
	"fmt"
	"sort"
	"strings"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// GivenInputError says why a tensor given for a model input (Options.Inputs) does not fit
// it: no such input, or the wrong element type or shape.
type GivenInputError struct {
	// Name is the input's name.
	Name string
	// Problem is the sentence's middle: what is wrong, and what the model takes.
	Problem string
	// Length, when not 0, is the run's length along the axis the array does not fit (its
	// token ids' length), and Of says what Problem calls those ids ("the prompt"): a
	// caller that ran other ids (heads' probes) rewords it with For.
	Length int64
	shape  string // the array's shape, the shape the run needs, and the axis, for For
	need   string
	axis   int
	param  string
}

// For is Problem with the run's token ids called what ("the probe"): for a length
// mismatch, "… which the probe makes 64 long"; Problem itself otherwise.
func (e *GivenInputError) For(what string) string {
	if e.Length == 0 {
		return e.Problem
	}
	return fmt.Sprintf("the array has shape %s but this run needs %s (axis %d is %s, which %s makes %d long)", e.shape, e.need, e.axis, e.param, what, e.Length)
}

func (e *GivenInputError) Error() string { return fmt.Sprintf("input %s: %s", e.Name, e.Problem) }

// setGiven checks the tensors of Options.Inputs against the model's inputs (name, element
// type, rank, fixed dimensions) and keeps them for every run.
func (s *Session) setGiven(given map[string]*pb.TensorProto) error {
	if len(given) == 0 {
		return nil
	}
	byName := map[string]onnxgraph.Input{}
	for _, in := range s.inputs {
		byName[in.Name] = in
	}
	names := make([]string, 0, len(given))
	for name := range given {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t := given[name]
		in, ok := byName[name]
		if !ok {
			return &GivenInputError{Name: name, Problem: fmt.Sprintf("the model has no such input (its inputs: %s)", inputNames(s.inputs))}
		}
		want := fmt.Sprintf("%s %s", typeName(in.ElemType), dimsString(in))
		if t.GetDataType() != in.ElemType {
			return &GivenInputError{Name: name, Problem: fmt.Sprintf("the array is %s but the model takes %s", typeName(t.GetDataType()), want)}
		}
		if len(t.GetDims()) != len(in.Dims) {
			return &GivenInputError{Name: name, Problem: fmt.Sprintf("the array has shape %s but the model takes %s", shapeString(t.GetDims()), want)}
		}
		for d, v := range in.Dims {
			if v >= 0 && t.GetDims()[d] != v {
				return &GivenInputError{Name: name, Problem: fmt.Sprintf("the array has shape %s but the model takes %s", shapeString(t.GetDims()), want)}
			}
		}
		if err := s.givenRange(in, t); err != nil {
			return err
		}
	}
	s.given = given
	return nil
}

// givenRange checks a given array of positions or token ids against the model's
// positions or vocabulary, where the graph tells them (Limits), so that an index out of
// range is one sentence rather than onnxruntime's Gather error.
func (s *Session) givenRange(in onnxgraph.Input, t *pb.TensorProto) error {
	var limit int
	var what string
	switch in.Role {
	case onnxgraph.RolePositionIDs:
		limit, what = s.Limits.Positions, "positions"
	case onnxgraph.RoleIDs, onnxgraph.RoleDecoderIDs:
		limit, what = s.Limits.Vocab, "vocabulary ids"
	}
	if limit <= 0 {
		return nil
	}
	vals := t.GetInt64Data()
	if len(vals) == 0 {
		for _, v := range t.GetInt32Data() {
			vals = append(vals, int64(v))
		}
	}
	for i, v := range vals {
		if v < 0 || v >= int64(limit) {
			return &GivenInputError{Name: in.Name, Problem: fmt.Sprintf("the array holds %d (at flat index %d), outside the model's %d %s (0 to %d)", v, i, limit, what, limit-1)}
		}
	}
	return nil
}

// inputFor is the tensor for model input in on a run fed by f: the one given for it
// (Options.Inputs), else the one built from the ids (buildInput). A given tensor must have
// the run's lengths along the axes it shares with the token ids (the batch, the source's
// or the target's sequence).
func (s *Session) inputFor(in onnxgraph.Input, f feed) (ort.Value, error) {
	t, ok := s.given[in.Name]
	if !ok {
		if n, ok := s.givenLength(in); ok && in.Role == onnxgraph.RoleAttentionMask && len(in.Dims) == 2 {
			// A mask over given positions (a lone decoder's encoder_attention_mask
			// beside given encoder_hidden_states) is as long as they are.
			g := f
			g.S, g.T = n, n
			return s.buildInput(in, g)
		}
		return s.buildInput(in, f)
	}
	want := make([]int64, len(in.Dims))
	for d := range in.Dims {
		want[d] = -1
		p := in.Params[d]
		if p == "" {
			continue
		}
		if s.isBatchAxis(in, d) {
			want[d] = int64(f.K)
			continue
		}
		for _, ids := range s.inputs {
			if len(ids.Params) < 2 || ids.Params[1] != p {
				continue
			}
			switch ids.Role {
			case onnxgraph.RoleIDs:
				want[d] = int64(f.S)
			case onnxgraph.RoleDecoderIDs:
				want[d] = int64(f.T)
			}
		}
	}
	for d, w := range want {
		if w >= 0 && t.GetDims()[d] != w {
			exp := make([]string, len(want))
			for i, v := range want {
				exp[i] = fmt.Sprint(t.GetDims()[i])
				if v >= 0 {
					exp[i] = fmt.Sprint(v)
				}
			}
			e := &GivenInputError{Name: in.Name, Length: w, shape: shapeString(t.GetDims()), need: "[" + strings.Join(exp, ", ") + "]", axis: d, param: in.Params[d]}
			e.Problem = e.For("the prompt")
			return nil, e
		}
	}
	v, err := valueFromProto(t)
	if err != nil {
		return nil, &GivenInputError{Name: in.Name, Problem: err.Error()}
	}
	return v, nil
}

// givenLength is the length of in's sequence axis (axis 1) when a given tensor tells it:
// one with an axis of the same name (encoder_hidden_states [batch, source_tokens, d]
// beside encoder_attention_mask [batch, source_tokens]), or, where the axes are not
// named, encoder_hidden_states for an encoder_… input. ok is false when none does.
func (s *Session) givenLength(in onnxgraph.Input) (int, bool) {
	if len(s.given) == 0 || len(in.Params) < 2 {
		return 0, false
	}
	if p := in.Params[1]; p != "" {
		for _, g := range s.inputs {
			t, ok := s.given[g.Name]
			if !ok || g.Name == in.Name {
				continue
			}
			for d, q := range g.Params {
				if q == p && d < len(t.GetDims()) {
					return int(t.GetDims()[d]), true
				}
			}
		}
		return 0, false
	}
	if t, ok := s.given[onnxgraph.DecoderHiddenInput]; ok && strings.HasPrefix(strings.ToLower(in.Name), "encoder_") && len(t.GetDims()) >= 2 {
		return int(t.GetDims()[1]), true
	}
	return 0, false
}

// firstName is the first of given's names in sorted order.
func firstName(given map[string]*pb.TensorProto) string {
	names := make([]string, 0, len(given))
	for n := range given {
		names = append(names, n)
	}
	sort.Strings(names)
	return names[0]
}

func shapeString(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
