package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"os"
	"sync"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"go.uber.org/zap"
)

// How quotas and cluster-wide rate limits are counted.
//
// Each is a count of allowed requests per user per window: a UTC day or
// month for a quota, a fixed, epoch-aligned window of the limit's length
// for a rate limit in cluster mode. A node decides every request locally,
// from memory: it admits while its own count plus the last known sum of
// the other nodes' counts is below the limit. Every sync_interval it
// writes its own counts of the windows that changed to the store (its own
// rows: no row is shared by two nodes, so nobody waits on anybody's lock)
// and reads the sum of the other nodes' counts of every live window. The
// request path never waits for the database.
//
// The error bound. A node learns of another node's requests at most two
// exchanges after they were admitted (one for the other node to write
// them, one for this node to read them), so it may admit what the others
// admitted in the last 2 x sync_interval a second time. With N nodes of
// which each admits at most A requests of one user in 2 x sync_interval,
// the cluster admits at most limit + (N-1) x A in one window, and never
// more than N x limit. Changing or removing a limit applies on a node
// when its cache hears of the change, within max_stale, like any change.
//
// A window's rows are written with its end as their time, so the live
// windows are exactly those whose time is after now, and a window's rows
// are pruned once it has ended. The counts survive a restart: a node has
// a new name each time it starts, and reads its former self's rows as
// another node's.

// The kinds of windows.
const (
	counterQuotaDay   = "quota_day"
	counterQuotaMonth = "quota_month"
	counterRate       = "rate"
)

const counterShards = 32

// windowCounters are one process's counts of quota and rate windows.
type windowCounters struct {
	node   string
	seed   maphash.Seed
	shards [counterShards]counterShard

	// lastRead is the store's clock at the last successful read of the
	// other nodes' counts; exchanges are serialised by exchangeMu.
	exchangeMu sync.Mutex
	lastRead   time.Time
}

// counterReadMargin is how far before the last read an exchange asks for
// changes again: longer than a PutCounters of another node takes between
// stamping its rows and committing them, so none is missed.
const counterReadMargin = 10 * time.Second

type counterShard struct {
	mu sync.Mutex
	m  map[windowKey]*windowCount
	_  [40]byte // keep shards on separate cache lines
}

// windowKey is one user's window of one kind; end is the window's end in
// Unix nanoseconds.
type windowKey struct {
	kind string
	user string
	end  int64
}

// windowCount is a window's counts: this node's, what this node last
// wrote of them, and the other nodes' sum as last read.
type windowCount struct {
	local, written, others int64
}

func newWindowCounters() *windowCounters {
	wc := &windowCounters{node: newNodeName(), seed: maphash.MakeSeed()}
	for i := range wc.shards {
		wc.shards[i].m = map[windowKey]*windowCount{}
	}
	return wc
}

// newNodeName names this process in the counters table: the host name and
// a random part, new at every start.
func newNodeName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("api_users: reading random bytes: %v", err))
	}
	if len(host) > 64 {
		host = host[:64]
	}
	return host + "-" + hex.EncodeToString(b[:])
}

func (wc *windowCounters) shard(user string) *counterShard {
	return &wc.shards[maphash.String(wc.seed, user)%counterShards]
}

// admit counts one request of user in the window of kind that ends at
// end, if the window's count over all nodes, as far as this node knows,
// is below limit. A refused request is not counted.
func (wc *windowCounters) admit(kind, user string, end time.Time, limit int64) bool {
	k := windowKey{kind: kind, user: user, end: end.UnixNano()}
	s := wc.shard(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m[k]
	if c == nil {
		c = &windowCount{}
		s.m[k] = c
	}
	if c.local+c.others >= limit {
		return false
	}
	c.local++
	return true
}

// count is the window's count over all nodes as this node knows it.
func (wc *windowCounters) count(kind, user string, end time.Time) int64 {
	s := wc.shard(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.m[windowKey{kind: kind, user: user, end: end.UnixNano()}]; c != nil {
		return c.local + c.others
	}
	return 0
}

// exchange writes this node's counts of the windows that changed since
// the last exchange, and reads the other nodes' sums of every live
// window; it forgets the windows that ended before now. On an error the
// counts not written are written at the next exchange.
func (wc *windowCounters) exchange(ctx context.Context, us store.UsageStore, now time.Time) error {
	wc.exchangeMu.Lock()
	defer wc.exchangeMu.Unlock()
	var changed []store.Counter
	cutoff := now.UnixNano()
	for i := range wc.shards {
		s := &wc.shards[i]
		s.mu.Lock()
		for k, c := range s.m {
			if k.end <= cutoff {
				delete(s.m, k)
				continue
			}
			if c.local != c.written {
				changed = append(changed, store.Counter{Kind: k.kind, Key: k.user, Window: time.Unix(0, k.end).UTC(), Count: c.local})
			}
		}
		s.mu.Unlock()
	}
	if len(changed) > 0 {
		if err := us.PutCounters(ctx, wc.node, changed); err != nil {
			return fmt.Errorf("writing this node's quota and rate counts: %w", err)
		}
		for _, c := range changed {
			k := windowKey{kind: c.Kind, user: c.Key, end: c.Window.UnixNano()}
			s := wc.shard(c.Key)
			s.mu.Lock()
			if wcount := s.m[k]; wcount != nil && wcount.written < c.Count {
				wcount.written = c.Count
			}
			s.mu.Unlock()
		}
	}
	// After the first exchange, only the windows other nodes changed since
	// the last read (less a margin for writes that were under way) are
	// read: the cost of an exchange follows the users active since, not
	// every live window.
	var changedSince time.Time
	if !wc.lastRead.IsZero() {
		changedSince = wc.lastRead.Add(-counterReadMargin)
	}
	sums, readAt, err := us.SumCounters(ctx, now.Add(time.Nanosecond), wc.node, changedSince)
	if err != nil {
		return fmt.Errorf("reading the other nodes' quota and rate counts: %w", err)
	}
	wc.lastRead = readAt
	for _, c := range sums {
		k := windowKey{kind: c.Kind, user: c.Key, end: c.Window.UnixNano()}
		s := wc.shard(c.Key)
		s.mu.Lock()
		wcount := s.m[k]
		if wcount == nil {
			wcount = &windowCount{}
			s.m[k] = wcount
		}
		if c.Count > wcount.others {
			wcount.others = c.Count // counts only rise within a window
		}
		s.mu.Unlock()
	}
	return nil
}

// rateWindowEnd is the end of the fixed, epoch-aligned window of length
// window that holds now.
func rateWindowEnd(now time.Time, window time.Duration) time.Time {
	n := now.UnixNano()
	w := int64(window)
	start := n - n%w
	if n < 0 && n%w != 0 {
		start -= w
	}
	return time.Unix(0, start+w)
}

// exchangeCounters runs one exchange of this node's counts, if the store
// keeps counters (every sync_interval).
func (a *App) exchangeCounters(ctx context.Context) {
	us, ok := a.store.(store.UsageStore)
	if !ok || a.limits == nil {
		return
	}
	start := time.Now()
	err := a.limits.counters.exchange(ctx, us, a.now())
	a.metrics.exchangeSeconds.Observe(time.Since(start).Seconds())
	if err != nil && ctx.Err() == nil {
		a.metrics.storeCounters.Inc()
		a.logger.Warn("exchanging quota and rate-limit counts with the store; deciding on the counts known so far", zap.Error(err))
	}
}
