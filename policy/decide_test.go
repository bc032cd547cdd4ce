package policy

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	c := exampleCatalog(t)
	tn := exampleTenancy(t)
	now := t0.Add(time.Hour)

	user := func(edit func(u *APIUser)) *Principal {
		u := productUser()
		if edit != nil {
			edit(u)
		}
		return Compile(u, map[string][]Scope{"reader": {"devices:get"}})
	}
	plain := user(nil)
	proxying := user(func(u *APIUser) { u.AllowProxiedUsers = true; u.AllowedProxiedUsers = []string{"alice"} })

	get := func(path string) Request { return Request{Method: "GET", Path: path} }
	const device = "/v1/products/my-product-v1/devices/0a1b2c3d"

	tests := []struct {
		name         string
		req          Request
		p            *Principal
		want         Reason
		wantEndpoint string // "" means Decision.Endpoint is nil
		wantProxied  string
	}{
		{"allowed", get(device), plain, Allowed, "get-device", ""},
		{"allowed by role", get(device), user(func(u *APIUser) { u.Scopes = nil; u.Roles = []string{"reader"} }), Allowed, "get-device", ""},
		{"allowed with proxied user", Request{Method: "GET", Path: device, ProxiedUser: "alice", HasProxiedUser: true}, proxying, Allowed, "get-device", "alice"},

		// Step 1: the path.
		{"ambiguous path", get("/v1/products/1337/devices/..%2f..%2fadmin"), plain, AmbiguousPath, "", ""},
		{"ambiguous path before anything", get("/v1/products/1337/devices/%2e%2e"), user(func(u *APIUser) { u.Retired = true }), AmbiguousPath, "", ""},

		// Step 2: the user is active.
		{"retired", get(device), user(func(u *APIUser) { u.Retired = true }), Retired, "", ""},
		{"expired", get(device), user(func(u *APIUser) { u.ExpiresAt = now }), Expired, "", ""},
		{"idle expired", get(device), user(func(u *APIUser) { u.IdleTimeout = time.Hour }), IdleExpired, "", ""},
		{"nil principal", get(device), nil, InvalidCredentials, "", ""},

		// Step 3: the catalog.
		{"no endpoint", get("/v1/products/1337/admin"), plain, NoEndpoint, "", ""},
		{"no endpoint for method", Request{Method: "DELETE", Path: device}, plain, NoEndpoint, "", ""},
		{"no endpoint for trailing slash", get(device + "/"), plain, NoEndpoint, "", ""},
		{"no HEAD for GET", Request{Method: "HEAD", Path: device}, plain, NoEndpoint, "", ""},

		// Step 4: authorization, with the endpoint kept for the audit log.
		{"endpoint not allowed", get(device), user(func(u *APIUser) { u.AllowedEndpoints = []string{"list-devices"} }), EndpointNotAllowed, "get-device", ""},
		{"insufficient scope", get(device), user(func(u *APIUser) { u.Scopes = []Scope{"devices:list"} }), InsufficientScope, "get-device", ""},
		{"tenant mismatch", get("/v1/products/other-product/devices/0a1b2c3d"), plain, TenantMismatch, "get-device", ""},
		{"resource constraint", get(device), user(func(u *APIUser) { u.ResourceConstraints = map[string][]string{"device": {"ffff"}} }), ResourceConstraint, "get-device", ""},

		// Step 5: the proxied user.
		{"proxied user not allowed", Request{Method: "GET", Path: device, ProxiedUser: "alice", HasProxiedUser: true}, plain, ProxiedUserNotAllowed, "get-device", ""},
		{"proxied user not listed", Request{Method: "GET", Path: device, ProxiedUser: "bob", HasProxiedUser: true}, proxying, ProxiedUserNotAllowed, "get-device", ""},
		{"invalid proxied user", Request{Method: "GET", Path: device, ProxiedUser: "a:b", HasProxiedUser: true}, proxying, InvalidProxiedUser, "get-device", ""},
		{"empty proxied user header", Request{Method: "GET", Path: device, HasProxiedUser: true}, proxying, InvalidProxiedUser, "get-device", ""},
		{"proxied user ignored without the header", Request{Method: "GET", Path: device, ProxiedUser: "mallory"}, plain, Allowed, "get-device", ""},
		{"authorization before proxied user", Request{Method: "GET", Path: "/v1/products/9001/devices/x", ProxiedUser: "a:b", HasProxiedUser: true}, proxying, TenantMismatch, "get-device", ""},
	}
	for _, tt := range tests {
		d := Decide(&tt.req, tt.p, c, tn, now, time.Time{})
		if d.Reason != tt.want {
			t.Errorf("%s: Reason = %v; want %v", tt.name, d.Reason, tt.want)
		}
		if got := d.Allowed(); got != (tt.want == Allowed) {
			t.Errorf("%s: Allowed() = %v", tt.name, got)
		}
		if d.Principal != tt.p {
			t.Errorf("%s: Principal not set", tt.name)
		}
		switch {
		case tt.wantEndpoint == "" && d.Endpoint != nil:
			t.Errorf("%s: Endpoint = %s; want none", tt.name, d.Endpoint.Name)
		case tt.wantEndpoint != "" && (d.Endpoint == nil || d.Endpoint.Name != tt.wantEndpoint):
			t.Errorf("%s: Endpoint = %v; want %s", tt.name, d.Endpoint, tt.wantEndpoint)
		}
		if tt.wantEndpoint == "get-device" {
			if v, _ := d.Vars.Get("device"); v == "" {
				t.Errorf("%s: Vars has no device", tt.name)
			}
		}
		if d.ProxiedUser != tt.wantProxied {
			t.Errorf("%s: ProxiedUser = %q; want %q", tt.name, d.ProxiedUser, tt.wantProxied)
		}
	}
}

func TestDecideNilCatalogAndLastUsed(t *testing.T) {
	tn := exampleTenancy(t)
	req := Request{Method: "GET", Path: "/v1/products/1337/devices"}
	if d := Decide(&req, Compile(productUser(), nil), nil, tn, t0, time.Time{}); d.Reason != NoEndpoint || d.Allowed() {
		t.Errorf("nil catalog: %v", d.Reason)
	}
	// The caller's lastUsed keeps an idle user alive.
	u := productUser()
	u.IdleTimeout = time.Hour
	p := Compile(u, nil)
	c := exampleCatalog(t)
	now := t0.Add(90 * time.Minute)
	if d := Decide(&req, p, c, tn, now, time.Time{}); d.Reason != IdleExpired {
		t.Errorf("without lastUsed: %v; want idle expired", d.Reason)
	}
	if d := Decide(&req, p, c, tn, now, t0.Add(time.Hour)); d.Reason != Allowed {
		t.Errorf("with lastUsed: %v; want allowed", d.Reason)
	}
}

func TestDecisionZeroIsNotAllowed(t *testing.T) {
	var d Decision
	if d.Reason != Allowed {
		t.Fatal("the zero Reason is no longer Allowed; this test is moot")
	}
	if d.Allowed() {
		t.Error("the zero Decision is allowed")
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	c := exampleCatalog(t)
	tn := exampleTenancy(t)
	p := Compile(productUser(), nil)
	for _, req := range []Request{
		{Method: "GET", Path: "/v1/products/my-product-v1/devices/0a1b2c3d"},
		{Method: "GET", Path: "/v1/products/1337/events/a/b/c"},
		{Method: "GET", Path: "/v1/products/4242/devices"},
		{Method: "GET", Path: "/v1/products/1337/nothing"},
		{Method: "GET", Path: "/v1/products/1337/devices/%2e%2e"},
	} {
		if n := testing.AllocsPerRun(100, func() { Decide(&req, p, c, tn, t0, time.Time{}) }); n != 0 {
			t.Errorf("Decide(%s %s) allocates %v times", req.Method, req.Path, n)
		}
	}
}

// TestAPIUserClone: a change to a clone's slices and map never reaches the
// original.
func TestAPIUserClone(t *testing.T) {
	u := &APIUser{
		ID: "a", Scopes: []Scope{"devices:list"}, Roles: []string{"r"}, AllowedEndpoints: []string{"e"},
		AllowedProxiedUsers: []string{"p"}, Keys: []Key{{ID: "k"}},
		ResourceConstraints: map[string][]string{"device": {"d1"}},
	}
	c := u.Clone()
	c.Scopes[0], c.Roles[0], c.AllowedEndpoints[0], c.AllowedProxiedUsers[0], c.Keys[0].ID = "x:y", "x", "x", "x", "x"
	c.ResourceConstraints["device"][0] = "x"
	c.ResourceConstraints["other"] = []string{"x"}
	if u.Scopes[0] != "devices:list" || u.Roles[0] != "r" || u.AllowedEndpoints[0] != "e" || u.AllowedProxiedUsers[0] != "p" ||
		u.Keys[0].ID != "k" || u.ResourceConstraints["device"][0] != "d1" || len(u.ResourceConstraints) != 1 {
		t.Fatalf("changing the clone changed the original: %+v", u)
	}
}
