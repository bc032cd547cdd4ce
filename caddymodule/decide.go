package caddymodule

import (
	"context"
	"net/netip"
	"net/url"
	"strings"

	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds "try a request": what the gateway would decide for one
// API user and one method and path, and why, without sending anything
// upstream. It runs the gateway's own checks in the gateway's order
// (policy.CheckPath, the method-override query check, the re-escaping
// check, then policy.Decide on the user compiled with the same roles), so
// the answer and the gateway's can never disagree. What it cannot know
// about a real request is left out and said so: the credential itself,
// the client's address (lockout) and the user's request rate.

// DecideSpec is a request to explain: a method, a path as the client would
// send it (escaped, optionally with a query), and the proxied-user header.
type DecideSpec struct {
	Method      string  `json:"method"`
	Path        string  `json:"path"`
	ProxiedUser *string `json:"proxied_user,omitempty"`
	// ClientIP, when set, is the client address to check the user's
	// allowed_ips against; without it they are not checked.
	ClientIP *string `json:"client_ip,omitempty"`
}

// DecisionView is what the gateway would decide, and why.
type DecisionView struct {
	Allowed     bool   `json:"allowed"`
	Status      int    `json:"status"`
	Reason      string `json:"reason"`
	Description string `json:"description"`
	// Step is the decision step that settled it: 1 request, 2
	// authentication (retired, expired, idle), 3 endpoint catalog, 4
	// authorization, 5 proxied user; 6 forward for an allowed request.
	Step     int               `json:"step"`
	StepName string            `json:"step_name"`
	Endpoint *EndpointView     `json:"endpoint"`
	Vars     map[string]string `json:"vars"`
	// EffectiveScopes are the user's own scopes and its roles'.
	EffectiveScopes []string `json:"effective_scopes"`
	ProxiedUser     string   `json:"proxied_user,omitempty"`
	// NotChecked names what a real request is also subject to.
	NotChecked string `json:"not_checked"`
}

// decisionSteps names the steps of the spec's decision order.
var decisionSteps = [...]string{1: "request", 2: "authenticate", 3: "endpoint", 4: "authorize", 5: "proxied_user", 6: "forward"}

// stepOf is the step that gives reason r.
func stepOf(r policy.Reason) int {
	switch r {
	case policy.Allowed:
		return 6
	case policy.MisplacedCredentials, policy.AmbiguousPath, policy.MethodOverride, policy.UpgradeRefused:
		return 1
	case policy.NoEndpoint:
		return 3
	case policy.EndpointNotAllowed, policy.InsufficientScope, policy.TenantMismatch, policy.ResourceConstraint:
		return 4
	case policy.ProxiedUserNotAllowed, policy.InvalidProxiedUser:
		return 5
	}
	return 2
}

const notChecked = "the credential itself, the client address's lockout, the user's rate limit and quota, and, unless client_ip is given, its allowed_ips: a real request must also present a valid credential, come from an allowed address and stay within its rate limit and quota"

// Explain decides spec for the user id at t as the gateway would now.
func (a *App) Explain(ctx context.Context, t Tenant, id string, spec DecideSpec) (*policy.APIUser, DecisionView, error) {
	if spec.Method == "" || !validToken(spec.Method) {
		return nil, DecisionView{}, fieldErr("method", "%q is not an HTTP method such as GET", spec.Method)
	}
	if !strings.HasPrefix(spec.Path, "/") || len(spec.Path) > 8192 || strings.ContainsFunc(spec.Path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, DecisionView{}, fieldErr("path", "%q is not a request path: it starts with \"/\", as the client sends it (escaped), such as /v1/products/1337/devices", spec.Path)
	}
	var client netip.Addr
	if spec.ClientIP != nil {
		addr, err := netip.ParseAddr(*spec.ClientIP)
		if err != nil || addr.Zone() != "" {
			return nil, DecisionView{}, fieldErr("client_ip", "%q is not an IP address such as 203.0.113.7 or 2001:db8::7", *spec.ClientIP)
		}
		client = addr
	}
	u, err := a.GetUser(ctx, t, id)
	if err != nil {
		return nil, DecisionView{}, err
	}
	v := a.view.Load()
	decided := u
	if spec.ClientIP == nil && len(u.AllowedIPs) > 0 {
		decided = u.Clone()
		decided.AllowedIPs = nil // not checked without an address
	}
	p := policy.Compile(decided, v.roles)

	rawPath, rawQuery, _ := strings.Cut(spec.Path, "?")
	req := policy.Request{Method: spec.Method, Path: rawPath, ClientIP: client}
	if spec.ProxiedUser != nil {
		req.HasProxiedUser, req.ProxiedUser = true, *spec.ProxiedUser
	}
	var d policy.Decision
	// Step 1 as the gateway runs it, for a request without headers.
	switch reason := unambiguous(spec.Method, rawPath, rawQuery, reescaped(rawPath), &requestHeaders{}, false); reason {
	case policy.Allowed:
		// withLastSeen has put this process's latest sighting in
		// LastUsedAt, as the gateway's cache would give it.
		d = policy.Decide(&req, p, v.catalog, v.tenancy, a.now(), u.LastUsedAt)
	default:
		d.Reason = reason
	}
	dv := DecisionView{
		Allowed:     d.Reason == policy.Allowed,
		Status:      d.Reason.Status(),
		Reason:      d.Reason.Code(),
		Description: d.Reason.Description(),
		Step:        stepOf(d.Reason),
		Vars:        map[string]string{},
		ProxiedUser: d.ProxiedUser,
		NotChecked:  notChecked,
	}
	dv.StepName = decisionSteps[dv.Step]
	if d.Endpoint != nil {
		e := d.Endpoint
		dv.Endpoint = &EndpointView{Name: e.Name, Methods: e.Methods, Path: e.Path, Scope: string(e.Scope)}
		for i := range d.Vars.Len() {
			name, value := d.Vars.At(i)
			dv.Vars[name] = value
		}
	}
	dv.EffectiveScopes = []string{}
	for _, s := range p.EffectiveScopes() {
		dv.EffectiveScopes = append(dv.EffectiveScopes, string(s))
	}
	return u, dv, nil
}

// reescaped reports whether net/http would re-escape the path the client
// wrote, so the upstream would receive another path: the gateway refuses
// that as ambiguous.
func reescaped(raw string) bool {
	u, err := url.ParseRequestURI(raw)
	return err != nil || u.EscapedPath() != raw
}

// validToken reports whether s is an HTTP token (RFC 9110), as a method is.
func validToken(s string) bool {
	if len(s) > 32 {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
