// Package ablate chooses heads to switch off and measures what switching them off does:
// head selections ("L1H5,L0", "all"), and sweeps that ablate heads in turn and report the
// change of loss, in-context-learning score, top-1 predictions and other heads' scores.
// The switching itself happens in the session, through mask inputs added by onnxgraph.
package ablate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Head names one attention head: layer and head, both 0-based, written L{layer}H{head}.
type Head struct{ Layer, Head int }

func (h Head) String() string { return fmt.Sprintf("L%dH%d", h.Layer, h.Head) }

// Mode says what an ablated head's output becomes.
type Mode int

const (
	// Zero multiplies the head's probabilities by 0 before ×V: its output z is 0 (the
	// output projection's bias stays).
	Zero Mode = iota
	// Mean replaces the head's z by its mean over the positions of a reference run.
	Mean
)

func (m Mode) String() string {
	if m == Mean {
		return "mean"
	}
	return "zero"
}

// ParseMode reads "zero" or "mean".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "zero", "":
		return Zero, nil
	case "mean":
		return Mean, nil
	}
	return Zero, fmt.Errorf("unknown ablation mode %q: use zero or mean", s)
}

// SelectionError says why a head selection does not fit the model.
type SelectionError struct {
	Spec   string // the item of the selection at fault
	Reason string
}

func (e *SelectionError) Error() string {
	return fmt.Sprintf("cannot ablate %q: %s", e.Spec, e.Reason)
}

// ParseHeads reads a comma-separated selection of heads of a model whose layer l has
// heads[l] heads: "L1H5", "L0" (every head of layer 0), "all" (every head), any mix of
// them ("L1H5,L0H3", "l0,L1h2"). The result is sorted by layer then head, without
// repeats. An empty selection, a malformed item or a head the model does not have is a
// *SelectionError, and so is a layer whose count is unknown (≤ 0).
func ParseHeads(spec string, heads []int) ([]Head, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, &SelectionError{Spec: spec, Reason: "no heads given; write heads as L1H5, a layer as L0, or all"}
	}
	seen := map[Head]bool{}
	var out []Head
	add := func(h Head) {
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if strings.EqualFold(item, "all") {
			for l, n := range heads {
				if n <= 0 {
					return nil, &SelectionError{Spec: item, Reason: fmt.Sprintf("the head count of layer %d is not known before a run", l)}
				}
				for h := 0; h < n; h++ {
					add(Head{l, h})
				}
			}
			continue
		}
		l, h, err := parseItem(item)
		if err != nil {
			return nil, &SelectionError{Spec: item, Reason: err.Error()}
		}
		if l >= len(heads) {
			return nil, &SelectionError{Spec: item, Reason: fmt.Sprintf("the model has %d layers (L0–L%d)", len(heads), len(heads)-1)}
		}
		if heads[l] <= 0 {
			return nil, &SelectionError{Spec: item, Reason: fmt.Sprintf("the head count of layer %d is not known before a run", l)}
		}
		if h < 0 {
			for k := 0; k < heads[l]; k++ {
				add(Head{l, k})
			}
			continue
		}
		if h >= heads[l] {
			return nil, &SelectionError{Spec: item, Reason: fmt.Sprintf("layer %d has %d heads (H0–H%d)", l, heads[l], heads[l]-1)}
		}
		add(Head{l, h})
	}
	slices.SortFunc(out, Compare)
	return out, nil
}

// Compare orders heads by layer, then head.
func Compare(a, b Head) int {
	if a.Layer != b.Layer {
		return a.Layer - b.Layer
	}
	return a.Head - b.Head
}

// parseItem reads "L{l}H{h}" (h ≥ 0) or "L{l}" (h = −1), case-insensitively.
func parseItem(item string) (l, h int, err error) {
	bad := fmt.Errorf("write a head as L1H5, a layer as L0, or all")
	s := strings.ToUpper(item)
	if !strings.HasPrefix(s, "L") {
		return 0, 0, bad
	}
	s = s[1:]
	layer, head, hasHead := strings.Cut(s, "H")
	l, err = strconv.Atoi(layer)
	if err != nil || l < 0 || layer == "" || layer[0] == '+' || layer[0] == '-' {
		return 0, 0, bad
	}
	if !hasHead {
		return l, -1, nil
	}
	h, err = strconv.Atoi(head)
	if err != nil || h < 0 || head == "" || head[0] == '+' || head[0] == '-' {
		return 0, 0, bad
	}
	return l, h, nil
}

// Join writes heads as a selection ParseHeads reads back ("" for none).
func Join(heads []Head) string {
	parts := make([]string, len(heads))
	for i, h := range heads {
		parts[i] = h.String()
	}
	return strings.Join(parts, ",")
}
