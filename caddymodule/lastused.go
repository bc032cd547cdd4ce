package caddymodule

import (
	"context"
	"sync"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
	"go.uber.org/zap"
)

// lastUsed collects the times users were last seen, to be written to the
// store in one batch every interval: a request never waits for a store
// write, and a busy user costs one write a minute, not one per request.
type lastUsed struct {
	interval time.Duration
	mu       sync.Mutex
	pending  map[string]time.Time
}

func newLastUsed(interval time.Duration) *lastUsed {
	return &lastUsed{interval: interval, pending: map[string]time.Time{}}
}

// seen records a request by the user of entry cu at now. The entry keeps
// the time, to the second, for idle checks; the pending batch gets it once
// per interval per user, so the lock is rarely taken.
func (l *lastUsed) seen(id string, cu *cachedUser, now time.Time) {
	n := now.UnixNano()
	if prev := cu.lastUsed.Load(); n-prev >= int64(time.Second) {
		cu.lastUsed.CompareAndSwap(prev, n)
	}
	queued := cu.queuedAt.Load()
	if n-queued < int64(l.interval) || !cu.queuedAt.CompareAndSwap(queued, n) {
		return
	}
	l.mu.Lock()
	if t, ok := l.pending[id]; !ok || now.After(t) {
		l.pending[id] = now
	}
	l.mu.Unlock()
}

// take returns and clears the pending batch.
func (l *lastUsed) take() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return nil
	}
	p := l.pending
	l.pending = map[string]time.Time{}
	return p
}

// putBack returns a batch that could not be written, keeping newer times.
func (l *lastUsed) putBack(batch map[string]time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, t := range batch {
		if cur, ok := l.pending[id]; !ok || t.After(cur) {
			l.pending[id] = t
		}
	}
}

// lastSeen is the latest time this process saw the user of cu.
func (cu *cachedUser) lastSeen() time.Time {
	n := cu.lastUsed.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// flushLastUsed writes the pending last-used times (every LastUsedInterval).
func (a *App) flushLastUsed(ctx context.Context) {
	pending := a.touches.take()
	if len(pending) == 0 {
		return
	}
	if err := a.store.TouchUsers(ctx, pending); err != nil {
		a.metrics.storeTouchUsers.Inc()
		a.logger.Error("writing last-used times", zap.Int("users", len(pending)), zap.Error(err))
		a.touches.putBack(pending)
	}
}

// withLastSeen moves u's LastUsedAt forward to when this process's gateway
// last saw the user: the store's record is written only every
// last_used_interval, while the batch waiting for that write and the cache
// entry know better.
func (a *App) withLastSeen(u *policy.APIUser) *policy.APIUser {
	seen := a.touches.pendingFor(u.ID)
	if cu, ok := a.cache.users.Get(u.ID); ok && cu.p != nil && cu.lastSeen().After(seen) {
		seen = cu.lastSeen()
	}
	if seen.After(u.LastUsedAt) {
		u.LastUsedAt = seen.UTC()
	}
	return u
}

// pendingFor returns the last-used time of the user id still waiting to be
// written to the store, or the zero time.
func (l *lastUsed) pendingFor(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending[id]
}
