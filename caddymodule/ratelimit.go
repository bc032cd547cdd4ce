package caddymodule

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// rateLimiter keeps each API user's place in its rate limit: one timestamp
// per user seen within the last window, in shards so that users do not
// wait on each other's lock. It holds authenticated users only, so it is
// bounded by the number of users active within one window; prune forgets
// the users whose limit is fully replenished, which is the same as never
// having seen them.
type rateLimiter struct {
	limit  policy.RateLimit
	now    func() time.Time
	seed   maphash.Seed
	shards [rateShards]rateShard
}

const rateShards = 32

type rateShard struct {
	mu  sync.Mutex
	tat map[string]time.Time
	_   [40]byte // keep shards on separate cache lines
}

func newRateLimiter(limit policy.RateLimit, now func() time.Time) *rateLimiter {
	rl := &rateLimiter{limit: limit, now: now, seed: maphash.MakeSeed()}
	for i := range rl.shards {
		rl.shards[i].tat = map[string]time.Time{}
	}
	return rl
}

// admit decides one request by user, and for a refused one says when to
// retry. A nil limiter admits everything.
func (rl *rateLimiter) admit(user string) (time.Duration, bool) {
	if rl == nil {
		return 0, true
	}
	now := rl.now()
	s := &rl.shards[maphash.String(rl.seed, user)%rateShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	tat, retry, ok := rl.limit.Admit(s.tat[user], now)
	if ok {
		s.tat[user] = tat
	}
	return retry, ok
}

// prune forgets users whose limit is whole again.
func (rl *rateLimiter) prune() {
	now := rl.now()
	for i := range rl.shards {
		s := &rl.shards[i]
		s.mu.Lock()
		for user, tat := range s.tat {
			if !tat.After(now) {
				delete(s.tat, user)
			}
		}
		s.mu.Unlock()
	}
}

// size is the number of users tracked.
func (rl *rateLimiter) size() int {
	n := 0
	for i := range rl.shards {
		s := &rl.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}
