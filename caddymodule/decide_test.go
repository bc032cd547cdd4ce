package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

// TestDecideAgreesWithGateway sends a table of requests to the real
// gateway with each user's token, and asks the decide route about the same
// method, path and proxied user: status and reason code must be the same
// every time, allowed requests included.
func TestDecideAgreesWithGateway(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	plain := a.createVia("/v1/products/1337", map[string]any{
		"username": "plain", "scopes": []string{"devices:list", "devices:get"},
		"allow_proxied_users": true, "allowed_proxied_users": []string{"alice"},
	})
	constrained := a.createVia("/v1/products/1337", map[string]any{
		"username": "constrained", "scopes": []string{"devices:get"}, "resource_constraints": map[string][]string{"device": {"0a1b2c"}},
	})
	narrow := a.createVia("/v1/orgs/acme", map[string]any{
		"username": "narrow", "roles": []string{"device-reader"}, "allowed_endpoints": []string{"get-device"},
	})
	retired := a.createVia("/v1/products/4242", map[string]any{"username": "retired", "scopes": []string{"devices:list"}})
	a.must("PUT", "/v1/products/4242/team/retired", map[string]any{"retired": true}, nil)

	users := map[string]struct {
		prefix, token string
	}{
		"plain":       {"/v1/products/1337", plain.Created.Tokens[0].Token},
		"constrained": {"/v1/products/1337", constrained.Created.Tokens[0].Token},
		"narrow":      {"/v1/orgs/acme", narrow.Created.Tokens[0].Token},
		"retired":     {"/v1/products/4242", retired.Created.Tokens[0].Token},
	}
	tests := []struct {
		user, method, path, proxied string
		want                        string // the reason code both must give
	}{
		{"plain", "GET", "/v1/products/1337/devices", "", "allowed"},
		{"plain", "GET", "/v1/products/my-product-v1/devices/abc?x=1", "", "allowed"},
		{"plain", "PUT", "/v1/products/1337/devices/abc", "", "insufficient_scope"},
		{"plain", "GET", "/v1/products/4242/devices", "", "tenant_mismatch"},
		{"plain", "GET", "/v1/products/1337/gadgets", "", "no_endpoint"},
		{"plain", "GET", "/v1/products/1337/devices/a%2Fb", "", "ambiguous_path"},
		{"plain", "GET", "/v1/products/1337//devices", "", "ambiguous_path"},
		{"plain", "GET", "/v1/products/1337/devices?_method=DELETE", "", "method_override"},
		{"plain", "GET", "/v1/products/1337/devices/0a1b2c%3F/x", "", "ambiguous_path"},
		{"plain", "GET", "/v1/products/1337/devices?access_token=apiu_at_000000000000000000000000000000000000000000000000", "", "misplaced_credentials"},
		{"plain", "GET", "/v1/products/1337/devices", "alice", "allowed"},
		{"plain", "GET", "/v1/products/1337/devices", "bob", "proxied_user_not_allowed"},
		{"plain", "GET", "/v1/products/1337/devices", "not valid!", "invalid_proxied_user"},
		{"constrained", "GET", "/v1/products/1337/devices/0a1b2c", "", "allowed"},
		{"constrained", "GET", "/v1/products/1337/devices/ffffff", "", "resource_constraint"},
		{"narrow", "GET", "/v1/products/4242/devices/abc", "", "allowed"},
		{"narrow", "GET", "/v1/products/9001/devices/abc", "", "tenant_mismatch"},
		{"narrow", "GET", "/v1/products/4242/devices", "", "endpoint_not_allowed"},
		{"retired", "GET", "/v1/products/4242/devices", "", "user_retired"},
	}
	for _, tt := range tests {
		t.Run(tt.user+" "+tt.method+" "+tt.path+" "+tt.proxied, func(t *testing.T) {
			u := users[tt.user]
			h := bearer(u.token)
			spec := map[string]any{"method": tt.method, "path": tt.path}
			if tt.proxied != "" {
				h.Set("X-Proxied-User", tt.proxied)
				spec["proxied_user"] = tt.proxied
			}
			gw := a.do(tt.method, tt.path, h)
			a.upstream.take()
			gwReason := gw.Error.Error
			if gw.Status == http.StatusOK {
				gwReason = "allowed"
			}

			var body struct {
				Decision DecisionView `json:"decision"`
			}
			a.must("POST", u.prefix+"/team/"+tt.user+"/decide", spec, &body)
			d := body.Decision
			if gwReason != tt.want || d.Reason != tt.want {
				t.Errorf("gateway %d %s, decide %d %s; want both %s", gw.Status, gwReason, d.Status, d.Reason, tt.want)
			}
			if d.Status != gw.Status {
				t.Errorf("decide says status %d, the gateway answered %d", d.Status, gw.Status)
			}
			if d.Allowed != (tt.want == "allowed") {
				t.Errorf("decide allowed = %v for %s", d.Allowed, tt.want)
			}
			if d.Allowed && (d.Endpoint == nil || d.Step != 6 || d.StepName != "forward") {
				t.Errorf("allowed decision without its endpoint and step: %+v", d)
			}
		})
	}

	// The decision names the endpoint, its variables and the step.
	var body struct {
		Decision DecisionView `json:"decision"`
	}
	a.must("POST", "/v1/products/1337/team/plain/decide", map[string]any{"method": "PUT", "path": "/v1/products/1337/devices/abc"}, &body)
	d := body.Decision
	if d.Endpoint == nil || d.Endpoint.Name != "update-device" || d.Endpoint.Scope != "devices:update" || d.Vars["device"] != "abc" || d.Vars["product"] != "1337" || d.Step != 4 || d.StepName != "authorize" {
		t.Errorf("decision of a wrong-scope request: %+v", d)
	}

	// Bad input names the field; another team's user is not found.
	for _, tt := range []struct {
		body  any
		field string
	}{
		{map[string]any{"method": "GET"}, "path"},
		{map[string]any{"path": "/v1/products/1337/devices"}, "method"},
		{map[string]any{"method": "GET", "path": "v1/products"}, "path"},
		{map[string]any{"method": "G ET", "path": "/"}, "method"},
		{map[string]any{"method": "GET", "path": "/", "upstream": "x"}, "upstream"},
	} {
		r := a.call("POST", "/v1/products/1337/team/plain/decide", tt.body)
		if r.Status != 400 || !strings.HasPrefix(r.Error.Description, tt.field+":") {
			t.Errorf("decide %v: %d %q, want 400 naming %s", tt.body, r.Status, r.Error.Description, tt.field)
		}
	}
	if r := a.call("POST", "/v1/products/4242/team/plain/decide", map[string]any{"method": "GET", "path": "/"}); r.Status != 404 {
		t.Errorf("decide for a user of another product: %d, want 404", r.Status)
	}
	// Deciding changes nothing and sends nothing upstream.
	if got := a.upstream.take(); len(got) != 0 {
		t.Errorf("the upstream received %d requests from decide", len(got))
	}
}

// TestCLIExplain runs caddy api-users explain for an allowed and a refused
// request.
func TestCLIExplain(t *testing.T) {
	cfg := cliConfig(t)
	mustCLI(t, cfg, "create", "--product", "1337", "--username", "shell-bot", "--scopes", "devices:list")
	out := mustCLI(t, cfg, "explain", "shell-bot", "GET", "/v1/products/my-product-v1/devices")
	for _, want := range []string{"allowed (200 allowed)", "list-devices", "6 forward", "product=my-product-v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain (allowed) lacks %q:\n%s", want, out)
		}
	}
	out = mustCLI(t, cfg, "explain", "shell-bot", "GET", "/v1/products/4242/devices", "--proxied-user", "alice")
	for _, want := range []string{"refused (403 tenant_mismatch)", "4 authorize"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain (refused) lacks %q:\n%s", want, out)
		}
	}
	if out, err := runCLI(t, cfg, "explain", "shell-bot", "GET", "no-slash"); err == nil || !strings.Contains(err.Error(), "path") {
		t.Errorf("explain with a bad path: %v\n%s", err, out)
	}
}
