package caddymodule

import (
	"testing"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestUnambiguous is step 1 without Caddy: what the method, the path, the
// query and the header scan decide, and in which order.
func TestUnambiguous(t *testing.T) {
	tok, _ := policy.NewToken()
	const dev = "/v1/products/1337/devices/0a1b2c"
	tests := []struct {
		name      string
		method    string
		path      string
		query     string
		reescaped bool
		hdr       requestHeaders
		upgrade   bool
		want      policy.Reason
	}{
		{"plain", "GET", dev, "", false, requestHeaders{}, false, policy.Allowed},
		{"query", "GET", dev, "fields=a,b", false, requestHeaders{}, false, policy.Allowed},
		{"token in the query", "GET", dev, "access_token=" + tok, false, requestHeaders{}, false, policy.MisplacedCredentials},
		{"token in the path", "GET", "/v1/x/" + tok, "", false, requestHeaders{}, false, policy.MisplacedCredentials},
		{"token in a header", "GET", dev, "", false, requestHeaders{credential: true}, false, policy.MisplacedCredentials},
		{"misplaced before ambiguous", "GET", "/a/..%2f" + tok, "", false, requestHeaders{}, false, policy.MisplacedCredentials},
		{"escaped slash", "GET", "/a%2fb", "", false, requestHeaders{}, false, policy.AmbiguousPath},
		{"escaped question mark", "GET", dev + "%3F/x", "", false, requestHeaders{}, false, policy.AmbiguousPath},
		{"re-escaped by net/http", "GET", dev + "%7B", "", true, requestHeaders{}, false, policy.AmbiguousPath},
		{"path-override header", "GET", dev, "", false, requestHeaders{pathOverride: true}, false, policy.AmbiguousPath},
		{"ambiguous before method override", "GET", "/a/./b", "_method=DELETE", false, requestHeaders{}, false, policy.AmbiguousPath},
		{"_method in the query", "POST", dev, "_method=DELETE", false, requestHeaders{}, false, policy.MethodOverride},
		{"method-override header", "POST", dev, "", false, requestHeaders{methodOverride: true}, false, policy.MethodOverride},
		{"method override before upgrade", "GET", dev, "_method=PUT", false, requestHeaders{}, true, policy.MethodOverride},
		{"upgrade", "GET", dev, "", false, requestHeaders{}, true, policy.UpgradeRefused},
		{"CONNECT", "CONNECT", dev, "", false, requestHeaders{}, false, policy.UpgradeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unambiguous(tt.method, tt.path, tt.query, tt.reescaped, &tt.hdr, tt.upgrade); got != tt.want {
				t.Errorf("unambiguous(%s %s?%s) = %s, want %s", tt.method, tt.path, tt.query, got, tt.want)
			}
		})
	}
}
