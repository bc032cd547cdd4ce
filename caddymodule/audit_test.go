package caddymodule

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// auditCase is one request and the audit record it must produce: every
// field of auditFields, exactly.
type auditCase struct {
	name   string
	method string
	path   string
	header http.Header
	want   map[string]any
}

// record builds the expected fields of a record from the parts that vary.
func record(decision, reason string, status int, actor, apiUser, org, product, proxied, credID, method, path, endpoint, scope string) map[string]any {
	return map[string]any{
		"decision": decision, "reason": reason, "status": float64(status), "actor": actor,
		"api_user": apiUser, "org": org, "product": product, "proxied_user": proxied,
		"credential_id": credID, "method": method, "path": path, "endpoint": endpoint, "scope": scope,
		"client_ip": "127.0.0.1",
	}
}

// runAuditCases sends each request and compares the newest audit record
// with what it wants. The record is written before the response, so it is
// in the file when the response arrives.
func runAuditCases(t *testing.T, g *testGateway, auditPath string, cases []auditCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(readJSONLines(t, auditPath))
			g.do(tc.method, tc.path, tc.header)
			recs := readJSONLines(t, auditPath)
			if len(recs) != before+1 {
				t.Fatalf("%d audit records for one request, want 1: %v", len(recs)-before, recs[before:])
			}
			rec := recs[len(recs)-1]
			if rec["msg"] != "gateway decision" || rec["logger"] != "http.handlers.api_users.audit" || rec["level"] != "info" {
				t.Errorf("record is %v %v %v, want gateway decision on http.handlers.api_users.audit at info", rec["msg"], rec["logger"], rec["level"])
			}
			for _, f := range auditFields {
				if _, ok := rec[f]; !ok {
					t.Errorf("record lacks field %q", f)
				}
			}
			for k, want := range tc.want {
				if got := rec[k]; got != want {
					t.Errorf("%s = %#v, want %#v", k, got, want)
				}
			}
			if len(rec) != len(auditFields)+4 { // plus level, ts, logger, msg
				t.Errorf("record has unexpected fields: %v", rec)
			}
		})
	}
}

func tokenID(token string) string { return policy.TokenIDOf(policy.HashOf(token)) }

// TestAuditRecordsEveryDecision drives a request of every kind the gateway
// decides, allowed and refused for each reason, and checks every field of
// each audit record.
func TestAuditRecordsEveryDecision(t *testing.T) {
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off", globalExtra: auditLog(auditPath)})
	ctx := context.Background()

	prodID, prod := g.createUser(Tenant{Product: "1337"}, UserSpec{Username: ptr("prod-reader"), Scopes: strs("devices:list", "devices:get")})
	orgID, org := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("org-proxy"), Scopes: strs("devices:list", "devices:get"), AllowProxiedUsers: ptr(true), AllowedProxiedUsers: strs("alice")})
	limitedID, limited := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list", "devices:get"), AllowedEndpoints: strs("list-devices")})
	constrainedID, constrained := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:get"), ResourceConstraints: &map[string][]string{"device": {"dev1"}}})
	retiredID, retired := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), Retired: ptr(true)})
	expiredID, expired := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), ExpiresAt: ptr(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))})
	idleID, idle := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	// Make the last user idle for two hours with a one-hour idle timeout,
	// behind the app's back, then drop it from the cache.
	if _, err := g.app.store.UpdateUser(ctx, idleID, func(u *policy.APIUser) error {
		u.CreatedAt, u.IdleTimeout = time.Now().Add(-2*time.Hour), time.Hour
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g.app.cache.invalidateUser(idleID)
	unknownToken, _ := policy.NewToken()
	wrongSecret, _ := policy.NewSecret()

	devices := "/v1/products/1337/devices"
	cases := []auditCase{
		{"allowed, token", "GET", devices, bearer(prod.Token),
			record("allow", "allowed", 200, "api_user", prodID, "acme", "1337", "", tokenID(prod.Token), "GET", devices, "list-devices", "devices:list")},
		{"allowed, key and secret", "GET", devices + "/abc", basic(prodID, prod.Key, prod.Secret),
			record("allow", "allowed", 200, "api_user", prodID, "acme", "1337", "", prod.KeyID, "GET", devices+"/abc", "get-device", "devices:get")},
		{"allowed, proxied user", "GET", devices, withHeader(bearer(org.Token), "X-Proxied-User", "alice"),
			record("allow", "allowed", 200, "proxied_user_via_api_user", orgID, "acme", "", "alice", tokenID(org.Token), "GET", devices, "list-devices", "devices:list")},
		{"proxied user not allowed", "GET", devices, withHeader(bearer(org.Token), "X-Proxied-User", "mallory"),
			record("deny", "proxied_user_not_allowed", 403, "api_user", orgID, "acme", "", "mallory", tokenID(org.Token), "GET", devices, "list-devices", "devices:list")},
		{"proxied user invalid", "GET", devices, withHeader(bearer(org.Token), "X-Proxied-User", "a:b"),
			record("deny", "invalid_proxied_user", 403, "api_user", orgID, "acme", "", "", tokenID(org.Token), "GET", devices, "list-devices", "devices:list")},
		{"ambiguous path", "GET", "/v1/products/1337/devices/..%2fx", bearer(prod.Token),
			record("deny", "ambiguous_path", 400, "", "", "", "", "", "", "GET", "/v1/products/1337/devices/..%2fx", "", "")},
		{"method override", "POST", devices, withHeader(bearer(prod.Token), "X-Http-Method-Override", "GET"),
			record("deny", "method_override", 400, "", "", "", "", "", "", "POST", devices, "", "")},
		{"missing credentials", "GET", devices, nil,
			record("deny", "missing_credentials", 401, "", "", "", "", "", "", "GET", devices, "", "")},
		{"malformed credentials", "GET", devices, bearer(policy.TokenPrefix + "zz"),
			record("deny", "malformed_credentials", 401, "", "", "", "", "", "", "GET", devices, "", "")},
		{"unknown token", "GET", devices, bearer(unknownToken),
			record("deny", "invalid_credentials", 401, "", "", "", "", "", tokenID(unknownToken), "GET", devices, "", "")},
		{"wrong secret", "GET", devices, basic(prodID, prod.Key, wrongSecret),
			record("deny", "invalid_credentials", 401, "", "", "", "", "", prod.KeyID, "GET", devices, "", "")},
		{"retired", "GET", devices, bearer(retired.Token),
			record("deny", "user_retired", 401, "api_user", retiredID, "acme", "", "", tokenID(retired.Token), "GET", devices, "", "")},
		{"expired", "GET", devices, bearer(expired.Token),
			record("deny", "user_expired", 401, "api_user", expiredID, "acme", "", "", tokenID(expired.Token), "GET", devices, "", "")},
		{"idle expired", "GET", devices, bearer(idle.Token),
			record("deny", "user_idle_expired", 401, "api_user", idleID, "acme", "", "", tokenID(idle.Token), "GET", devices, "", "")},
		{"no endpoint", "DELETE", devices, bearer(prod.Token),
			record("deny", "no_endpoint", 403, "api_user", prodID, "acme", "1337", "", tokenID(prod.Token), "DELETE", devices, "", "")},
		{"endpoint not allowed", "GET", devices + "/abc", bearer(limited.Token),
			record("deny", "endpoint_not_allowed", 403, "api_user", limitedID, "acme", "", "", tokenID(limited.Token), "GET", devices+"/abc", "get-device", "devices:get")},
		{"insufficient scope", "PUT", devices + "/abc", bearer(prod.Token),
			record("deny", "insufficient_scope", 403, "api_user", prodID, "acme", "1337", "", tokenID(prod.Token), "PUT", devices+"/abc", "update-device", "devices:update")},
		{"tenant mismatch", "GET", "/v1/products/4242/devices", bearer(prod.Token),
			record("deny", "tenant_mismatch", 403, "api_user", prodID, "acme", "1337", "", tokenID(prod.Token), "GET", "/v1/products/4242/devices", "list-devices", "devices:list")},
		{"resource constraint", "GET", devices + "/dev2", bearer(constrained.Token),
			record("deny", "resource_constraint", 403, "api_user", constrainedID, "acme", "", "", tokenID(constrained.Token), "GET", devices+"/dev2", "get-device", "devices:get")},
	}
	runAuditCases(t, g, auditPath, cases)

	// The store failing is the gateway's fault, not the client's, and is
	// audited too. Closing it under the running app makes the next read
	// of a user not in the cache fail.
	_, fresh := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	if err := g.app.store.Close(); err != nil {
		t.Fatal(err)
	}
	runAuditCases(t, g, auditPath, []auditCase{
		{"store unavailable", "GET", devices, bearer(fresh.Token),
			record("deny", "store_unavailable", 503, "", "", "", "", "", tokenID(fresh.Token), "GET", devices, "", "")},
	})
}

// TestAuditRecordsLockoutAndPassThrough covers the two decisions that need
// their own gateway settings: a locked-out address, and pass-through.
func TestAuditRecordsLockoutAndPassThrough(t *testing.T) {
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout 2 1m\n\t\tpass_through", globalExtra: auditLog(auditPath)})
	_, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	devices := "/v1/products/1337/devices"
	runAuditCases(t, g, auditPath, []auditCase{
		{"passed through, no Authorization", "GET", "/status", nil,
			record("allow", "pass_through", 200, "other", "", "", "", "", "", "GET", "/status", "", "")},
		{"passed through, the backend's own token, proxied-user header ignored", "GET", devices, withHeader(bearer("backend-token"), "X-Proxied-User", "alice"),
			record("allow", "pass_through", 200, "other", "", "", "", "", "", "GET", devices, "", "")},
		{"passed through, someone else's Basic", "GET", devices, http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}},
			record("allow", "pass_through", 200, "other", "", "", "", "", "", "GET", devices, "", "")},
	})
	bad, _ := policy.NewToken()
	for range 2 {
		g.do("GET", devices, bearer(bad))
	}
	runAuditCases(t, g, auditPath, []auditCase{
		{"locked out", "GET", devices, bearer(iss.Token),
			record("deny", "too_many_failures", 429, "", "", "", "", "", "", "GET", devices, "", "")},
		{"locked out, even for pass-through", "GET", "/status", nil,
			record("deny", "too_many_failures", 429, "", "", "", "", "", "", "GET", "/status", "", "")},
	})
}
