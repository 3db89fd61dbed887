//go:build !linux

package analysis

// physicalMemory is the machine's memory in bytes (0: unknown on this system).
func physicalMemory() int64 { return 0 }
