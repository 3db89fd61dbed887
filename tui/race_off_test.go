//go:build !race

package tui

// raceDetector reports whether the tests run under the race detector (timings mean little).
const raceDetector = false
