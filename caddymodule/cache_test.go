package caddymodule

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apiusers/caddy-api-users/policy"
)

func newTestCache(t *testing.T) *principalCache {
	t.Helper()
	c, err := newPrincipalCache(CacheConfig{MaxUsers: 1000, TTL: caddy.Duration(time.Minute), NegativeTTL: caddy.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

func principalFor(id string, version int64) *policy.Principal {
	return policy.Compile(&policy.APIUser{ID: id, Org: "acme", Version: version}, nil)
}

// TestCacheCollapsesMissesAndRemembersUnknownUsers: a burst of requests
// for one user costs one store read, and so does a burst for an unknown ID.
func TestCacheCollapsesMissesAndRemembersUnknownUsers(t *testing.T) {
	c := newTestCache(t)
	for _, id := range []string{"known", "unknown"} {
		var loads atomic.Int32
		release := make(chan struct{})
		load := func() (*policy.Principal, error) {
			loads.Add(1)
			<-release
			if id == "unknown" {
				return nil, nil
			}
			return principalFor(id, 1), nil
		}
		var wg sync.WaitGroup
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cu, err := c.user(id, load)
				if err != nil || cu == nil || (id == "known") != (cu.p != nil) {
					t.Errorf("%s: got %+v, %v", id, cu, err)
				}
			}()
		}
		time.Sleep(20 * time.Millisecond) // let the burst pile up behind the first load
		close(release)
		wg.Wait()
		first := loads.Load()
		for i := 0; i < 100; i++ {
			if _, err := c.user(id, load); err != nil {
				t.Fatal(err)
			}
		}
		if n := loads.Load(); n != first || n > 2 {
			t.Errorf("%s: %d store reads for 150 requests (%d during the burst); want the burst collapsed and later requests cached", id, n, first)
		}
	}
}

// TestCacheFillRacingInvalidation: a load that read the store before a
// revocation must not put its stale result in the cache after it.
func TestCacheFillRacingInvalidation(t *testing.T) {
	c := newTestCache(t)
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.user("u1", func() (*policy.Principal, error) {
			close(started)
			<-release
			return principalFor("u1", 1), nil // what the store held before the revocation
		})
	}()
	<-started
	c.invalidateUser("u1") // the revocation commits while the load is in flight
	close(release)
	<-done
	c.users.Wait()

	cu, err := c.user("u1", func() (*policy.Principal, error) { return principalFor("u1", 2), nil })
	if err != nil {
		t.Fatal(err)
	}
	if cu.p.User.Version != 2 {
		t.Fatalf("cache served version %d after the revocation; want a fresh read (version 2)", cu.p.User.Version)
	}
}

func TestCacheInvalidateAll(t *testing.T) {
	c := newTestCache(t)
	version := int64(1)
	load := func() (*policy.Principal, error) { return principalFor("u1", version), nil }
	if cu, _ := c.user("u1", load); cu.p.User.Version != 1 {
		t.Fatal("first load")
	}
	version = 2
	if cu, _ := c.user("u1", load); cu.p.User.Version != 1 {
		t.Fatal("second request was not served from the cache")
	}
	c.invalidateAll()
	if cu, _ := c.user("u1", load); cu.p.User.Version != 2 {
		t.Fatal("invalidateAll left an entry in use")
	}
}

func TestCacheTokenOwner(t *testing.T) {
	c := newTestCache(t)
	_, h := policy.NewToken()
	var loads int
	load := func() (string, error) { loads++; return "", nil }
	for i := 0; i < 10; i++ {
		if id, err := c.tokenOwner(h, load); err != nil || id != "" {
			t.Fatalf("unknown token: %q, %v", id, err)
		}
	}
	if loads != 1 {
		t.Fatalf("unknown token read the store %d times; want once, then remembered", loads)
	}
	_, h2 := policy.NewToken()
	id, _ := c.tokenOwner(h2, func() (string, error) { return "u2", nil })
	if id != "u2" {
		t.Fatalf("owner %q", id)
	}
	c.forgetToken(h2)
	c.tokens.Wait()
	if id, _ := c.tokenOwner(h2, func() (string, error) { return "u2", nil }); id != "" {
		t.Fatalf("forgotten token still maps to %q", id)
	}
}
