package caddymodule

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestUserIDTimingSaysNothing: a request with a wrong key and secret takes
// as long for a user ID that exists as for one that does not, on the
// first request and on repeats, also after the negative cache entry of an
// unknown ID would have expired (here negative_ttl is 1s). An attacker who
// times such requests must not learn which IDs exist.
//
// It sends each existing ID and an unknown one back to back, many times,
// and takes the median of the paired differences, so that the noise of a
// shared machine falls on both alike. The threshold for repeats, 15% of
// the smaller median latency, is far below what a store read against a
// cache hit costs (the difference before unknown IDs were cached as long
// as known ones). A first request reads the store for both; a known ID's
// row is still decoded, which an unknown one has not, so the threshold
// there is 25%, which an unknown ID's single query (before it cost the
// two queries a known one does, and a decoy compile) exceeded.
func TestUserIDTimingSaysNothing(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off", appExtra: "cache {\n\t\t\tnegative_ttl 1s\n\t\t}"})
	const ids = 150
	var known, unknown []string
	for i := 0; i < ids; i++ {
		id, _ := g.createUser(Tenant{Product: "1337"}, UserSpec{Username: ptr(fmt.Sprintf("timing-known-%02d", i)), Scopes: strs("devices:list")})
		known = append(known, id)
		unknown = append(unknown, fmt.Sprintf("timing-nobody-%02d", i))
	}
	keyValue, _ := policy.NewKey(time.Now())
	secret, _ := policy.NewSecret()
	send := func(id string) time.Duration {
		h := basic(id, keyValue, secret)
		start := time.Now()
		r := g.do("GET", "/v1/products/1337/devices", h)
		d := time.Since(start)
		if r.Status != http.StatusUnauthorized || r.Error.Error != "invalid_credentials" {
			t.Fatalf("%s: %d %q, want 401 invalid_credentials", id, r.Status, r.Error.Error)
		}
		return d
	}
	// Warm the connection and the code paths on IDs outside the sample.
	for i := 0; i < 20; i++ {
		send(fmt.Sprintf("warm-%d", i))
	}

	// compare sends each known ID and its unknown partner back to back,
	// in alternating order, and looks at the paired differences, which
	// cancel the drift of a shared machine's load.
	compare := func(phase string, rounds, percent int, pause time.Duration) {
		t.Helper()
		var k, u, diff []time.Duration
		for r := 0; r < rounds; r++ {
			time.Sleep(pause)
			for i := 0; i < ids; i++ {
				var dk, du time.Duration
				if (i+r)%2 == 0 {
					dk, du = send(known[i]), send(unknown[i])
				} else {
					du, dk = send(unknown[i]), send(known[i])
				}
				k, u, diff = append(k, dk), append(u, du), append(diff, dk-du)
			}
		}
		mk, mu, md := median(k), median(u), median(diff)
		limit := min(mk, mu) * time.Duration(percent) / 100
		t.Logf("%s: median %v for existing IDs, %v for unknown ones; median paired difference %v (limit ±%v, %d pairs)", phase, mk, mu, md, limit, len(diff))
		if md > limit || md < -limit {
			t.Errorf("%s: existing and unknown IDs differ by %v (median of %d paired differences, existing minus unknown), beyond ±%d%%: timing tells them apart", phase, md, len(diff), percent)
		}
	}
	compare("first request", 1, 25, 0)
	compare("repeats", 4, 15, 0)
	// Each round after negative_ttl has passed since the last, as an
	// attacker who spaces the samples of one ID would send them.
	compare("repeats after negative_ttl", 3, 15, 1100*time.Millisecond)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
