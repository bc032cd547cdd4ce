package caddymodule

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestProxiedUserHeader drives the proxied-user header through its edge
// cases: the value must be exactly one valid user ID (policy.UserIDSyntax).
func TestProxiedUserHeader(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off"})
	anyID, anyUser := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowProxiedUsers: ptr(true)})
	_, listed := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowProxiedUsers: ptr(true), AllowedProxiedUsers: strs("alice", "bob@example.com")})
	_, plain := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	longest := "a" + strings.Repeat("b", 63)

	tests := []struct {
		name   string
		token  string
		raw    string // header lines, verbatim
		status int
		code   string
		want   string // the proxied user the upstream receives
	}{
		{"any valid ID", anyUser.Token, "X-Proxied-User: carol\r\n", 200, "", "carol"},
		{"the longest valid ID", anyUser.Token, "X-Proxied-User: " + longest + "\r\n", 200, "", longest},
		{"every allowed character", anyUser.Token, "X-Proxied-User: A0.b_c@d+e-f\r\n", 200, "", "A0.b_c@d+e-f"},
		{"listed ID", listed.Token, "X-Proxied-User: bob@example.com\r\n", 200, "", "bob@example.com"},
		{"header name in another case", listed.Token, "x-PROXIED-user: alice\r\n", 200, "", "alice"},
		{"surrounding blanks are not part of the value", listed.Token, "X-Proxied-User:   alice  \r\n", 200, "", "alice"},
		{"unlisted ID", listed.Token, "X-Proxied-User: mallory\r\n", 403, "proxied_user_not_allowed", ""},
		{"listed ID in another case", listed.Token, "X-Proxied-User: Alice\r\n", 403, "proxied_user_not_allowed", ""},
		{"user allows none", plain.Token, "X-Proxied-User: alice\r\n", 403, "proxied_user_not_allowed", ""},
		{"empty value", anyUser.Token, "X-Proxied-User:\r\n", 403, "invalid_proxied_user", ""},
		{"overlong value", anyUser.Token, "X-Proxied-User: " + longest + "c\r\n", 403, "invalid_proxied_user", ""},
		{"a list in one header", anyUser.Token, "X-Proxied-User: alice, bob\r\n", 403, "invalid_proxied_user", ""},
		{"repeated header", listed.Token, "X-Proxied-User: alice\r\nX-Proxied-User: alice\r\n", 403, "invalid_proxied_user", ""},
		{"repeated in two spellings", listed.Token, "X-Proxied-User: alice\r\nx-proxied-user: bob\r\n", 403, "invalid_proxied_user", ""},
		{"repeated, user allows none", plain.Token, "X-Proxied-User: alice\r\nX-Proxied-User: bob\r\n", 403, "invalid_proxied_user", ""},
		{"starts with a symbol", anyUser.Token, "X-Proxied-User: -alice\r\n", 403, "invalid_proxied_user", ""},
		{"a colon", anyUser.Token, "X-Proxied-User: a:b\r\n", 403, "invalid_proxied_user", ""},
		{"non-ASCII", anyUser.Token, "X-Proxied-User: al\xc3\xafce\r\n", 403, "invalid_proxied_user", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := "GET /v1/products/1337/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tt.token + "\r\n" + tt.raw + "Connection: close\r\n\r\n"
			if status := g.rawRequest(raw); status != tt.status {
				t.Fatalf("status %d, want %d", status, tt.status)
			}
			got := g.upstream.take()
			if tt.status != 200 {
				if len(got) != 0 {
					t.Fatalf("refused request reached the upstream")
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests", len(got))
			}
			h := got[0].Header
			if v := h.Values("X-Proxied-User"); len(v) != 1 || v[0] != tt.want {
				t.Errorf("upstream X-Proxied-User %q, want [%q]", v, tt.want)
			}
			if v := h.Get("X-Acting-User"); v != tt.want {
				t.Errorf("upstream X-Acting-User %q, want %q", v, tt.want)
			}
			if v := h.Get("X-Api-User"); v == "" || v == tt.want {
				t.Errorf("upstream X-Api-User %q, want the API user", v)
			}
		})
	}
	// The code of a refusal is in the body too.
	r := g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + anyUser.Token}, "X-Proxied-User": {"a", "b"}})
	if r.Status != 403 || r.Error.Error != "invalid_proxied_user" {
		t.Fatalf("repeated header: %d %q", r.Status, r.Error.Error)
	}
	_ = anyID
}

// TestProxiedUserHeaderConfigurable: with proxied_user_header set, that
// header names the proxied user and is what the upstream receives; the
// default X-Proxied-User is then just another spoofable identity header,
// stripped and ignored.
func TestProxiedUserHeaderConfigurable(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "proxied_user_header On-Behalf-Of"})
	id, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowProxiedUsers: ptr(true)})

	r := g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + iss.Token}, "On-Behalf-Of": {"carol"}})
	if r.Status != 200 {
		t.Fatalf("status %d %s", r.Status, r.Body)
	}
	got := g.upstream.take()
	if len(got) != 1 || got[0].Header.Get("On-Behalf-Of") != "carol" || got[0].Header.Get("X-Acting-User") != "carol" || got[0].Header.Get("X-Proxied-User") != "" {
		t.Fatalf("upstream got %+v", got)
	}

	r = g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + iss.Token}, "X-Proxied-User": {"carol"}})
	if r.Status != 200 {
		t.Fatalf("status %d %s", r.Status, r.Body)
	}
	got = g.upstream.take()
	if len(got) != 1 || got[0].Header.Get("X-Proxied-User") != "" || got[0].Header.Get("X-Acting-User") != id || got[0].Header.Get("On-Behalf-Of") != "" {
		t.Fatalf("upstream got %+v", got)
	}

	r = g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + iss.Token}, "On-Behalf-Of": {"a", "b"}})
	if r.Status != 403 || r.Error.Error != "invalid_proxied_user" {
		t.Fatalf("repeated configured header: %d %q", r.Status, r.Error.Error)
	}
}

// TestProxiedUserHeaderMustNotBeReserved: the header may not be one the
// gateway sets or one HTTP or proxies act on, in any spelling.
func TestProxiedUserHeaderMustNotBeReserved(t *testing.T) {
	for _, name := range []string{"X-Api-User", "x-acting-user", "X-API-USER-ORG", "Authorization", "Connection", "Trailer", "X-HTTP-Method-Override", "Host", "X-Forwarded-For", "X_Proxied_User", "-X", strings.Repeat("X", 65)} {
		caddyfile := "{\n\tapi_users\n}\n:8080 {\n\tapi_users {\n\t\tproxied_user_header " + name + "\n\t}\n}\n"
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
		if err == nil || !strings.Contains(err.Error(), "proxied_user_header") {
			t.Errorf("proxied_user_header %s: error %v, want one that names proxied_user_header", name, err)
		}
	}
	for _, name := range []string{"X-Proxied-User", "On-Behalf-Of", "X-Impersonate-User"} {
		if err := checkProxiedUserHeader(name); err != nil {
			t.Errorf("proxied_user_header %s: %v", name, err)
		}
	}
}
