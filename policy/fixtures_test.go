package policy

import (
	"testing"
	"time"
)

// The example catalog and tenancy, modelled on Particle's device cloud; the
// same as in Caddyfile.example.

func exampleEndpoints() []Endpoint {
	return []Endpoint{
		{Name: "list-devices", Methods: []string{"GET"}, Path: "/v1/products/{product}/devices", Scope: "devices:list"},
		{Name: "get-device", Methods: []string{"GET"}, Path: "/v1/products/{product}/devices/{device}", Scope: "devices:get"},
		{Name: "update-device", Methods: []string{"PUT"}, Path: "/v1/products/{product}/devices/{device}", Scope: "devices:update"},
		{Name: "call-function", Methods: []string{"POST"}, Path: "/v1/products/{product}/devices/{device}/{function}", Scope: "devices.function:call"},
		{Name: "get-variable", Methods: []string{"GET"}, Path: "/v1/products/{product}/devices/{device}/{variable}", Scope: "devices.variable:get"},
		{Name: "get-events", Methods: []string{"GET"}, Path: "/v1/products/{product}/events/{prefix...}", Scope: "events:get"},
		{Name: "send-event", Methods: []string{"POST"}, Path: "/v1/products/{product}/events", Scope: "events:send"},
		{Name: "org-events", Methods: []string{"GET"}, Path: "/v1/orgs/{org}/events", Scope: "events:get"},
	}
}

func exampleCatalog(tb testing.TB) *Catalog {
	tb.Helper()
	c, err := NewCatalog(exampleEndpoints())
	if err != nil {
		tb.Fatalf("example catalog: %v", err)
	}
	return c
}

func exampleTenancy(tb testing.TB) *Tenancy {
	tb.Helper()
	t, err := NewTenancy(
		[]Org{{ID: "acme"}, {ID: "globex"}},
		[]Product{
			{ID: 1337, Slug: "my-product-v1", Org: "acme"},
			{ID: 4242, Slug: "other-product", Org: "acme"},
			{ID: 9001, Slug: "globex-tracker", Org: "globex"},
		},
	)
	if err != nil {
		tb.Fatalf("example tenancy: %v", err)
	}
	return t
}

var (
	t0       = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	allScope = []Scope{
		"devices:list", "devices:get", "devices:update", "devices.function:call",
		"devices.variable:get", "events:get", "events:send",
	}
)

// productUser is acme's API user scoped to product 1337, with every scope.
func productUser() *APIUser {
	return &APIUser{ID: "svc-1337", Org: "acme", Product: 1337, Scopes: allScope, CreatedAt: t0}
}

// orgUser is an API user of org acme, with every scope.
func orgUser() *APIUser {
	return &APIUser{ID: "svc-acme", Org: "acme", Scopes: allScope, CreatedAt: t0}
}

// varsOf builds Vars from name/value pairs.
func varsOf(kv ...string) *Vars {
	v := &Vars{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.names[v.n], v.values[v.n] = kv[i], kv[i+1]
		v.n++
	}
	return v
}
