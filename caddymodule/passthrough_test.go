package caddymodule

import (
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestPassThrough proves what pass_through forwards untouched (but for
// identity headers), what it still refuses, and that it is off by default.
func TestPassThrough(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "pass_through\n\t\tlockout off", siteExtra: "request_header X-Placeholder-User \"<{http.auth.user.id}>\""})
	g.upstream.take() // the harness's readiness probe, passed through
	id, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	unknown, _ := policy.NewToken()
	plainBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))

	forwarded := []struct {
		name     string
		path     string
		header   http.Header
		wantAuth string
	}{
		{"no Authorization", "/anything/at/all", nil, ""},
		{"another scheme", "/v1/products/1337/devices", http.Header{"Authorization": {"Digest username=\"x\""}}, "Digest username=\"x\""},
		{"a bearer token that is not ours", "/v1/products/1337/devices", bearer("eyJhbGciOi.backend.jwt"), "Bearer eyJhbGciOi.backend.jwt"},
		{"Basic without an API key", "/v1/products/1337/devices", http.Header{"Authorization": {plainBasic}}, plainBasic},
		{"a path outside the catalog", "/v1/products/1337/secrets", bearer("backend"), "Bearer backend"},
	}
	for _, tt := range forwarded {
		t.Run("forwards "+tt.name, func(t *testing.T) {
			h := http.Header{"X-Api-User": {"spoof"}, "X-Acting-User": {"spoof"}, "X-Proxied-User": {"alice"}}
			for k, v := range tt.header {
				h[k] = v
			}
			r := g.do("GET", tt.path, h)
			if r.Status != 200 {
				t.Fatalf("status %d %s", r.Status, r.Body)
			}
			got := g.upstream.take()
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests", len(got))
			}
			rec := got[0]
			if rec.RequestURI != tt.path {
				t.Errorf("upstream request-URI %q, want %q", rec.RequestURI, tt.path)
			}
			if a := rec.Header.Values("Authorization"); tt.wantAuth == "" && len(a) != 0 || tt.wantAuth != "" && (len(a) != 1 || a[0] != tt.wantAuth) {
				t.Errorf("upstream Authorization %q, want the client's own %q", a, tt.wantAuth)
			}
			for _, h := range []string{"X-Api-User", "X-Api-User-Org", "X-Api-User-Product", "X-Acting-User", "X-Proxied-User"} {
				if v := rec.Header.Values(h); len(v) != 0 {
					t.Errorf("upstream got %s %q from a passed-through request", h, v)
				}
			}
			if v := rec.Header.Get("X-Placeholder-User"); v != "<>" {
				t.Errorf("{http.auth.user.id} is %q for a passed-through request, want empty", v)
			}
		})
	}

	refused := []struct {
		name   string
		method string
		path   string
		header http.Header
		status int
		code   string
	}{
		{"ambiguous path first", "GET", "/v1/products/1337/..%2fdevices", nil, 400, "ambiguous_path"},
		{"method override first", "GET", "/anything", http.Header{"X-Method-Override": {"DELETE"}}, 400, "method_override"},
		{"malformed API token", "GET", "/anything", bearer(policy.TokenPrefix + "short"), 401, "malformed_credentials"},
		{"unknown API token", "GET", "/anything", bearer(unknown), 401, "invalid_credentials"},
		{"API key with a wrong secret", "GET", "/anything", basic(id, iss.Key, "apiu_sk_"+"00112233445566778899aabbccddeeff0011223344556677"), 401, "invalid_credentials"},
		{"two Authorization headers, ours second", "GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Digest x", "Bearer " + iss.Token}}, 401, "malformed_credentials"},
		{"valid API user, no endpoint", "GET", "/anything", bearer(iss.Token), 403, "no_endpoint"},
		// An API-user credential is always decided, whatever wraps it: it
		// is never passed through to the backend as someone else's.
		{"our token after a tab", "GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer\t" + iss.Token}}, 401, "malformed_credentials"},
		{"our token under another scheme", "GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Token " + iss.Token}}, 401, "malformed_credentials"},
		{"our token without a scheme", "GET", "/v1/products/1337/devices", http.Header{"Authorization": {iss.Token}}, 401, "malformed_credentials"},
		{"our Secret as a password", "GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+iss.Secret))}}, 401, "malformed_credentials"},
		{"our token in the query", "GET", "/v1/products/1337/devices?access_token=" + iss.Token, nil, 400, "misplaced_credentials"},
		{"our token in another header", "GET", "/anything", http.Header{"X-Auth-Token": {iss.Token}}, 400, "misplaced_credentials"},
	}
	for _, tt := range refused {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			r := g.do(tt.method, tt.path, tt.header)
			if r.Status != tt.status || r.Error.Error != tt.code {
				t.Fatalf("got %d %q, want %d %q", r.Status, r.Error.Error, tt.status, tt.code)
			}
			if got := g.upstream.take(); len(got) != 0 {
				t.Fatalf("refused request reached the upstream: %+v", got)
			}
		})
	}

	// An API user is still an API user with pass_through on.
	if r := g.do("GET", "/v1/products/1337/devices", bearer(iss.Token)); r.Status != 200 {
		t.Fatalf("API user: status %d", r.Status)
	}
	if got := g.upstream.take(); len(got) != 1 || got[0].Header.Get("X-Api-User") != id || got[0].Header.Get("Authorization") != "" {
		t.Fatalf("API user arrived as %+v", got)
	}
}

// TestPassThroughIsOffByDefault: without pass_through, a request without an
// API-user credential is a 401, whatever else it carries.
func TestPassThroughIsOffByDefault(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	for _, h := range []http.Header{nil, bearer("backend-token"), {"Authorization": {"Digest x"}}} {
		r := g.do("GET", "/v1/products/1337/devices", h)
		if r.Status != 401 || r.Error.Error != "missing_credentials" {
			t.Errorf("%v: got %d %q, want 401 missing_credentials", h, r.Status, r.Error.Error)
		}
	}
	if got := g.upstream.take(); len(got) != 0 {
		t.Fatalf("upstream got %d requests", len(got))
	}
}

// TestPassThroughRefusesUpgrades: pass-through forwards requests without a
// credential, but never a protocol upgrade, which would open a tunnel to
// the backend that no decision covers (h2c request smuggling).
func TestPassThroughRefusesUpgrades(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "pass_through\n\t\tlockout off"})
	g.upstream.take()
	for _, h := range []http.Header{
		{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMAAABkAAQAAP__"}},
		{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}},
	} {
		r := g.do("OPTIONS", "/public", h)
		if r.Status != 400 || r.Error.Error != "upgrade_not_allowed" {
			t.Errorf("upgrade %v: %d %q, want 400 upgrade_not_allowed", h["Upgrade"], r.Status, r.Error.Error)
		}
		if got := g.upstream.take(); len(got) != 0 {
			t.Errorf("upgrade %v reached the upstream", h["Upgrade"])
		}
	}
}
