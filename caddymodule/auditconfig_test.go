package caddymodule

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuditCaddyfile: the audit block of the api_users global option, a
// site's audit_log, and the api_users_audit log writer with Caddy's file
// writer's options, adapt to the JSON they stand for; mistakes fail with
// their line and the fix.
func TestAuditCaddyfile(t *testing.T) {
	cfg := `{
	log audit {
		include http.handlers.api_users.audit
		output api_users_audit /var/log/caddy/audit.log {
			roll_size 10MiB
			roll_keep 3
			mode 0640
		}
	}
	api_users {
		audit {
			mode sync
			max_pending 100
			max_delay 50ms
		}
	}
}
:8080 {
	api_users {
		audit_log partners
	}
}
`
	out, err := adaptCaddyfile(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Logging struct {
			Logs map[string]struct {
				Writer map[string]any `json:"writer"`
			} `json:"logs"`
		} `json:"logging"`
		Apps struct {
			APIUsers struct {
				Audit AuditConfig `json:"audit"`
			} `json:"api_users"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if a := doc.Apps.APIUsers.Audit; a.Mode != "sync" || a.MaxPending != 100 || time.Duration(a.MaxDelay) != 50*time.Millisecond {
		t.Errorf("audit config %+v, want sync, 100, 50ms", a)
	}
	w := doc.Logging.Logs["audit"].Writer
	if w["output"] != "api_users_audit" || w["filename"] != "/var/log/caddy/audit.log" || w["roll_size_mb"] != float64(10) || w["roll_keep"] != float64(3) {
		t.Errorf("writer %v, want api_users_audit with Caddy's file options", w)
	}
	if !strings.Contains(string(out), `"audit_log":"partners"`) {
		t.Errorf("the site's audit_log is missing from %s", out)
	}

	for _, tt := range []struct{ global, site, want string }{
		{"audit {\n\t\t\tmode eventually\n\t\t}", "", "batch"},
		{"audit {\n\t\t\tmax_pending 0\n\t\t}", "", "positive number of records"},
		{"audit {\n\t\t\tmax_delay 10us\n\t\t}", "", "at least 1ms"},
		{"audit {\n\t\t\tflush always\n\t\t}", "", "use mode, max_pending or max_delay"},
		{"", "audit_log Partners", "lowercase letters"},
	} {
		cfg := "{\n\tapi_users {\n\t\t" + tt.global + "\n\t}\n}\n:8080 {\n\tapi_users {\n\t\t" + tt.site + "\n\t}\n}\n"
		_, err := adaptCaddyfile(t, cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q / %q: error %v, want one naming the line and %q", tt.global, tt.site, err, tt.want)
		}
	}
}

// TestAuditLogRoutesASite: a site's audit_log gives its gateway records a
// logger of their own, which a log can take apart, in the same shape; the
// other sites' records stay where they were; the dropped-records metric is
// in Caddy's registry.
func TestAuditLogRoutesASite(t *testing.T) {
	dir := t.TempDir()
	partners, rest := filepath.Join(dir, "partners.log"), filepath.Join(dir, "rest.log")
	port, metricsPort := freePort(t), freePort(t)
	g := startGateway(t, gatewayOptions{
		gatewayBlock: "lockout off",
		globalExtra: fmt.Sprintf(`	log partners {
		include http.handlers.api_users.audit.partners
		output api_users_audit %s
		format json
	}
	log rest {
		include http.handlers.api_users.audit
		exclude http.handlers.api_users.audit.partners
		output api_users_audit %s
		format json
	}`, partners, rest),
		extraSites: fmt.Sprintf("http://127.0.0.1:%d {\n\tapi_users {\n\t\taudit_log partners\n\t}\n\trespond \"ok\"\n}\n", port) + metricsSite(metricsPort),
	})
	_, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	if r := g.do("GET", "/v1/products/1337/devices", bearer(iss.Token)); r.Status != 200 {
		t.Fatalf("main site: %d", r.Status)
	}
	other := &testGateway{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port), client: g.client}
	if r := other.do("GET", "/v1/products/1337/devices/partner-only", bearer(iss.Token)); r.Status != 403 {
		t.Fatalf("partners site: %d, want 403 (no scope)", r.Status)
	}
	decisions := func(path string) []map[string]any {
		var out []map[string]any
		for _, m := range readJSONLines(t, path) {
			if m["msg"] == "gateway decision" && m["api_user"] != "" {
				out = append(out, m)
			}
		}
		return out
	}
	p, r := decisions(partners), decisions(rest)
	if len(p) != 1 || p[0]["logger"] != "http.handlers.api_users.audit.partners" || p[0]["reason"] != "insufficient_scope" || len(p[0]) != len(auditFields)+4 {
		t.Errorf("partners log: %v, want the one refused request, in the usual shape", p)
	}
	if len(r) != 1 || r[0]["logger"] != "http.handlers.api_users.audit" || r[0]["reason"] != "allowed" {
		t.Errorf("the other log: %v, want the main site's allowed request only", r)
	}
	if v, ok := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))["caddy_api_users_audit_dropped_total"]; !ok || v != 0 {
		t.Errorf("caddy_api_users_audit_dropped_total = %v (exported: %v), want 0", v, ok)
	}
}
