package caddymodule

import (
	"path/filepath"
	"strconv"
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
	rl := newRateLimiter(policy.RateLimit{Requests: 100, Window: time.Minute}, clock)

	// 8 goroutines, 50 requests each, for one user: exactly 100 admitted.
	var wg sync.WaitGroup
	var admitted sync.Map
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < 50; i++ {
				if _, ok := rl.admit("alice"); ok {
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
	if _, ok := rl.admit("bob"); !ok {
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
	if _, ok := none.admit("alice"); !ok {
		t.Fatal("a nil limiter refused")
	}
}
