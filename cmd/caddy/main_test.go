package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestMain removes the binary buildCaddy built, once every test that uses
// it is done.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// pollInterval is how often eventually and within test their condition.
const pollInterval = 5 * time.Millisecond

// within tests cond every pollInterval until it holds, for at most
// timeout, and says whether it held; for a caller that reports on what it
// got either way. cond runs on the caller's goroutine, so it may fail the
// test itself.
func within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
	return true
}

// eventually waits, as within does, for what to happen (cond to hold),
// and fails the test if it does not within timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !within(timeout, cond) {
		t.Fatalf("%s: did not happen within %v", what, timeout)
	}
}
