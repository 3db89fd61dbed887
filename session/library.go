// Package session runs an exposed ONNX model with onnxruntime: it finds the shared
// library, picks CUDA or CPU, builds the model's inputs from its signature, and returns
// logits and every layer's attention as one Result.
package session

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// LibraryEnv is the environment variable that names the onnxruntime shared library.
const LibraryEnv = "ONNXRUNTIME_SHARED_LIBRARY_PATH"

// WantVersion is the onnxruntime release whose C API matches the Go binding in go.mod.
const WantVersion = "1.24.1"

// candidates lists, in search order, where the library is looked for when no path is given.
func candidates(flagPath string) []string {
	var c []string
	if flagPath != "" {
		return []string{flagPath}
	}
	if env := os.Getenv(LibraryEnv); env != "" {
		c = append(c, env)
	}
	names := []string{"libonnxruntime.so", "libonnxruntime.so.1", "libonnxruntime.so." + WantVersion}
	for _, n := range names {
		c = append(c, filepath.Join("lib", n))
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		for _, n := range names {
			c = append(c, filepath.Join(dir, n), filepath.Join(dir, "lib", n), filepath.Join(dir, "..", "lib", n))
		}
	}
	for _, d := range []string{"/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"} {
		for _, n := range names {
			c = append(c, filepath.Join(d, n))
		}
	}
	// A Python onnxruntime (or onnxruntime-gpu) install carries the library too.
	home, _ := os.UserHomeDir()
	for _, pattern := range []string{
		".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*",
		filepath.Join(home, ".local/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*"),
		"/usr/local/lib/python3*/*-packages/onnxruntime/capi/libonnxruntime.so*",
		"/usr/lib/python3/dist-packages/onnxruntime/capi/libonnxruntime.so*",
	} {
		matches, _ := filepath.Glob(pattern)
		c = append(c, matches...)
	}
	return c
}

// FindLibrary returns the onnxruntime shared library to load: flagPath when given,
// else the first that exists of $ONNXRUNTIME_SHARED_LIBRARY_PATH, ./lib, beside the
// binary, system library folders and Python onnxruntime installs. The error is a
// *LibraryError: flagPath does not exist, or none exists (Tried lists every place looked at).
func FindLibrary(flagPath string) (string, error) {
	tried := candidates(flagPath)
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if flagPath != "" {
		return "", &LibraryError{Path: flagPath, Given: true, Tried: tried}
	}
	return "", &LibraryError{Tried: tried}
}

var (
	initOnce sync.Once
	initErr  error
	initPath string
)

// Init loads the onnxruntime library (see FindLibrary) once per process and returns the
// path it loaded. Later calls return the first call's result. The error is a *LibraryError
// (with Err set when the library exists but does not load).
func Init(flagPath string) (string, error) {
	initOnce.Do(func() {
		initPath, initErr = FindLibrary(flagPath)
		if initErr != nil {
			return
		}
		ort.SetSharedLibraryPath(initPath)
		// onnxruntime's own log lines (coloured, multi-line) would repeat on stderr what the
		// error attnscope returns already says in one sentence: only fatal ones are kept.
		if err := ort.InitializeEnvironment(ort.WithLogLevelFatal()); err != nil {
			initErr = &LibraryError{Path: initPath, Given: flagPath != "", Err: err}
			return
		}
		_ = ort.DisableTelemetry()
	})
	return initPath, initErr
}

// Version is the loaded onnxruntime's version string ("" before Init succeeds).
func Version() string {
	if !ort.IsInitialized() {
		return ""
	}
	return ort.GetVersion()
}

// CUDAStatus reports whether the loaded library can create a CUDA execution provider,
// with the reason when it cannot.
func CUDAStatus() (bool, string) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return false, firstLine(err)
	}
	defer opts.Destroy()
	if err := appendCUDA(opts); err != nil {
		return false, firstLine(err)
	}
	return true, ""
}

func appendCUDA(opts *ort.SessionOptions) error {
	cuda, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return err
	}
	defer cuda.Destroy()
	return opts.AppendExecutionProviderCUDA(cuda)
}

// hasNvidiaDriver reports whether this machine has an NVIDIA kernel driver loaded.
func hasNvidiaDriver() bool {
	_, err := os.Stat("/proc/driver/nvidia/version")
	return err == nil
}

func firstLine(err error) string {
	s := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

var errClosed = errors.New("session is closed")
