package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/apiusers/caddy-api-users/policy"
)

// fourHandlers is a config with four api_users handlers in one process: the
// harness's site, a site with two addresses, and a site with two handle
// blocks. Each has its own lockout and rate_limit settings block; the
// counts behind them are the process's.
func fourHandlers(t *testing.T, block string) (g *testGateway, urls []string) {
	t.Helper()
	p2, p3, p4 := freePort(t), freePort(t), freePort(t)
	up := "{UPSTREAM}"
	extra := fmt.Sprintf(`
http://127.0.0.1:%d, http://localhost:%d {
	api_users {
		%s
	}
	reverse_proxy %s
}

http://127.0.0.1:%d {
	handle /v1/products/1337/* {
		api_users {
			%s
		}
		reverse_proxy %s
	}
	handle {
		api_users {
			%s
		}
		reverse_proxy %s
	}
}
`, p2, p3, block, up, p4, block, up, block, up)
	g = startGateway(t, gatewayOptions{gatewayBlock: block, extraSites: extra})
	urls = []string{g.url, fmt.Sprintf("http://127.0.0.1:%d", p2), fmt.Sprintf("http://localhost:%d", p3), fmt.Sprintf("http://127.0.0.1:%d", p4)}
	return g, urls
}

// TestRateLimitIsPerProcess: a user with rate_limit 3 1m of its own gets 3
// requests a minute through the process, not 3 through each of its four
// handlers; and a config reload does not give it a fresh start.
func TestRateLimitIsPerProcess(t *testing.T) {
	g, urls := fourHandlers(t, "lockout off")
	_, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list", "events:get"), RateLimit: &UserRateLimit{Requests: 3, Window: "1m"}})
	statuses := map[int]int{}
	for round := 0; round < 3; round++ {
		for _, u := range urls {
			// Both handle blocks of the fourth site: /v1/products/1337/*
			// and the other, through the org-wide events route.
			for _, path := range []string{"/v1/products/1337/devices", "/v1/orgs/acme/events"} {
				statuses[g.doAt(u, "GET", path, bearer(iss.Token)).Status]++
			}
		}
	}
	if statuses[200] != 3 || statuses[429] != 21 {
		t.Fatalf("statuses %v over four handlers, want 3 admitted and 21 rate_limited", statuses)
	}
	if n := len(g.upstream.take()); n != 3 {
		t.Fatalf("upstream got %d requests, want 3", n)
	}

	g.reload()
	if r := g.do("GET", "/v1/products/1337/devices", bearer(iss.Token)); r.Status != 429 || r.Error.Error != "rate_limited" {
		t.Fatalf("after a reload, the user at its limit got %d %q, want 429 rate_limited", r.Status, r.Error.Error)
	}
}

// TestLockoutIsPerProcess: failures from one address are counted once,
// whichever handler saw them, and a reload does not unlock the address.
// A valid credential of a cached user still passes from the locked-out
// address; an uncached one, or a wrong one, does not.
func TestLockoutIsPerProcess(t *testing.T) {
	g, urls := fourHandlers(t, "lockout 4 5m")
	_, cached := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	_, uncached := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	if r := g.do("GET", "/v1/products/1337/devices", bearer(cached.Token)); r.Status != 200 {
		t.Fatalf("warming the cache: %d", r.Status)
	}
	bad, _ := policy.NewToken()
	var got []int
	for _, u := range urls {
		got = append(got, g.doAt(u, "GET", "/v1/products/1337/devices", bearer(bad)).Status)
	}
	want := []int{401, 401, 401, 401}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("four wrong tokens through four handlers: %v, want %v", got, want)
	}
	for _, u := range urls {
		r := g.doAt(u, "GET", "/v1/products/1337/devices", bearer(bad))
		if r.Status != 429 || r.Error.Error != "too_many_failures" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s after four failures: %d %q, want 429 too_many_failures with Retry-After", u, r.Status, r.Error.Error)
		}
	}

	limits := g.app.limits
	g.reload()
	if g.app.limits != limits {
		t.Error("the reloaded app has other limits than the one it replaced")
	}
	if r := g.do("GET", "/v1/products/1337/devices", bearer(bad)); r.Status != 429 {
		t.Fatalf("after a reload, the locked-out address got %d, want 429", r.Status)
	}
	// The cache was dropped with the old config: warm it again, as the
	// address's other clients would have before the lockout.
	if _, err := g.app.principalByToken(t.Context(), policy.HashOf(cached.Token)); err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		if r := g.doAt(u, "GET", "/v1/products/1337/devices", bearer(cached.Token)); r.Status != 200 {
			t.Errorf("%s: a valid cached credential from the locked-out address got %d, want 200", u, r.Status)
		}
	}
	if r := g.do("GET", "/v1/products/1337/devices", bearer(uncached.Token)); r.Status != 429 {
		t.Errorf("a valid but uncached credential from the locked-out address got %d, want 429 (it would cost a store read)", r.Status)
	}
	// The cached token with its last character changed (to "0", or "1"
	// when it already ends in "0"): a wrong token, however alike.
	last := "0"
	if strings.HasSuffix(cached.Token, "0") {
		last = "1"
	}
	if r := g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + cached.Token[:len(cached.Token)-1] + last}}); r.Status != 429 {
		t.Errorf("a wrong token from the locked-out address got %d, want 429", r.Status)
	}
	if r := g.do("GET", "/v1/products/1337/devices", nil); r.Status != 429 {
		t.Errorf("no credential from the locked-out address got %d, want 429", r.Status)
	}
}

// TestLockoutBehindTrustedProxies: with trusted_proxies, the lockout
// counts the client address that X-Forwarded-For names; IPv6 clients by
// their /64, IPv4 clients one by one. Without it, X-Forwarded-For from the
// peer is never believed.
func TestLockoutBehindTrustedProxies(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout 9 5m", globalExtra: "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}"})
	bad, _ := policy.NewToken()
	from := func(ip string) result {
		return g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + bad}, "X-Forwarded-For": {ip}})
	}
	// 40 addresses of one /64, a handful of guesses each: locked after 9.
	statuses := map[int]int{}
	for i := 0; i < 40; i++ {
		for j := 0; j < 9; j++ {
			statuses[from(fmt.Sprintf("2001:db8:aa:bb:%x::%x", i, j+1)).Status]++
		}
	}
	if statuses[401] != 9 || statuses[429] != 360-9 {
		t.Fatalf("360 wrong tokens from one /64: %v, want 9 refused with 401 and the rest locked out", statuses)
	}
	if r := from("2001:db8:aa:bc::1"); r.Status != 401 {
		t.Errorf("the next /64 got %d, want 401: it is another client", r.Status)
	}
	if r := from("192.0.2.1"); r.Status != 401 {
		t.Errorf("an IPv4 client got %d, want 401", r.Status)
	}
	if r := from("::ffff:192.0.2.2"); r.Status != 401 {
		t.Errorf("an IPv4-mapped client got %d, want 401", r.Status)
	}

	// The peer itself is not locked out: only the clients it named were.
	if r := g.do("GET", "/v1/products/1337/devices", bearer(bad)); r.Status != 401 {
		t.Errorf("the proxy's own address got %d, want 401", r.Status)
	}
}

// TestLockoutIgnoresUntrustedForwardedFor: without trusted_proxies, an
// attacker cannot pick the address it is counted under.
func TestLockoutIgnoresUntrustedForwardedFor(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout 3 5m"})
	bad, _ := policy.NewToken()
	var got []int
	for i := 0; i < 5; i++ {
		got = append(got, g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + bad}, "X-Forwarded-For": {fmt.Sprintf("192.0.2.%d", i+1)}}).Status)
	}
	if fmt.Sprint(got) != "[401 401 401 429 429]" {
		t.Fatalf("wrong tokens with a different X-Forwarded-For each from an untrusted peer: %v, want [401 401 401 429 429]", got)
	}
}

// doAt is do against another of the process's sites.
func (g *testGateway) doAt(base, method, rawPath string, header http.Header) result {
	g.t.Helper()
	saved := g.url
	g.url = base
	defer func() { g.url = saved }()
	return g.do(method, rawPath, header)
}

// reload loads the gateway's config again, changed so that Caddy does not
// skip it as identical, as `caddy reload` does with an edited Caddyfile.
func (g *testGateway) reload() {
	g.t.Helper()
	cfg := strings.Replace(g.caddyfile, "\tpersist_config off\n", "\tpersist_config off\n\tgrace_period 1s\n", 1)
	if cfg == g.caddyfile {
		g.t.Fatal("reload: the config did not change")
	}
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		g.t.Fatal(err)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		g.t.Fatalf("reloading: %v", err)
	}
	g.caddyfile = cfg
	g.app = g.activeApp()
}

func (g *testGateway) activeApp() *App {
	g.t.Helper()
	a, err := caddy.ActiveContext().App("api_users")
	if err != nil {
		g.t.Fatal(err)
	}
	return a.(*App)
}

// TestLimitsPool: apps on one store share one table; the table goes with
// the last of them, and stores count apart.
func TestLimitsPool(t *testing.T) {
	key := limitsKey(StoreConfig{Path: t.TempDir() + "/a.db"})
	other := limitsKey(StoreConfig{Path: t.TempDir() + "/b.db"})
	if key == other {
		t.Fatal("two stores share a key")
	}
	a, err := loadLimits(key, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := loadLimits(key, time.Now)
	c, _ := loadLimits(other, time.Now)
	if a != b || a == c {
		t.Fatalf("same store: %p and %p; other store: %p", a, b, c)
	}
	releaseLimits(key)
	if n, ok := limitsPool.References(key); !ok || n != 1 {
		t.Fatalf("after one release of two: %d references (%v), want 1", n, ok)
	}
	releaseLimits(key)
	releaseLimits(other)
	if _, ok := limitsPool.References(key); ok {
		t.Fatal("the table outlived the last app")
	}
	select {
	case <-a.stop:
	default:
		t.Fatal("the pruning loop was not stopped")
	}
}
