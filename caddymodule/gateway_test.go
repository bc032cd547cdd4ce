package caddymodule

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

func basic(id, key, secret string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+key+":"+secret))}}
}

// TestGatewayForwardsAllowedRequests proves an allowed request reaches the
// upstream with exactly the matched path, the identity headers set by the
// gateway and no Authorization.
func TestGatewayForwardsAllowedRequests(t *testing.T) {
	g := startGateway(t, gatewayOptions{siteExtra: "request_header X-Placeholder-User {http.auth.user.id}"})
	productUser, pIss := g.createUser(Tenant{Product: "my-product-v1"}, UserSpec{Username: ptr("prod-reader"), Scopes: strs("devices:list", "devices:get")})
	orgUser, oIss := g.createUser(Tenant{Org: "acme"}, UserSpec{Roles: strs("device-reader"), Scopes: strs("events:get")})

	tests := []struct {
		name        string
		method      string
		path        string
		header      http.Header
		wantUser    string
		wantProduct string
	}{
		{"product user by slug with token", "GET", "/v1/products/my-product-v1/devices", bearer(pIss.Token), productUser, "1337"},
		{"product user by ID with token", "GET", "/v1/products/1337/devices/0a1b2c?fields=name", bearer(pIss.Token), productUser, "1337"},
		{"product user with key and secret", "GET", "/v1/products/1337/devices", basic(productUser, pIss.Key, pIss.Secret), productUser, "1337"},
		{"org user on its org's other product", "GET", "/v1/products/other-product/devices/abc", bearer(oIss.Token), orgUser, ""},
		{"org user on org route", "GET", "/v1/orgs/acme/events", bearer(oIss.Token), orgUser, ""},
		{"rest wildcard with an escaped space", "GET", "/v1/products/4242/events/temp%20high/x", bearer(oIss.Token), orgUser, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := g.do(tt.method, tt.path, tt.header)
			if r.Status != http.StatusOK {
				t.Fatalf("status %d, body %s", r.Status, r.Body)
			}
			got := g.upstream.take()
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(got))
			}
			rec := got[0]
			if rec.RequestURI != tt.path {
				t.Errorf("upstream request-URI %q, want exactly %q", rec.RequestURI, tt.path)
			}
			if rec.Method != tt.method {
				t.Errorf("upstream method %q, want %q", rec.Method, tt.method)
			}
			if v := rec.Header.Get("Authorization"); v != "" {
				t.Errorf("upstream got Authorization %q; it must be removed", v)
			}
			checks := map[string]string{
				"X-Api-User":         tt.wantUser,
				"X-Api-User-Org":     "acme",
				"X-Api-User-Product": tt.wantProduct,
				"X-Acting-User":      tt.wantUser,
				"X-Proxied-User":     "",
				"X-Placeholder-User": tt.wantUser,
			}
			for h, want := range checks {
				if vs := rec.Header.Values(h); strings.Join(vs, ",") != want {
					t.Errorf("upstream %s = %q, want %q", h, vs, want)
				}
			}
		})
	}
}

// TestGatewayRefusals drives every refusal the gateway makes after
// authentication starts, and proves none reaches the upstream.
func TestGatewayRefusals(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off"})
	ctx := context.Background()
	_, reader := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list", "devices:get")})
	_, limited := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list", "devices:get"), AllowedEndpoints: strs("list-devices")})
	_, constrained := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:get", "devices:list"), ResourceConstraints: &map[string][]string{"device": {"dev1"}}})
	proxyID, proxy := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowProxiedUsers: ptr(true), AllowedProxiedUsers: strs("alice")})
	retiredID, retired := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), Retired: ptr(true)})
	expiredID, expired := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), ExpiresAt: ptr(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))})
	deletedID, deleted := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	globexUser, globex := g.createUser(Tenant{Org: "globex"}, UserSpec{Scopes: strs("devices:list")})
	_ = retiredID
	_ = expiredID
	_ = globexUser

	// Warm the cache with the user about to be deleted, then delete it:
	// the very next request must fail.
	if r := g.do("GET", "/v1/products/1337/devices", bearer(deleted.Token)); r.Status != 200 {
		t.Fatalf("user before deletion: status %d", r.Status)
	}
	if err := g.app.DeleteUser(ctx, deletedID); err != nil {
		t.Fatal(err)
	}
	g.upstream.take()

	wrongSecret, _ := policy.NewSecret()
	otherKey, _ := policy.NewKey(time.Now())
	unknownToken, _ := policy.NewToken()

	tests := []struct {
		name   string
		method string
		path   string
		header http.Header
		status int
		code   string
	}{
		{"no credentials", "GET", "/v1/products/1337/devices", nil, 401, "missing_credentials"},
		{"other scheme", "GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Digest abc"}}, 401, "missing_credentials"},
		{"malformed token", "GET", "/v1/products/1337/devices", bearer(policy.TokenPrefix + "zz"), 401, "malformed_credentials"},
		{"unknown token", "GET", "/v1/products/1337/devices", bearer(unknownToken), 401, "invalid_credentials"},
		{"deleted user", "GET", "/v1/products/1337/devices", bearer(deleted.Token), 401, "invalid_credentials"},
		{"wrong secret", "GET", "/v1/products/1337/devices", basic(proxyID, proxy.Key, wrongSecret), 401, "invalid_credentials"},
		{"another user's key", "GET", "/v1/products/1337/devices", basic(proxyID, otherKey, proxy.Secret), 401, "invalid_credentials"},
		{"unknown user ID", "GET", "/v1/products/1337/devices", basic("nobody", proxy.Key, proxy.Secret), 401, "invalid_credentials"},
		{"retired", "GET", "/v1/products/1337/devices", bearer(retired.Token), 401, "user_retired"},
		{"expired", "GET", "/v1/products/1337/devices", bearer(expired.Token), 401, "user_expired"},
		{"no endpoint", "GET", "/v1/products/1337/secrets", bearer(reader.Token), 403, "no_endpoint"},
		{"trailing slash is another path", "GET", "/v1/products/1337/devices/", bearer(reader.Token), 403, "no_endpoint"},
		{"method not in catalog", "DELETE", "/v1/products/1337/devices/abc", bearer(reader.Token), 403, "no_endpoint"},
		{"case differs", "GET", "/v1/Products/1337/devices", bearer(reader.Token), 403, "no_endpoint"},
		{"missing scope", "PUT", "/v1/products/1337/devices/abc", bearer(reader.Token), 403, "insufficient_scope"},
		{"endpoint not allowed", "GET", "/v1/products/1337/devices/abc", bearer(limited.Token), 403, "endpoint_not_allowed"},
		{"other product of same org", "GET", "/v1/products/4242/devices", bearer(reader.Token), 403, "tenant_mismatch"},
		{"other org's product by slug", "GET", "/v1/products/globex-tracker/devices", bearer(proxy.Token), 403, "tenant_mismatch"},
		{"other org's product for globex user", "GET", "/v1/products/my-product-v1/devices", bearer(globex.Token), 403, "tenant_mismatch"},
		{"unknown product", "GET", "/v1/products/777/devices", bearer(proxy.Token), 403, "tenant_mismatch"},
		{"resource constraint", "GET", "/v1/products/1337/devices/dev2", bearer(constrained.Token), 403, "resource_constraint"},
		{"constrained user on unconstrained route", "GET", "/v1/products/1337/devices", bearer(constrained.Token), 403, "resource_constraint"},
		{"proxied user not listed", "GET", "/v1/products/1337/devices", withHeader(bearer(proxy.Token), "X-Proxied-User", "mallory"), 403, "proxied_user_not_allowed"},
		{"proxied user not allowed at all", "GET", "/v1/products/1337/devices", withHeader(bearer(reader.Token), "X-Proxied-User", "alice"), 403, "proxied_user_not_allowed"},
		{"proxied user invalid", "GET", "/v1/products/1337/devices", withHeader(bearer(proxy.Token), "X-Proxied-User", "a:b"), 403, "invalid_proxied_user"},
		{"method override", "POST", "/v1/products/1337/devices", withHeader(bearer(reader.Token), "X-HTTP-Method-Override", "GET"), 400, "method_override"},
		{"method override, other spelling", "GET", "/v1/products/1337/devices", withHeader(bearer(reader.Token), "X-Method-Override", "DELETE"), 400, "method_override"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := g.do(tt.method, tt.path, tt.header)
			if r.Status != tt.status || r.Error.Error != tt.code {
				t.Fatalf("got %d %q, want %d %q (body %s)", r.Status, r.Error.Error, tt.status, tt.code, r.Body)
			}
			if r.Error.OK || r.Error.Description == "" {
				t.Errorf("error body %s lacks ok=false or a description", r.Body)
			}
			if tt.status == 401 && len(r.Header.Values("Www-Authenticate")) == 0 {
				t.Error("401 without WWW-Authenticate")
			}
			if got := g.upstream.take(); len(got) != 0 {
				t.Fatalf("refused request reached the upstream: %+v", got)
			}
		})
	}

	// The same proxied user, allowed, arrives with both identities.
	r := g.do("GET", "/v1/products/1337/devices", withHeader(bearer(proxy.Token), "X-Proxied-User", "alice"))
	if r.Status != 200 {
		t.Fatalf("allowed proxied user: status %d %s", r.Status, r.Body)
	}
	got := g.upstream.take()
	if len(got) != 1 || got[0].Header.Get("X-Proxied-User") != "alice" || got[0].Header.Get("X-Acting-User") != "alice" || got[0].Header.Get("X-Api-User") != proxyID {
		t.Fatalf("proxied request arrived as %+v", got)
	}
}

func withHeader(h http.Header, name, value string) http.Header {
	h = h.Clone()
	h[name] = append(h[name], value)
	return h
}

// TestGatewayRefusesAmbiguousPaths sends each kind of ambiguous path the
// spec lists, verbatim, with a valid credential: every one is a 400 and
// none reaches the upstream.
func TestGatewayRefusesAmbiguousPaths(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list", "devices:get", "events:get")})
	paths := []string{
		"/v1/products/1337/devices/..%2f..%2fadmin",
		"/v1/products/1337/devices/a%2Fb",
		"/v1/products/1337/devices/a%5cb",
		"/v1/products/1337/devices/a%5Cb",
		"/v1/products/1337/devices/%2e%2e",
		"/v1/products/1337/devices/%2E",
		"/v1/products/1337/devices/..",
		"/v1/products/1337/devices/.",
		"/v1/products/1337/./devices",
		"/v1/products/4242/../1337/devices",
		"/v1/products/1337//devices",
		"/v1/products/1337/devices;jsessionid=1",
		"/v1/products/1337/devices/abc;x",
		"/v1/products/1337/devices/a%00b",
		"/v1/products/1337/devices/a%252fb",
		"/v1/products/1337/devices/%c0%ae%c0%ae",
		"/v1/products/1337/devices/%64ev",
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			r := g.do("GET", p, bearer(iss.Token))
			if r.Status != 400 || r.Error.Error != "ambiguous_path" {
				t.Fatalf("got %d %q, want 400 ambiguous_path", r.Status, r.Error.Error)
			}
			if got := g.upstream.take(); len(got) != 0 {
				t.Fatalf("ambiguous path reached the upstream as %q", got[0].RequestURI)
			}
		})
	}
	// Raw bytes no Go client sends: a literal backslash, NUL, and a raw
	// high byte.
	for _, p := range []string{"//v1/products/1337/devices", "/v1/products/1337/devices/a\\b", "/v1/products/1337/devices/\x80", "/v1/products/1337/devices/a\x00b"} {
		status := g.rawRequest("GET " + p + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + iss.Token + "\r\nConnection: close\r\n\r\n")
		if status != 400 {
			t.Errorf("raw path %q: status %d, want 400", p, status)
		}
		if got := g.upstream.take(); len(got) != 0 {
			t.Fatalf("raw path %q reached the upstream as %q", p, got[0].RequestURI)
		}
	}
}

// TestGatewayStripsSpoofedIdentityHeaders sends identity headers in every
// spelling a backend might fold together; the upstream sees only the
// gateway's.
func TestGatewayStripsSpoofedIdentityHeaders(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	id, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	raw := "GET /v1/products/1337/devices HTTP/1.1\r\nHost: x\r\n" +
		"Authorization: Bearer " + iss.Token + "\r\n" +
		"X-Api-User: admin\r\n" +
		"x-api-user: admin2\r\n" +
		"X_Api_User: admin3\r\n" +
		"X-API-USER-ORG: globex\r\n" +
		"X-Api-User_Product: 9001\r\n" +
		"X-Acting-User: root\r\n" +
		"x_acting_user: root2\r\n" +
		"X-Proxied_User: boss\r\n" +
		"Connection: keep-alive, X-Api-User, x_acting_user\r\n" +
		"\r\n"
	if status := g.rawRequest(raw); status != 200 {
		t.Fatalf("status %d", status)
	}
	got := g.upstream.take()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests", len(got))
	}
	h := got[0].Header
	want := map[string]string{"x-api-user": id, "x-api-user-org": "acme", "x-api-user-product": "1337", "x-acting-user": id}
	seen := map[string][]string{}
	for name, vs := range h {
		norm := normHeader(name)
		seen[norm] = append(seen[norm], vs...)
	}
	for name, vs := range seen {
		if strings.HasPrefix(name, "x-api-user") || strings.HasPrefix(name, "x-acting") || strings.HasPrefix(name, "x-proxied") {
			if w, ok := want[name]; !ok || len(vs) != 1 || vs[0] != w {
				t.Errorf("upstream header %s = %q, want %q", name, vs, want[name])
			}
		}
	}
	for name, w := range want {
		if len(seen[name]) != 1 || seen[name][0] != w {
			t.Errorf("upstream header %s = %q, want %q", name, seen[name], w)
		}
	}
}

// TestGatewayLockout proves repeated failures from one address lock it out
// with 429 and Retry-After, even for a valid credential, and that the
// lockout keeps the store from being asked.
func TestGatewayLockout(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout 3 1m"})
	_, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	bad, _ := policy.NewToken()
	for i := 0; i < 3; i++ {
		if r := g.do("GET", "/v1/products/1337/devices", bearer(bad)); r.Status != 401 {
			t.Fatalf("failure %d: status %d", i, r.Status)
		}
	}
	r := g.do("GET", "/v1/products/1337/devices", bearer(iss.Token))
	if r.Status != 429 || r.Error.Error != "too_many_failures" {
		t.Fatalf("after 3 failures: %d %q, want 429 too_many_failures", r.Status, r.Error.Error)
	}
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 60 {
		t.Fatalf("Retry-After %q, want 1..60 seconds", r.Header.Get("Retry-After"))
	}
	if got := g.upstream.take(); len(got) != 0 {
		t.Fatalf("locked-out request reached the upstream")
	}
}

// TestGatewaySeesChangesFromAnotherProcess opens the same store the way
// the CLI does, revokes a user there, and expects the running gateway to
// refuse it within the sync bound.
func TestGatewaySeesChangesFromAnotherProcess(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	id, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	if r := g.do("GET", "/v1/products/1337/devices", bearer(iss.Token)); r.Status != 200 {
		t.Fatalf("before revocation: status %d", r.Status)
	}
	other := &App{Store: StoreConfig{Driver: "sqlite", Path: g.dbPath}, Orgs: g.app.Orgs, Roles: g.app.Roles, Endpoints: g.app.Endpoints}
	if err := other.open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer other.Cleanup()
	revoked := time.Now()
	if err := other.DeleteUser(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "revocation from another process enforced", func() bool {
		return g.do("GET", "/v1/products/1337/devices", bearer(iss.Token)).Status == 401
	})
	t.Logf("revocation from another process enforced after %v", time.Since(revoked).Round(time.Millisecond))
	g.upstream.take()
}

// TestGatewayRefusesMethodOverrideInAnySpelling sends the override headers
// by hand, in spellings no Go client would produce. Caddy itself drops
// request header fields whose names contain '_' before any handler runs;
// for those, what matters is that the upstream never sees them.
func TestGatewayRefusesMethodOverrideInAnySpelling(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	for _, h := range []string{"X-HTTP-Method-Override", "x-http-method", "X-METHOD-OVERRIDE", "X_HTTP_Method_Override", "x_method_override"} {
		status := g.rawRequest("GET /v1/products/1337/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + iss.Token + "\r\n" + h + ": DELETE\r\nConnection: close\r\n\r\n")
		got := g.upstream.take()
		if !strings.Contains(h, "_") {
			if status != 400 || len(got) != 0 {
				t.Errorf("%s: status %d, %d upstream requests; want 400 and none", h, status, len(got))
			}
			continue
		}
		for _, rec := range got {
			for name := range rec.Header {
				if strings.Contains(normHeader(name), "method") {
					t.Errorf("%s reached the upstream as %s", h, name)
				}
			}
		}
	}
}

// TestGatewayPlaceholders: every {http.auth.user.*} placeholder the gateway
// documents resolves, for the handlers after it, to the decision's values.
func TestGatewayPlaceholders(t *testing.T) {
	names := []string{"id", "org", "product", "proxied_user", "acting_user", "endpoint", "credential_id"}
	var extra strings.Builder
	for _, n := range names {
		fmt.Fprintf(&extra, "request_header X-P-%s \"<{http.auth.user.%s}>\"\n\t", strings.ReplaceAll(n, "_", "-"), n)
	}
	g := startGateway(t, gatewayOptions{siteExtra: extra.String()})
	id, iss := g.createUser(Tenant{Product: "my-product-v1"}, UserSpec{Scopes: strs("devices:get"), AllowProxiedUsers: ptr(true)})
	h := bearer(iss.Token)
	h.Set("X-Proxied-User", "alice")
	if r := g.do("GET", "/v1/products/1337/devices/abc", h); r.Status != http.StatusOK {
		t.Fatalf("status %d, body %s", r.Status, r.Body)
	}
	got := g.upstream.take()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(got))
	}
	want := map[string]string{
		"id": id, "org": "acme", "product": "1337", "proxied_user": "alice",
		"acting_user": "alice", "endpoint": "get-device", "credential_id": policy.TokenIDOf(policy.HashOf(iss.Token)),
	}
	for _, n := range names {
		h := "X-P-" + strings.ReplaceAll(n, "_", "-")
		if v := got[0].Header.Get(h); v != "<"+want[n]+">" {
			t.Errorf("{http.auth.user.%s} = %s, want <%s>", n, v, want[n])
		}
	}
}
