package caddymodule

import (
	"fmt"
	"testing"
	"time"
)

func TestLockout(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	l := newLockout(3, time.Minute, clock)

	if _, locked := l.locked("10.0.0.1"); locked {
		t.Fatal("locked before any failure")
	}
	for i := 0; i < 2; i++ {
		if l.fail("10.0.0.1") {
			t.Fatalf("locked after %d failures, threshold 3", i+1)
		}
	}
	if !l.fail("10.0.0.1") {
		t.Fatal("third failure did not lock")
	}
	if left, locked := l.locked("10.0.0.1"); !locked || left != time.Minute {
		t.Fatalf("locked=%v left=%v, want locked for 1m", locked, left)
	}
	if _, locked := l.locked("10.0.0.2"); locked {
		t.Fatal("another address is locked too")
	}

	now = now.Add(59 * time.Second)
	if left, locked := l.locked("10.0.0.1"); !locked || left != time.Second {
		t.Fatalf("after 59s: locked=%v left=%v", locked, left)
	}
	now = now.Add(time.Second)
	if _, locked := l.locked("10.0.0.1"); locked {
		t.Fatal("still locked after the window")
	}

	// Failures spread wider than the window never lock.
	for i := 0; i < 5; i++ {
		now = now.Add(31 * time.Second)
		l.fail("10.0.0.3")
		now = now.Add(31 * time.Second)
	}
	if _, locked := l.locked("10.0.0.3"); locked {
		t.Fatal("slow failures locked the address")
	}

	// Pruning forgets what is over, and keeps what is not.
	l.fail("10.0.0.4")
	now = now.Add(2 * time.Minute)
	l.fail("10.0.0.5")
	l.prune()
	if _, ok := l.addrs["10.0.0.4"]; ok {
		t.Error("prune kept an expired address")
	}
	if _, ok := l.addrs["10.0.0.5"]; !ok {
		t.Error("prune dropped a live address")
	}
}

// TestLockoutIsBounded proves an attacker with many addresses cannot grow
// the table past its bound.
func TestLockoutIsBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newLockout(3, time.Minute, func() time.Time { return now })
	l.maxAddrs = 100
	for i := 0; i < 1000; i++ {
		l.fail(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
	}
	if n := len(l.addrs); n > 100 {
		t.Fatalf("table holds %d addresses, bound 100", n)
	}
	now = now.Add(2 * time.Minute)
	l.fail("192.0.2.1")
	if _, ok := l.addrs["192.0.2.1"]; !ok {
		t.Fatal("a full table of expired entries was not pruned for a new address")
	}
}

func TestNilLockoutAllowsEverything(t *testing.T) {
	var l *lockout
	if _, locked := l.locked("x"); locked || l.fail("x") {
		t.Fatal("disabled lockout locked")
	}
	l.prune()
}
