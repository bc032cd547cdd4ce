package caddymodule

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func addr(s string) netip.Addr { return lockoutClient(s, 64) }

func TestLockout(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	l := newLockout(1000, clock)
	fail := func(a string) bool { return l.fail(addr(a), 3, time.Minute) }

	if _, locked := l.locked(addr("10.0.0.1")); locked {
		t.Fatal("locked before any failure")
	}
	for i := 0; i < 2; i++ {
		if fail("10.0.0.1") {
			t.Fatalf("locked after %d failures, threshold 3", i+1)
		}
	}
	if !fail("10.0.0.1") {
		t.Fatal("third failure did not lock")
	}
	if left, locked := l.locked(addr("10.0.0.1")); !locked || left != time.Minute {
		t.Fatalf("locked=%v left=%v, want locked for 1m", locked, left)
	}
	if _, locked := l.locked(addr("10.0.0.2")); locked {
		t.Fatal("another address is locked too")
	}

	now = now.Add(59 * time.Second)
	if left, locked := l.locked(addr("10.0.0.1")); !locked || left != time.Second {
		t.Fatalf("after 59s: locked=%v left=%v", locked, left)
	}
	now = now.Add(time.Second)
	if _, locked := l.locked(addr("10.0.0.1")); locked {
		t.Fatal("still locked after the window")
	}

	// Failures spread wider than the window never lock.
	for i := 0; i < 5; i++ {
		now = now.Add(31 * time.Second)
		fail("10.0.0.3")
		now = now.Add(31 * time.Second)
	}
	if _, locked := l.locked(addr("10.0.0.3")); locked {
		t.Fatal("slow failures locked the address")
	}

	// Pruning forgets what is over, and keeps what is not.
	fail("10.0.0.4")
	now = now.Add(2 * time.Minute)
	fail("10.0.0.5")
	before := l.size()
	l.prune(time.Minute)
	if !l.tracks(addr("10.0.0.5")) || l.tracks(addr("10.0.0.4")) || l.size() >= before {
		t.Errorf("prune: tracks .4 %v (want false), .5 %v (want true); size %d -> %d", l.tracks(addr("10.0.0.4")), l.tracks(addr("10.0.0.5")), before, l.size())
	}
}

// tracks reports whether the table holds a record for client.
func (l *lockout) tracks(client netip.Addr) bool {
	s := l.shard(client)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.clients[client]
	return ok
}

// TestLockoutCountsIPv6ByPrefix: the addresses of one /64 are one client;
// another /64 is another; IPv4, and IPv4-mapped IPv6, count by address.
func TestLockoutCountsIPv6ByPrefix(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newLockout(1000, func() time.Time { return now })
	for i := 0; i < 3; i++ {
		l.fail(lockoutClient(fmt.Sprintf("2001:db8:1:2::%x", i+1), 64), 3, time.Minute)
	}
	if _, locked := l.locked(lockoutClient("2001:db8:1:2:ffff:ffff:ffff:ffff", 64)); !locked {
		t.Error("three failures from three addresses of one /64 did not lock the /64")
	}
	if _, locked := l.locked(lockoutClient("2001:db8:1:3::1", 64)); locked {
		t.Error("the next /64 is locked too")
	}
	if _, locked := l.locked(lockoutClient("2001:db8:1:2::1", 128)); locked {
		t.Error("with a /128 prefix, one address is locked by its neighbours")
	}
	if lockoutClient("::ffff:192.0.2.1", 64) != lockoutClient("192.0.2.1", 64) {
		t.Error("an IPv4-mapped address counts apart from its IPv4 address")
	}
	if lockoutClient("192.0.2.1", 64) == lockoutClient("192.0.2.2", 64) {
		t.Error("two IPv4 addresses count as one")
	}
	if lockoutClient("fe80::1%eth0", 64) != lockoutClient("fe80::2", 64) {
		t.Error("a zone makes another client")
	}
	if lockoutClient("192.0.2.7:4321", 64) != lockoutClient("192.0.2.7", 64) {
		t.Error("an address with a port counts apart")
	}
}

// TestLockoutIsBounded: an attacker with many addresses cannot grow the
// table past its bound, and cannot evict a client that keeps failing, or
// one that is locked and keeps knocking, with one failure from each of
// many addresses.
func TestLockoutIsBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const bound = 64 * 16
	l := newLockout(bound, func() time.Time { return now })
	guesser, knocker := addr("198.51.100.1"), addr("198.51.100.2")
	for i := 0; i < 3; i++ {
		l.fail(knocker, 3, time.Minute)
	}
	l.fail(guesser, 3, time.Minute)
	for i := 0; i < 200_000; i++ {
		l.fail(lockoutClient(fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), 64), 3, time.Minute)
		if i%1000 == 0 {
			l.fail(guesser, 3, time.Minute)
			l.locked(knocker)
		}
	}
	if n := l.size(); n > bound {
		t.Fatalf("table holds %d clients, bound %d", n, bound)
	}
	if _, locked := l.locked(guesser); !locked {
		t.Error("the guesser, failing all along, was evicted or never locked")
	}
	if _, locked := l.locked(knocker); !locked {
		t.Error("the locked client was evicted by the flood")
	}
}

func BenchmarkLockoutFailFlood(b *testing.B) {
	l := newLockout(defaultLockoutClients, time.Now)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := uint32(0)
		for pb.Next() {
			i++
			l.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 10, time.Minute)
		}
	})
}
