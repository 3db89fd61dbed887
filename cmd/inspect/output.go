package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// output is where a command writes its data: stdout, or a file written atomically (a
// temporary file beside it, renamed into place only when everything was written).
type output struct {
	*bufio.Writer
	file *os.File
	path string
}

func openOutput(path string) (*output, error) {
	if path == "" || path == "-" {
		return &output{Writer: bufio.NewWriterSize(os.Stdout, 1<<16)}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("cannot write --out %s: %w", path, err)
	}
	return &output{Writer: bufio.NewWriterSize(f, 1<<16), file: f, path: path}, nil
}

// commit flushes and, for a file, renames it into place.
func (o *output) commit() error {
	if err := o.Flush(); err != nil {
		o.abort()
		return err
	}
	if o.file == nil {
		return nil
	}
	if err := o.file.Close(); err != nil {
		os.Remove(o.file.Name())
		return err
	}
	if err := os.Rename(o.file.Name(), o.path); err != nil {
		os.Remove(o.file.Name())
		return fmt.Errorf("cannot write --out %s: %w", o.path, err)
	}
	return nil
}

// abort discards a file output.
func (o *output) abort() {
	if o.file != nil {
		o.file.Close()
		os.Remove(o.file.Name())
	}
}

var _ io.Writer = (*output)(nil)
