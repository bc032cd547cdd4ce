package policy

import (
	"net/netip"
	"time"
)

// Request is what a decision needs to know about a gateway request.
type Request struct {
	Method string
	// Path is the raw, escaped path of the request-URI as the client sent
	// it, without the query.
	Path string
	// ProxiedUser is the value of the proxied-user header, if HasProxiedUser.
	ProxiedUser    string
	HasProxiedUser bool
	// ClientIP is the client address, checked against the user's
	// allowed_ips; it is only read for a user that has some.
	ClientIP netip.Addr
}

// Decision is the outcome of Decide, with what the audit log and the
// forwarded headers need.
type Decision struct {
	Reason Reason
	// Endpoint and Vars are set whenever the catalog matched, even when a
	// later step refused the request.
	Endpoint  *Endpoint
	Vars      Vars
	Principal *Principal
	// ProxiedUser is set when the request named a proxied user and it was
	// allowed.
	ProxiedUser string
}

// Allowed reports whether the request may be forwarded. A zero Decision, or
// one without an endpoint or principal, is never allowed, whatever its
// Reason says.
func (d *Decision) Allowed() bool {
	return d.Reason == Allowed && d.Endpoint != nil && d.Principal != nil
}

// Decide decides a request by the already authenticated principal p, at now.
// lastUsed is the caller's latest record of the user's activity, for idle
// expiry (see Principal.Active). The steps run in order and the first
// failure decides:
//
//  1. CheckPath (again: the caller runs it before authenticating, but the
//     tree must never see an ambiguous path, so Decide does not rely on it);
//  2. p.Active, then the user's allowed_ips (IPNotAllowed);
//  3. the catalog match, NoEndpoint without one;
//  4. p.Authorize;
//  5. p.CheckProxiedUser, when the request names a proxied user.
//
// A nil p fails with InvalidCredentials and a nil c with NoEndpoint. Decide
// does not allocate.
func Decide(req *Request, p *Principal, c *Catalog, t *Tenancy, now, lastUsed time.Time) Decision {
	d := Decision{Principal: p}
	if d.Reason = CheckPath(req.Path); d.Reason != Allowed {
		return d
	}
	if p == nil {
		d.Reason = InvalidCredentials
		return d
	}
	if d.Reason = p.Active(now, lastUsed); d.Reason != Allowed {
		return d
	}
	if !p.User.IPAllowed(req.ClientIP) {
		d.Reason = IPNotAllowed
		return d
	}
	if c == nil {
		d.Reason = NoEndpoint
		return d
	}
	ep, vars, ok := c.Match(req.Method, req.Path)
	if !ok {
		d.Reason = NoEndpoint
		return d
	}
	d.Endpoint, d.Vars = ep, vars
	if d.Reason = p.Authorize(ep, &d.Vars, t); d.Reason != Allowed {
		return d
	}
	if req.HasProxiedUser {
		if d.Reason = p.CheckProxiedUser(req.ProxiedUser); d.Reason != Allowed {
			return d
		}
		d.ProxiedUser = req.ProxiedUser
	}
	return d
}
