package caddymodule

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// lockout counts failed authentications per client and locks a client out
// for a window once it reaches the threshold, so credentials cannot be
// guessed at speed. It is the process's one table: every gateway handler
// shares it, and it is kept in a caddy.UsagePool (see limits.go), so a
// config reload neither resets it nor doubles it.
//
// A client is an IPv4 address, or an IPv6 prefix (a /64 by default): one
// host is handed a whole /64, and counting its addresses one by one would
// give it billions of guesses.
//
// The table is bounded, and every operation is O(1): it is split into
// shards, each with its own lock and a fixed share of the bound, and each
// shard keeps its clients in two lists ordered by their last failure. A
// client enters "probation" with its first failure and moves to
// "protected" with its second; when a shard is full, the client evicted is
// the one that failed least recently among those on probation, and only
// when probation is empty the least recent protected one. So a flood of
// one failure from each of a million addresses churns probation, while a
// client that keeps guessing, or keeps knocking while locked, stays
// counted. The cost of a bounded table is that a client that stops failing
// for long enough under such a flood may be forgotten and start again; no
// valid request ever waits on it (see Gateway.authenticate).
type lockout struct {
	now      func() time.Time
	seed     maphash.Seed
	perShard int
	shards   [lockoutShards]lockoutShard
}

const (
	lockoutShards = 64
	// defaultLockoutClients bounds the table: about 100 bytes a client.
	defaultLockoutClients = 100_000
)

type lockoutShard struct {
	mu        sync.Mutex
	clients   map[netip.Addr]*failures
	probation failureList // one failure so far
	protected failureList // two or more, or locked
	_         [40]byte    // keep shards on separate cache lines
}

// failures is one client's record, on one of its shard's two lists.
type failures struct {
	client      netip.Addr
	count       int
	windowStart time.Time
	lockedUntil time.Time
	protected   bool
	prev, next  *failures
}

func newLockout(maxClients int, now func() time.Time) *lockout {
	l := &lockout{now: now, seed: maphash.MakeSeed(), perShard: max(1, maxClients/lockoutShards)}
	for i := range l.shards {
		s := &l.shards[i]
		s.clients = map[netip.Addr]*failures{}
		s.probation.init()
		s.protected.init()
	}
	return l
}

// lockoutClient is the key a client address is counted under: the address
// for IPv4 (and IPv4-mapped IPv6), its first ipv6Prefix bits for IPv6. An
// address that does not parse (Caddy always gives one that does) counts
// under the zero key, together with every other such address: failing
// closed.
func lockoutClient(ip string, ipv6Prefix int) netip.Addr {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		ap, err := netip.ParseAddrPort(ip)
		if err != nil {
			return netip.Addr{}
		}
		a = ap.Addr()
	}
	a = a.Unmap().WithZone("")
	if a.Is6() && ipv6Prefix < 128 {
		if p, err := a.Prefix(ipv6Prefix); err == nil {
			return p.Addr()
		}
	}
	return a
}

func (l *lockout) shard(client netip.Addr) *lockoutShard {
	b := client.As16()
	return &l.shards[maphash.Bytes(l.seed, b[:])%lockoutShards]
}

// locked reports whether client is locked out, and for how much longer. A
// locked client that knocks again counts as still failing: it moves to the
// front of its list, so a flood of new clients does not evict it.
func (l *lockout) locked(client netip.Addr) (time.Duration, bool) {
	s := l.shard(client)
	now := l.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.clients[client]
	if !ok {
		return 0, false
	}
	left := f.lockedUntil.Sub(now)
	if left <= 0 {
		return 0, false
	}
	s.list(f).moveToFront(f)
	return left, true
}

// fail records a failed authentication from client, counted against
// threshold failures per window. It reports whether this failure locked
// the client out.
func (l *lockout) fail(client netip.Addr, threshold int, window time.Duration) bool {
	s := l.shard(client)
	now := l.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.clients[client]
	if !ok {
		f = s.admit(client, l.perShard)
		f.windowStart = now
	} else if now.Sub(f.windowStart) >= window && !now.Before(f.lockedUntil) {
		// The last window and lockout are over: start afresh, on probation.
		f.count, f.windowStart, f.lockedUntil = 0, now, time.Time{}
		if f.protected {
			s.protected.remove(f)
			f.protected = false
			s.probation.pushFront(f)
		}
	}
	f.count++
	if f.count >= 2 && !f.protected {
		s.probation.remove(f)
		f.protected = true
		s.protected.pushFront(f)
	} else {
		s.list(f).moveToFront(f)
	}
	if f.count >= threshold && !now.Before(f.lockedUntil) {
		f.lockedUntil = now.Add(window)
		return true
	}
	return false
}

// admit adds a record for client, evicting one first when the shard is
// full, and reuses the evicted record.
func (s *lockoutShard) admit(client netip.Addr, capacity int) *failures {
	var f *failures
	if len(s.clients) >= capacity {
		victim := s.probation.back()
		if victim == nil {
			victim = s.protected.back()
		}
		s.list(victim).remove(victim)
		delete(s.clients, victim.client)
		*victim = failures{}
		f = victim
	} else {
		f = new(failures)
	}
	f.client = client
	s.clients[client] = f
	s.probation.pushFront(f)
	return f
}

func (s *lockoutShard) list(f *failures) *failureList {
	if f.protected {
		return &s.protected
	}
	return &s.probation
}

// prune forgets the clients whose window and lockout are both over, which
// is the same as never having seen them. It runs in the background, one
// shard at a time, never on the request path.
func (l *lockout) prune(window time.Duration) {
	now := l.now()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for client, f := range s.clients {
			if now.Sub(f.windowStart) >= window && !now.Before(f.lockedUntil) {
				s.list(f).remove(f)
				delete(s.clients, client)
			}
		}
		s.mu.Unlock()
	}
}

// size is the number of clients tracked.
func (l *lockout) size() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.clients)
		s.mu.Unlock()
	}
	return n
}

// failureList is a doubly linked list of records with a sentinel, most
// recent failure first.
type failureList struct{ root failures }

func (fl *failureList) init() { fl.root.prev, fl.root.next = &fl.root, &fl.root }

func (fl *failureList) pushFront(f *failures) {
	f.prev, f.next = &fl.root, fl.root.next
	fl.root.next.prev = f
	fl.root.next = f
}

func (fl *failureList) remove(f *failures) {
	f.prev.next, f.next.prev = f.next, f.prev
	f.prev, f.next = nil, nil
}

func (fl *failureList) moveToFront(f *failures) {
	if fl.root.next == f {
		return
	}
	fl.remove(f)
	fl.pushFront(f)
}

// back is the least recent record, or nil.
func (fl *failureList) back() *failures {
	if fl.root.prev == &fl.root {
		return nil
	}
	return fl.root.prev
}
