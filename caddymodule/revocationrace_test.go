package caddymodule

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestCacheRequestAfterInvalidationDoesNotJoinOlderLoad: a request that
// comes after a revocation was acknowledged must not be answered with what
// a load already in flight read before it, even though it would otherwise
// join that load: it would be allowed with a revoked credential (and a
// token issued by the revocation would be refused).
func TestCacheRequestAfterInvalidationDoesNotJoinOlderLoad(t *testing.T) {
	c := newTestCache(t)
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.user("u1", func() (*policy.Principal, error) {
			close(started)
			<-release
			return principalFor("u1", 1), nil // read before the revocation
		})
	}()
	<-started
	c.invalidateUser("u1") // the revocation commits and is acknowledged
	got := make(chan int64, 1)
	go func() {
		cu, err := c.user("u1", func() (*policy.Principal, error) { return principalFor("u1", 2), nil })
		if err != nil || cu.p == nil {
			t.Errorf("second request: %+v, %v", cu, err)
			got <- 0
			return
		}
		got <- cu.p.User.Version
	}()
	// Give the second request time to join the first load. (If it has not
	// joined yet, it loads on its own and the test passes anyway.)
	time.Sleep(50 * time.Millisecond)
	close(release)
	<-done
	if v := <-got; v != 2 {
		t.Fatalf("a request after the revocation got version %d, what a load that began before it read; want version 2", v)
	}
}

// TestNewTokenWorksOnAnotherNodeAfterItsSync: a token rotated through one
// node, presented to another node before that node's sync has dropped its
// copy of the user, is refused there (the copy holds the old token), but
// must work as soon as the sync has run, not be remembered as unknown.
func TestNewTokenWorksOnAnotherNodeAfterItsSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api_users.db")
	a := openSQLiteApp(t, path, nil)
	b := openSQLiteApp(t, path, nil)
	u, iss := mustCreate(t, a, "devices:list")
	const list = "/v1/products/1337/devices"
	if r := nodeDecides(b, "Bearer "+iss.Token, "GET", list); r != policy.Allowed {
		t.Fatalf("node B before the rotation: %v", r)
	}
	_, token, err := a.RotateToken(context.Background(), Tenant{}, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Before its sync, node B still has the user with the old token.
	if r := nodeDecides(b, "Bearer "+token, "GET", list); r != policy.InvalidCredentials && r != policy.Allowed {
		t.Fatalf("node B, new token before its sync: %v", r)
	}
	b.syncOnce(context.Background())
	if r := nodeDecides(b, "Bearer "+token, "GET", list); r != policy.Allowed {
		t.Fatalf("node B, new token after its sync: %v, want allowed", r)
	}
	if r := nodeDecides(b, "Bearer "+iss.Token, "GET", list); r != policy.InvalidCredentials {
		t.Fatalf("node B, old token after its sync: %v, want invalid_credentials", r)
	}
}
