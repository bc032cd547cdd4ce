package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/caddymodule/store/pgtest"
	"github.com/apiusers/caddy-api-users/policy"
)

// Several gateway nodes on one PostgreSQL database. Node A is a real Caddy
// loaded in this process, answering HTTP; the others are further apps on
// the same database, each with its own cache and follower, as another
// process would have (one process holds one Caddy config). A node's
// decision is taken by nodeDecides, from the calls the gateway makes.

// pgNodeConfig is the api_users global option of a node on the store url.
func pgNodeConfig(url, extra string) string {
	return fmt.Sprintf(`
		store postgres %s
%s
%s`, url, testCatalog, extra)
}

// startPGGateway loads node A: a Caddy in this process, in front of a
// recording upstream, on the PostgreSQL store url.
func startPGGateway(t *testing.T, url, appExtra, globalExtra string) *testGateway {
	t.Helper()
	up := newRecordingUpstream(t)
	port := freePort(t)
	cfg := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
%s
	api_users {
%s
	}
}

http://127.0.0.1:%d {
	api_users
	reverse_proxy %s
}
`, globalExtra, pgNodeConfig(url, appExtra), port, up.addr())
	_, app := loadCaddyfile(t, cfg)
	g := &testGateway{
		t:        t,
		url:      fmt.Sprintf("http://127.0.0.1:%d", port),
		upstream: up,
		app:      app,
		client:   &http.Client{Timeout: 10 * time.Second},
	}
	g.waitUp()
	return g
}

// openPGNode opens another node's app on the store url, with the same
// catalog, and starts its follower.
func openPGNode(t *testing.T, url, extra string, pollOnly bool) *App {
	t.Helper()
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(
		[]byte("{\n\tapi_users {\n"+pgNodeConfig(url, extra)+"\n\t}\n}\n"), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			APIUsers json.RawMessage `json:"api_users"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		t.Fatal(err)
	}
	a := new(App)
	if err := json.Unmarshal(cfg.Apps.APIUsers, a); err != nil {
		t.Fatal(err)
	}
	a.pollOnly = pollOnly
	if err := a.open(t.Context()); err != nil {
		t.Fatalf("opening node: %v", err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		a.Cleanup()
	})
	return a
}

// nodeDecides authenticates and authorizes a request on app the way the
// gateway handler does, and returns the decision's reason.
func nodeDecides(app *App, authorization, method, path string) policy.Reason {
	cred, reason := policy.ParseAuthorization(authorization)
	if reason != policy.Allowed {
		return reason
	}
	now := app.now()
	var cu *cachedUser
	var err error
	switch cred.Kind {
	case policy.BearerToken:
		cu, err = app.principalByToken(context.Background(), policy.HashOf(cred.Token))
	case policy.KeyAndSecret:
		cu, err = app.principal(context.Background(), cred.UserID)
		var u *policy.APIUser
		if cu != nil && cu.p != nil {
			u = cu.p.User
		}
		if _, ok := policy.VerifyKeyAndSecret(u, cred.Key, cred.Secret, now); !ok {
			cu = nil
		}
	}
	if err != nil {
		return policy.StoreUnavailable
	}
	if cu == nil || cu.p == nil {
		return policy.InvalidCredentials
	}
	v := app.view.Load()
	return policy.Decide(&policy.Request{Method: method, Path: path}, cu.p, v.catalog, v.tenancy, now, cu.lastSeen()).Reason
}

func basicAuth(id string, iss *Issued) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+iss.Key+":"+iss.Secret))
}

// waitCaughtUp waits until node's follower has applied the whole change
// log, its own changes included.
func waitCaughtUp(t *testing.T, node *App) {
	t.Helper()
	last, err := node.store.LastChange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !within(5*time.Second, func() bool { return node.lastSeq.Load() >= last }) {
		t.Fatalf("the follower is at %d after 5s, the log at %d", node.lastSeq.Load(), last)
	}
}

// waitRefused polls node until it refuses the request, and returns how
// long that took.
func waitRefused(t *testing.T, node *App, authorization, path string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if !within(limit, func() bool {
		reason := nodeDecides(node, authorization, "GET", path)
		if reason == policy.StoreUnavailable {
			t.Fatalf("node B answered store_unavailable, want a refusal of the credential")
		}
		return reason != policy.Allowed
	}) {
		t.Fatalf("node B still admits the credential %v after it was revoked on node A", limit)
	}
	return time.Since(start)
}

// TestTwoNodes runs nodes on one PostgreSQL server, a database per
// subtest, so the package's PostgreSQL tests cost two initdb runs, not one
// per test.
func TestTwoNodes(t *testing.T) {
	srv := pgtest.Start(t)
	t.Run("Revocation", func(t *testing.T) { testTwoNodesRevocation(t, srv.NewDatabase(t)) })
	t.Run("PollFallback", func(t *testing.T) { testTwoNodesPollFallback(t, srv.NewDatabase(t)) })
	t.Run("ConcurrentChanges", func(t *testing.T) { testTwoNodesConcurrentChanges(t, srv.NewDatabase(t)) })
}

// testTwoNodesRevocation revokes credentials in every way the product has
// through node A, and measures how long node B, which had the user cached,
// keeps admitting it. With NOTIFY it is milliseconds; the bound that is
// guaranteed is sync_interval.
func testTwoNodesRevocation(t *testing.T, url string) {
	const syncInterval = 500 * time.Millisecond
	extra := fmt.Sprintf("sync_interval %s", syncInterval)
	a := startPGGateway(t, url, extra, "")
	b := openPGNode(t, url, extra, false)
	const path = "/v1/products/1337/devices"

	revocations := []struct {
		name   string
		basic  bool // the credential that stops working is the key and secret
		revoke func(id string, iss *Issued) error
	}{
		{"delete user", false, func(id string, _ *Issued) error { return a.app.DeleteUser(context.Background(), id) }},
		{"rotate token", false, func(id string, _ *Issued) error {
			_, _, err := a.app.RotateToken(context.Background(), Tenant{}, id)
			return err
		}},
		{"retire", false, func(id string, _ *Issued) error {
			_, _, err := a.app.UpdateUser(context.Background(), Tenant{}, id, &UserSpec{Retired: ptr(true)})
			return err
		}},
		{"narrow scopes", false, func(id string, _ *Issued) error {
			_, _, err := a.app.UpdateUser(context.Background(), Tenant{}, id, &UserSpec{Scopes: strs("devices:get")})
			return err
		}},
		{"regenerate secret", true, func(id string, _ *Issued) error {
			_, _, err := a.app.RegenerateSecret(context.Background(), Tenant{}, id)
			return err
		}},
		{"delete key", true, func(id string, iss *Issued) error {
			_, err := a.app.DeleteKey(context.Background(), Tenant{}, id, iss.KeyID)
			return err
		}},
	}
	var worst time.Duration
	for _, r := range revocations {
		t.Run(r.name, func(t *testing.T) {
			id, iss := a.createUser(Tenant{Org: "acme", Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
			auth := "Bearer " + iss.Token
			if r.basic {
				auth = basicAuth(id, iss)
			}
			// Both nodes admit it, and node B has it cached (after reading
			// its creation, which drops its entry).
			if res := a.do("GET", path, http.Header{"Authorization": {auth}}); res.Status != 200 {
				t.Fatalf("node A before revoking: %d %s", res.Status, res.Body)
			}
			waitCaughtUp(t, b)
			if reason := nodeDecides(b, auth, "GET", path); reason != policy.Allowed {
				t.Fatalf("node B before revoking: %v", reason)
			}
			if _, ok := b.cache.users.Get(id); !ok {
				t.Fatal("node B did not cache the user")
			}

			if err := r.revoke(id, iss); err != nil {
				t.Fatal(err)
			}
			revoked := time.Now()
			if res := a.do("GET", path, http.Header{"Authorization": {auth}}); res.Status == 200 {
				t.Errorf("node A admits the credential right after revoking it")
			}
			delay := waitRefused(t, b, auth, path, 5*time.Second)
			t.Logf("%s on node A: refused by node B after %v", r.name, delay.Round(100*time.Microsecond))
			worst = max(worst, delay)
			if bound := syncInterval + 250*time.Millisecond; delay > bound {
				t.Errorf("node B refused it after %v, more than sync_interval plus a margin (%v)", delay, bound)
			}
			// Refused for good, not by chance.
			time.Sleep(20 * time.Millisecond)
			if reason := nodeDecides(b, auth, "GET", path); reason == policy.Allowed {
				t.Errorf("node B admits the credential again %v after it was revoked", time.Since(revoked))
			}
		})
	}
	t.Logf("worst propagation delay with LISTEN/NOTIFY: %v (bound: sync_interval %v)", worst.Round(100*time.Microsecond), syncInterval)
}

// testTwoNodesPollFallback shows the bound without NOTIFY: a node that
// does not listen still refuses a revoked credential within sync_interval.
func testTwoNodesPollFallback(t *testing.T, url string) {
	const syncInterval = 200 * time.Millisecond
	a := openPGNode(t, url, "sync_interval 200ms", false)
	b := openPGNode(t, url, "sync_interval 200ms", true)
	const path = "/v1/products/1337/devices"
	var worst time.Duration
	for i := range 5 {
		u, iss, err := a.CreateUser(context.Background(), Tenant{Org: "acme", Product: "1337"}, &UserSpec{Scopes: strs("devices:list")})
		if err != nil {
			t.Fatal(err)
		}
		auth := "Bearer " + iss.Token
		waitCaughtUp(t, b)
		if reason := nodeDecides(b, auth, "GET", path); reason != policy.Allowed {
			t.Fatalf("node B before revoking: %v", reason)
		}
		if _, ok := b.cache.users.Get(u.ID); !ok {
			t.Fatal("node B did not cache the user")
		}
		// Revoke at varying points of node B's polling cycle.
		time.Sleep(time.Duration(i) * syncInterval / 5)
		if err := a.DeleteUser(context.Background(), u.ID); err != nil {
			t.Fatal(err)
		}
		delay := waitRefused(t, b, auth, path, 5*time.Second)
		worst = max(worst, delay)
		if bound := syncInterval + 250*time.Millisecond; delay > bound {
			t.Errorf("node B (polling only) refused a deleted user after %v, more than sync_interval plus a margin (%v)", delay, bound)
		}
	}
	t.Logf("worst propagation delay by polling alone: %v (bound: sync_interval %v)", worst.Round(100*time.Microsecond), syncInterval)
}

// testTwoNodesConcurrentChanges has both nodes add keys to one user at
// the same time: the store serializes them, and no key is lost.
func testTwoNodesConcurrentChanges(t *testing.T, url string) {
	a := openPGNode(t, url, "", false)
	b := openPGNode(t, url, "", false)
	u, _, err := a.CreateUser(context.Background(), Tenant{Org: "acme"}, &UserSpec{Scopes: strs("devices:list")})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := map[string]bool{}
	for _, node := range []*App{a, b, a, b} {
		wg.Go(func() {
			for range 4 {
				_, k, err := node.AddKey(context.Background(), Tenant{}, u.ID, KeySpec{})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				added[k.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	got, err := b.GetUser(context.Background(), Tenant{}, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Keys) != 1+len(added) || len(added) != 16 {
		t.Errorf("the user has %d keys after 16 concurrent additions to its 1, want 17", len(got.Keys))
	}
	for _, k := range got.Keys[1:] {
		if !added[k.ID] {
			t.Errorf("key %s was not added by anyone", k.ID)
		}
	}
}

// TestDatabaseOutage stops PostgreSQL under a node serving traffic, and
// starts it again. What the README promises:
//   - a user not in the node's cache, or an unknown token, gets 503
//     store_unavailable, never a 200;
//   - a cached user is admitted for at most max_stale after the node last
//     read the change log, then gets 503 too;
//   - when the database is back, the node recovers by itself: users are
//     admitted again, and a revocation made elsewhere is enforced again;
//   - the connection string's password appears in no log line.
func TestDatabaseOutage(t *testing.T) {
	srv := pgtest.Start(t)
	const password = "pw-Outage-7f3a-never-logged"
	url := srv.NewRole(t, srv.NewDatabase(t), "gateway", password)
	t.Setenv("APIUSERS_TEST_DATABASE_URL", url)
	const (
		syncInterval = 100 * time.Millisecond
		maxStale     = 1500 * time.Millisecond
	)
	logPath := filepath.Join(t.TempDir(), "caddy.log")
	a := startPGGateway(t, "{env.APIUSERS_TEST_DATABASE_URL}",
		fmt.Sprintf("sync_interval %s\n\t\tmax_stale %s", syncInterval, maxStale),
		fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t}", logPath))
	const path = "/v1/products/1337/devices"
	newUser := func() string {
		_, iss := a.createUser(Tenant{Org: "acme", Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
		return iss.Token
	}
	cached, uncached := newUser(), newUser()
	// Never presented before the outage, so not remembered as unknown
	// either.
	unknown, _ := policy.NewToken()
	get := func(token string) result { return a.do("GET", path, bearer(token)) }
	// The follower reads the creations from the change log too, and drops
	// the users' entries once more: cache the user after that.
	waitCaughtUp(t, a.app)
	if res := get(cached); res.Status != 200 {
		t.Fatalf("before the outage: %d %s", res.Status, res.Body)
	}

	// The server refuses connections from the moment it is told to stop
	// (stopping), and is gone once Stop returns (stopped), which can be
	// seconds later on a loaded machine while it writes its checkpoint.
	// The last successful read of the change log began before stopped, so
	// no 200 may come later than max_stale after it; and the follower read
	// successfully up to about stopping, so no 503 should come much before
	// max_stale after that.
	stopping := time.Now()
	srv.Stop(t)
	stopped := time.Now()
	var lastAdmitted time.Duration
	eventually(t, maxStale+5*time.Second, "the cached user is refused once the database is down", func() bool {
		sent := time.Now()
		res := get(cached)
		since := sent.Sub(stopped)
		if res.Status == 200 {
			// The last successful read began before the stop, so a 200
			// must have been decided within max_stale of the stop.
			if since > maxStale {
				t.Fatalf("a cached user was admitted %v after the database stopped, more than max_stale %v", since, maxStale)
			}
			lastAdmitted = since
		} else {
			if res.Status != 503 || res.Error.Error != "store_unavailable" {
				t.Fatalf("cached user during the outage: %d %s, want 200 within max_stale, then 503 store_unavailable", res.Status, res.Body)
			}
			if early := sent.Sub(stopping); early < maxStale-2*syncInterval-200*time.Millisecond {
				t.Errorf("the cached user was refused %v after the database was told to stop, well before max_stale %v", early, maxStale)
			}
			t.Logf("database stopped: the cached user was admitted until %v and refused from %v (max_stale %v)",
				lastAdmitted.Round(time.Millisecond), since.Round(time.Millisecond), maxStale)
			return true
		}
		for name, token := range map[string]string{"an uncached user": uncached, "an unknown token": unknown} {
			if res := get(token); res.Status != 503 || res.Error.Error != "store_unavailable" {
				t.Fatalf("%s during the outage: %d %s, want 503 store_unavailable", name, res.Status, res.Body)
			}
		}
		return false
	})
	for _, token := range []string{cached, uncached, unknown} {
		if res := get(token); res.Status != 503 {
			t.Fatalf("after max_stale: %d %s, want 503", res.Status, res.Body)
		}
	}

	srv.Start(t)
	restarted := time.Now()
	for _, c := range []struct {
		token string
		want  int
	}{{cached, 200}, {uncached, 200}, {unknown, 401}} {
		var res result
		if !within(15*time.Second-time.Since(restarted), func() bool {
			res = get(c.token)
			if res.Status != c.want && res.Status != 503 {
				t.Fatalf("while recovering: %d %s", res.Status, res.Body)
			}
			return res.Status == c.want
		}) {
			t.Fatalf("still %d %s 15s after the database came back", res.Status, res.Body)
		}
	}
	t.Logf("database started again: requests decided normally after %v, without restarting the gateway", time.Since(restarted).Round(time.Millisecond))

	// Another node revokes the user: this one follows the store again.
	other, err := store.OpenPostgres(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	owner, err := a.app.principalByToken(context.Background(), policy.HashOf(cached))
	if err != nil || owner == nil {
		t.Fatalf("the cached user's principal: %v, %v", owner, err)
	}
	if err := other.DeleteUser(t.Context(), owner.p.User.ID); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if !within(syncInterval+time.Second, func() bool { return get(cached).Status == 401 }) {
		t.Fatalf("a user deleted by another node after the outage is still admitted after %v", time.Since(deleted))
	}
	t.Logf("after recovery, a deletion by another node was enforced after %v", time.Since(deleted).Round(time.Millisecond))

	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "change log") {
		t.Errorf("the log does not report the outage:\n%s", log)
	}
	if strings.Contains(string(log), password) {
		t.Error("the log contains the database password")
	}
}
