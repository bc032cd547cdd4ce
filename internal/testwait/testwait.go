// Package testwait waits in tests for a condition to hold, polling it,
// instead of sleeping a fixed time: the one wait every test package of
// this module uses.
package testwait

import (
	"testing"
	"time"
)

// PollInterval is how often Within and Eventually test their condition.
const PollInterval = 5 * time.Millisecond

// Within tests cond every PollInterval until it holds, for at most
// timeout, and says whether it held; for a caller that reports on what it
// got either way. cond runs on the caller's goroutine, so it may fail the
// test itself.
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(PollInterval)
	}
	return true
}

// Eventually waits, as Within does, for what to happen (cond to hold),
// and fails the test if it does not within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Within(timeout, cond) {
		t.Fatalf("%s: did not happen within %v", what, timeout)
	}
}
