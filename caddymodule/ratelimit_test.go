package caddymodule

import (
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestGatewayRateLimit: each API user has its own limit; a request over it
// is refused with 429 rate_limited and Retry-After, never reaches the
// upstream, and is audited; refused requests do not use the limit up.
func TestGatewayRateLimit(t *testing.T) {
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off\n\t\trate_limit 3 1m", globalExtra: auditLog(auditPath)})
	aID, a := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	_, b := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	devices := "/v1/products/1337/devices"

	for i := 1; i <= 3; i++ {
		if r := g.do("GET", devices, bearer(a.Token)); r.Status != 200 {
			t.Fatalf("user A, request %d of 3: status %d", i, r.Status)
		}
	}
	if got := len(g.upstream.take()); got != 3 {
		t.Fatalf("upstream got %d requests, want 3", got)
	}
	r := g.do("GET", devices, bearer(a.Token))
	if r.Status != 429 || r.Error.Error != "rate_limited" {
		t.Fatalf("user A, request 4: %d %q, want 429 rate_limited", r.Status, r.Error.Error)
	}
	// 3 a minute is one every 20 s: the next one is due in up to 20 s.
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 || secs > 20 {
		t.Fatalf("Retry-After %q, want 1..20 seconds", r.Header.Get("Retry-After"))
	}
	if got := g.upstream.take(); len(got) != 0 {
		t.Fatalf("a rate-limited request reached the upstream: %v", got)
	}
	recs := readJSONLines(t, auditPath)
	last := recs[len(recs)-1]
	want := record("deny", "rate_limited", 429, "api_user", aID, "acme", "1337", "", tokenID(a.Token), "GET", devices, "list-devices", "devices:list")
	for k, v := range want {
		if last[k] != v {
			t.Errorf("audit %s = %#v, want %#v", k, last[k], v)
		}
	}

	// User B has a limit of its own; refused requests do not count.
	for i := 0; i < 5; i++ {
		if r := g.do("PUT", devices+"/abc", bearer(b.Token)); r.Status != 403 {
			t.Fatalf("user B, forbidden request: status %d", r.Status)
		}
	}
	for i := 1; i <= 3; i++ {
		if r := g.do("GET", devices, bearer(b.Token)); r.Status != 200 {
			t.Fatalf("user B, request %d of 3 after 5 refused ones: status %d", i, r.Status)
		}
	}
	if r := g.do("GET", devices, bearer(b.Token)); r.Status != 429 {
		t.Fatalf("user B, request 4: status %d, want 429", r.Status)
	}
	if got := len(g.upstream.take()); got != 3 {
		t.Fatalf("upstream got %d of user B's requests, want 3", got)
	}
}

// TestGatewayWithoutRateLimit: with no rate_limit, nothing is limited.
func TestGatewayWithoutRateLimit(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off"})
	_, a := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	for i := 0; i < 50; i++ {
		if r := g.do("GET", "/v1/products/1337/devices", bearer(a.Token)); r.Status != 200 {
			t.Fatalf("request %d: status %d", i, r.Status)
		}
	}
}

func TestRateLimiterConcurrentAndPruned(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rl := newRateLimiter(clock)
	limit := policy.RateLimit{Requests: 100, Window: time.Minute}

	// 8 goroutines, 50 requests each, for one user: exactly 100 admitted.
	var wg sync.WaitGroup
	var admitted sync.Map
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < 50; i++ {
				if _, ok := rl.admit("alice", limit); ok {
					n++
				}
			}
			admitted.Store(w, n)
		}()
	}
	wg.Wait()
	total := 0
	admitted.Range(func(_, v any) bool { total += v.(int); return true })
	if total != 100 {
		t.Fatalf("%d of 400 concurrent requests admitted, want exactly 100", total)
	}
	if _, ok := rl.admit("bob", limit); !ok {
		t.Fatal("bob refused because of alice")
	}
	if n := rl.size(); n != 2 {
		t.Fatalf("%d users tracked, want 2", n)
	}
	rl.prune()
	if n := rl.size(); n != 2 {
		t.Fatalf("prune forgot users still within their window: %d left", n)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	rl.prune()
	if n := rl.size(); n != 0 {
		t.Fatalf("%d users left after a quiet window, want 0", n)
	}
	var none *rateLimiter
	if _, ok := none.admit("alice", limit); !ok {
		t.Fatal("a nil limiter refused")
	}
	for range 3 {
		if _, ok := rl.admit("carol", policy.RateLimit{}); !ok {
			t.Fatal("the zero limit refused")
		}
	}
	if n := rl.size(); n != 0 {
		t.Fatalf("the zero limit tracked %d users, want 0", n)
	}
}

// TestUserRateLimitThroughTheAPI: a user's own rate_limit, set and cleared
// through the management API, takes the place of the site's, from the
// very next request; a bad one is a 400 naming the field and changes
// nothing; changing it keeps the token.
func TestUserRateLimitThroughTheAPI(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off\n\t\trate_limit 3 1m"}})
	devices := "/v1/products/1337/devices"
	own := a.createVia("/v1/products/1337", map[string]any{"username": "own-limit", "scopes": []string{"devices:list"}, "rate_limit": map[string]any{"requests": 1, "window": "1m"}}).Created
	site := a.createVia("/v1/products/1337", map[string]any{"username": "site-limit", "scopes": []string{"devices:list"}}).Created
	if own.RateLimit == nil || own.RateLimit.Requests != 1 || own.RateLimit.Window != "1m0s" {
		t.Fatalf("created user's rate_limit %+v, want 1 per 1m0s", own.RateLimit)
	}
	if site.RateLimit != nil {
		t.Fatalf("a user created without rate_limit shows %+v, want null", site.RateLimit)
	}
	ownToken, siteToken := bearer(own.Tokens[0].Token), bearer(site.Tokens[0].Token)

	// The user's own limit: 1 a minute, not the site's 3.
	if st, _ := a.gatewayStatus(devices, ownToken); st != 200 {
		t.Fatalf("own-limit request 1: %d", st)
	}
	if st, code := a.gatewayStatus(devices, ownToken); st != 429 || code != "rate_limited" {
		t.Fatalf("own-limit request 2: %d %s, want 429 rate_limited", st, code)
	}
	// The site's limit for the other user: 3.
	for i := 1; i <= 3; i++ {
		if st, _ := a.gatewayStatus(devices, siteToken); st != 200 {
			t.Fatalf("site-limit request %d: %d", i, st)
		}
	}
	if st, _ := a.gatewayStatus(devices, siteToken); st != 429 {
		t.Fatalf("site-limit request 4: %d, want 429", st)
	}

	// Bad limits: 400 naming the field, nothing changed.
	for _, bad := range []struct {
		limit map[string]any
		field string
	}{
		{map[string]any{"requests": -1, "window": "1m"}, "rate_limit.requests"},
		{map[string]any{"requests": 5, "window": "10ms"}, "rate_limit.window"},
		{map[string]any{"requests": 5}, "rate_limit.window"},
		{map[string]any{"requests": 5, "window": "soon"}, "rate_limit.window"},
	} {
		r := a.call("PUT", "/v1/products/1337/team/own-limit", map[string]any{"friendly_name": "changed", "rate_limit": bad.limit})
		if r.Status != 400 || !strings.Contains(r.Error.Description, bad.field) {
			t.Fatalf("rate_limit %v: %d %q, want 400 naming %s", bad.limit, r.Status, r.Error.Description, bad.field)
		}
	}
	var got struct{ User UserView }
	a.must("GET", "/v1/products/1337/team/own-limit", nil, &got)
	if got.User.FriendlyName == "changed" || got.User.RateLimit == nil || got.User.RateLimit.Requests != 1 {
		t.Fatalf("a refused update changed the user: %+v", got.User)
	}

	// A larger own limit applies at once, and keeps the token.
	var up updatedResponse
	a.must("PUT", "/v1/products/1337/team/own-limit", map[string]any{"rate_limit": map[string]any{"requests": 1000, "window": "1m"}}, &up)
	if up.TokenReplaced || up.User.RateLimit == nil || up.User.RateLimit.Requests != 1000 {
		t.Fatalf("raising the limit: token_replaced %v, rate_limit %+v; want the token kept and 1000", up.TokenReplaced, up.User.RateLimit)
	}
	if st, _ := a.gatewayStatus(devices, ownToken); st != 200 {
		t.Fatalf("after raising the user's limit: %d, want 200", st)
	}
	// Clearing it: the site's limit applies again.
	a.must("PUT", "/v1/products/1337/team/own-limit", map[string]any{"rate_limit": map[string]any{"requests": 0}}, &up)
	if up.User.RateLimit != nil {
		t.Fatalf("after clearing, rate_limit %+v, want null", up.User.RateLimit)
	}
	statuses := map[int]int{}
	for range 5 {
		st, _ := a.gatewayStatus(devices, ownToken)
		statuses[st]++
	}
	if statuses[429] == 0 {
		t.Fatalf("with the site's 3 a minute, 5 quick requests gave %v; want some 429", statuses)
	}
}
