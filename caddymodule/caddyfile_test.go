package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func adaptCaddyfile(t *testing.T, body string) ([]byte, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
	return out, err
}

// TestCaddyfileErrorsNameLineAndFix loads broken configurations: each must
// fail at load with the line of the mistake and a hint at the fix.
func TestCaddyfileErrorsNameLineAndFix(t *testing.T) {
	tests := []struct {
		name   string
		global string // lines inside the api_users global option
		site   string // lines inside the site's api_users block
		want   []string
	}{
		{"bad scope", "endpoint list GET /v1/devices Devices:List", "", []string{"Caddyfile:3", "scope"}},
		{"bad template", "endpoint list GET /v1/{dev ice} devices:list", "", []string{"Caddyfile:3", "list"}},
		{"overlapping endpoints", "endpoint a GET /v1/{x} devices:list\n\t\tendpoint b GET /v1/devices devices:list", "", []string{"Caddyfile:4", "overlap"}},
		{"duplicate endpoint name", "endpoint a GET /v1/a devices:list\n\t\tendpoint a GET /v1/b devices:list", "", []string{"Caddyfile:4", "a"}},
		{"endpoint missing scope", "endpoint a GET /v1/a", "", []string{"Caddyfile:3", "endpoint takes a name, methods, a path template and a scope"}},
		{"bad method", "endpoint a get /v1/a devices:list", "", []string{"Caddyfile:3", "method"}},
		{"unknown setting", "frobnicate on", "", []string{"Caddyfile:3", "unknown api_users setting", "use store"}},
		{"unknown store", "store mongodb", "", []string{"Caddyfile:3", "sqlite", "postgres"}},
		{"postgres without connection string", "store postgres", "", []string{"Caddyfile:3", "store postgres {env.DATABASE_URL}"}},
		{"postgres connection string in pieces", "store postgres host=db user=caddy", "", []string{"Caddyfile:3", "quote"}},
		{"sqlite with two paths", "store sqlite a.db b.db", "", []string{"Caddyfile:3", "optional path"}},
		{"bad max_stale", "max_stale -5s", "", []string{"Caddyfile:3", "positive duration"}},
		{"max_stale below twice sync_interval", "sync_interval 1s\n\t\tmax_stale 1500ms", "", []string{"Caddyfile:4", "twice sync_interval"}},
		{"sync_interval above half of max_stale", "max_stale 1s\n\t\tsync_interval 800ms", "", []string{"Caddyfile:4", "half of max_stale"}},
		{"bad product ID", "org acme {\n\t\t\tproduct x1 my-product\n\t\t}", "", []string{"Caddyfile:4", "positive number"}},
		{"duplicate product slug", "org acme {\n\t\t\tproduct 1 p\n\t\t\tproduct 2 p\n\t\t}", "", []string{"Caddyfile:", "p"}},
		{"bad role scope", "role reader devices", "", []string{"Caddyfile:3", "role reader"}},
		{"duplicate role", "role reader devices:list\n\t\trole reader devices:get", "", []string{"Caddyfile:4", "defined twice"}},
		{"bad duration", "sync_interval soon", "", []string{"Caddyfile:3", "positive duration"}},
		{"bad cache size", "cache {\n\t\t\tmax_users -1\n\t\t}", "", []string{"Caddyfile:4", "positive whole number"}},
		{"bad lockout", "", "lockout ten 5m", []string{"Caddyfile:", "positive whole number"}},
		{"lockout_ipv6_prefix too wide", "", "lockout_ipv6_prefix 8", []string{"Caddyfile:", "from 16 to 128"}},
		{"lockout_ipv6_prefix not a number", "", "lockout_ipv6_prefix wide", []string{"Caddyfile:", "from 16 to 128"}},
		{"lockout_ipv6_prefix without a value", "", "lockout_ipv6_prefix", []string{"Caddyfile:", "lockout_ipv6_prefix 64"}},
		{"bad proxied header", "", "proxied_user_header X:Proxied", []string{"Caddyfile:", "valid header name"}},
		{"rate_limit without a window", "", "rate_limit 600", []string{"Caddyfile:", "rate_limit 600 1m"}},
		{"rate_limit of zero requests", "", "rate_limit 0 1m", []string{"Caddyfile:", "positive whole number"}},
		{"rate_limit window too short", "", "rate_limit 10 10ms", []string{"Caddyfile:", "at least 1s"}},
		{"rate_limit window not a duration", "", "rate_limit 10 soon", []string{"Caddyfile:", "at least 1s"}},
		{"unknown gateway setting", "", "endpoint a GET /a devices:list", []string{"Caddyfile:", "global option"}},
		{"rate_limits unknown", "rate_limits global", "", []string{"Caddyfile:3", "node", "cluster"}},
		{"rate_limits cluster on SQLite", "rate_limits cluster", "", []string{"Caddyfile:", "store postgres"}},
		{"usage flush_interval too short", "usage {\n\t\t\tflush_interval 1ms\n\t\t}", "", []string{"Caddyfile:4", "100ms..1h"}},
		{"usage unknown setting", "usage {\n\t\t\tkeep 5d\n\t\t}", "", []string{"Caddyfile:4", "flush_interval, hourly_retention or daily_retention"}},
		{"quota without a period", "", "quota 1000", []string{"Caddyfile:", "quota 100000 month"}},
		{"quota of a week", "", "quota 1000 week", []string{"Caddyfile:", "day or month"}},
		{"quota of no requests", "", "quota 0 day", []string{"Caddyfile:", "positive whole number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := "{\n\tapi_users {\n\t\t" + tt.global + "\n\t}\n}\n:8080 {\n\tapi_users {\n\t\t" + tt.site + "\n\t}\n}\n"
			_, err := adaptCaddyfile(t, cfg)
			if err == nil {
				t.Fatalf("config loaded; want an error:\n%s", cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestGatewayDirectiveOrder proves `api_users` runs before the handlers
// that respond, whatever order the site lists them in.
func TestGatewayDirectiveOrder(t *testing.T) {
	out, err := adaptCaddyfile(t, ":8080 {\n\treverse_proxy 127.0.0.1:9000\n\tapi_users\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if i, j := strings.Index(s, `"handler":"api_users"`), strings.Index(s, `"handler":"reverse_proxy"`); i < 0 || j < 0 || i > j {
		t.Fatalf("api_users is not ordered before reverse_proxy: %s", s)
	}
}
