package policy

import (
	"testing"
	"time"
)

const benchPath = "/v1/products/my-product-v1/devices/0a1b2c3d"

// BenchmarkDecide is the whole decision for a cached product user after
// authentication: the performance target is under 1 µs with no allocation.
func BenchmarkDecide(b *testing.B) {
	c := exampleCatalog(b)
	tn := exampleTenancy(b)
	u := productUser()
	u.AllowedEndpoints = []string{"list-devices", "get-device", "get-variable"}
	u.IdleTimeout = 720 * time.Hour
	p := Compile(u, nil)
	req := &Request{Method: "GET", Path: benchPath}
	now := t0.Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(req, p, c, tn, now, now); !d.Allowed() {
			b.Fatal(d.Reason)
		}
	}
}

func BenchmarkCatalogMatch(b *testing.B) {
	c := exampleCatalog(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := c.Match("GET", benchPath); !ok {
			b.Fatal("no match")
		}
	}
}

func BenchmarkCheckPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if CheckPath(benchPath) != Allowed {
			b.Fatal("refused")
		}
	}
}

func BenchmarkAuthorize(b *testing.B) {
	c := exampleCatalog(b)
	tn := exampleTenancy(b)
	u := productUser()
	u.AllowedEndpoints = []string{"list-devices", "get-device", "get-variable"}
	p := Compile(u, nil)
	ep, vars, _ := c.Match("GET", benchPath)
	b.ReportAllocs()
	for b.Loop() {
		if r := p.Authorize(ep, &vars, tn); r != Allowed {
			b.Fatal(r)
		}
	}
}
