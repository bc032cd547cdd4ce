package caddymodule

import (
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// BenchmarkLayer_UsageCount is what counting one decision costs a request:
// one user's requests on one endpoint, the common case.
func BenchmarkLayer_UsageCount(b *testing.B) {
	uc := newUsageCounter()
	ep := &policy.Endpoint{Name: "list-devices"}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		uc.add("apiu-6c319f35509d", ep.Name, policy.Allowed, now)
	}
}
