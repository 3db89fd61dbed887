package session

import (
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/result"
)

// siteSides tells, per site of an encoder–decoder, which sequences its queries and keys run
// over: cross-attention (Site.Cross) is target × source; a self-attention computed from
// the target ids is the decoder's (target × target), else the encoder's (source × source).
func siteSides(att *onnxgraph.Attention, inputs []onnxgraph.Input) [][2]result.Side {
	decoder := map[string]bool{}
	for _, in := range inputs {
		if in.Role == onnxgraph.RoleDecoderIDs {
			decoder[in.Name] = true
		}
	}
	sides := make([][2]result.Side, len(att.Sites))
	for l, site := range att.Sites {
		sides[l] = [2]result.Side{result.SourceSide, result.SourceSide}
		if site.Cross {
			sides[l] = [2]result.Side{result.TargetSide, result.SourceSide}
			continue
		}
		for _, name := range site.Inputs {
			if decoder[name] {
				sides[l] = [2]result.Side{result.TargetSide, result.TargetSide}
			}
		}
	}
	return sides
}

// loneCrossSides are the sides of a decoder run alone, its encoder_hidden_states given
// (Options.Inputs): cross-attention sites are target × source, the source being the given
// states' positions, which have no ids (Result.Source stays nil); every other site is
// target × target. nil when no site is cross-attention.
func loneCrossSides(att *onnxgraph.Attention) [][2]result.Side {
	var sides [][2]result.Side
	for l, site := range att.Sites {
		if site.Cross {
			if sides == nil {
				sides = make([][2]result.Side, len(att.Sites))
			}
			sides[l] = [2]result.Side{result.TargetSide, result.SourceSide}
		}
	}
	return sides
}

// resultSides are the sides of one run's layers: those the graph tells, unless a layer's
// map has the shape of another reading (only possible when S ≠ T), which then wins.
func resultSides(graph [][2]result.Side, attn [][][][]float32, S, T int) [][2]result.Side {
	length := func(sd result.Side) int {
		if sd == result.SourceSide {
			return S
		}
		return T
	}
	out := make([][2]result.Side, len(attn))
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
