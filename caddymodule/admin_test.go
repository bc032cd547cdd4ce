package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestAdminUserLifecycle drives every team route, under an org and under a
// product, and proves each credential change is enforced by the gateway on
// the very next request.
func TestAdminUserLifecycle(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off"}})
	for _, tc := range []struct {
		prefix, devices string
		product         *int64
	}{
		{"/v1/orgs/acme", "/v1/products/1337/devices", nil},
		{"/v1/products/my-product-v1", "/v1/products/1337/devices", ptr(int64(1337))},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			a.t = t
			c := a.createVia(tc.prefix, map[string]any{"friendly_name": "Lister", "scopes": []string{"devices:list"}})
			u := c.Created
			if !u.IsProgrammatic || u.Org != "acme" || !equalProduct(u.Product, tc.product) || u.FriendlyName != "Lister" {
				t.Fatalf("created user %+v", u.UserView)
			}
			token, secret, keyA := u.Tokens[0].Token, u.Secret, u.Keys[0]
			base := tc.prefix + "/team/" + u.Username

			if s, code := a.gatewayStatus(tc.devices, bearer(token)); s != 200 {
				t.Fatalf("new user's token: %d %s", s, code)
			}
			if s, code := a.gatewayStatus(tc.devices, basic(u.Username, keyA.Value, secret)); s != 200 {
				t.Fatalf("new user's key and secret: %d %s", s, code)
			}

			// List and get show the user, never a credential value.
			var list struct{ Team []UserView }
			a.must("GET", tc.prefix+"/team", nil, &list)
			if len(list.Team) != 1 || list.Team[0].Username != u.Username {
				t.Fatalf("team %+v, want just %s", list.Team, u.Username)
			}
			r := a.call("GET", base, nil)
			if r.Status != 200 || strings.Contains(string(r.Body), token) || strings.Contains(string(r.Body), secret) || strings.Contains(string(r.Body), keyA.Value) {
				t.Fatalf("GET user: %d %s", r.Status, r.Body)
			}
			var one struct{ User UserView }
			a.must("GET", base, nil, &one)
			if one.User.TokenID != policy.TokenIDOf(policy.HashOf(token)) || len(one.User.Keys) != 1 || one.User.Keys[0].ID != keyA.ID {
				t.Fatalf("GET user: %+v", one.User)
			}
			if one.User.LastUsedAt == nil || time.Since(*one.User.LastUsedAt) > time.Minute {
				t.Fatalf("last_used_at after gateway requests: %v", one.User.LastUsedAt)
			}

			// A change that grants nothing keeps the token.
			var up updatedResponse
			a.must("PUT", base, map[string]any{"friendly_name": "Renamed"}, &up)
			if up.TokenReplaced || up.User.Tokens != nil || up.User.FriendlyName != "Renamed" {
				t.Fatalf("rename: %+v", up)
			}
			if s, _ := a.gatewayStatus(tc.devices, bearer(token)); s != 200 {
				t.Fatalf("token after rename: %d", s)
			}

			// A privilege change replaces it: the old token fails on the
			// very next request, the new one works.
			a.must("PUT", base, map[string]any{"scopes": []string{"devices:list", "devices:get"}}, &up)
			if !up.TokenReplaced || len(up.User.Tokens) != 1 || up.User.Tokens[0].Token == token {
				t.Fatalf("scope change: %+v", up)
			}
			if s, code := a.gatewayStatus(tc.devices, bearer(token)); s != 401 || code != "invalid_credentials" {
				t.Fatalf("old token after scope change: %d %s, want 401 invalid_credentials", s, code)
			}
			token = up.User.Tokens[0].Token
			if s, _ := a.gatewayStatus(tc.devices+"/dev1", bearer(token)); s != 200 {
				t.Fatalf("new token with the new scope: %d", s)
			}
			if s, _ := a.gatewayStatus(tc.devices, basic(u.Username, keyA.Value, secret)); s != 200 {
				t.Fatalf("key and secret after an update: %d; an update must not touch them", s)
			}

			// Rotating the token.
			var rot struct{ Token string }
			a.must("POST", base+"/token", nil, &rot)
			if s, _ := a.gatewayStatus(tc.devices, bearer(token)); s != 401 {
				t.Fatalf("token after rotation: %d", s)
			}
			if s, _ := a.gatewayStatus(tc.devices, bearer(rot.Token)); s != 200 {
				t.Fatalf("rotated token: %d", s)
			}
			token = rot.Token

			// Regenerating the Secret: the old one fails at once.
			var sec struct{ Secret string }
			a.must("POST", base+"/secret", nil, &sec)
			if s, _ := a.gatewayStatus(tc.devices, basic(u.Username, keyA.Value, secret)); s != 401 {
				t.Fatalf("old secret: %d", s)
			}
			if s, _ := a.gatewayStatus(tc.devices, basic(u.Username, keyA.Value, sec.Secret)); s != 200 {
				t.Fatalf("new secret: %d", s)
			}
			secret = sec.Secret

			// Key rotation: add B, both work; delete A, only B works.
			var add struct{ Key IssuedKey }
			a.must("POST", base+"/keys", nil, &add)
			keyB := add.Key
			for name, k := range map[string]IssuedKey{"A": keyA, "B": keyB} {
				if s, _ := a.gatewayStatus(tc.devices, basic(u.Username, k.Value, secret)); s != 200 {
					t.Fatalf("key %s while both exist: %d", name, s)
				}
			}
			a.must("DELETE", base+"/keys/"+keyA.ID, nil, nil)
			if s, _ := a.gatewayStatus(tc.devices, basic(u.Username, keyA.Value, secret)); s != 401 {
				t.Fatalf("key A after its deletion: %d", s)
			}
			if s, _ := a.gatewayStatus(tc.devices, basic(u.Username, keyB.Value, secret)); s != 200 {
				t.Fatalf("key B after A's deletion: %d", s)
			}
			if r := a.call("DELETE", base+"/keys/"+keyA.ID, nil); r.Status != 404 || r.Error.Error != "not_found" {
				t.Fatalf("deleting key A twice: %d %s", r.Status, r.Body)
			}
			// The last key may go too (Momentus: deleting keys locks out).
			a.must("DELETE", base+"/keys/"+keyB.ID, nil, nil)
			if s, _ := a.gatewayStatus(tc.devices, basic(u.Username, keyB.Value, secret)); s != 401 {
				t.Fatalf("key B after its deletion: %d", s)
			}

			// Deleting the user: everything stops at once.
			a.must("DELETE", base, nil, nil)
			if s, _ := a.gatewayStatus(tc.devices, bearer(token)); s != 401 {
				t.Fatalf("token of a deleted user: %d", s)
			}
			if r := a.call("GET", base, nil); r.Status != 404 || r.Error.Error != "not_found" {
				t.Fatalf("GET deleted user: %d %s", r.Status, r.Body)
			}
			a.must("GET", tc.prefix+"/team", nil, &list)
			if len(list.Team) != 0 {
				t.Fatalf("team after delete: %+v", list.Team)
			}
		})
	}
}

func equalProduct(got, want *int64) bool {
	if got == nil || want == nil {
		return got == want
	}
	return *got == *want
}

// TestAdminKeyOverlapWindow proves previous_keys_expire_at ends the other
// keys at that moment, and a key's own expires_at ends it.
func TestAdminKeyOverlapWindow(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off"}})
	c := a.createVia("/v1/orgs/acme", map[string]any{"scopes": []string{"devices:list"}})
	base := "/v1/orgs/acme/team/" + c.Created.Username
	end := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	var add struct{ Key IssuedKey }
	a.must("POST", base+"/keys", map[string]any{"previous_keys_expire_at": end.Format(time.RFC3339)}, &add)
	var one struct{ User UserView }
	a.must("GET", base, nil, &one)
	if len(one.User.Keys) != 2 || one.User.Keys[0].ExpiresAt == nil || !one.User.Keys[0].ExpiresAt.Equal(end) || one.User.Keys[1].ExpiresAt != nil {
		t.Fatalf("keys after an overlap rotation: %+v", one.User.Keys)
	}
	// Both keys work inside the window.
	for _, k := range []string{c.Created.Keys[0].Value, add.Key.Value} {
		if s, _ := a.gatewayStatus("/v1/products/1337/devices", basic(c.Created.Username, k, c.Created.Secret)); s != 200 {
			t.Fatalf("key inside the overlap window: %d", s)
		}
	}
	for _, body := range []map[string]any{
		{"expires_at": "2001-01-01T00:00:00Z"},
		{"previous_keys_expire_at": "2001-01-01T00:00:00Z"},
		{"expires_at": "tomorrow"},
	} {
		r := a.call("POST", base+"/keys", body)
		field := ""
		for k := range body {
			field = k
		}
		if r.Status != 400 || !strings.HasPrefix(r.Error.Description, field+":") {
			t.Errorf("POST keys %v: %d %s, want 400 naming %s", body, r.Status, r.Body, field)
		}
	}
}

// TestAdminTenantIsolation proves a user is reachable only through its own
// org's or product's path, and that a 404 never says it exists elsewhere.
func TestAdminTenantIsolation(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	orgUser := a.createVia("/v1/orgs/acme", map[string]any{"username": "acme-bot", "scopes": []string{"devices:list"}}).Created
	prodUser := a.createVia("/v1/products/1337", map[string]any{"username": "p1337-bot", "scopes": []string{"devices:list"}}).Created
	a.createVia("/v1/orgs/globex", map[string]any{"username": "globex-bot", "scopes": []string{"devices:list"}})

	lists := map[string][]string{
		"/v1/orgs/acme":              {"acme-bot"},
		"/v1/orgs/acme-does-not-use": nil,
		"/v1/orgs/globex":            {"globex-bot"},
		"/v1/products/1337":          {"p1337-bot"},
		"/v1/products/my-product-v1": {"p1337-bot"},
		"/v1/products/4242":          {},
	}
	for prefix, want := range lists {
		r := a.call("GET", prefix+"/team", nil)
		if want == nil {
			if r.Status != 400 || !strings.HasPrefix(r.Error.Description, "org:") {
				t.Errorf("GET %s/team: %d %s, want 400 naming org", prefix, r.Status, r.Body)
			}
			continue
		}
		var list struct{ Team []UserView }
		a.must("GET", prefix+"/team", nil, &list)
		var got []string
		for _, u := range list.Team {
			got = append(got, u.Username)
		}
		if !slices.Equal(got, want) {
			t.Errorf("GET %s/team = %v, want %v", prefix, got, want)
		}
	}

	// Another tenant's path: the same 404 as for a user that does not
	// exist, and nothing changes.
	elsewhere := []struct{ prefix, user string }{
		{"/v1/orgs/globex", orgUser.Username},
		{"/v1/products/1337", orgUser.Username},
		{"/v1/products/4242", prodUser.Username},
		{"/v1/orgs/acme", prodUser.Username},
		{"/v1/orgs/globex", prodUser.Username},
	}
	for _, e := range elsewhere {
		for _, m := range []struct {
			method, suffix string
			body           any
		}{
			{"GET", "", nil},
			{"PUT", "", map[string]any{"scopes": []string{"devices:get"}}},
			{"DELETE", "", nil},
			{"POST", "/token", nil},
			{"POST", "/secret", nil},
			{"POST", "/keys", nil},
			{"DELETE", "/keys/0123456789abcdef", nil},
		} {
			path := e.prefix + "/team/" + e.user + m.suffix
			r := a.call(m.method, path, m.body)
			ghost := a.call(m.method, e.prefix+"/team/nobody-at-all"+m.suffix, m.body)
			if r.Status != 404 || r.Error.Error != "not_found" {
				t.Errorf("%s %s: %d %s, want 404", m.method, path, r.Status, r.Body)
			}
			if want := strings.ReplaceAll(ghost.Error.Description, "nobody-at-all", e.user); r.Error.Description != want {
				t.Errorf("%s %s: 404 says %q, but for an unknown user %q: the body must not tell them apart", m.method, path, r.Error.Description, want)
			}
		}
	}
	for _, u := range []createdUser{orgUser, prodUser} {
		got, err := a.app.store.GetUser(context.Background(), u.Username)
		if err != nil || got.Version != 1 || got.TokenHash != policy.HashOf(u.Tokens[0].Token) {
			t.Errorf("user %s was changed through another tenant's path: %+v, %v", u.Username, got, err)
		}
	}
}

type createdUser = struct {
	UserView
	Tokens []TokenView `json:"tokens"`
	Secret string      `json:"secret"`
	Keys   []IssuedKey `json:"keys"`
}

// TestAdminTokenReplacementRule checks the documented rule field by field.
func TestAdminTokenReplacementRule(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	inAnHour := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	inADay := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name    string
		initial map[string]any
		update  map[string]any
		replace bool
	}{
		{"friendly_name", nil, map[string]any{"friendly_name": "x"}, false},
		{"description", nil, map[string]any{"description": "x"}, false},
		{"same scopes reordered", map[string]any{"scopes": []string{"devices:list", "devices:get"}}, map[string]any{"scopes": []string{"devices:get", "devices:list", "devices:get"}}, false},
		{"scope added", nil, map[string]any{"scopes": []string{"devices:list", "devices:get"}}, true},
		{"scope removed", map[string]any{"scopes": []string{"devices:list", "devices:get"}}, map[string]any{"scopes": []string{"devices:list"}}, true},
		{"role added", nil, map[string]any{"roles": []string{"device-reader"}}, true},
		{"allowed_endpoints", nil, map[string]any{"allowed_endpoints": []string{"list-devices"}}, true},
		{"allow_proxied_users", nil, map[string]any{"allow_proxied_users": true}, true},
		{"allowed_proxied_users", map[string]any{"allow_proxied_users": true}, map[string]any{"allowed_proxied_users": []string{"alice"}}, true},
		{"resource_constraints", nil, map[string]any{"resource_constraints": map[string][]string{"device": {"d1"}}}, true},
		{"retiring", nil, map[string]any{"retired": true}, false},
		{"un-retiring", map[string]any{"retired": true}, map[string]any{"retired": false}, true},
		{"setting expires_at", nil, map[string]any{"expires_at": inADay}, false},
		{"earlier expires_at", map[string]any{"expires_at": inADay}, map[string]any{"expires_at": inAnHour}, false},
		{"later expires_at", map[string]any{"expires_at": inAnHour}, map[string]any{"expires_at": inADay}, true},
		{"clearing expires_at", map[string]any{"expires_at": inAnHour}, map[string]any{"expires_at": ""}, true},
		{"setting idle_timeout", nil, map[string]any{"idle_timeout": "720h"}, false},
		{"longer idle_timeout", map[string]any{"idle_timeout": "1h"}, map[string]any{"idle_timeout": "2h"}, true},
		{"clearing idle_timeout", map[string]any{"idle_timeout": "1h"}, map[string]any{"idle_timeout": ""}, true},
		{"nothing", nil, map[string]any{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.t = t
			spec := map[string]any{"scopes": []string{"devices:list"}}
			for k, v := range tt.initial {
				spec[k] = v
			}
			c := a.createVia("/v1/orgs/acme", spec).Created
			var up updatedResponse
			a.must("PUT", "/v1/orgs/acme/team/"+c.Username, tt.update, &up)
			if up.TokenReplaced != tt.replace || (len(up.User.Tokens) == 1) != tt.replace {
				t.Fatalf("token_replaced = %v with tokens %v, want %v", up.TokenReplaced, up.User.Tokens, tt.replace)
			}
			stored, err := a.app.store.GetUser(context.Background(), c.Username)
			if err != nil {
				t.Fatal(err)
			}
			want := policy.HashOf(c.Tokens[0].Token)
			if tt.replace {
				want = policy.HashOf(up.User.Tokens[0].Token)
			}
			if stored.TokenHash != want {
				t.Fatalf("the stored token is not the one the response implies")
			}
		})
	}
}

// TestAdminInactiveUsersRejected proves retired, expired and idle users
// get 401 from the gateway as soon as the update is acknowledged.
func TestAdminInactiveUsersRejected(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off"}})
	ctx := context.Background()
	devices := "/v1/products/1337/devices"
	newUser := func() createdUser {
		c := a.createVia("/v1/orgs/acme", map[string]any{"scopes": []string{"devices:list"}}).Created
		if s, _ := a.gatewayStatus(devices, bearer(c.Tokens[0].Token)); s != 200 {
			t.Fatalf("fresh user: %d", s)
		}
		return c
	}

	retired := newUser()
	a.must("PUT", "/v1/orgs/acme/team/"+retired.Username, map[string]any{"retired": true}, nil)
	expired := newUser()
	a.must("PUT", "/v1/orgs/acme/team/"+expired.Username, map[string]any{"expires_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)}, nil)

	// Idle: the user was created, and last used, two hours ago; an idle
	// timeout of one hour then has passed.
	idle := newUser()
	if _, err := a.app.store.UpdateUser(ctx, idle.Username, func(u *policy.APIUser) error {
		u.CreatedAt = time.Now().Add(-2 * time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The gateway saw it a moment ago; a fresh process would not have.
	a.app.cache.invalidateUser(idle.Username)
	a.must("PUT", "/v1/orgs/acme/team/"+idle.Username, map[string]any{"idle_timeout": "1h"}, nil)

	for _, tc := range []struct {
		u    createdUser
		code string
	}{{retired, "user_retired"}, {expired, "user_expired"}, {idle, "user_idle_expired"}} {
		for _, h := range []http.Header{bearer(tc.u.Tokens[0].Token), basic(tc.u.Username, tc.u.Keys[0].Value, tc.u.Secret)} {
			if s, code := a.gatewayStatus(devices, h); s != 401 || code != tc.code {
				t.Errorf("%s: gateway says %d %s, want 401 %s", tc.u.Username, s, code, tc.code)
			}
		}
	}
}

// TestAdminValidation proves every invalid request is refused with 400
// naming the field, and that nothing is half written.
func TestAdminValidation(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	ctx := context.Background()
	existing := a.createVia("/v1/orgs/acme", map[string]any{"username": "keeper", "friendly_name": "Keeper", "scopes": []string{"devices:list"}}).Created
	countBefore, _ := a.app.store.CountUsers(ctx)
	lastChange, _ := a.app.store.LastChange(ctx)

	valid := func(extra map[string]any) map[string]any {
		m := map[string]any{"friendly_name": "ok", "scopes": []string{"devices:list", "devices:get"}, "roles": []string{"device-reader"}}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	big := `{"description": "` + strings.Repeat("x", maxBodyBytes) + `"}`
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		field  string
		status int
	}{
		{"unknown scope", "POST", "/v1/orgs/acme/team", valid(map[string]any{"scopes": []string{"devices:list", "devices:explode"}}), "scopes", 400},
		{"malformed scope", "POST", "/v1/orgs/acme/team", valid(map[string]any{"scopes": []string{"Devices"}}), "scopes", 400},
		{"unknown endpoint", "POST", "/v1/orgs/acme/team", valid(map[string]any{"allowed_endpoints": []string{"list-devices", "nope"}}), "allowed_endpoints", 400},
		{"unknown role", "POST", "/v1/orgs/acme/team", valid(map[string]any{"roles": []string{"root"}}), "roles", 400},
		{"bad username", "POST", "/v1/orgs/acme/team", valid(map[string]any{"username": "no spaces please"}), "username", 400},
		{"bad idle timeout", "POST", "/v1/orgs/acme/team", valid(map[string]any{"idle_timeout": "a while"}), "idle_timeout", 400},
		{"bad expiry", "POST", "/v1/orgs/acme/team", valid(map[string]any{"expires_at": "next tuesday"}), "expires_at", 400},
		{"bad proxied user", "POST", "/v1/orgs/acme/team", valid(map[string]any{"allowed_proxied_users": []string{"a:b"}}), "allowed_proxied_users", 400},
		{"constraint on unknown variable", "POST", "/v1/orgs/acme/team", valid(map[string]any{"resource_constraints": map[string][]string{"planet": {"x"}}}), "resource_constraints", 400},
		{"unknown field", "POST", "/v1/orgs/acme/team", valid(map[string]any{"scope": "devices:list"}), "scope", 400},
		{"read-only field", "POST", "/v1/orgs/acme/team", valid(map[string]any{"org": "globex"}), "org", 400},
		{"wrong type", "POST", "/v1/orgs/acme/team", valid(map[string]any{"scopes": "devices:list"}), "scopes", 400},
		{"not JSON", "POST", "/v1/orgs/acme/team", "friendly_name=x&scopes=devices:list", "body", 400},
		{"two objects", "POST", "/v1/orgs/acme/team", `{"friendly_name": "a"} {}`, "body", 400},
		{"empty body", "POST", "/v1/orgs/acme/team", "", "body", 400},
		{"body too large", "POST", "/v1/orgs/acme/team", big, "body", 400},
		{"unknown org", "POST", "/v1/orgs/initech/team", valid(nil), "org", 400},
		{"unknown product", "POST", "/v1/products/777/team", valid(nil), "product", 400},
		{"taken username", "POST", "/v1/products/1337/team", valid(map[string]any{"username": "keeper"}), "username", 409},
		{"bad username in path", "GET", "/v1/orgs/acme/team/bad%20name", nil, "username", 400},
		{"bad key id", "DELETE", "/v1/orgs/acme/team/keeper/keys/xyz", nil, "key_id", 400},
		{"update with unknown scope", "PUT", "/v1/orgs/acme/team/keeper", map[string]any{"friendly_name": "Changed", "scopes": []string{"devices:list", "devices:explode"}}, "scopes", 400},
		{"update changing username", "PUT", "/v1/orgs/acme/team/keeper", map[string]any{"username": "other"}, "username", 400},
		{"update with read-only field", "PUT", "/v1/orgs/acme/team/keeper", map[string]any{"friendly_name": "Changed", "created_at": "2020-01-01T00:00:00Z"}, "created_at", 400},
		// Read strictly, so that a validating proxy in front and this API
		// can never read one body two ways.
		{"duplicate key", "POST", "/v1/orgs/acme/team", `{"scopes": ["devices:list"], "scopes": ["devices:update"]}`, "scopes", 400},
		{"duplicate key in an update", "PUT", "/v1/orgs/acme/team/keeper", `{"scopes": ["devices:list"], "friendly_name": "x", "scopes": ["devices:update"]}`, "scopes", 400},
		{"duplicate nested key", "POST", "/v1/orgs/acme/team", `{"scopes": ["devices:list"], "rate_limit": {"requests": 1, "window": "1m", "requests": 0}}`, "rate_limit.requests", 400},
		{"duplicate constraint", "POST", "/v1/orgs/acme/team", `{"scopes": ["devices:get"], "resource_constraints": {"device": ["a"], "device": ["b"]}}`, "resource_constraints.device", 400},
		{"field name in upper case", "POST", "/v1/orgs/acme/team", `{"SCOPES": ["devices:list"]}`, "SCOPES", 400},
		{"field name in mixed case", "PUT", "/v1/orgs/acme/team/keeper", `{"Friendly_Name": "x"}`, "Friendly_Name", 400},
		{"nested field name in another case", "POST", "/v1/orgs/acme/team", `{"scopes": ["devices:list"], "rate_limit": {"Requests": 1, "window": "1m"}}`, "rate_limit.Requests", 400},
		{"invalid UTF-8", "POST", "/v1/orgs/acme/team", "{\"friendly_name\": \"caf\xe9\", \"scopes\": [\"devices:list\"]}", "friendly_name", 400},
		{"invalid UTF-8 in a list", "POST", "/v1/orgs/acme/team", "{\"scopes\": [\"devices:list\xff\"]}", "scopes", 400},
		{"lone surrogate escape", "POST", "/v1/orgs/acme/team", `{"friendly_name": "a\udc00b", "scopes": ["devices:list"]}`, "friendly_name", 400},
		{"high surrogate without its pair", "POST", "/v1/orgs/acme/team", `{"description": "a\ud83d", "scopes": ["devices:list"]}`, "description", 400},
		{"right-to-left override in a name", "POST", "/v1/orgs/acme/team", valid(map[string]any{"friendly_name": "admin\u202egnp.exe"}), "friendly_name", 400},
		{"bidi isolate in a description", "PUT", "/v1/orgs/acme/team/keeper", map[string]any{"description": "a\u2067b"}, "description", 400},
		{"bidi control in a constraint", "POST", "/v1/orgs/acme/team", valid(map[string]any{"resource_constraints": map[string][]string{"device": {"ab\u202ecd"}}}), "resource_constraints", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.t = t
			r := a.call(tt.method, tt.path, tt.body)
			wantCode := "invalid_request"
			if tt.status == 409 {
				wantCode = "conflict"
			}
			if r.Status != tt.status || r.Error.Error != wantCode || r.Error.OK {
				t.Fatalf("status %d, body %s; want %d %s", r.Status, r.Body, tt.status, wantCode)
			}
			if !strings.HasPrefix(r.Error.Description, tt.field+":") {
				t.Errorf("error_description %q does not begin with the field %q", r.Error.Description, tt.field)
			}
		})
	}
	a.t = t

	// Nothing was written: no user, no change record, the existing user
	// as it was.
	if n, _ := a.app.store.CountUsers(ctx); n != countBefore {
		t.Errorf("%d users after refused requests, want %d", n, countBefore)
	}
	if seq, _ := a.app.store.LastChange(ctx); seq != lastChange {
		t.Errorf("refused requests appended change records (%d -> %d)", lastChange, seq)
	}
	var list struct{ Team []UserView }
	a.must("GET", "/v1/orgs/acme/team", nil, &list)
	if len(list.Team) != 1 || list.Team[0].FriendlyName != "Keeper" || list.Team[0].TokenID != policy.TokenIDOf(policy.HashOf(existing.Tokens[0].Token)) {
		t.Errorf("team after refused requests: %+v", list.Team)
	}
}

// TestAdminRefusesAPIUsers puts the gateway before the management handler
// in one route, as a careless operator might: a request the gateway
// authenticated as an API user must be refused.
func TestAdminRefusesAPIUsers(t *testing.T) {
	a := startAdmin(t, adminOptions{
		gatewayOptions: gatewayOptions{appExtra: "endpoint team-list GET /v1/orgs/{org}/team team:list"},
		gatewaySite: `	route {
		api_users
		api_users_admin
	}`,
	})
	c := a.createVia("/v1/orgs/acme", map[string]any{"scopes": []string{"team:list"}}).Created
	r := a.do("GET", "/v1/orgs/acme/team", bearer(c.Tokens[0].Token))
	if r.Status != http.StatusForbidden || r.Error.Error != "api_user_forbidden" {
		t.Fatalf("API user on the management API: %d %s", r.Status, r.Body)
	}
	// The same request on the operator's management site works.
	a.must("GET", "/v1/orgs/acme/team", nil, nil)
}

// TestAdminConcurrentChanges sends parallel updates and key additions for
// one user and proves that every acknowledged change is stored: none is
// lost, and the stored token is the last one handed out.
func TestAdminConcurrentChanges(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off"}})
	c := a.createVia("/v1/orgs/acme", map[string]any{"username": "busy", "scopes": []string{"devices:list"}}).Created
	base := "/v1/orgs/acme/team/busy"
	scopeSets := [][]string{{"devices:list"}, {"devices:list", "devices:get"}, {"devices:get"}}

	const workers = 20
	var (
		mu      sync.Mutex
		acked   int
		keyIDs  []string
		tokens  = map[policy.Hash]bool{policy.HashOf(c.Tokens[0].Token): true}
		names   = map[string]bool{"": true}
		wg      sync.WaitGroup
		failure = make(chan string, workers)
	)
	for i := range workers {
		wg.Go(func() {
			var r adminResult
			if i%2 == 0 {
				name := fmt.Sprintf("writer-%d", i)
				r = a.call("PUT", base, map[string]any{"friendly_name": name, "scopes": scopeSets[i%len(scopeSets)]})
				if r.Status == 200 {
					var up updatedResponse
					_ = json.Unmarshal(r.Body, &up)
					mu.Lock()
					names[name] = true
					for _, tk := range up.User.Tokens {
						tokens[policy.HashOf(tk.Token)] = true
					}
					acked++
					mu.Unlock()
				}
			} else {
				r = a.call("POST", base+"/keys", nil)
				if r.Status == 200 {
					var add struct{ Key IssuedKey }
					_ = json.Unmarshal(r.Body, &add)
					mu.Lock()
					keyIDs = append(keyIDs, add.Key.ID)
					acked++
					mu.Unlock()
				}
			}
			if r.Status != 200 {
				failure <- fmt.Sprintf("worker %d: %d %s", i, r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	close(failure)
	for f := range failure {
		t.Error(f)
	}

	u, err := a.app.store.GetUser(context.Background(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1 + acked); u.Version != want {
		t.Errorf("version %d after %d acknowledged changes, want %d: a change was lost", u.Version, acked, want)
	}
	stored := map[string]bool{}
	for _, k := range u.Keys {
		stored[k.ID] = true
	}
	for _, id := range keyIDs {
		if !stored[id] {
			t.Errorf("acknowledged key %s is not stored", id)
		}
	}
	if len(u.Keys) != 1+len(keyIDs) {
		t.Errorf("%d keys stored, want %d", len(u.Keys), 1+len(keyIDs))
	}
	if !tokens[u.TokenHash] {
		t.Errorf("the stored token is none of the tokens handed out")
	}
	if !names[u.FriendlyName] {
		t.Errorf("friendly_name %q was never sent", u.FriendlyName)
	}
	if err := a.app.store.Check(context.Background()); err != nil {
		t.Errorf("store integrity: %v", err)
	}
}

// TestAdminRolesAndCatalog manages roles, orgs and products through the
// API, and proves the gateway follows at once and that Caddyfile entries
// are read-only.
func TestAdminRolesAndCatalog(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off"}})

	// Roles.
	var roles struct{ Roles []RoleView }
	a.must("GET", "/v1/roles", nil, &roles)
	if len(roles.Roles) != 1 || roles.Roles[0].Name != "device-reader" || roles.Roles[0].Source != SourceConfig {
		t.Fatalf("roles: %+v", roles.Roles)
	}
	expect := func(method, path string, body any, status int, code string) adminResult {
		t.Helper()
		r := a.call(method, path, body)
		if r.Status != status || r.Error.Error != code {
			t.Fatalf("%s %s: %d %s, want %d %s", method, path, r.Status, r.Body, status, code)
		}
		return r
	}
	expect("PUT", "/v1/roles/device-reader", map[string]any{"scopes": []string{"devices:get"}}, 409, "conflict")
	expect("DELETE", "/v1/roles/device-reader", nil, 409, "conflict")
	expect("PUT", "/v1/roles/caller", map[string]any{"scopes": []string{"devices.function:explode"}}, 400, "invalid_request")
	expect("PUT", "/v1/roles/Caller", map[string]any{"scopes": []string{"devices:list"}}, 400, "invalid_request")
	expect("PUT", "/v1/roles/caller", map[string]any{"scopes": []string{}}, 400, "invalid_request")
	expect("PUT", "/v1/roles/caller", map[string]any{"description": "calls \u202efunctions", "scopes": []string{"devices:list"}}, 400, "invalid_request")
	var role struct {
		Role          RoleView
		UsersAffected *int `json:"users_affected"`
	}
	a.must("PUT", "/v1/roles/caller", map[string]any{"description": "calls functions", "scopes": []string{"devices.function:call"}}, &role)
	if role.Role.Source != SourceStore || !slices.Equal(role.Role.Scopes, []string{"devices.function:call"}) || role.UsersAffected == nil || *role.UsersAffected != 0 {
		t.Fatalf("PUT role: %+v, users_affected %v, want 0", role.Role, role.UsersAffected)
	}
	a.must("GET", "/v1/roles/caller", nil, &role)
	c := a.createVia("/v1/orgs/acme", map[string]any{"roles": []string{"caller"}}).Created
	call := "/v1/products/1337/devices/d1/reboot"
	if r := a.do("POST", call, bearer(c.Tokens[0].Token)); r.Status != 200 {
		t.Fatalf("user with a store role: %d %s", r.Status, r.Body)
	}
	expect("DELETE", "/v1/roles/caller", nil, 409, "conflict")
	// Editing the role changes its users' rights at once, and the answer
	// says how many users that is.
	a.createVia("/v1/products/1337", map[string]any{"roles": []string{"caller"}})
	a.createVia("/v1/orgs/acme", map[string]any{"roles": []string{"device-reader"}})
	a.must("PUT", "/v1/roles/caller", map[string]any{"scopes": []string{"devices:list"}}, &role)
	if role.UsersAffected == nil || *role.UsersAffected != 2 {
		t.Fatalf("PUT of a role two users hold: users_affected %v, want 2", role.UsersAffected)
	}
	if r := a.do("POST", call, bearer(c.Tokens[0].Token)); r.Status != 403 {
		t.Fatalf("after the role lost the scope: %d %s", r.Status, r.Body)
	}
	a.must("DELETE", "/v1/orgs/acme/team/"+c.Username, nil, nil)
	var team struct{ Team []UserView }
	a.must("GET", "/v1/products/1337/team", nil, &team)
	for _, u := range team.Team {
		if slices.Contains(u.Roles, "caller") {
			a.must("DELETE", "/v1/products/1337/team/"+u.Username, nil, nil)
		}
	}
	a.must("DELETE", "/v1/roles/caller", nil, nil)
	expect("GET", "/v1/roles/caller", nil, 404, "not_found")
	expect("DELETE", "/v1/roles/caller", nil, 404, "not_found")

	// Orgs and products.
	expect("PUT", "/v1/orgs/acme", map[string]any{"slug": "acme-corp"}, 409, "conflict")
	expect("DELETE", "/v1/orgs/acme", nil, 409, "conflict")
	expect("PUT", "/v1/orgs/acme/products/1337", map[string]any{"slug": "renamed"}, 409, "conflict")
	expect("DELETE", "/v1/orgs/acme/products/my-product-v1", nil, 409, "conflict")
	expect("PUT", "/v1/orgs/Initech", nil, 400, "invalid_request")
	expect("PUT", "/v1/orgs/initech", map[string]any{"slug": "acme"}, 409, "conflict")
	var org struct{ Org OrgView }
	a.must("PUT", "/v1/orgs/initech", map[string]any{"slug": "initech-corp"}, &org)
	if org.Org.ID != "initech" || org.Org.Slug != "initech-corp" || org.Org.Source != SourceStore {
		t.Fatalf("PUT org: %+v", org.Org)
	}
	expect("PUT", "/v1/orgs/initech/products/tps", nil, 400, "invalid_request")
	expect("PUT", "/v1/orgs/initech/products/77", map[string]any{"slug": "my-product-v1"}, 409, "conflict")
	expect("PUT", "/v1/orgs/nowhere/products/77", nil, 400, "invalid_request")
	var product struct{ Product ProductView }
	a.must("PUT", "/v1/orgs/initech-corp/products/77", map[string]any{"slug": "tps-reports"}, &product)
	if product.Product.Org != "initech" || product.Product.ID != 77 {
		t.Fatalf("PUT product: %+v", product.Product)
	}
	a.must("GET", "/v1/orgs/initech/products/tps-reports", nil, &product)
	var products struct{ Products []ProductView }
	a.must("GET", "/v1/orgs/initech/products", nil, &products)
	if len(products.Products) != 1 {
		t.Fatalf("products: %+v", products.Products)
	}
	var orgs struct{ Orgs []OrgView }
	a.must("GET", "/v1/orgs", nil, &orgs)
	if len(orgs.Orgs) != 3 {
		t.Fatalf("orgs: %+v", orgs.Orgs)
	}

	// A user of the new product works at the gateway at once.
	pu := a.createVia("/v1/products/tps-reports", map[string]any{"scopes": []string{"devices:list"}}).Created
	if r := a.do("GET", "/v1/products/77/devices", bearer(pu.Tokens[0].Token)); r.Status != 200 {
		t.Fatalf("user of a new product: %d %s", r.Status, r.Body)
	}
	expect("DELETE", "/v1/orgs/initech/products/77", nil, 409, "conflict")
	expect("DELETE", "/v1/orgs/initech", nil, 409, "conflict")
	a.must("DELETE", "/v1/products/77/team/"+pu.Username, nil, nil)
	a.must("DELETE", "/v1/orgs/initech/products/77", nil, nil)
	a.must("DELETE", "/v1/orgs/initech", nil, nil)
	expect("GET", "/v1/orgs/initech", nil, 404, "not_found")
	expect("GET", "/v1/orgs/acme/products/77", nil, 404, "not_found")

	var eps struct {
		Endpoints []EndpointView
		Scopes    []string
	}
	a.must("GET", "/v1/endpoints", nil, &eps)
	if len(eps.Endpoints) != 9 || !slices.Contains(eps.Scopes, "devices.function:call") {
		t.Fatalf("endpoints: %+v", eps)
	}
}

// TestAdminRouting covers 404 and 405 answers, all in JSON.
func TestAdminRouting(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	tests := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"PATCH", "/v1/orgs/acme/team/x", 405, "method_not_allowed", "GET, PUT, DELETE"},
		{"DELETE", "/v1/roles", 405, "method_not_allowed", "GET"},
		{"GET", "/v1/orgs/acme/team/x/secret", 405, "method_not_allowed", "POST"},
		{"GET", "/v2/anything", 404, "not_found", ""},
		{"GET", "/v1/roles/", 404, "not_found", ""},
		{"GET", "/v1/orgs/acme/team/../../globex/team", 404, "not_found", ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, a.adminURL+"/", nil)
		req.URL.Opaque = tt.path
		resp, err := a.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || body.Error != tt.code || resp.Header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d %q Allow %q, want %d %q Allow %q", tt.method, tt.path, resp.StatusCode, body.Error, resp.Header.Get("Allow"), tt.status, tt.code, tt.allow)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s %s: Cache-Control %q", tt.method, tt.path, cc)
		}
	}
}

// TestAdminAudit proves every change is audited once, names the actor from
// {http.auth.user.id} and never carries a credential value.
func TestAdminAudit(t *testing.T) {
	// bcrypt of "hunter2" at the lowest cost, so the race detector does
	// not make every request take seconds.
	const hash = "$2a$04$Wk.G6Ht29Lqx9wxzwAOK1OLYa2DE3kN0lpl2kSi34R5qmSaRuPrG6"
	if ok, err := (caddyauth.BcryptHash{}).Compare([]byte(hash), []byte("hunter2")); !ok || err != nil {
		t.Fatalf("the test's bcrypt hash does not match: %v", err)
	}
	a := startAdmin(t, adminOptions{adminSite: fmt.Sprintf("\tbasic_auth {\n\t\toperator %s\n\t}", hash)})
	auth := http.Header{"Authorization": {"Basic b3BlcmF0b3I6aHVudGVyMg=="}} // operator:hunter2
	if resp, err := a.client.Get(a.adminURL + "/v1/orgs/acme/team"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("without credentials: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	r := a.call("POST", "/v1/orgs/acme/team", map[string]any{"username": "audited", "scopes": []string{"devices:list"}}, auth)
	if r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var c createdResponse
	_ = json.Unmarshal(r.Body, &c)
	secrets := []string{c.Created.Tokens[0].Token, c.Created.Secret, c.Created.Keys[0].Value}
	steps := []struct{ method, path, action string }{
		{"PUT", "/v1/orgs/acme/team/audited", "update_user"},
		{"POST", "/v1/orgs/acme/team/audited/token", "rotate_token"},
		{"POST", "/v1/orgs/acme/team/audited/secret", "regenerate_secret"},
		{"POST", "/v1/orgs/acme/team/audited/keys", "add_key"},
		{"DELETE", "/v1/orgs/acme/team/audited/keys/" + c.Created.Keys[0].ID, "delete_key"},
		{"DELETE", "/v1/orgs/acme/team/audited", "delete_user"},
	}
	for _, s := range steps {
		var body any
		if s.method == "PUT" {
			body = map[string]any{"scopes": []string{"devices:get"}}
		}
		r := a.call(s.method, s.path, body, auth)
		if r.Status != 200 {
			t.Fatalf("%s %s: %d %s", s.method, s.path, r.Status, r.Body)
		}
		for _, v := range regexp.MustCompile(`apiu_(at|sk|key)_[0-9a-f_]+`).FindAllString(string(r.Body), -1) {
			secrets = append(secrets, v)
		}
	}
	// A refused request writes no change record.
	a.call("PUT", "/v1/orgs/acme/team/ghost", map[string]any{"scopes": []string{"devices:get"}}, auth)

	want := append([]string{"create_user"}, func() []string {
		var out []string
		for _, s := range steps {
			out = append(out, s.action)
		}
		return out
	}()...)
	var recs []map[string]any
	within(5*time.Second, func() bool {
		recs = a.auditRecords()
		return len(recs) >= len(want)
	})
	var got []string
	for _, rec := range recs {
		got = append(got, fmt.Sprint(rec["action"]))
		if rec["by"] != "operator" || rec["client_ip"] != "127.0.0.1" || rec["api_user"] != "audited" || rec["org"] != "acme" {
			t.Errorf("audit record %v: want actor operator, client_ip, api_user and org", rec)
		}
		action := rec["action"]
		if _, ok := rec["after"]; !ok && action != "delete_user" {
			t.Errorf("%v has no after", action)
		}
		if _, ok := rec["before"]; !ok && action != "create_user" {
			t.Errorf("%v has no before", action)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("audited actions %v, want %v", got, want)
	}
	log, err := os.ReadFile(a.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if strings.Contains(string(log), s) {
			t.Errorf("the audit log contains a credential value %.12s…", s)
		}
	}
}

// TestAdminAuditActorIsClientAddress proves the audit log names the client
// address when no authentication handler named the caller.
func TestAdminAuditActorIsClientAddress(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	a.must("PUT", "/v1/roles/auditor", map[string]any{"scopes": []string{"events:get"}}, nil)
	var recs []map[string]any
	within(5*time.Second, func() bool {
		recs = a.auditRecords()
		return len(recs) > 0
	})
	if len(recs) != 1 || recs[0]["by"] != "127.0.0.1" || recs[0]["action"] != "put_role" || recs[0]["role"] != "auditor" {
		t.Fatalf("audit records %v", recs)
	}
}

// TestOpenAPIMatchesRoutes proves the OpenAPI document and the handler's
// route table list exactly the same routes, that every path parameter is
// documented, and that the handler serves the document.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			OperationID string            `json:"operationId"`
			Parameters  []json.RawMessage `json:"parameters"`
			Responses   map[string]any    `json:"responses"`
		} `json:"paths"`
		Components struct {
			Parameters map[string]struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q, want 3.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	varRE := regexp.MustCompile(`\{([a-z_]+)\}`)
	opIDs := map[string]bool{}
	for p, ops := range doc.Paths {
		for method, op := range ops {
			route := strings.ToUpper(method) + " " + p
			documented[route] = true
			if op.OperationID == "" || opIDs[op.OperationID] {
				t.Errorf("%s: operationId %q is empty or repeated", route, op.OperationID)
			}
			opIDs[op.OperationID] = true
			if _, ok := op.Responses["200"]; !ok {
				t.Errorf("%s documents no 200 response", route)
			}
			params := map[string]bool{}
			for _, raw := range op.Parameters {
				var ref struct {
					Ref string `json:"$ref"`
				}
				_ = json.Unmarshal(raw, &ref)
				name := strings.TrimPrefix(ref.Ref, "#/components/parameters/")
				if prm, ok := doc.Components.Parameters[name]; ok && prm.In == "path" {
					params[prm.Name] = true
				}
			}
			for _, m := range varRE.FindAllStringSubmatch(p, -1) {
				if !params[m[1]] {
					t.Errorf("%s does not document its path parameter %s", route, m[1])
				}
			}
		}
	}
	served := map[string]bool{}
	for _, rt := range adminRoutes {
		served[rt.Method+" "+rt.Pattern] = true
	}
	var missing, extra []string
	for r := range served {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for r := range documented {
		if !served[r] {
			extra = append(extra, r)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes the handler serves but openapi.json does not document: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("routes openapi.json documents but the handler does not serve: %v", extra)
	}

	a := startAdmin(t, adminOptions{})
	r := a.call("GET", "/openapi.json", nil)
	if r.Status != 200 || string(r.Body) != string(openAPIDocument) {
		t.Errorf("GET /openapi.json: %d, %d bytes; want the embedded document", r.Status, len(r.Body))
	}
	// Every documented route is routed to its handler: none answers 404
	// or 405 as an unknown route would.
	for route := range documented {
		method, p, _ := strings.Cut(route, " ")
		p = varRE.ReplaceAllStringFunc(p, func(v string) string {
			switch v {
			case "{org}":
				return "acme"
			case "{product}":
				return "1337"
			case "{key_id}":
				return "0123456789abcdef"
			case "{name}":
				return "device-reader"
			}
			return "nobody"
		})
		res := a.call(method, p, nil)
		if res.Status == 405 || (res.Status == 404 && strings.HasPrefix(res.Error.Description, "no management route")) {
			t.Errorf("%s (as %s %s) is not routed: %d %s", route, method, p, res.Status, res.Body)
		}
	}
}
