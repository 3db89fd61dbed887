package outfile

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// live is the set of temporary files of writes in progress, removed by the signal handler.
var live = &registry{files: map[string]bool{}}

type registry struct {
	mu      sync.Mutex
	files   map[string]bool
	enabled bool           // CleanupOnSignal was called
	ch      chan os.Signal // notified while files is not empty and enabled
}

// CleanupOnSignal makes SIGINT and SIGTERM remove the temporary files of the writes in
// progress and end the process with status 128 + the signal's number (130 for SIGINT, 143
// for SIGTERM). The signals are caught only while such a file exists, so that at other
// times they keep their usual effect (and a terminal program's own handling stays its own).
// A command's main calls it once.
func CleanupOnSignal() {
	live.mu.Lock()
	defer live.mu.Unlock()
	if live.enabled {
		return
	}
	live.enabled = true
	live.ch = make(chan os.Signal, 1)
	go func() {
		for sig := range live.ch {
			live.mu.Lock() // held until exit: no write commits or starts a new file meanwhile
			for name := range live.files {
				os.Remove(name)
			}
			code := 128 + 2
			if s, ok := sig.(syscall.Signal); ok {
				code = 128 + int(s)
			}
			os.Exit(code)
		}
	}()
	if len(live.files) > 0 {
		signal.Notify(live.ch, syscall.SIGINT, syscall.SIGTERM)
	}
}

// add registers name as a temporary file to remove on a signal.
func (r *registry) add(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.files[name] = true
	if len(r.files) == 1 && r.enabled {
		signal.Notify(r.ch, syscall.SIGINT, syscall.SIGTERM)
	}
}

// remove forgets name, deleting the file first when del is set.
func (r *registry) remove(name string, del bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forget(name, del)
}

func (r *registry) forget(name string, del bool) {
	if del {
		os.Remove(name)
	}
	if !r.files[name] {
		return
	}
	delete(r.files, name)
	if len(r.files) == 0 && r.enabled {
		signal.Stop(r.ch)
	}
}

// removeTemp deletes the temporary file name ("" for none) and forgets it.
func removeTemp(name string) {
	if name != "" {
		live.remove(name, true)
	}
}

// renameTemp renames the temporary file temp over final and forgets it, under the lock, so
// that a signal handler never removes a file that has just become the output. On failure
// the temporary file is removed.
func renameTemp(temp, final string) error {
	live.mu.Lock()
	defer live.mu.Unlock()
	err := os.Rename(temp, final)
	live.forget(temp, err != nil)
	return err
}
