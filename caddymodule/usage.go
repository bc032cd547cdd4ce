package caddymodule

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
	"go.uber.org/zap"
)

// How usage is counted.
//
// Every decision about an authenticated API user (allowed, or refused
// after the user was known: scope, tenancy, rate limit, quota, allowed
// IPs, a retired user...) adds one to a count in memory, per user,
// endpoint, outcome and hour. Every usage flush_interval the counts are
// taken out and added to the store's hourly and daily buckets in one
// transaction; the store adds them to what is there, so nodes sum and
// never overwrite each other. The request path does no I/O: one lock of
// one of 32 shards and a map lookup.
//
// What a crash loses: a process killed without a graceful stop loses the
// counts since its last flush, at most one flush_interval of its own
// traffic. A graceful stop or a config reload flushes them. A failed
// flush keeps the counts in memory and retries at the next one; while
// the store stays unreachable they are kept, up to maxPendingUsage
// distinct counts, after which the oldest hour's are dropped and counted
// in usage_dropped_total.

const (
	usageShards     = 32
	maxPendingUsage = 1 << 20
)

type usageCounter struct {
	seed   maphash.Seed
	shards [usageShards]usageShard
}

type usageShard struct {
	mu sync.Mutex
	m  map[usageKey]*usageCount
	_  [40]byte
}

type usageKey struct {
	user, endpoint string
	outcome        string // "allowed" or a refusal's reason code
	hour           int64  // Unix hours
}

type usageCount struct {
	n    int64
	last int64 // Unix nanoseconds of the last decision counted
}

func newUsageCounter() *usageCounter {
	uc := &usageCounter{seed: maphash.MakeSeed()}
	for i := range uc.shards {
		uc.shards[i].m = map[usageKey]*usageCount{}
	}
	return uc
}

// add counts one decision of user at now.
func (uc *usageCounter) add(user, endpoint string, outcome policy.Reason, now time.Time) {
	ns := now.UnixNano()
	k := usageKey{user: user, endpoint: endpoint, outcome: outcome.Code(), hour: ns / int64(time.Hour)}
	s := &uc.shards[maphash.String(uc.seed, user)%usageShards]
	s.mu.Lock()
	c := s.m[k]
	if c == nil {
		c = &usageCount{}
		s.m[k] = c
	}
	c.n++
	if ns > c.last {
		c.last = ns
	}
	s.mu.Unlock()
}

// take removes and returns every count.
func (uc *usageCounter) take() []store.UsageCount {
	var out []store.UsageCount
	for i := range uc.shards {
		s := &uc.shards[i]
		s.mu.Lock()
		m := s.m
		if len(m) == 0 {
			s.mu.Unlock()
			continue // nothing to take; the map stays the shard's
		}
		s.m = make(map[usageKey]*usageCount, len(m))
		s.mu.Unlock()
		for k, c := range m {
			out = append(out, store.UsageCount{
				UserID:   k.user,
				Endpoint: k.endpoint,
				Outcome:  k.outcome,
				Hour:     time.Unix(k.hour*3600, 0).UTC(),
				Count:    c.n,
				LastAt:   time.Unix(0, c.last).UTC(),
			})
		}
	}
	return out
}

// giveBack returns counts a flush could not write, so the next flush
// writes them. It keeps at most maxPendingUsage distinct counts and
// returns how many it dropped.
func (uc *usageCounter) giveBack(counts []store.UsageCount) (dropped int) {
	pending := 0
	for i := range uc.shards {
		s := &uc.shards[i]
		s.mu.Lock()
		pending += len(s.m)
		s.mu.Unlock()
	}
	for _, c := range counts {
		if pending >= maxPendingUsage {
			dropped++
			continue
		}
		k := usageKey{user: c.UserID, endpoint: c.Endpoint, outcome: c.Outcome, hour: c.Hour.Unix() / 3600}
		s := &uc.shards[maphash.String(uc.seed, c.UserID)%usageShards]
		s.mu.Lock()
		cur := s.m[k]
		if cur == nil {
			cur = &usageCount{}
			s.m[k] = cur
			pending++
		}
		cur.n += c.Count
		if ns := c.LastAt.UnixNano(); ns > cur.last {
			cur.last = ns
		}
		s.mu.Unlock()
	}
	return dropped
}

// flushUsage writes the counts taken since the last flush to the store.
func (a *App) flushUsage(ctx context.Context) {
	us, ok := a.store.(store.UsageStore)
	if !ok || a.limits == nil {
		return
	}
	// The audit queue's writer counts the decisions it writes: the
	// decisions made before this flush are counted once it has written
	// what is queued now.
	if q := a.auditQ.Load(); q != nil {
		q.flush()
	}
	counts := a.limits.usage.take()
	if len(counts) == 0 {
		return
	}
	if err := us.AddUsage(ctx, counts); err != nil {
		a.metrics.storeUsage.Inc()
		dropped := a.limits.usage.giveBack(counts)
		a.metrics.usageDropped.Add(float64(dropped))
		a.logger.Warn("writing API-user usage counts to the store; keeping them for the next flush",
			zap.Error(err), zap.Int("counts", len(counts)), zap.Int("dropped", dropped))
	}
}

// pruneUsage deletes the usage buckets and ended counter windows that
// are past their retention (at start and then every hour).
func (a *App) pruneUsage(ctx context.Context) {
	now := a.now()
	us, ok := a.store.(store.UsageStore)
	if !ok {
		return
	}
	if _, err := us.PruneUsage(ctx, now.Add(-time.Duration(a.Usage.HourlyRetention)), now.Add(-time.Duration(a.Usage.DailyRetention))); err != nil {
		a.metrics.storeUsage.Inc()
		a.logger.Warn("pruning old API-user usage buckets", zap.Error(err))
	}
	// A window's rows carry its end; an hour of grace keeps a window a
	// slow node still writes to.
	if _, err := us.PruneCounters(ctx, now.Add(-time.Hour)); err != nil {
		a.metrics.storeCounters.Inc()
		a.logger.Warn("pruning ended quota and rate-limit windows", zap.Error(err))
	}
}
