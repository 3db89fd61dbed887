// Package models holds the demo model that ships inside the binary: a 2-layer
// attention-only transformer with an induction head, trained by export/train.py
// (models/demo/CARD.md says how). onnxruntime and the tokenizer read files, so DemoPath
// writes the embedded folder to the user's cache once and returns its model.onnx.
package models

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"
)

// The folder's other files (reference.json, metrics.csv, training.png) stay in the
// repository: the binary needs only what opening the model needs.
//
//go:embed demo/model.onnx demo/tokenizer.json demo/config.json demo/CARD.md
var demo embed.FS

const demoDir = "demo"

// DemoHash is a short hash of the embedded files' names and contents; it names the cache
// folder, so a binary with another demo model never reads a stale copy.
func DemoHash() string {
	h := sha256.New()
	for _, name := range demoFiles() {
		data, _ := demo.ReadFile(path.Join(demoDir, name))
		fmt.Fprintf(h, "%s %d\n", name, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func demoFiles() []string {
	entries, _ := fs.ReadDir(demo, demoDir)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// DemoPath returns the path of the demo model's model.onnx (tokenizer.json and
// config.json beside it), writing the embedded folder to
// os.UserCacheDir()/attnscope/demo-<DemoHash> first when it is not there yet. Without a
// user cache folder it uses a folder of this user's own in the system's temporary folder,
// attnscope-<uid> (see PrivateDir), so that no other user can plant a model there.
func DemoPath() (string, error) {
	if cache, err := os.UserCacheDir(); err == nil {
		return WriteDemo(filepath.Join(cache, "attnscope"))
	}
	root, err := PrivateDir(os.TempDir(), fmt.Sprintf("attnscope-%d", os.Getuid()))
	if err != nil {
		return "", err
	}
	return WriteDemo(root)
}

// UnsafeDirError says why a folder in a shared place cannot hold the demo model.
type UnsafeDirError struct {
	Path   string
	Reason string
}

func (e *UnsafeDirError) Error() string {
	return fmt.Sprintf("cannot keep the demo model in %s: %s; remove it, or set XDG_CACHE_HOME to a folder of your own", e.Path, e.Reason)
}

// PrivateDir returns parent/name, creating it with mode 0700 when it does not exist. An
// existing one must be a real folder (not a symbolic link) owned by this user and
// writable by nobody else; otherwise another user could have put files in it, and
// PrivateDir refuses with an *UnsafeDirError.
func PrivateDir(parent, name string) (string, error) {
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("cannot write the demo model to %s: %w", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("cannot write the demo model to %s: %w", dir, err)
	}
	switch sys, _ := st.Sys().(*syscall.Stat_t); {
	case !st.IsDir():
		return "", &UnsafeDirError{dir, "it is not a folder (a symbolic link or a file)"}
	case sys != nil && int(sys.Uid) != os.Getuid():
		return "", &UnsafeDirError{dir, fmt.Sprintf("it belongs to user %d, not to you", sys.Uid)}
	case st.Mode().Perm()&0o022 != 0:
		return "", &UnsafeDirError{dir, fmt.Sprintf("others may write to it (mode %04o)", st.Mode().Perm())}
	}
	return dir, nil
}

// WriteDemo makes sure root/demo-<DemoHash> holds the embedded demo folder and returns
// its model.onnx. A folder whose files all match the embedded ones (by sha256) is reused as
// it is. Otherwise the folder is written beside its final name and renamed into place, so a
// reader never sees it half written; writers, in this process or others, take turns on a
// lock file in root, so that none removes a good copy another has just put in place and
// returned. Concurrent callers are safe.
func WriteDemo(root string) (string, error) {
	dir := filepath.Join(root, "demo-"+DemoHash())
	model := filepath.Join(dir, "model.onnx")
	if complete(dir) {
		return model, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("cannot write the demo model to %s: %w", root, err)
	}
	unlock, err := lockDir(root)
	if err != nil {
		return "", fmt.Errorf("cannot write the demo model to %s: %w", root, err)
	}
	defer unlock()
	if complete(dir) { // written by another caller while this one waited
		return model, nil
	}
	tmp, err := os.MkdirTemp(root, ".demo-tmp-")
	if err != nil {
		return "", fmt.Errorf("cannot write the demo model to %s: %w", root, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	for _, name := range demoFiles() {
		data, _ := demo.ReadFile(path.Join(demoDir, name))
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			return "", fmt.Errorf("cannot write the demo model to %s: %w", root, err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("cannot write the demo model to %s: %w", root, err)
	}
	// Under the lock nobody else replaces dir: what is there is a damaged or partial copy (or
	// a link), never one that another caller has returned.
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("cannot replace %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("cannot write the demo model to %s: %w", dir, err)
	}
	return model, nil
}

// lockDir waits for and takes an exclusive lock on root/.demo.lock (flock: other processes
// and other callers in this one wait alike) and returns its release. On a file system
// without locks it returns a no-op release: writers then only race as they did before.
func lockDir(root string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(root, ".demo.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
		f.Close()
		return func() {}, nil
	case err != nil:
		f.Close()
		return nil, fmt.Errorf("cannot lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

// complete reports whether dir is a folder (not a symbolic link) holding every embedded
// file with exactly its embedded content (compared by sha256: a file of the right size
// but other bytes is not the demo).
func complete(dir string) bool {
	if st, err := os.Lstat(dir); err != nil || !st.IsDir() {
		return false
	}
	for _, name := range demoFiles() {
		data, _ := demo.ReadFile(path.Join(demoDir, name))
		want := sha256.Sum256(data)
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return false
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil || !bytes.Equal(h.Sum(nil), want[:]) {
			return false
		}
	}
	return true
}

// DemoConfig is the part of the demo's config.json that callers use.
type DemoConfig struct {
	Model         string `json:"model"`
	NLayers       int    `json:"n_layers"`
	NHeads        int    `json:"n_heads"`
	VocabSize     int    `json:"vocab_size"`
	NPositions    int    `json:"n_positions"`
	DefaultPrompt string `json:"default_prompt"`
}

// Demo returns the embedded demo model's config.json.
func Demo() DemoConfig {
	var c DemoConfig
	data, err := demo.ReadFile(path.Join(demoDir, "config.json"))
	if err == nil {
		err = json.Unmarshal(data, &c)
	}
	if err != nil {
		panic("models: the embedded demo config.json is broken: " + err.Error()) // caught by the tests
	}
	return c
}

// DemoPrompt is the prompt the demo opens with: a phrase that repeats, so that the
// induction head's stripe is visible in the second copy.
func DemoPrompt() string { return Demo().DefaultPrompt }
