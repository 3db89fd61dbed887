package analysis

import (
	"bufio"
	"fmt"
	"io"
)

// CorpusOptions say how ScoreCorpus cuts a text into windows.
type CorpusOptions struct {
	// Window is the number of tokens per run.
	Window int
	// BOS, when ≥ 0, starts every window (followed by Window−1 tokens of text).
	BOS int64
	// Encode turns a piece of text into ids (no special tokens added).
	Encode func(text string) ([]int64, error)
	// Progress, when set, is called after every window.
	Progress func(bytesRead int64, windows, tokens int)
}

// CorpusStats count what ScoreCorpus did.
type CorpusStats struct {
	Bytes    int64
	Windows  int
	Tokens   int // in windows, BOS tokens included
	Leftover int // tokens at the end too few for a window
}

// ScoreCorpus streams text from r through the model in windows of o.Window tokens and adds
// every window's text scores to acc, and its losses at the ICL positions to icl (when not
// nil). The text is read in pieces of about 64 KiB cut at line ends, each tokenized on its
// own, so memory does not depend on the corpus size: one piece, one window and one result
// (recycled) at a time. A word is never cut in two, but a token that would span two pieces
// (a piece ends at a newline) may be split differently than when the whole text is
// tokenized at once.
func ScoreCorpus(s Runner, r io.Reader, o CorpusOptions, acc *Accumulator, icl *ICL) (CorpusStats, error) {
	var st CorpusStats
	body := o.Window
	if o.BOS >= 0 {
		body--
	}
	if body < 1 {
		return st, fmt.Errorf("a window of %d tokens holds no text", o.Window)
	}
	br := bufio.NewReaderSize(r, 1<<16)
	var pending []int64
	window := make([]int64, 0, o.Window)
	for {
		piece, rerr := readPiece(br, 1<<16)
		st.Bytes += int64(len(piece))
		if len(piece) > 0 {
			ids, err := o.Encode(string(piece))
			if err != nil {
				return st, fmt.Errorf("near byte %d: %w", st.Bytes, err)
			}
			pending = append(pending, ids...)
			for len(pending) >= body {
				window = window[:0]
				if o.BOS >= 0 {
					window = append(window, o.BOS)
				}
				window = append(window, pending[:body]...)
				pending = pending[body:]
				res, err := s.Run(window)
				if err != nil {
					return st, err
				}
				if err := acc.AddText(res); err != nil {
					return st, err
				}
				if icl != nil {
					icl.Add(res)
				}
				s.Recycle(res)
				st.Windows++
				st.Tokens += len(window)
				if o.Progress != nil {
					o.Progress(st.Bytes, st.Windows, st.Tokens)
				}
			}
			pending = append([]int64(nil), pending...) // let the piece's ids go
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return st, rerr
		}
	}
	st.Leftover = len(pending)
	return st, nil
}

// readPiece reads about n bytes, extended to the end of a line (or, past 4 KiB more, of a
// word), so that the tokenizer never sees a word cut in two.
func readPiece(r *bufio.Reader, n int) ([]byte, error) {
	buf := make([]byte, n)
	k, err := io.ReadFull(r, buf)
	buf = buf[:k]
	if err == io.ErrUnexpectedEOF {
		return buf, io.EOF
	}
	if err != nil {
		return buf, err
	}
	for extra := 0; extra < 1<<16; extra++ {
		c, err := r.ReadByte()
		if err != nil {
			return buf, err
		}
		buf = append(buf, c)
		if c == '\n' || (extra > 4096 && (c == ' ' || c == '\t')) {
			break
		}
	}
	return buf, nil
}
