package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/spf13/pflag"

	"github.com/attnscope/attnscope/ablate"
)

// ablationFlags are --ablate, --ablate-mode and --ablate-ref, shared by the commands that
// run a model.
type ablationFlags struct {
	heads, mode, ref string
	// always opens the session with ablation inputs even without --ablate (the browser's
	// x key, inspect ablate).
	always bool
}

func (a *ablationFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&a.heads, "ablate", "", "switch heads off: L1H5, L1H5,L0H3, L0 (a whole layer) or all")
	fl.StringVar(&a.mode, "ablate-mode", "zero", "zero (the head's output z is 0) or mean (z is its mean over the reference's positions)")
	fl.StringVar(&a.ref, "ablate-ref", "", "mean ablation: the reference text file whose positions z is averaged over (default: the prompt)")
}

// check reads --ablate-mode and refuses flags that do not go together.
func (a *ablationFlags) check() (ablate.Mode, error) {
	mode, err := ablate.ParseMode(a.mode)
	if err != nil {
		return 0, usagef("--ablate-mode: %v", err)
	}
	if a.ref != "" && mode != ablate.Mean {
		return 0, usagef("--ablate-ref is the reference of mean ablation; add --ablate-mode mean")
	}
	return mode, nil
}

// applyAblation switches off the heads of --ablate in every run of l that follows; ids are
// the prompt, the reference of mean ablation unless --ablate-ref gives one. Heads the
// model does not have are a *ablate.SelectionError (a usage error), layers whose form
// cannot be masked the session's sentence.
func (f *runFlags) applyAblation(l *loaded, ids []int64) error {
	if f.ablation.heads == "" {
		if f.ablation.ref != "" {
			return usagef("--ablate-ref is the reference of mean ablation; give the heads to switch off with --ablate")
		}
		return nil
	}
	mode, err := f.ablation.check()
	if err != nil {
		return err
	}
	if why := l.ablateWhy(mode); why != "" {
		return fmt.Errorf("cannot ablate: %s", why)
	}
	heads, err := ablate.ParseHeads(f.ablation.heads, l.sess.HeadCounts())
	if err != nil {
		return err
	}
	a := &ablate.Ablation{Off: heads, Mode: mode}
	for _, h := range heads {
		if err := l.sess.CanAblate(h.Layer, mode); err != nil {
			return fmt.Errorf("cannot ablate %s: %w", h, err)
		}
	}
	if mode == ablate.Mean {
		if a.ZMean, err = f.meanReference(l, ids); err != nil {
			return err
		}
	}
	if err := l.sess.SetAblation(a); err != nil {
		return err
	}
	l.base = a
	notice("%s %s-ablated", describeHeads(heads), mode)
	return nil
}

// meanReference runs the reference of mean ablation clean (--ablate-ref's text, else ids,
// which the prompt's reading checked already) and returns every layer's mean head outputs.
func (f *runFlags) meanReference(l *loaded, ids []int64) ([][]float32, error) {
	ref, err := f.ablateRefIDs(l)
	if err != nil {
		return nil, err
	}
	if ref == nil {
		ref = ids
	}
	if len(ref) == 0 {
		return nil, usagef("mean ablation needs a reference: give a prompt (--text, --ids) or --ablate-ref FILE")
	}
	res, err := l.sess.RunAblations(ref, []*ablate.Ablation{nil})
	if err != nil {
		return nil, err
	}
	defer l.sess.RecycleBatch(res)
	return ablate.MeanZ(res[0])
}

// ablateRefIDs reads and encodes --ablate-ref (nil when it is not given); a file without
// tokens or with ids the model cannot take is refused.
func (f *runFlags) ablateRefIDs(l *loaded) ([]int64, error) {
	if f.ablation.ref == "" {
		return nil, nil
	}
	text, err := readBounded("--ablate-ref", f.ablation.ref, promptCap(l.sess.Limits.Positions))
	if err != nil {
		return nil, err
	}
	ref, err := f.encode(l, "--ablate-ref text", text)
	if err != nil {
		return nil, err
	}
	if len(ref) == 0 {
		return nil, usagef("--ablate-ref %s has no tokens; give a text to average the heads' outputs over", f.ablation.ref)
	}
	if err := l.sess.CheckIDs(ref); err != nil {
		return nil, fmt.Errorf("the reference of mean ablation: %w", err)
	}
	return ref, nil
}

// readBounded reads the text file a flag names, at most limit bytes: a folder, a file that
// cannot be read or one longer than limit is refused with a sentence.
func readBounded(flag, path string, limit int) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s %s: %w", flag, path, errors.Unwrap(err))
	}
	defer file.Close()
	if st, err := file.Stat(); err == nil && st.IsDir() {
		return "", usagef("%s %s is a folder; give a text file", flag, path)
	}
	b, err := io.ReadAll(io.LimitReader(file, int64(limit)+1))
	if err != nil {
		return "", fmt.Errorf("cannot read %s %s: %w", flag, path, errors.Unwrap(err))
	}
	if len(b) > limit {
		return "", usagef("%s %s is longer than %d bytes, the most read for a prompt; shorten it", flag, path, limit)
	}
	return string(b), nil
}

// describeHeads names a selection for a notice: the heads, or their count and range when
// there are many.
func describeHeads(heads []ablate.Head) string {
	if len(heads) <= 6 {
		return ablate.Join(heads)
	}
	return fmt.Sprintf("%d heads (%s … %s)", len(heads), heads[0], heads[len(heads)-1])
}

// withBase is the ablation of off on top of --ablate's heads, in --ablate's mode.
func (l *loaded) withBase(off []ablate.Head) *ablate.Ablation {
	if l.base == nil {
		return &ablate.Ablation{Off: off}
	}
	a := *l.base
	a.Off = append([]ablate.Head(nil), l.base.Off...)
	for _, h := range off {
		if !slices.Contains(a.Off, h) {
			a.Off = append(a.Off, h)
		}
	}
	slices.SortFunc(a.Off, ablate.Compare)
	return &a
}

// ablateWhy says why the browser cannot switch any head off, or returns "".
func (l *loaded) ablateWhy(mode ablate.Mode) string {
	var first error
	for i := range l.sess.Attention.Sites {
		err := l.sess.CanAblate(i, mode)
		if err == nil {
			return ""
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return "the model has no attention layers to switch off"
	}
	return first.Error()
}
