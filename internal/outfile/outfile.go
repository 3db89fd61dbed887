// Package outfile is the one way attnscope writes a file the user named for output (an
// --out table, a PNG, a saved model, the browser's pictures), so that no user file is ever
// lost:
//
//   - Create refuses a path that is, after symlinks and ".." (device and inode compared),
//     any of the files the run reads (the model, its external-data files, its tokenizer).
//   - A regular file, or a new name, is written to a temporary file in the target's own
//     folder and renamed over the target only by Commit: a failed or interrupted write
//     leaves the old file as it was. A new file gets mode 0666 less the umask (0644 under
//     umask 022); an existing file keeps its mode.
//   - A symlink is written through: the file it points to is replaced, the link stays.
//   - A special file (a terminal, /dev/null, a FIFO) is written in place, never renamed
//     over; /dev/stdout, /dev/stderr and /dev/fd/N write to the process's own descriptor.
//   - CreateNew writes a file under a name nothing has: name, else name-2, name-3… .
//   - CleanupOnSignal removes the temporary files of writes in progress when the process
//     is interrupted (SIGINT, SIGTERM).
package outfile

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ProtectedError is Create's refusal of a path that resolves to a file the run reads.
type ProtectedError struct {
	// Path is the output path as given.
	Path string
	// Protected is the protected path (as given to Create) that Path is the same file as.
	Protected string
}

func (e *ProtectedError) Error() string {
	if filepath.Clean(e.Path) == filepath.Clean(e.Protected) {
		return fmt.Sprintf("%s is an input of this run and must not be overwritten; choose another output file", e.Path)
	}
	return fmt.Sprintf("%s is the same file as %s, an input of this run, and must not be overwritten; choose another output file", e.Path, e.Protected)
}

// FolderError is Create's refusal of a path that names a folder.
type FolderError struct{ Path string }

func (e *FolderError) Error() string {
	return fmt.Sprintf("%s is a folder; give a file name to write", e.Path)
}

// File is an output being written: an io.Writer (buffered) whose data reaches its path
// only when Commit succeeds (for a regular file; a special file receives it as it is
// written). Every File must end with Commit or Abort; Abort after Commit does nothing, so
// `defer f.Abort()` is safe.
type File struct {
	w     *bufio.Writer
	f     *os.File
	given string // the path as the caller gave it
	final string // where the data goes: the resolved regular file, or the special file
	temp  string // the temporary file renamed over final at Commit; "" when written in place
	done  bool
}

// Create opens path for writing, refusing it with a *ProtectedError when it is the same
// file (device and inode, after symlinks and "..") as any existing file in protect, and
// with a *FolderError when it is a folder. See the package comment for how each kind of
// path is written. Nothing at path changes until Commit, except for a special file.
func Create(path string, protect ...string) (*File, error) {
	if path == "" {
		return nil, errors.New("no output file name was given")
	}
	if err := checkProtected(path, protect); err != nil {
		return nil, err
	}
	if fd, ok := fdPath(path); ok {
		// The process's own descriptor (/dev/stdout …): write to it, keeping its offset and
		// append mode, instead of reopening (and truncating) what it points to.
		dup, err := syscall.Dup(fd)
		if err != nil {
			return nil, fmt.Errorf("cannot write %s: %w", path, err)
		}
		syscall.CloseOnExec(dup)
		f := os.NewFile(uintptr(dup), path)
		return &File{w: bufio.NewWriterSize(f, 1<<16), f: f, given: path, final: path}, nil
	}
	final, direct, err := resolve(path)
	if err != nil {
		return nil, err
	}
	if direct {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("cannot write %s: %w", path, unwrapPath(err))
		}
		return &File{w: bufio.NewWriterSize(f, 1<<16), f: f, given: path, final: final}, nil
	}
	var keep os.FileInfo
	if st, err := os.Stat(final); err == nil {
		keep = st
	}
	f, temp, err := createTemp(filepath.Dir(final), filepath.Base(final))
	if err != nil {
		// The data is written beside the target and renamed over it, so the folder must
		// take a new file even when the target itself is writable.
		return nil, fmt.Errorf("cannot write %s: no new file can be made in its folder %s (%w)", path, filepath.Dir(final), unwrapPath(err))
	}
	if keep != nil {
		// Best effort: the replaced file's owner (when root writes over a user's file), then
		// its permissions.
		if sys, ok := keep.Sys().(*syscall.Stat_t); ok {
			f.Chown(int(sys.Uid), int(sys.Gid))
		}
		if err := f.Chmod(keep.Mode().Perm()); err != nil {
			discard(f, temp)
			return nil, fmt.Errorf("cannot write %s: %w", path, unwrapPath(err))
		}
	}
	return &File{w: bufio.NewWriterSize(f, 1<<16), f: f, given: path, final: final, temp: temp}, nil
}

// Write buffers p for the file.
func (f *File) Write(p []byte) (int, error) { return f.w.Write(p) }

// WriteString buffers s for the file.
func (f *File) WriteString(s string) (int, error) { return f.w.WriteString(s) }

// Path is where the data goes: the regular file a symlink resolves to, or the path itself.
func (f *File) Path() string { return f.final }

// Commit flushes what was written and, for a regular file, syncs the temporary file and
// renames it over the target. On any error the target is left as it was (a special file
// keeps what reached it) and the temporary file is removed.
func (f *File) Commit() error {
	if f.done {
		return errors.New("output already committed or aborted")
	}
	if err := f.w.Flush(); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", f.given, unwrapPath(err))
	}
	if f.temp != "" {
		if err := f.f.Sync(); err != nil {
			f.Abort()
			return fmt.Errorf("writing %s: %w", f.given, unwrapPath(err))
		}
	}
	f.done = true
	if err := f.f.Close(); err != nil {
		removeTemp(f.temp)
		return fmt.Errorf("writing %s: %w", f.given, unwrapPath(err))
	}
	if f.temp == "" {
		return nil
	}
	if err := renameTemp(f.temp, f.final); err != nil {
		return fmt.Errorf("cannot write %s: %w", f.given, unwrapPath(err))
	}
	return nil
}

// Abort discards the output: the temporary file is removed and the target left as it was.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	discard(f.f, f.temp)
}

// CreateNew writes a new file in dir, calling write to fill it, under name or, when name
// is taken, name-2, name-3… (before the extension: shot.png, shot-2.png). The data is
// written to a temporary file first and linked to the free name (no window in which
// another file could be overwritten: a link never replaces anything); nothing is left
// behind when write fails. It returns the path written.
func CreateNew(dir, name string, write func(io.Writer) error) (string, error) {
	if name == "" || strings.ContainsRune(name, os.PathSeparator) {
		return "", fmt.Errorf("%q is not a file name", name)
	}
	f, temp, err := createTemp(dir, name)
	if err != nil {
		return "", fmt.Errorf("cannot write in %s: %w", dir, unwrapPath(err))
	}
	defer removeTemp(temp)
	w := bufio.NewWriterSize(f, 1<<16)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 1; i <= maxNumbered; i++ {
		candidate := name
		if i > 1 {
			candidate = fmt.Sprintf("%s-%d%s", stem, i, ext)
		}
		p := filepath.Join(dir, candidate)
		err := os.Link(temp, p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if !linkUnsupported(err) {
			return "", fmt.Errorf("cannot write %s: %w", p, unwrapPath(err))
		}
		// A file system without hard links: claim the name with an exclusive create, then
		// rename the data over that (our own, empty) file.
		claim, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("cannot write %s: %w", p, unwrapPath(err))
		}
		claim.Close()
		if err := renameTemp(temp, p); err != nil {
			os.Remove(p)
			return "", fmt.Errorf("cannot write %s: %w", p, unwrapPath(err))
		}
		return p, nil
	}
	return "", fmt.Errorf("%s and %d numbered variants of it all exist in %s; remove some or choose another name", name, maxNumbered-1, dir)
}

// maxNumbered bounds CreateNew's search for a free name.
const maxNumbered = 10000

// linkUnsupported reports a link error that means "this file system has no hard links".
func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EMLINK)
}

// checkProtected returns a *ProtectedError when path exists and is the same file as one
// of protect (os.SameFile: device and inode, after the kernel resolved symlinks and "..").
func checkProtected(path string, protect []string) error {
	st, err := os.Stat(path)
	if err != nil {
		return nil // nothing there (or not reachable): it cannot be a file the run reads
	}
	for _, p := range protect {
		if p == "" {
			continue
		}
		if pst, err := os.Stat(p); err == nil && os.SameFile(st, pst) {
			return &ProtectedError{Path: path, Protected: p}
		}
	}
	return nil
}

// resolve returns the file the data goes to and whether it is written in place (a special
// file: a device, a FIFO, a socket) rather than replaced.
func resolve(path string) (final string, direct bool, err error) {
	st, statErr := os.Stat(path)
	if statErr == nil {
		if st.IsDir() {
			return "", false, &FolderError{Path: path}
		}
		if !st.Mode().IsRegular() {
			return path, true, nil
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return "", false, fmt.Errorf("cannot write %s: %w", path, unwrapPath(err))
		}
		return real, false, nil
	}
	if !errors.Is(statErr, os.ErrNotExist) {
		return "", false, fmt.Errorf("cannot write %s: %w", path, unwrapPath(statErr))
	}
	// Nothing there: a new name, or a symlink to a file not yet made (written through).
	p := path
	for hops := 0; ; hops++ {
		if hops > 40 {
			return "", false, fmt.Errorf("cannot write %s: too many levels of symbolic links", path)
		}
		lst, err := os.Lstat(p)
		if err != nil || lst.Mode()&os.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", false, fmt.Errorf("cannot write %s: %w", path, unwrapPath(err))
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(parentOf(p), target)
		}
		p = target
	}
	dir, base := parentOf(p), baseOf(p)
	if base == "" || base == "." || base == ".." {
		return "", false, &FolderError{Path: path}
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", false, fmt.Errorf("cannot write %s: the folder %s %s", path, dir, missingOr(err))
	}
	return filepath.Join(realDir, base), false, nil
}

// parentOf is the folder part of p, split at the last separator without cleaning it
// lexically (the kernel resolves "link/.." through the link; filepath.Dir would not).
func parentOf(p string) string {
	p = strings.TrimRight(p, "/")
	i := strings.LastIndexByte(p, '/')
	switch {
	case i < 0:
		return "."
	case i == 0:
		return "/"
	}
	return p[:i]
}

// baseOf is the last element of p ("" for a path ending in a separator: a folder).
func baseOf(p string) string {
	if strings.HasSuffix(p, "/") {
		return ""
	}
	return p[strings.LastIndexByte(p, '/')+1:]
}

// fdPath recognises the names of the process's own descriptors: /dev/stdout, /dev/stderr,
// /dev/fd/N, /proc/self/fd/N.
func fdPath(p string) (int, bool) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return 0, false
	}
	switch abs {
	case "/dev/stdout":
		return 1, true
	case "/dev/stderr":
		return 2, true
	}
	for _, prefix := range []string{"/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"} {
		if n, ok := strings.CutPrefix(abs, prefix); ok {
			if fd, err := strconv.Atoi(n); err == nil && fd >= 0 {
				return fd, true
			}
		}
	}
	return 0, false
}

func missingOr(err error) string {
	if errors.Is(err, os.ErrNotExist) {
		return "does not exist"
	}
	return "cannot be read (" + unwrapPath(err).Error() + ")"
}

// createTemp creates a new file in dir with O_EXCL and mode 0666 (less the umask), named
// after base, and registers it for removal on a signal.
func createTemp(dir, base string) (*os.File, string, error) {
	var last error
	for range 100 {
		var rnd [6]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, "", err
		}
		name := filepath.Join(dir, "."+base+".tmp-"+hex.EncodeToString(rnd[:]))
		live.add(name) // before the file exists, so that a signal cannot leave it behind
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if err == nil {
			return f, name, nil
		}
		live.remove(name, false)
		if !errors.Is(err, os.ErrExist) {
			return nil, "", err
		}
		last = err
	}
	return nil, "", last
}

// discard closes f and removes the temporary file temp ("" for none).
func discard(f *os.File, temp string) {
	f.Close()
	removeTemp(temp)
}

// unwrapPath drops the *PathError's operation and path, which the callers' sentences
// already say, keeping its cause ("permission denied").
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
