package caddymodule

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// rateLimiter keeps each API user's place in its rate limit (the user's
// own, or the gateway's): one timestamp per user seen within the last window, in shards so that users do not
// wait on each other's lock. It holds authenticated users only, so it is
// bounded by the number of users active within one window; prune forgets
// the users whose limit is fully replenished, which is the same as never
// having seen them.
type rateLimiter struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [rateShards]rateShard
}

const rateShards = 32

type rateShard struct {
	mu  sync.Mutex
	tat map[string]userRate
	_   [40]byte // keep shards on separate cache lines
}

// userRate is a user's theoretical arrival time under the limit it was
// computed for. When the user's limit changes, the count starts afresh
// under the new one, so a raised limit applies from the next request.
type userRate struct {
	tat   time.Time
	limit policy.RateLimit
}

func newRateLimiter(now func() time.Time) *rateLimiter {
	rl := &rateLimiter{now: now, seed: maphash.MakeSeed()}
	for i := range rl.shards {
		rl.shards[i].tat = map[string]userRate{}
	}
	return rl
}

// admit decides one request by user under limit, and for a refused one
// says when to retry. A nil limiter, or a zero limit, admits everything.
func (rl *rateLimiter) admit(user string, limit policy.RateLimit) (time.Duration, bool) {
	if rl == nil || limit.Requests <= 0 {
		return 0, true
	}
	now := rl.now()
	s := &rl.shards[maphash.String(rl.seed, user)%rateShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.tat[user]
	if prev.limit != limit {
		prev = userRate{limit: limit}
	}
	tat, retry, ok := limit.Admit(prev.tat, now)
	if ok {
		s.tat[user] = userRate{tat: tat, limit: limit}
	}
	return retry, ok
}

// prune forgets users whose limit is whole again.
func (rl *rateLimiter) prune() {
	now := rl.now()
	for i := range rl.shards {
		s := &rl.shards[i]
		s.mu.Lock()
		for user, r := range s.tat {
			if !r.tat.After(now) {
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
