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
	tokens *ristretto.Cache[uint64, *tokenEntry]
	group  singleflight.Group

	mu    sync.RWMutex  // held for writing while invalidating, for reading while filling
	gen   atomic.Uint64 // bumped by every invalidation
	epoch atomic.Uint64 // bumped by invalidateAll; older entries are misses

	// invalidated holds, per shard of user IDs, the generation of the
	// shard's latest invalidateUser: an entry loaded before it (cu.gen
	// below it) may be stale, and no token links to it any more.
	invalidated [userShards]atomic.Uint64

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
	shard    uint8        // userShard of the ID
	gone     atomic.Bool  // no longer in the cache (evicted, expired, dropped)
}

// tokenEntry is a token cache entry: the ID of the user the token was
// issued to ("" when no user holds it), and a link to that user's cache
// entry, so a request with a known token finds its user with one cache
// lookup instead of two. The link is followed only while it is as good as
// a lookup by ID would be: the entry is still in the cache, no
// invalidation since its load could have concerned it, and no
// invalidateAll came after it (linked).
type tokenEntry struct {
	owner string
	user  atomic.Pointer[cachedUser]
}

// userShards is how many shards of user IDs invalidations are tracked in:
// an invalidation unlinks the tokens of the users of its shard, so they
// take the two-lookup path until those users are loaded again.
const userShards = 256

func userShard(id string) uint8 {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return uint8(h)
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
		// An entry that leaves the cache (or was never admitted) is no
		// longer followed from a token: memory stays bounded by the
		// cache, and every request of a user sees one entry.
		OnExit: func(cu *cachedUser) {
			if cu != nil {
				cu.gone.Store(true)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("api_users: creating the user cache: %w", err)
	}
	tokens, err := ristretto.NewCache(&ristretto.Config[uint64, *tokenEntry]{
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
		cu := &cachedUser{p: p, epoch: epoch, gen: gen, shard: userShard(id)}
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
	if cu, ok = c.findUser(id); ok {
		c.metrics.userHit()
	}
	return cu, ok
}

// findUser is peekUser without counting the hit, for a caller that has
// it counted later (see cacheHits).
func (c *principalCache) findUser(id string) (cu *cachedUser, ok bool) {
	if cu, ok := c.users.Get(id); ok && cu.epoch == c.epoch.Load() {
		return cu, true
	}
	return nil, false
}

// peekToken returns the cached entry of a token (its owner "" for a token
// known to be unknown) without ever loading it; ok is false on a miss.
func (c *principalCache) peekToken(h policy.Hash) (te *tokenEntry, ok bool) {
	if te, ok = c.findToken(h); ok {
		c.metrics.tokenHit()
	}
	return te, ok
}

// findToken is peekToken without counting the hit, for a caller that has
// it counted later (see cacheHits).
func (c *principalCache) findToken(h policy.Hash) (te *tokenEntry, ok bool) {
	if te, ok := c.tokens.Get(tokenKey(h)); ok && te != nil {
		return te, true
	}
	return nil, false
}

// cacheHits records the cache hits of a request's credential lookup, to
// be counted with its decision by the audit queue's writer: counted on
// the request's goroutine, the hit counters' memory would bounce between
// the processors' caches on every request.
type cacheHits uint8

const (
	tokenCacheHit cacheHits = 1 << iota
	userCacheHit
)

// count adds the hits to m.
func (h cacheHits) count(m *cacheMetrics) {
	if h&tokenCacheHit != 0 {
		m.tokenHit()
	}
	if h&userCacheHit != 0 {
		m.userHit()
	}
}

// tokenKey is the cache key of a token: the first 8 bytes of its SHA-256.
// The full hash is always compared against the user's before it counts.
func tokenKey(h policy.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// tokenOwner returns the ID of the user a token was issued to, or "" if
// none. A token belongs to one user forever (a replaced token is dead, not
// reassigned), so positive entries never go stale in a harmful way: the
// caller still checks the user's current token hash.
func (c *principalCache) tokenOwner(h policy.Hash, load func() (string, error)) (string, error) {
	te, err := c.token(h, load)
	if err != nil {
		return "", err
	}
	return te.owner, nil
}

// token returns the token cache entry of a token hash, loading its owner
// on a miss.
func (c *principalCache) token(h policy.Hash, load func() (string, error)) (*tokenEntry, error) {
	if te, ok := c.peekToken(h); ok {
		return te, nil
	}
	k := tokenKey(h)
	c.metrics.tokenMiss()
	v, err, _ := c.group.Do(string(h[:]), func() (any, error) {
		id, err := load()
		if err != nil {
			return nil, err
		}
		ttl := c.ttl
		if id == "" {
			ttl = c.negativeTTL
		}
		te := &tokenEntry{owner: id}
		if c.tokens.SetWithTTL(k, te, 1, ttl) {
			c.tokens.Wait()
		}
		return te, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tokenEntry), nil
}

// linked returns the user entry te links to, if it is still what a lookup
// of the owner by ID would return; nil otherwise.
func (c *principalCache) linked(te *tokenEntry) *cachedUser {
	cu := te.user.Load()
	if cu == nil || cu.gone.Load() || cu.epoch != c.epoch.Load() || c.invalidated[cu.shard].Load() > cu.gen {
		return nil
	}
	return cu
}

// link makes te lead to cu, the owner's entry a lookup by ID returned.
func (c *principalCache) link(te *tokenEntry, cu *cachedUser) {
	if cu != nil && cu.p != nil && te.user.Load() != cu {
		te.user.Store(cu)
	}
}

// forgetToken marks a token as unknown, after its owner replaced it.
func (c *principalCache) forgetToken(h policy.Hash) {
	c.tokens.SetWithTTL(tokenKey(h), &tokenEntry{}, 1, c.negativeTTL)
}

// invalidateUser drops a user's entry, so the next request reads the store.
func (c *principalCache) invalidateUser(id string) {
	c.mu.Lock()
	c.invalidated[userShard(id)].Store(c.gen.Add(1))
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
