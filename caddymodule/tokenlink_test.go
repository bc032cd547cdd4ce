package caddymodule

import (
	"fmt"
	"testing"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestTokenLinkFollowsOnlyCurrentEntries: a token's entry leads to its
// owner's cache entry with no second lookup, but never to an entry a
// lookup by ID would no longer return: after the owner is invalidated (a
// revocation), after invalidateAll, or once the entry left the cache. An
// invalidation of a user in another shard leaves the link alone.
func TestTokenLinkFollowsOnlyCurrentEntries(t *testing.T) {
	c := newTestCache(t)
	_, h := policy.NewToken()
	version := int64(1)
	loadUser := func() (*policy.Principal, error) { return principalFor("u1", version), nil }
	te, err := c.token(h, func() (string, error) { return "u1", nil })
	if err != nil || te.owner != "u1" {
		t.Fatalf("token entry %+v, %v", te, err)
	}
	if c.linked(te) != nil {
		t.Fatal("a new token entry leads to a user before any lookup")
	}
	relink := func() *cachedUser {
		t.Helper()
		cu, err := c.user("u1", loadUser)
		if err != nil {
			t.Fatal(err)
		}
		c.link(te, cu)
		return cu
	}

	cu := relink()
	if got := c.linked(te); got != cu {
		t.Fatalf("linked %p, want the owner's entry %p", got, cu)
	}

	// Another user, in another shard, is revoked: the link holds.
	other := "u2"
	for i := 3; userShard(other) == userShard("u1"); i++ {
		other = fmt.Sprintf("u%d", i)
	}
	c.invalidateUser(other)
	if c.linked(te) != cu {
		t.Fatal("revoking a user of another shard dropped the link")
	}

	// The owner is revoked (changed): the link is dropped, and the next
	// lookup by ID reads the new version.
	version = 2
	c.invalidateUser("u1")
	if c.linked(te) != nil {
		t.Fatal("the link survived the owner's invalidation")
	}
	if cu = relink(); cu.p.User.Version != 2 || c.linked(te) != cu {
		t.Fatalf("relinked to version %d", cu.p.User.Version)
	}

	// A change to roles or the catalog drops every link.
	version = 3
	c.invalidateAll()
	if c.linked(te) != nil {
		t.Fatal("the link survived invalidateAll")
	}
	if cu = relink(); cu.p.User.Version != 3 || c.linked(te) != cu {
		t.Fatalf("relinked to version %d", cu.p.User.Version)
	}

	// An entry that leaves the cache is no longer followed.
	c.users.Del("u1")
	if c.linked(te) != nil {
		t.Fatal("the link leads to an entry no longer in the cache")
	}

	// An unknown user is never linked.
	version = 4
	te2, _ := c.token(h, nil)
	c.link(te2, &cachedUser{})
	if c.linked(te2) != nil {
		t.Fatal("a token leads to an unknown user")
	}
}
