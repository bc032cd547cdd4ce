package policy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCompileScopes(t *testing.T) {
	roles := map[string][]Scope{
		"reader":   {"devices:list", "devices:get"},
		"operator": {"devices.function:call", "devices:get"},
		"empty":    nil,
	}
	tests := []struct {
		name   string
		scopes []Scope
		roles  []string
		want   []Scope
	}{
		{"none", nil, nil, nil},
		{"own only", []Scope{"events:send", "devices:list", "events:send"}, nil, []Scope{"devices:list", "events:send"}},
		{"role only", nil, []string{"reader"}, []Scope{"devices:get", "devices:list"}},
		{"own and roles, merged", []Scope{"events:get"}, []string{"reader", "operator"}, []Scope{"devices.function:call", "devices:get", "devices:list", "events:get"}},
		{"unknown role fails closed", []Scope{"events:get"}, []string{"admin", "READER"}, []Scope{"events:get"}},
		{"empty role", nil, []string{"empty"}, nil},
	}
	for _, tt := range tests {
		u := &APIUser{ID: "u", Scopes: tt.scopes, Roles: tt.roles}
		p := Compile(u, roles)
		if got := p.EffectiveScopes(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: EffectiveScopes() = %q; want %q", tt.name, got, tt.want)
		}
		for _, s := range allScope {
			if got, want := p.HasScope(s), slices.Contains(tt.want, s); got != want {
				t.Errorf("%s: HasScope(%q) = %v; want %v", tt.name, s, got, want)
			}
		}
		if p.HasScope("admin:all") {
			t.Errorf("%s: HasScope(admin:all)", tt.name)
		}
	}
}

func TestCompileDoesNotMutate(t *testing.T) {
	u := &APIUser{
		ID:                  "u",
		Scopes:              []Scope{"z:z", "a:a", "z:z"},
		AllowedEndpoints:    []string{"b", "a"},
		AllowedProxiedUsers: []string{"y", "x"},
		ResourceConstraints: map[string][]string{"device": {"d2", "d1"}},
	}
	p := Compile(u, nil)
	if !slices.Equal(u.Scopes, []Scope{"z:z", "a:a", "z:z"}) || !slices.Equal(u.AllowedEndpoints, []string{"b", "a"}) ||
		!slices.Equal(u.AllowedProxiedUsers, []string{"y", "x"}) || !slices.Equal(u.ResourceConstraints["device"], []string{"d2", "d1"}) {
		t.Errorf("Compile modified the user: %+v", u)
	}
	// The Principal keeps its own copy of the struct.
	u.Retired = true
	if p.User == u || p.User.Retired {
		t.Error("Principal.User follows changes to the compiled APIUser")
	}
	// And its own sets.
	u.Scopes[1] = "b:b"
	if !p.HasScope("a:a") {
		t.Error("Principal scopes follow changes to the compiled APIUser")
	}
}

func TestActive(t *testing.T) {
	hour := time.Hour
	tests := []struct {
		name     string
		u        APIUser
		now      time.Time
		lastUsed time.Time
		want     Reason
	}{
		{"plain", APIUser{CreatedAt: t0}, t0.Add(1000 * hour), time.Time{}, Allowed},
		{"retired", APIUser{Retired: true, CreatedAt: t0}, t0, time.Time{}, Retired},
		{"retired beats expired", APIUser{Retired: true, ExpiresAt: t0}, t0.Add(hour), time.Time{}, Retired},

		{"before expiry", APIUser{ExpiresAt: t0}, t0.Add(-time.Nanosecond), time.Time{}, Allowed},
		{"at expiry", APIUser{ExpiresAt: t0}, t0, time.Time{}, Expired},
		{"after expiry", APIUser{ExpiresAt: t0}, t0.Add(hour), time.Time{}, Expired},
		{"expired beats idle", APIUser{ExpiresAt: t0, IdleTimeout: hour}, t0.Add(2 * hour), time.Time{}, Expired},

		{"idle: fresh from creation", APIUser{IdleTimeout: hour, CreatedAt: t0}, t0.Add(hour - time.Nanosecond), time.Time{}, Allowed},
		{"idle: at the boundary from creation", APIUser{IdleTimeout: hour, CreatedAt: t0}, t0.Add(hour), time.Time{}, IdleExpired},
		{"idle: after from creation", APIUser{IdleTimeout: hour, CreatedAt: t0}, t0.Add(2 * hour), time.Time{}, IdleExpired},
		{"idle: stored last use keeps it alive", APIUser{IdleTimeout: hour, CreatedAt: t0, LastUsedAt: t0.Add(hour)}, t0.Add(2*hour - time.Nanosecond), time.Time{}, Allowed},
		{"idle: stored last use, boundary", APIUser{IdleTimeout: hour, CreatedAt: t0, LastUsedAt: t0.Add(hour)}, t0.Add(2 * hour), time.Time{}, IdleExpired},
		{"idle: caller's last use keeps it alive", APIUser{IdleTimeout: hour, CreatedAt: t0, LastUsedAt: t0.Add(hour)}, t0.Add(3*hour - time.Nanosecond), t0.Add(2 * hour), Allowed},
		{"idle: caller's last use, boundary", APIUser{IdleTimeout: hour, CreatedAt: t0}, t0.Add(3 * hour), t0.Add(2 * hour), IdleExpired},
		{"idle: an older caller's last use does not win", APIUser{IdleTimeout: hour, CreatedAt: t0, LastUsedAt: t0.Add(5 * hour)}, t0.Add(6*hour - time.Nanosecond), t0.Add(hour), Allowed},
		{"idle: no times at all fails closed", APIUser{IdleTimeout: hour}, t0, time.Time{}, IdleExpired},
		{"no idle timeout", APIUser{CreatedAt: t0}, t0.Add(10000 * hour), time.Time{}, Allowed},
		{"negative idle timeout is none", APIUser{IdleTimeout: -hour, CreatedAt: t0}, t0.Add(10000 * hour), time.Time{}, Allowed},
	}
	for _, tt := range tests {
		p := Compile(&tt.u, nil)
		if got := p.Active(tt.now, tt.lastUsed); got != tt.want {
			t.Errorf("%s: Active = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestAuthorizeEndpointsAndScopes(t *testing.T) {
	c := exampleCatalog(t)
	tn := exampleTenancy(t)
	roles := map[string][]Scope{"reader": {"devices:list", "devices:get"}}
	getDevice, _ := c.Endpoint("get-device")
	listDevices, _ := c.Endpoint("list-devices")
	vars := varsOf("product", "1337", "device", "d1")
	tests := []struct {
		name string
		u    APIUser
		ep   *Endpoint
		want Reason
	}{
		{"own scope", APIUser{Org: "acme", Product: 1337, Scopes: []Scope{"devices:get"}}, getDevice, Allowed},
		{"role scope", APIUser{Org: "acme", Product: 1337, Roles: []string{"reader"}}, getDevice, Allowed},
		{"missing scope", APIUser{Org: "acme", Product: 1337, Scopes: []Scope{"devices:list"}}, getDevice, InsufficientScope},
		{"no scopes", APIUser{Org: "acme", Product: 1337}, getDevice, InsufficientScope},
		{"unknown role", APIUser{Org: "acme", Product: 1337, Roles: []string{"admin"}}, getDevice, InsufficientScope},
		{"no hierarchy", APIUser{Org: "acme", Product: 1337, Scopes: []Scope{"devices.variable:get"}}, getDevice, InsufficientScope},
		{"allowed endpoint listed", APIUser{Org: "acme", Product: 1337, Scopes: allScope, AllowedEndpoints: []string{"list-devices", "get-device"}}, getDevice, Allowed},
		{"allowed endpoint not listed", APIUser{Org: "acme", Product: 1337, Scopes: allScope, AllowedEndpoints: []string{"list-devices"}}, getDevice, EndpointNotAllowed},
		{"endpoint check before scope", APIUser{Org: "acme", Product: 1337, AllowedEndpoints: []string{"get-device"}}, listDevices, EndpointNotAllowed},
		{"scope check before tenancy", APIUser{Org: "globex", Scopes: []Scope{"events:get"}}, getDevice, InsufficientScope},
		{"nil endpoint", APIUser{Org: "acme", Scopes: allScope}, nil, NoEndpoint},
	}
	for _, tt := range tests {
		p := Compile(&tt.u, roles)
		if got := p.Authorize(tt.ep, vars, tn); got != tt.want {
			t.Errorf("%s: Authorize = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestAuthorizeTenancy(t *testing.T) {
	c := exampleCatalog(t)
	tn := exampleTenancy(t)
	acmeOrg := orgUser()
	acmeProduct := productUser()
	globexOrg := &APIUser{ID: "svc-globex", Org: "globex", Scopes: allScope}
	globexProduct := &APIUser{ID: "svc-9001", Org: "globex", Product: 9001, Scopes: allScope}
	orphan := &APIUser{ID: "svc-orphan", Org: "initech", Scopes: allScope}
	mismatched := &APIUser{ID: "svc-odd", Org: "globex", Product: 1337, Scopes: allScope} // product of another org

	tests := []struct {
		name         string
		u            *APIUser
		method, path string
		tenancy      *Tenancy
		want         Reason
	}{
		// A product-scoped user reaches its product, by ID or slug.
		{"product user, own product by ID", acmeProduct, "GET", "/v1/products/1337/devices", tn, Allowed},
		{"product user, own product by slug", acmeProduct, "GET", "/v1/products/my-product-v1/devices/d1", tn, Allowed},
		{"product user, sibling product by ID", acmeProduct, "GET", "/v1/products/4242/devices", tn, TenantMismatch},
		{"product user, sibling product by slug", acmeProduct, "GET", "/v1/products/other-product/devices", tn, TenantMismatch},
		{"product user, other org's product", acmeProduct, "GET", "/v1/products/9001/devices", tn, TenantMismatch},
		{"product user, unknown product", acmeProduct, "GET", "/v1/products/5555/devices", tn, TenantMismatch},
		{"product user, non-canonical ID", acmeProduct, "GET", "/v1/products/01337/devices", tn, TenantMismatch},
		{"product user, slug case", acmeProduct, "GET", "/v1/products/My-Product-v1/devices", tn, TenantMismatch},
		{"product user, org-wide endpoint of its org", acmeProduct, "GET", "/v1/orgs/acme/events", tn, TenantMismatch},
		{"product user, events rest", acmeProduct, "GET", "/v1/products/1337/events/a/b", tn, Allowed},

		// An org user reaches the org's products and the org itself.
		{"org user, own org", acmeOrg, "GET", "/v1/orgs/acme/events", tn, Allowed},
		{"org user, other org", acmeOrg, "GET", "/v1/orgs/globex/events", tn, TenantMismatch},
		{"org user, unknown org", acmeOrg, "GET", "/v1/orgs/initech/events", tn, TenantMismatch},
		{"org user, org case", acmeOrg, "GET", "/v1/orgs/ACME/events", tn, TenantMismatch},
		{"org user, product by ID", acmeOrg, "GET", "/v1/products/1337/devices", tn, Allowed},
		{"org user, other product by slug", acmeOrg, "POST", "/v1/products/other-product/events", tn, Allowed},
		{"org user, other org's product by ID", acmeOrg, "GET", "/v1/products/9001/devices", tn, TenantMismatch},
		{"org user, other org's product by slug", acmeOrg, "GET", "/v1/products/globex-tracker/devices", tn, TenantMismatch},
		{"org user, unknown product", acmeOrg, "GET", "/v1/products/unknown/devices", tn, TenantMismatch},

		// The other way round.
		{"globex org user, globex product", globexOrg, "GET", "/v1/products/globex-tracker/devices", tn, Allowed},
		{"globex org user, acme product", globexOrg, "GET", "/v1/products/1337/devices", tn, TenantMismatch},
		{"globex product user", globexProduct, "PUT", "/v1/products/9001/devices/d1", tn, Allowed},
		{"globex product user, acme org", globexProduct, "GET", "/v1/orgs/acme/events", tn, TenantMismatch},

		// Broken data fails closed.
		{"user of an unlisted org", orphan, "GET", "/v1/orgs/initech/events", tn, TenantMismatch},
		{"user whose product is in another org", mismatched, "GET", "/v1/products/1337/devices", tn, TenantMismatch},
		{"nil tenancy", acmeOrg, "GET", "/v1/orgs/acme/events", nil, TenantMismatch},
	}
	for _, tt := range tests {
		ep, vars, ok := c.Match(tt.method, tt.path)
		if !ok {
			t.Fatalf("%s: %s %s does not match", tt.name, tt.method, tt.path)
		}
		p := Compile(tt.u, nil)
		if got := p.Authorize(ep, &vars, tt.tenancy); got != tt.want {
			t.Errorf("%s: Authorize(%s %s) = %v; want %v", tt.name, tt.method, tt.path, got, tt.want)
		}
	}
}

// TestAuthorizeTenancyBothVariables covers endpoints with both {org} and
// {product}, and endpoints with neither.
func TestAuthorizeTenancyBothVariables(t *testing.T) {
	c, err := NewCatalog([]Endpoint{
		{Name: "org-product", Methods: []string{"GET"}, Path: "/v1/orgs/{org}/products/{product}", Scope: "products:get"},
		{Name: "whoami", Methods: []string{"GET"}, Path: "/v1/user", Scope: "user:get"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tn := exampleTenancy(t)
	scopes := []Scope{"products:get", "user:get"}
	org := &APIUser{Org: "acme", Scopes: scopes}
	product := &APIUser{Org: "acme", Product: 1337, Scopes: scopes}
	tests := []struct {
		name string
		u    *APIUser
		path string
		want Reason
	}{
		{"org user", org, "/v1/orgs/acme/products/4242", Allowed},
		{"org user, product of another org", org, "/v1/orgs/acme/products/9001", TenantMismatch},
		{"org user, other org", org, "/v1/orgs/globex/products/9001", TenantMismatch},
		{"product user", product, "/v1/orgs/acme/products/my-product-v1", Allowed},
		{"product user, sibling", product, "/v1/orgs/acme/products/4242", TenantMismatch},
		{"product user, other org", product, "/v1/orgs/globex/products/1337", TenantMismatch},
		{"no tenant variables: scope decides", product, "/v1/user", Allowed},
	}
	for _, tt := range tests {
		ep, vars, ok := c.Match("GET", tt.path)
		if !ok {
			t.Fatalf("%s: %s does not match", tt.name, tt.path)
		}
		if got := Compile(tt.u, nil).Authorize(ep, &vars, tn); got != tt.want {
			t.Errorf("%s: Authorize(%s) = %v; want %v", tt.name, tt.path, got, tt.want)
		}
	}
}

func TestAuthorizeResourceConstraints(t *testing.T) {
	c := exampleCatalog(t)
	tn := exampleTenancy(t)
	constrained := func(rc map[string][]string) *APIUser {
		u := orgUser()
		u.ResourceConstraints = rc
		return u
	}
	devices := map[string][]string{"device": {"0a1b2c", "3d4e5f"}}
	tests := []struct {
		name         string
		rc           map[string][]string
		method, path string
		want         Reason
	}{
		{"listed device", devices, "GET", "/v1/products/1337/devices/0a1b2c", Allowed},
		{"other listed device", devices, "PUT", "/v1/products/1337/devices/3d4e5f", Allowed},
		{"listed device, function", devices, "POST", "/v1/products/1337/devices/3d4e5f/reboot", Allowed},
		{"unlisted device", devices, "GET", "/v1/products/1337/devices/ffffff", ResourceConstraint},
		{"device case", devices, "GET", "/v1/products/1337/devices/0A1B2C", ResourceConstraint},
		{"device prefix", devices, "GET", "/v1/products/1337/devices/0a1b2", ResourceConstraint},
		{"no device variable: listing all devices", devices, "GET", "/v1/products/1337/devices", ResourceConstraint},
		{"no device variable: events", devices, "GET", "/v1/products/1337/events/x", ResourceConstraint},
		{"two constraints, both met", map[string][]string{"device": {"d1"}, "function": {"reboot"}}, "POST", "/v1/products/1337/devices/d1/reboot", Allowed},
		{"two constraints, one not met", map[string][]string{"device": {"d1"}, "function": {"reboot"}}, "POST", "/v1/products/1337/devices/d1/wipe", ResourceConstraint},
		{"empty list allows nothing", map[string][]string{"device": {}}, "GET", "/v1/products/1337/devices/d1", ResourceConstraint},
		{"product constraint compares raw", map[string][]string{"product": {"1337"}}, "GET", "/v1/products/1337/devices", Allowed},
		{"product constraint, other spelling", map[string][]string{"product": {"1337"}}, "GET", "/v1/products/my-product-v1/devices", ResourceConstraint},
		{"escaped value compares raw", map[string][]string{"device": {"caf%C3%A9"}}, "GET", "/v1/products/1337/devices/caf%C3%A9", Allowed},
		{"escaped value, other hex case", map[string][]string{"device": {"caf%C3%A9"}}, "GET", "/v1/products/1337/devices/caf%c3%a9", ResourceConstraint},
		{"rest variable", map[string][]string{"prefix": {"motion/door"}}, "GET", "/v1/products/1337/events/motion/door", Allowed},
		{"rest variable, deeper", map[string][]string{"prefix": {"motion/door"}}, "GET", "/v1/products/1337/events/motion/door/x", ResourceConstraint},
		{"no constraints", nil, "GET", "/v1/products/1337/devices", Allowed},
		{"tenancy before constraints", devices, "GET", "/v1/products/9001/devices/0a1b2c", TenantMismatch},
	}
	for _, tt := range tests {
		ep, vars, ok := c.Match(tt.method, tt.path)
		if !ok {
			t.Fatalf("%s: %s %s does not match", tt.name, tt.method, tt.path)
		}
		if got := Compile(constrained(tt.rc), nil).Authorize(ep, &vars, tn); got != tt.want {
			t.Errorf("%s: Authorize(%s %s) = %v; want %v", tt.name, tt.method, tt.path, got, tt.want)
		}
	}
	// A nil vars is no variables.
	ep, _ := c.Endpoint("list-devices")
	if got := Compile(constrained(devices), nil).Authorize(ep, nil, tn); got != ResourceConstraint {
		t.Errorf("Authorize with nil vars = %v; want resource_constraint", got)
	}
}

func TestCheckProxiedUser(t *testing.T) {
	tests := []struct {
		name  string
		allow bool
		list  []string
		id    string
		want  Reason
	}{
		{"any valid ID", true, nil, "alice@example.com", Allowed},
		{"listed", true, []string{"bob", "alice"}, "alice", Allowed},
		{"not listed", true, []string{"bob"}, "alice", ProxiedUserNotAllowed},
		{"listed, case differs", true, []string{"Alice"}, "alice", ProxiedUserNotAllowed},
		{"not allowed", false, nil, "alice", ProxiedUserNotAllowed},
		{"not allowed though listed", false, []string{"alice"}, "alice", ProxiedUserNotAllowed},
		{"invalid beats not allowed", false, nil, "a:b", InvalidProxiedUser},
		{"empty", true, nil, "", InvalidProxiedUser},
		{"colon", true, nil, "alice:secret", InvalidProxiedUser},
		{"too long", true, nil, strings.Repeat("a", 65), InvalidProxiedUser},
		{"longest", true, nil, strings.Repeat("a", 64), Allowed},
	}
	for _, tt := range tests {
		p := Compile(&APIUser{ID: "svc", AllowProxiedUsers: tt.allow, AllowedProxiedUsers: tt.list}, nil)
		if got := p.CheckProxiedUser(tt.id); got != tt.want {
			t.Errorf("%s: CheckProxiedUser(%q) = %v; want %v", tt.name, tt.id, got, tt.want)
		}
	}
}

func TestValidUserID(t *testing.T) {
	valid := []string{
		"a", "Z", "0", "svc-1337", "alice@example.com", "user+tag", "a.b_c-d", "A1",
		strings.Repeat("x", 64),
	}
	invalid := []string{
		"", "-a", ".a", "_a", "@a", "+a", "a:b", "a b", "a/b", "a\\b", "a;b", "a,b", "a\x00",
		"é", "a\u00e9", "a\n", "a%20", "a\"", strings.Repeat("x", 65),
	}
	for _, id := range valid {
		if !ValidUserID(id) {
			t.Errorf("ValidUserID(%q) = false", id)
		}
	}
	for _, id := range invalid {
		if ValidUserID(id) {
			t.Errorf("ValidUserID(%q) = true", id)
		}
	}
}

func TestAuthorizeDoesNotAllocate(t *testing.T) {
	c := exampleCatalog(t)
	tn := exampleTenancy(t)
	u := productUser()
	u.AllowedEndpoints = []string{"get-device", "list-devices"}
	u.ResourceConstraints = map[string][]string{"device": {"0a1b2c3d"}}
	p := Compile(u, nil)
	ep, vars, _ := c.Match("GET", "/v1/products/my-product-v1/devices/0a1b2c3d")
	if got := p.Authorize(ep, &vars, tn); got != Allowed {
		t.Fatalf("Authorize = %v", got)
	}
	if n := testing.AllocsPerRun(100, func() { p.Authorize(ep, &vars, tn) }); n != 0 {
		t.Errorf("Authorize allocates %v times", n)
	}
}
