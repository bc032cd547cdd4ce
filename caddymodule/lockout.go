package caddymodule

import (
	"sync"
	"sync/atomic"
	"time"
)

// lockout counts failed authentications per client address and locks an
// address out for a window once it reaches the threshold, so credentials
// cannot be guessed at speed. The table is bounded: when it is full and
// nothing in it has expired, new addresses are not tracked (their requests
// are still authenticated as usual), so an attacker with many addresses
// cannot make it grow without end.
type lockout struct {
	threshold int
	window    time.Duration
	maxAddrs  int
	now       func() time.Time

	mu    sync.Mutex
	addrs map[string]*failures
	size  atomic.Int64 // len(addrs), read without the lock on the hot path
}

type failures struct {
	count       int
	windowStart time.Time
	lockedUntil time.Time
}

func newLockout(threshold int, window time.Duration, now func() time.Time) *lockout {
	return &lockout{
		threshold: threshold,
		window:    window,
		maxAddrs:  100_000,
		now:       now,
		addrs:     map[string]*failures{},
	}
}

// locked reports whether addr is locked out, and for how much longer.
func (l *lockout) locked(addr string) (time.Duration, bool) {
	if l == nil || l.size.Load() == 0 {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.addrs[addr]
	if !ok {
		return 0, false
	}
	if left := f.lockedUntil.Sub(l.now()); left > 0 {
		return left, true
	}
	return 0, false
}

// fail records a failed authentication from addr. It reports whether this
// failure locked the address out.
func (l *lockout) fail(addr string) bool {
	if l == nil {
		return false
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.addrs[addr]
	if !ok {
		if len(l.addrs) >= l.maxAddrs {
			l.pruneLocked(now)
			if len(l.addrs) >= l.maxAddrs {
				return false
			}
		}
		f = &failures{windowStart: now}
		l.addrs[addr] = f
		l.size.Store(int64(len(l.addrs)))
	}
	if now.Sub(f.windowStart) >= l.window {
		f.count, f.windowStart = 0, now
	}
	f.count++
	if f.count >= l.threshold && !now.Before(f.lockedUntil) {
		f.lockedUntil = now.Add(l.window)
		return true
	}
	return false
}

// prune forgets addresses whose window and lockout are both over.
func (l *lockout) prune() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.pruneLocked(l.now())
	l.mu.Unlock()
}

func (l *lockout) pruneLocked(now time.Time) {
	for addr, f := range l.addrs {
		if now.Sub(f.windowStart) >= l.window && !now.Before(f.lockedUntil) {
			delete(l.addrs, addr)
		}
	}
	l.size.Store(int64(len(l.addrs)))
}
