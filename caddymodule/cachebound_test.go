package caddymodule

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestCacheHoldsMaxUsers: max_users is a number of users. The cache holds
// that many (a working set of that size is served without store reads) and
// no more (memory is bounded by it, whatever the store holds).
func TestCacheHoldsMaxUsers(t *testing.T) {
	const maxUsers = 2000
	c, err := newPrincipalCache(CacheConfig{MaxUsers: maxUsers, TTL: caddy.Duration(time.Hour), NegativeTTL: caddy.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	load := func(id string) func() (*policy.Principal, error) {
		return func() (*policy.Principal, error) {
			return &policy.Principal{User: &policy.APIUser{ID: id}}, nil
		}
	}
	cached := func(n int) int {
		held := 0
		for i := range n {
			if _, ok := c.users.Get(fmt.Sprint("u", i)); ok {
				held++
			}
		}
		return held
	}
	for i := range maxUsers {
		if _, err := c.user(fmt.Sprint("u", i), load(fmt.Sprint("u", i))); err != nil {
			t.Fatal(err)
		}
	}
	if held := cached(maxUsers); held < maxUsers*95/100 {
		t.Errorf("the cache holds %d of %d users, want nearly all: max_users counts users", held, maxUsers)
	}
	for i := maxUsers; i < 5*maxUsers; i++ {
		if _, err := c.user(fmt.Sprint("u", i), load(fmt.Sprint("u", i))); err != nil {
			t.Fatal(err)
		}
	}
	if held := cached(5 * maxUsers); held > maxUsers {
		t.Errorf("the cache holds %d users after %d were loaded, more than max_users %d", held, 5*maxUsers, maxUsers)
	}
}
