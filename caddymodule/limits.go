package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// processLimits is the state behind the lockout and the rate limits: one
// per process and store, shared by every gateway handler, and kept across
// config reloads. A user's rate limit means the same whether the user's
// requests reach one handler or four (a site with two addresses, two
// handle blocks), and a reload does not hand a locked-out address or a
// user at its limit a fresh start.
//
// It lives in a caddy.UsagePool, as caddy-ratelimit keeps its state: every
// App that uses it holds a reference, and a reload provisions the new App
// (a second reference) before it cleans the old one up (back to one), so
// the state is only dropped when the last App using it goes. It is keyed
// by the store, since users are only the same users within one store: two
// apps on two stores in one process (tests do this) count apart.
type processLimits struct {
	lockout  *lockout
	limiter  *rateLimiter
	counters *windowCounters // quotas and cluster rate limits (counters.go)
	usage    *usageCounter   // usage not yet written to the store (usage.go)

	// lockoutWindow is the longest lockout window of any handler that
	// uses the table, which is how long pruning keeps a record.
	lockoutWindow atomic.Int64

	stop chan struct{}
	done sync.WaitGroup
}

var limitsPool = caddy.NewUsagePool()

// loadLimits returns the process's limits for the store that key names,
// creating them on first use. Each call must be matched by one
// releaseLimits.
func loadLimits(key string, now func() time.Time) (*processLimits, error) {
	v, _, err := limitsPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		pl := &processLimits{
			lockout:  newLockout(defaultLockoutClients, now),
			limiter:  newRateLimiter(now),
			counters: newWindowCounters(),
			usage:    newUsageCounter(),
			stop:     make(chan struct{}),
		}
		pl.lockoutWindow.Store(int64(defaultLockoutWindow))
		pl.done.Add(1)
		go pl.pruneLoop()
		return pl, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*processLimits), nil
}

func releaseLimits(key string) {
	_, _ = limitsPool.Delete(key)
}

// limitsKey names the store an App uses, for loadLimits. A PostgreSQL
// connection string may hold a password, so the key holds its hash.
func limitsKey(cfg StoreConfig) string {
	where := cfg.URL
	if cfg.Driver == "" || cfg.Driver == "sqlite" {
		where = cfg.Path
		if abs, err := filepath.Abs(where); err == nil {
			where = abs
		}
	}
	sum := sha256.Sum256([]byte(cfg.Driver + "\x00" + where))
	return "api_users.limits." + hex.EncodeToString(sum[:16])
}

// useLockoutWindow makes pruning keep records for at least window.
func (pl *processLimits) useLockoutWindow(window time.Duration) {
	for {
		cur := pl.lockoutWindow.Load()
		if int64(window) <= cur || pl.lockoutWindow.CompareAndSwap(cur, int64(window)) {
			return
		}
	}
}

// pruneLoop forgets, once a minute, the clients whose failures are over
// and the users whose rate limit is whole again. It runs off the request
// path, one shard at a time.
func (pl *processLimits) pruneLoop() {
	defer pl.done.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-pl.stop:
			return
		case <-t.C:
			pl.lockout.prune(time.Duration(pl.lockoutWindow.Load()))
			pl.limiter.prune()
		}
	}
}

// Destruct stops the pruning when the last App using the limits is gone.
func (pl *processLimits) Destruct() error {
	close(pl.stop)
	pl.done.Wait()
	return nil
}

var _ caddy.Destructor = (*processLimits)(nil)
