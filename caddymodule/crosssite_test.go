package caddymodule

import (
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestCrossSiteWritesRefused sends changes to the management API marked as
// a browser marks requests from another site, and checks that each is
// refused with 403 and changes nothing, while the same change from the
// console's own origin, and from curl (no marks), goes through.
func TestCrossSiteWritesRefused(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	self := a.adminURL // http://127.0.0.1:<port>
	a.createVia("/v1/products/1337", map[string]any{"username": "victim", "scopes": []string{"devices:list"}})

	refused := []struct {
		name   string
		header http.Header
	}{
		{"another site's origin", http.Header{"Origin": {"http://evil.example"}}},
		{"the gateway's origin (same site, another port)", http.Header{"Origin": {"http://127.0.0.1:1"}}},
		{"an opaque origin", http.Header{"Origin": {"null"}}},
		{"two origins", http.Header{"Origin": {self, "http://evil.example"}}},
		{"Sec-Fetch-Site cross-site", http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		{"Sec-Fetch-Site same-site", http.Header{"Sec-Fetch-Site": {"same-site"}}},
		{"Sec-Fetch-Site cross-site with our own Origin", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {self}}},
	}
	writes := []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/products/1337/team", map[string]any{"username": "intruder"}},
		{"PUT", "/v1/products/1337/team/victim", map[string]any{"scopes": []string{"devices:list", "devices:get"}}},
		{"POST", "/v1/products/1337/team/victim/token", nil},
		{"POST", "/v1/products/1337/team/victim/keys", nil},
		{"DELETE", "/v1/products/1337/team/victim", nil},
		{"PUT", "/v1/roles/intruders", map[string]any{"scopes": []string{"devices:list"}}},
		{"POST", "/v1/products/1337/team", "username=intruder"}, // a form's body
	}
	before := a.call("GET", "/v1/products/1337/team/victim", nil)
	for _, r := range refused {
		for _, w := range writes {
			res := a.call(w.method, w.path, w.body, r.header)
			if res.Status != http.StatusForbidden || res.Error.Error != "cross_site_request" {
				t.Errorf("%s: %s %s: %d %s, want 403 cross_site_request", r.name, w.method, w.path, res.Status, res.Body)
			}
		}
	}
	after := a.call("GET", "/v1/products/1337/team/victim", nil)
	if after.Status != 200 || after.Header.Get("ETag") != before.Header.Get("ETag") {
		t.Errorf("the user changed under refused requests: ETag %s, then %s (status %d)", before.Header.Get("ETag"), after.Header.Get("ETag"), after.Status)
	}
	if r := a.call("GET", "/v1/products/1337/team/intruder", nil); r.Status != 404 {
		t.Errorf("a refused create made a user: %d", r.Status)
	}
	if r := a.call("GET", "/v1/roles/intruders", nil); r.Status != 404 {
		t.Errorf("a refused role write made a role: %d", r.Status)
	}

	// The console's own origin, a browser's same-origin marks and curl's
	// lack of marks all work; reads from anywhere answer without any CORS
	// header, so another origin's script cannot read them.
	for _, h := range []http.Header{
		{"Origin": {self}, "Sec-Fetch-Site": {"same-origin"}},
		{"Origin": {strings.Replace(self, "127.0.0.1", "127.0.0.1", 1)}},
		{"Sec-Fetch-Site": {"none"}},
		{},
	} {
		if r := a.call("POST", "/v1/products/1337/team/victim/keys", nil, h); r.Status != 200 {
			t.Errorf("POST with %v: %d %s, want 200", h, r.Status, r.Body)
		}
	}
	r := a.call("GET", "/v1/products/1337/team", nil, http.Header{"Origin": {"http://evil.example"}, "Sec-Fetch-Site": {"cross-site"}})
	if r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("cross-site GET: %d, Access-Control-Allow-Origin %q; want 200 without CORS", r.Status, r.Header.Get("Access-Control-Allow-Origin"))
	}

	found := false
	for _, line := range strings.Split(readFile(t, a.auditPath), "\n") {
		if strings.Contains(line, `"cross_site_request"`) && strings.Contains(line, "evil.example") {
			found = true
		}
	}
	if !found {
		t.Error("no audit record of a refused cross-site request")
	}
}

// TestManagementSecurityHeaders checks the headers every response of the
// management handler carries: the API's, its errors', the console's.
func TestManagementSecurityHeaders(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	a.createVia("/v1/products/1337", map[string]any{"username": "hdr"})
	want := map[string]string{
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
		"X-Frame-Options":        "DENY",
	}
	for _, req := range []struct{ method, path string }{
		{"GET", "/"},
		{"GET", "/console/app.js"},
		{"GET", "/v1/products/1337/team"},
		{"POST", "/v1/products/1337/team/hdr/token"},
		{"GET", "/v1/nothing-here"},
		{"GET", "/openapi.json"},
	} {
		r := a.call(req.method, req.path, nil)
		if r.Status >= 500 {
			t.Errorf("%s %s: %d", req.method, req.path, r.Status)
		}
		for k, v := range want {
			if got := r.Header.Get(k); got != v {
				t.Errorf("%s %s: %s = %q, want %q", req.method, req.path, k, got, v)
			}
		}
		csp := r.Header.Get("Content-Security-Policy")
		for _, directive := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, directive) {
				t.Errorf("%s %s: Content-Security-Policy %q lacks %s", req.method, req.path, csp, directive)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s %s: Content-Security-Policy allows inline or eval'd script: %q", req.method, req.path, csp)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestCrossSiteWriteRule is the rule itself, for the cases a real browser
// is hard to make send: default ports, IPv6, case, malformed origins.
func TestCrossSiteWriteRule(t *testing.T) {
	tests := []struct {
		method, host string
		header       http.Header
		refused      bool
	}{
		{"POST", "127.0.0.1:8081", nil, false},
		{"GET", "127.0.0.1:8081", http.Header{"Origin": {"http://evil.example"}, "Sec-Fetch-Site": {"cross-site"}}, false},
		{"POST", "127.0.0.1:8081", http.Header{"Origin": {"http://127.0.0.1:8081"}}, false},
		{"POST", "admin.example.com", http.Header{"Origin": {"https://admin.example.com:443"}}, false},
		{"POST", "admin.example.com", http.Header{"Origin": {"http://ADMIN.example.com"}}, false},
		{"POST", "[::1]:8081", http.Header{"Origin": {"http://[::1]:8081"}}, false},
		{"DELETE", "127.0.0.1:8081", http.Header{"Sec-Fetch-Site": {"same-origin"}}, false},
		{"PUT", "127.0.0.1:8081", http.Header{"Sec-Fetch-Site": {"none"}}, false},
		{"POST", "admin.example.com", http.Header{"Origin": {"https://admin.example.com:8443"}}, true},
		{"POST", "[::1]:8081", http.Header{"Origin": {"http://[::1]:8082"}}, true},
		{"POST", "127.0.0.1:8081", http.Header{"Origin": {"http://127.0.0.1:8081/path"}}, true},
		{"POST", "127.0.0.1:8081", http.Header{"Origin": {"file://"}}, true},
		{"POST", "127.0.0.1:8081", http.Header{"Origin": {"http://user@127.0.0.1:8081"}}, true},
		{"POST", "", http.Header{"Origin": {"http://127.0.0.1:8081"}}, true},
		{"PATCH", "127.0.0.1:8081", http.Header{"Sec-Fetch-Site": {"cross-site"}}, true},
		{"POST", "127.0.0.1:8081", http.Header{"Sec-Fetch-Site": {"same-origin", "cross-site"}}, true},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest(tt.method, "http://x/v1/roles/r", nil)
		r.Host = tt.host
		r.Header = tt.header
		if r.Header == nil {
			r.Header = http.Header{}
		}
		if got := crossSiteWrite(r) != ""; got != tt.refused {
			t.Errorf("%s to %q with %v: refused %v, want %v (%s)", tt.method, tt.host, tt.header, got, tt.refused, crossSiteWrite(r))
		}
	}
}
