package session

import (
	"fmt"
	"strings"
)

// LibraryError says the onnxruntime shared library could not be found or loaded. Its
// message states the facts in one sentence; what to do about it (a set-up step, a flag, an
// environment variable) is the caller's to add.
type LibraryError struct {
	// Path is the library given (Given) or found and failed to load; "" when none was found.
	Path string
	// Given is true when Path was given to FindLibrary or Init rather than found by the search.
	Given bool
	// Tried are the places searched, in order, when none was found.
	Tried []string
	// Err is why a library that exists failed to load; nil when none was found.
	Err error
}

func (e *LibraryError) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("cannot load the onnxruntime library %s (%s); attnscope needs onnxruntime %s", e.Path, firstLine(e.Err), WantVersion)
	case e.Given:
		return fmt.Sprintf("the onnxruntime library %s does not exist", e.Path)
	}
	shown := e.Tried
	if len(shown) > 6 {
		shown = append(append([]string{}, shown[:6]...), fmt.Sprintf("… %d more", len(e.Tried)-6))
	}
	return fmt.Sprintf("no onnxruntime library found (looked at %s)", strings.Join(shown, ", "))
}

func (e *LibraryError) Unwrap() error { return e.Err }

// DeviceError says the device asked for (Options.Device) cannot be used: CUDA that is not
// available (Reason says why), or a name that is not a device (Reason is empty).
type DeviceError struct {
	Device string
	Reason string
}

func (e *DeviceError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("unknown device %q; the devices are auto, cpu and cuda", e.Device)
	}
	return fmt.Sprintf("the cuda device was asked for but CUDA is not available (%s)", e.Reason)
}

// IDsProblem is what is wrong with token ids (see IDsError).
type IDsProblem int

const (
	// NoIDs: no ids were given.
	NoIDs IDsProblem = iota + 1
	// WrongLength: the model's token-id input has a fixed length (Limit) other than Len.
	WrongLength
	// TooLong: Len ids do not fit the model's position table of Limit rows.
	TooLong
	// OutOfVocab: ID at position Pos is outside the vocabulary of Limit ids.
	OutOfVocab
)

// IDsError says why token ids cannot be run (CheckIDs, and every Run that checks them),
// with the limit they break.
type IDsError struct {
	Problem IDsProblem
	// Seq names the sequence of an encoder–decoder's run: "source" or "target"; "" for a
	// model with one sequence.
	Seq string
	// Len is the number of ids given.
	Len int
	// Limit is the fixed length (WrongLength), the positions (TooLong) or the vocabulary
	// size (OutOfVocab).
	Limit int
	// Pos and ID are the first id outside the vocabulary (OutOfVocab).
	Pos int
	ID  int64
}

func (e *IDsError) Error() string {
	seq := "the prompt"
	if e.Seq != "" {
		seq = "the " + e.Seq
	}
	in := ""
	if e.Seq != "" {
		in = " of the " + e.Seq
	}
	switch e.Problem {
	case NoIDs:
		return fmt.Sprintf("no tokens to run: %s is empty", seq)
	case WrongLength:
		return fmt.Sprintf("the model takes exactly %d tokens (its input has a fixed length), but %s has %d", e.Limit, seq, e.Len)
	case TooLong:
		return fmt.Sprintf("%s has %d tokens but the model's position table holds %d", seq, e.Len, e.Limit)
	case OutOfVocab:
		return fmt.Sprintf("token id %d at position %d%s is outside the model's vocabulary of %d ids (0…%d)", e.ID, e.Pos, in, e.Limit, e.Limit-1)
	}
	return fmt.Sprintf("%s cannot be run", seq)
}
