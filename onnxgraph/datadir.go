package onnxgraph

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// DataProblem says what is wrong with an external-data file a model names.
type DataProblem int

const (
	// DataMissing: the file does not exist.
	DataMissing DataProblem = iota
	// DataAbsolute: the location is an absolute path.
	DataAbsolute
	// DataOutside: the location climbs out of the model's folder (..).
	DataOutside
	// DataLinkedOut: the location goes through a subfolder that a symbolic link leads out
	// of the model's folder.
	DataLinkedOut
	// DataSplit: the model file and its data files resolve, through symbolic links, to
	// more than one folder.
	DataSplit
)

// ExternalDataError says why the external data a model names cannot be read the way
// onnxruntime reads it: from one folder, by relative locations that stay inside it.
type ExternalDataError struct {
	Model    string // the model file's name
	Location string // the location as the model writes it ("" for DataSplit)
	// Path is where the location leads (DataMissing, DataLinkedOut), or, for DataSplit,
	// the two folders the files resolve to, joined by " and ".
	Path    string
	Problem DataProblem
}

func (e *ExternalDataError) Error() string {
	switch e.Problem {
	case DataAbsolute:
		return fmt.Sprintf("the weights of %s are in the external-data file %s, an absolute path, which onnxruntime refuses; re-save the model with its data beside it under a relative name", e.Model, e.Location)
	case DataOutside:
		return fmt.Sprintf("the weights of %s are in the external-data file %s, outside the model's folder, which onnxruntime refuses; move the data into the model's folder and re-save the model", e.Model, e.Location)
	case DataLinkedOut:
		return fmt.Sprintf("the weights of %s are in the external-data file %s, which a symbolic link leads out of the model's folder (to %s), which onnxruntime refuses; copy the data into the model's folder", e.Model, e.Location, e.Path)
	case DataSplit:
		return fmt.Sprintf("%s and its external-data files resolve through symbolic links to different folders (%s), and onnxruntime reads them from one folder; copy them into one", e.Model, e.Path)
	}
	return fmt.Sprintf("the weights of %s live in the external-data file %s, which is missing; put it beside the model", e.Model, e.Path)
}

// DataDir is the folder onnxruntime must resolve the external-data locations of
// RuntimeBytes and Expose against (onnxruntime's
// session.model_external_initializers_file_folder_path). It is the real folder, after
// symbolic links, that holds the model file's bytes and its external-data files — a
// Hugging Face cache's blobs folder when model.onnx is a link into it — and the model's
// own folder (Dir) for a model parsed from memory.
func (m *Model) DataDir() string {
	if m.dataDir != "" {
		return m.dataDir
	}
	return m.Dir()
}

// resolveData checks the external-data locations the model names and settles where
// onnxruntime will read them: every location must be relative and stay inside the model's
// folder (no "..", no subfolder that a symbolic link leads out), and the files a location
// names directly in that folder may be symbolic links, as may the model file, provided
// they all resolve into one real folder. It sets m.dataDir to that folder and, where the
// resolved names differ from the written ones, rewrites the locations of m.compact
// (selfRef tells whether m.compact refers to the model's own file by its base name).
// m.Proto keeps the locations as written.
func (m *Model) resolveData(selfRef bool) error {
	name := filepath.Base(m.Path)
	linkDir, err := filepath.Abs(m.Dir())
	if err != nil {
		return fmt.Errorf("cannot resolve the model's folder: %w", err)
	}
	realLinkDir, err := filepath.EvalSymlinks(linkDir)
	if err != nil {
		return fmt.Errorf("cannot resolve the model's folder: %w", err)
	}
	type file struct{ location, real string }
	var top, nested []file
	if selfRef {
		real, err := filepath.EvalSymlinks(filepath.Join(linkDir, name))
		if err != nil {
			return fmt.Errorf("cannot resolve the model file: %w", err)
		}
		top = append(top, file{name, real})
	}
	for _, loc := range m.ExternalDataFiles() {
		clean := filepath.Clean(filepath.FromSlash(loc))
		switch {
		case loc == "" || filepath.IsAbs(loc) || filepath.IsAbs(clean) || filepath.VolumeName(clean) != "":
			return &ExternalDataError{Model: name, Location: loc, Problem: DataAbsolute}
		case clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)):
			return &ExternalDataError{Model: name, Location: loc, Problem: DataOutside}
		}
		p := filepath.Join(linkDir, clean)
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return &ExternalDataError{Model: name, Location: loc, Path: filepath.Join(m.Dir(), loc), Problem: DataMissing}
			}
			return fmt.Errorf("cannot resolve the external-data file %s: %w", p, err)
		}
		if filepath.Dir(clean) == "." {
			top = append(top, file{loc, real})
			continue
		}
		// A file in a subfolder: the subfolders on the way must stay inside the folder.
		realSub, err := filepath.EvalSymlinks(filepath.Join(linkDir, filepath.Dir(clean)))
		if err != nil || !inside(realLinkDir, realSub) || !inside(realLinkDir, real) {
			return &ExternalDataError{Model: name, Location: loc, Path: real, Problem: DataLinkedOut}
		}
		nested = append(nested, file{loc, real})
	}
	dir := realLinkDir
	for k, f := range top {
		d := filepath.Dir(f.real)
		if k == 0 {
			dir = d
		} else if d != dir {
			return &ExternalDataError{Model: name, Path: dir + " and " + d, Problem: DataSplit}
		}
	}
	rename := map[string]string{}
	for _, f := range top {
		if b := filepath.Base(f.real); b != f.location {
			rename[f.location] = b
		}
	}
	for _, f := range nested {
		rel, err := filepath.Rel(dir, f.real)
		if err != nil || !inside(dir, f.real) {
			return &ExternalDataError{Model: name, Path: dir + " and " + filepath.Dir(f.real), Problem: DataSplit}
		}
		if filepath.ToSlash(rel) != f.location {
			rename[f.location] = filepath.ToSlash(rel)
		}
	}
	m.dataDir = dir
	if len(rename) > 0 {
		out, err := relocate(m.compact, rename)
		if err != nil {
			return err
		}
		m.compact = out
	}
	return nil
}

// inside reports whether path is dir or lies under it (both cleaned, absolute).
func inside(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// relocate rewrites the external-data locations of a model's main-graph initializers,
// walking the wire format (as lighten does): a location found in rename becomes its value.
func relocate(model []byte, rename map[string]string) ([]byte, error) {
	return rewriteField(model, modelGraphField, func(graph []byte) ([]byte, error) {
		return rewriteField(graph, graphInitializerField, func(tensor []byte) ([]byte, error) {
			return rewriteField(tensor, tensorExternalField, func(entry []byte) ([]byte, error) {
				var key, value string
				err := eachField(entry, func(num protowire.Number, typ protowire.Type, field, v []byte, at int) error {
					switch {
					case num == entryKeyField && typ == protowire.BytesType:
						key = string(v)
					case num == entryValueField && typ == protowire.BytesType:
						value = string(v)
					}
					return nil
				})
				if err != nil || key != "location" {
					return entry, err
				}
				to, ok := rename[value]
				if !ok {
					return entry, nil
				}
				var e []byte
				e = protowire.AppendTag(e, entryKeyField, protowire.BytesType)
				e = protowire.AppendString(e, key)
				e = protowire.AppendTag(e, entryValueField, protowire.BytesType)
				return protowire.AppendString(e, to), nil
			})
		})
	})
}

// rewriteField re-encodes a message with every length-delimited field number num
// replaced by what edit makes of its value; other fields are copied as they are.
func rewriteField(msg []byte, num protowire.Number, edit func([]byte) ([]byte, error)) ([]byte, error) {
	var out []byte
	err := eachField(msg, func(n protowire.Number, typ protowire.Type, field, value []byte, at int) error {
		if n != num || typ != protowire.BytesType {
			out = append(out, field...)
			return nil
		}
		v, err := edit(value)
		if err != nil {
			return err
		}
		out = protowire.AppendTag(out, n, protowire.BytesType)
		out = protowire.AppendBytes(out, v)
		return nil
	})
	return out, err
}
