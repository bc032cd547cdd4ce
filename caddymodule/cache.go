package caddymodule

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"

	"github.com/apiusers/caddy-api-users/policy"
)

// principalCache keeps compiled users in memory so the hot path does no
// I/O for active users. It is bounded (ristretto evicts by frequency), it
// remembers unknown tokens and user IDs for a short while so invalid
// credentials cannot hammer the store, and it collapses concurrent misses
// for one key into one store read.
//
// The one hard problem is a fill racing an invalidation: a request reads a
// user from the store, the user is revoked and its entry dropped, and then
// the request stores the stale copy it read. Every invalidation therefore
// bumps a generation under a lock, and a fill stores its result only if the
// generation is unchanged since before it read the store.
type principalCache struct {
	users  *ristretto.Cache[string, *cachedUser]
	tokens *ristretto.Cache[uint64, string]
	group  singleflight.Group

	mu    sync.RWMutex  // held for writing while invalidating, for reading while filling
	gen   atomic.Uint64 // bumped by every invalidation
	epoch atomic.Uint64 // bumped by invalidateAll; older entries are misses

	ttl         time.Duration // users, known or not, and known tokens
	negativeTTL time.Duration // unknown tokens
	metrics     *cacheMetrics // nil: not counted
}

// cachedUser is a cache entry: the compiled user (nil for an unknown ID)
// and the last time this process saw it make a request.
type cachedUser struct {
	p        *policy.Principal
	product  string // p.User.Product in decimal, "" for an org user
	epoch    uint64
	gen      uint64       // the generation when the load that made it began
	lastUsed atomic.Int64 // unix nanoseconds
	queuedAt atomic.Int64 // when lastUsed was last queued for the store
}

func newPrincipalCache(cfg CacheConfig) (*principalCache, error) {
	// Every entry costs 1, so MaxCost counts entries. IgnoreInternalCost:
	// otherwise ristretto adds the size of its own item struct (56 bytes)
	// to each cost, and a cache of 100000 "users" holds about 1750.
	users, err := ristretto.NewCache(&ristretto.Config[string, *cachedUser]{
		NumCounters:        cfg.MaxUsers * 10,
		MaxCost:            cfg.MaxUsers,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("api_users: creating the user cache: %w", err)
	}
	tokens, err := ristretto.NewCache(&ristretto.Config[uint64, string]{
		NumCounters:        cfg.MaxUsers * 10,
		MaxCost:            cfg.MaxUsers,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		users.Close()
		return nil, fmt.Errorf("api_users: creating the token cache: %w", err)
	}
	return &principalCache{
		users:       users,
		tokens:      tokens,
		ttl:         time.Duration(cfg.TTL),
		negativeTTL: time.Duration(cfg.NegativeTTL),
	}, nil
}

// user returns the entry for a user ID, loading it on a miss. The entry's
// principal is nil when the store has no such user.
func (c *principalCache) user(id string, load func() (*policy.Principal, error)) (*cachedUser, error) {
	if cu, ok := c.peekUser(id); ok {
		return cu, nil
	}
	c.metrics.userMiss()
	// A request joins a load already in flight; but if an invalidation
	// came between that load's start and this request's, the load may have
	// read the store before a revocation acknowledged before this request
	// was sent, so the request loads again, on its own.
	gen := c.gen.Load()
	fill := func() (any, error) {
		gen, epoch := c.gen.Load(), c.epoch.Load()
		p, err := load()
		if err != nil {
			return nil, err
		}
		cu := &cachedUser{p: p, epoch: epoch, gen: gen}
		if p != nil && p.User.Product != 0 {
			cu.product = strconv.FormatInt(p.User.Product, 10)
		}
		// An unknown user ID is remembered exactly as long as a known
		// one, so that a repeated request costs the same for both and
		// its timing does not say which IDs exist. It cannot hide a user
		// created later: every change to a user, its creation included,
		// drops the user's entry (here, or on other nodes through the
		// change log) like a revocation does.
		c.mu.RLock()
		stored := c.gen.Load() == gen && c.users.SetWithTTL(id, cu, 1, c.ttl)
		c.mu.RUnlock()
		if stored {
			// Make the entry visible before the next request asks, so a
			// burst for one user costs one store read, not one per
			// request that arrives while ristretto's buffers drain.
			c.users.Wait()
		}
		return cu, nil
	}
	v, err, _ := c.group.Do("u\x00"+id, fill)
	if err == nil && v.(*cachedUser).gen < gen {
		v, err = fill()
	}
	if err != nil {
		return nil, err
	}
	return v.(*cachedUser), nil
}

// peekUser returns the cached entry for a user ID without ever loading
// it; ok is false on a miss.
func (c *principalCache) peekUser(id string) (cu *cachedUser, ok bool) {
	if cu, ok := c.users.Get(id); ok && cu.epoch == c.epoch.Load() {
		c.metrics.userHit()
		return cu, true
	}
	return nil, false
}

// peekToken returns the cached owner of a token ("" for a token known to
// be unknown) without ever loading it; ok is false on a miss.
func (c *principalCache) peekToken(h policy.Hash) (id string, ok bool) {
	if id, ok := c.tokens.Get(tokenKey(h)); ok {
		c.metrics.tokenHit()
		return id, true
	}
	return "", false
}

// tokenKey is the cache key of a token: the first 8 bytes of its SHA-256.
// The full hash is always compared against the user's before it counts.
func tokenKey(h policy.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// tokenOwner returns the ID of the user a token was issued to, or "" if
// none. A token belongs to one user forever (a replaced token is dead, not
// reassigned), so positive entries never go stale in a harmful way: the
// caller still checks the user's current token hash.
func (c *principalCache) tokenOwner(h policy.Hash, load func() (string, error)) (string, error) {
	if id, ok := c.peekToken(h); ok {
		return id, nil
	}
	k := tokenKey(h)
	c.metrics.tokenMiss()
	v, err, _ := c.group.Do(string(h[:]), func() (any, error) {
		id, err := load()
		if err != nil {
			return "", err
		}
		ttl := c.ttl
		if id == "" {
			ttl = c.negativeTTL
		}
		if c.tokens.SetWithTTL(k, id, 1, ttl) {
			c.tokens.Wait()
		}
		return id, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// forgetToken marks a token as unknown, after its owner replaced it.
func (c *principalCache) forgetToken(h policy.Hash) {
	c.tokens.SetWithTTL(tokenKey(h), "", 1, c.negativeTTL)
}

// invalidateUser drops a user's entry, so the next request reads the store.
func (c *principalCache) invalidateUser(id string) {
	c.mu.Lock()
	c.gen.Add(1)
	c.users.Del(id)
	c.mu.Unlock()
}

// invalidateAll drops every user entry, after a change to roles or the
// catalog that may change any user's effective rights.
func (c *principalCache) invalidateAll() {
	c.mu.Lock()
	c.gen.Add(1)
	c.epoch.Add(1)
	c.mu.Unlock()
}

func (c *principalCache) close() {
	c.users.Close()
	c.tokens.Close()
}
