package tokenizer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxFileSize is the largest tokenizer file (tokenizer.json, tokenizer_config.json,
// vocab.json, merges.txt) Load and Find read: the largest real tokenizer.json files are tens
// of MiB, so a larger file is not a tokenizer.
const MaxFileSize = 512 << 20

var (
	// ErrNotRegular is wrapped by a FileError for a path that is a device, FIFO, socket or
	// folder: reading /dev/zero or a FIFO would never end.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge is wrapped by a FileError for a file larger than MaxFileSize.
	ErrTooLarge = errors.New("too large for a tokenizer file")
)

// FileError says why a tokenizer file was not read: it is not a regular file (Err is
// ErrNotRegular) or is larger than MaxFileSize (ErrTooLarge; Size is what was seen).
type FileError struct {
	Path string
	Size int64
	Err  error
}

func (e *FileError) Error() string {
	if errors.Is(e.Err, ErrTooLarge) {
		return fmt.Sprintf("%s is larger than %d MiB, too large for a tokenizer file", e.Path, MaxFileSize>>20)
	}
	return fmt.Sprintf("%s is not a regular file, so it cannot be a tokenizer file", e.Path)
}

func (e *FileError) Unwrap() error { return e.Err }

// readFile reads a tokenizer file whole, refusing (with a *FileError) anything but a regular
// file of at most MaxFileSize bytes before reading it, and reading at most MaxFileSize + 1
// bytes in any case (a file that grows while it is read). Other errors wrap the fs error.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read tokenizer file %s: %w", path, unwrapPath(err))
	}
	if err := checkInfo(path, st); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read tokenizer file %s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil { // the file opened may not be the one looked at
		return nil, fmt.Errorf("cannot read tokenizer file %s: %w", path, unwrapPath(err))
	}
	if err := checkInfo(path, st); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read tokenizer file %s: %w", path, unwrapPath(err))
	}
	if len(data) > MaxFileSize {
		return nil, &FileError{Path: path, Size: int64(len(data)), Err: ErrTooLarge}
	}
	return data, nil
}

func checkInfo(path string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return &FileError{Path: path, Err: ErrNotRegular}
	}
	if st.Size() > MaxFileSize {
		return &FileError{Path: path, Size: st.Size(), Err: ErrTooLarge}
	}
	return nil
}

// unwrapPath drops the *fs.PathError around err (whose message repeats the path) and keeps
// the cause: "cannot read tokenizer file X: no such file or directory".
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
