package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apiusers/caddy-api-users/policy"
)

func init() {
	caddy.RegisterModule(Gateway{})
}

// Gateway is the `api_users` HTTP handler: it authenticates an API-user
// credential, matches the request against the endpoint catalog and the
// user's rights, and either refuses it with a JSON error or passes it on to
// the next handler (usually reverse_proxy) with the client's Authorization
// removed and the identity headers set from the decision. The users, the
// catalog and the store belong to the `api_users` app, shared by every
// handler in the process. Every decision is written to the audit log
// (http.handlers.api_users.audit) and counted in the metrics.
type Gateway struct {
	// ProxiedUserHeader is the request header that names the user an API
	// user acts on behalf of. Default: X-Proxied-User. Its value must be
	// exactly one user ID: 1 to 64 characters, a letter or digit, then
	// letters, digits, ".", "_", "@", "+" or "-" (policy.UserIDSyntax). An
	// empty, overlong or otherwise invalid value, or the header sent more
	// than once (in any spelling), is refused with 403
	// invalid_proxied_user. The upstream receives the allowed proxied user
	// under this same name, and as X-Acting-User. It may not be a header
	// the gateway sets or that HTTP or proxies give a meaning to, such as
	// X-Api-User, Authorization or Connection.
	ProxiedUserHeader string `json:"proxied_user_header,omitempty"`

	// PassThrough, when true, forwards a request that carries no API-user
	// credential at all (no Authorization header, another scheme, a bearer
	// token without the apiu_at_ prefix, Basic credentials without an API
	// key) to the next handler instead of refusing it with 401. Such a
	// request keeps its own Authorization header, since it is the backend's
	// credential, but still loses every client-sent identity header, and is
	// audited with actor "other" and reason "pass_through". An ambiguous
	// path or a method override is still refused first, and a malformed or
	// invalid API-user credential is still a 401. Default: false.
	PassThrough bool `json:"pass_through,omitempty"`

	// LockoutThreshold is how many failed authentications from one client
	// address within LockoutWindow lock that address out. Default: 10.
	// A negative value disables the lockout.
	LockoutThreshold int `json:"lockout_threshold,omitempty"`

	// LockoutWindow is both the window failures are counted in and how
	// long a locked-out address stays locked. Default: 5m.
	//
	// Failures are counted once per process, whichever handler saw them,
	// and the count survives config reloads. A request from a locked-out
	// client is refused with 429 too_many_failures, unless it carries a
	// valid credential of a user the gateway has cached: the lockout slows
	// guessing, and must not let one client behind a shared address (a
	// NAT, a load balancer without trusted_proxies) lock out everyone
	// else there. The client address is Caddy's: the connection's peer,
	// or, when the peer is one of the server's trusted_proxies, an address
	// that the client_ip_headers (X-Forwarded-For by default) name; with
	// trusted_proxies_strict, the rightmost one that is not a trusted
	// proxy, which a client cannot choose.
	LockoutWindow caddy.Duration `json:"lockout_window,omitempty"`

	// LockoutIPv6Prefix is how many leading bits of an IPv6 client
	// address are counted as one client by the lockout: a host is usually
	// given a whole /64, and counting its addresses one by one would give
	// it billions of tries. IPv4 addresses are counted one by one.
	// Default: 64; 128 counts each IPv6 address alone.
	LockoutIPv6Prefix int `json:"lockout_ipv6_prefix,omitempty"`

	// RateLimit, when set, limits how many requests each API user may
	// send through this handler: Requests per Window, in bursts of up to
	// Requests. A user with a rate_limit of its own (set through the
	// management API or the CLI) has that limit instead. A request over
	// the limit is refused with 429 rate_limited and a Retry-After header,
	// after it was authenticated and authorized (a refused request does
	// not count). The count is kept once per process, shared by every
	// handler, and survives config reloads; but each gateway node keeps
	// its own: with N nodes behind a load balancer, a user may send up to
	// N times the limit. Default: no limit, except users' own.
	RateLimit *RateLimitConfig `json:"rate_limit,omitempty"`

	// Quota, when set, is each API user's budget of allowed requests per
	// calendar day or month (UTC), unless the user has a quota of its own.
	// A request over it is refused with 429 quota_exceeded and a
	// Retry-After header that points at the period's reset. The count is
	// shared by every handler of the process and, with PostgreSQL, by
	// every node of the store, within the bound counters.go states.
	// Default: no quota, except users' own.
	Quota *QuotaConfig `json:"quota,omitempty"`

	// AuditLog, when set, names this handler's audit records apart:
	// they go to the logger http.handlers.api_users.audit.<AuditLog>
	// instead of http.handlers.api_users.audit, so an operator can route
	// one site's records to a file of their own. `log { include
	// http.handlers.api_users.audit }` still takes them all. A name is
	// lowercase letters, digits and '_'.
	AuditLog string `json:"audit_log,omitempty"`

	app     *App
	audit   *auditSink // the audit logger of this handler's records
	headers *headerRules
	lockout *lockout // the process's (limits.go); nil when off
	limiter *rateLimiter
	limit   policy.RateLimit // the default, from RateLimit
	quota   policy.Quota     // the default, from Quota
	// counters count quotas and, with rate_limits cluster, rate limits
	// (limits.go); the audit sink counts decisions in the usage.
	counters *windowCounters
	cluster  bool // rate_limits cluster
	logger   *zap.Logger
}

// RateLimitConfig is a per-user request rate limit.
type RateLimitConfig struct {
	// Requests is how many requests a user may send per Window; at least 1.
	Requests int `json:"requests"`

	// Window is the period Requests are counted over; at least 1s.
	Window caddy.Duration `json:"window"`
}

// check validates the limit, naming the fix.
func (c *RateLimitConfig) check() error {
	if c.Requests < 1 {
		return fmt.Errorf("rate_limit requests %d: give a positive whole number, such as 600", c.Requests)
	}
	if time.Duration(c.Window) < time.Second {
		return fmt.Errorf("rate_limit window %s: give a duration of at least 1s, such as 1m", time.Duration(c.Window))
	}
	if time.Duration(c.Window)/time.Duration(c.Requests) <= 0 {
		return fmt.Errorf("rate_limit %d per %s is finer than a nanosecond per request: use fewer requests or a longer window", c.Requests, time.Duration(c.Window))
	}
	return nil
}

// QuotaConfig is a per-user quota.
type QuotaConfig struct {
	// Requests is how many requests a user may have allowed per Period;
	// at least 1.
	Requests int64 `json:"requests"`

	// Period is "day" or "month", calendar periods in UTC.
	Period string `json:"period"`
}

// quota validates the quota, naming the fix, and returns it.
func (c *QuotaConfig) quota() (policy.Quota, error) {
	if c.Requests < 1 {
		return policy.Quota{}, fmt.Errorf("quota requests %d: give a positive whole number, such as 100000", c.Requests)
	}
	p, ok := policy.ParseQuotaPeriod(c.Period)
	if !ok {
		return policy.Quota{}, fmt.Errorf("quota period %q: use day or month (calendar periods, UTC)", c.Period)
	}
	return policy.Quota{Requests: c.Requests, Period: p}, nil
}

// CaddyModule returns the Caddy module information.
func (Gateway) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_users",
		New: func() caddy.Module { return new(Gateway) },
	}
}

const (
	defaultLockoutThreshold  = 10
	defaultLockoutWindow     = 5 * time.Minute
	defaultLockoutIPv6Prefix = 64
)

// Provision finds the app and sets defaults.
func (g *Gateway) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	appIface, err := ctx.App("api_users")
	if err != nil {
		return fmt.Errorf("api_users: loading the api_users app: %w", err)
	}
	g.app = appIface.(*App)
	if err := checkProxiedUserHeader(g.ProxiedUserHeader); err != nil {
		return fmt.Errorf("api_users: %w", err)
	}
	g.headers = newHeaderRules(g.ProxiedUserHeader)
	audit := g.app.audit
	if g.AuditLog != "" {
		if err := checkAuditLogName(g.AuditLog); err != nil {
			return fmt.Errorf("api_users: %w", err)
		}
		audit = audit.Named(g.AuditLog)
	}
	g.audit = newAuditSink(audit, g.app.metrics, g.app.limits.usage)
	if g.LockoutThreshold == 0 {
		g.LockoutThreshold = defaultLockoutThreshold
	}
	if g.LockoutWindow == 0 {
		g.LockoutWindow = caddy.Duration(defaultLockoutWindow)
	}
	if g.LockoutIPv6Prefix == 0 {
		g.LockoutIPv6Prefix = defaultLockoutIPv6Prefix
	}
	if g.LockoutIPv6Prefix < 16 || g.LockoutIPv6Prefix > 128 {
		return fmt.Errorf("api_users: lockout_ipv6_prefix %d is outside 16..128: give the prefix length that one client is given, such as 64", g.LockoutIPv6Prefix)
	}
	if g.LockoutThreshold > 0 {
		if g.LockoutWindow < 0 {
			return fmt.Errorf("api_users: lockout window %s is negative: give a positive duration such as 5m", time.Duration(g.LockoutWindow))
		}
		g.lockout = g.app.limits.lockout
		g.app.limits.useLockoutWindow(time.Duration(g.LockoutWindow))
	}
	if g.RateLimit != nil {
		if err := g.RateLimit.check(); err != nil {
			return fmt.Errorf("api_users: %w", err)
		}
		g.limit = policy.RateLimit{Requests: g.RateLimit.Requests, Window: time.Duration(g.RateLimit.Window)}
	}
	if g.Quota != nil {
		if g.quota, err = g.Quota.quota(); err != nil {
			return fmt.Errorf("api_users: %w", err)
		}
	}
	// Users may have limits of their own even where the site sets none.
	g.limiter = g.app.limits.limiter
	g.counters = g.app.limits.counters
	g.cluster = g.app.clusterRates()
	if len(g.app.Endpoints) == 0 {
		g.logger.Warn("the endpoint catalog is empty, so every API-user request is refused; add endpoints to the api_users global option")
	}
	return nil
}

// ServeHTTP runs the decision steps of the spec in order, failing closed at
// each, and calls next only for an allowed request (or, with PassThrough, a
// request without an API-user credential).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	rec := auditRecord{start: time.Now(), method: r.Method, clientIP: clientIP(r)}
	now := g.app.now()
	// The path checked and matched is the one the upstream will receive.
	rec.path = r.URL.EscapedPath()
	hdr := g.headers.scan(r.Header)

	// Step 1: an ambiguous request is refused before anything else.
	if reason := g.unambiguousRequest(r, rec.path, &hdr); reason != policy.Allowed {
		return g.deny(w, r, &rec, reason, 0)
	}
	// Step 2: authenticate.
	cu, reason, retry := g.authenticate(r, &rec, now)
	if reason == policy.MissingCredentials && g.PassThrough {
		return g.passThrough(w, r, &rec, &hdr, next)
	}
	if reason != policy.Allowed {
		return g.deny(w, r, &rec, reason, retry)
	}
	// Steps 3 to 5, the user's own checks (active, allowed IPs), its rate
	// limit and its quota.
	var d policy.Decision
	reason, retry = g.decide(&d, cu, &rec, &hdr, now)
	if reason != policy.Allowed {
		return g.deny(w, r, &rec, reason, retry)
	}
	// Step 6: forward with the identity the decision established.
	g.forward(r, cu, &d, &rec, &hdr)
	return next.ServeHTTP(w, r)
}

// unambiguousRequest is step 1 on a request: unambiguous, then the
// trailers the request declares.
func (g *Gateway) unambiguousRequest(r *http.Request, path string, hdr *requestHeaders) policy.Reason {
	// The client sent bytes that net/http re-escaped (a raw "{", "|",
	// "#", a non-ASCII byte...) when RawPath differs: the upstream would
	// receive another path than the client wrote.
	reescaped := r.URL.RawPath != "" && r.URL.RawPath != path
	if reason := unambiguous(r.Method, path, r.URL.RawQuery, reescaped, hdr, requestsUpgrade(r)); reason != policy.Allowed {
		return reason
	}
	if r.Trailer != nil {
		return g.headers.declaredOverride(r.Trailer)
	}
	return policy.Allowed
}

// decide is steps 3 to 5 for the authenticated user cu (endpoint, scope,
// tenancy, proxied user, and the user's retired, expiry, idle and allowed
// IPs checks), then its rate limit and quota, into d; for a refusal by a limit, how
// long to wait. (d is the caller's: a Decision is some 300 bytes, not to be
// copied on the hot path.)
func (g *Gateway) decide(d *policy.Decision, cu *cachedUser, rec *auditRecord, hdr *requestHeaders, now time.Time) (policy.Reason, time.Duration) {
	p := cu.p
	rec.principal = p
	req := policy.Request{Method: rec.method, Path: rec.path}
	if hdr.proxiedCount > 0 {
		req.HasProxiedUser = true
		// A repeated header names no single user. It is decided as the
		// empty ID, which is never valid, so it fails step 5 with
		// invalid_proxied_user, after steps 3 and 4 had their say.
		if hdr.proxiedCount == 1 {
			req.ProxiedUser = hdr.proxiedUser
			if policy.ValidUserID(hdr.proxiedUser) {
				rec.proxiedUser = hdr.proxiedUser
			}
		}
	}
	if len(p.User.AllowedIPs) > 0 {
		req.ClientIP = clientAddr(rec.clientIP)
	}
	v := g.app.view.Load()
	*d = policy.Decide(&req, p, v.catalog, v.tenancy, now, cu.lastSeen())
	rec.endpoint = d.Endpoint
	if d.Reason != policy.Allowed {
		return d.Reason, 0
	}
	limit := p.User.RateLimit
	if limit.Requests == 0 {
		limit = g.limit
	}
	if retry, ok := g.admitRate(p.User.ID, limit, now); !ok {
		rec.product = cu.product
		return policy.RateLimited, retry
	}
	quota := p.User.Quota
	if quota.Requests == 0 {
		quota = g.quota
	}
	if quota.Requests > 0 {
		kind := counterQuotaDay
		if quota.Period == policy.QuotaMonth {
			kind = counterQuotaMonth
		}
		if _, end := quota.Window(now); !g.counters.admit(kind, p.User.ID, end, quota.Requests) {
			rec.product = cu.product
			return policy.QuotaExceeded, end.Sub(now)
		}
	}
	g.app.touches.seen(p.User.ID, cu, now)
	return policy.Allowed, 0
}

// admitRate decides one request of user under limit: by the process's
// GCRA limiter (rate_limits node), or by the user's count over all nodes
// in the fixed window that holds now (rate_limits cluster). For a refused
// request it says how long to wait.
func (g *Gateway) admitRate(user string, limit policy.RateLimit, now time.Time) (time.Duration, bool) {
	if limit.Requests <= 0 {
		return 0, true
	}
	if !g.cluster {
		return g.limiter.admit(user, limit)
	}
	end := rateWindowEnd(now, limit.Window)
	if !g.counters.admit(counterRate, user, end, int64(limit.Requests)) {
		return end.Sub(now), false
	}
	return 0, true
}

// forward is step 6: it replaces the request's identity headers with the
// ones decision d established for cu, publishes the identity to Caddy's
// placeholders, variables and access log, and audits the decision. hdr
// is what step 1 read of the headers.
func (g *Gateway) forward(r *http.Request, cu *cachedUser, d *policy.Decision, rec *auditRecord, hdr *requestHeaders) {
	g.headers.stripScanned(r.Header, false, hdr)
	g.headers.guardTrailers(r)
	u := cu.p.User
	ai := &authInfo{
		id: u.ID, org: u.Org, product: cu.product, proxiedUser: d.ProxiedUser,
		acting: u.ID, endpoint: d.Endpoint.Name, credentialID: rec.credentialID,
	}
	if d.ProxiedUser != "" {
		ai.acting = d.ProxiedUser
		rec.actingFor = d.ProxiedUser
	}
	rec.product = ai.product
	ai.setHeaders(r.Header, g.headers.proxiedCanon)
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Map(ai.placeholder)
	if g.app.adminHandlers.Load() > 0 {
		// Only the management handler reads it.
		caddyhttp.SetVar(r.Context(), apiUserVarKey, ai)
	}

	// Caddy's access log names the user by {http.auth.user.id} (its
	// user_id field); these add where the user belongs and for whom it
	// acts, in one field so the access log's field list grows once. A
	// server without access logs never reads them.
	if accessLogged(r) {
		if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
			extra.Add(zap.Inline(ai))
		}
	}

	rec.status = http.StatusOK
	g.decided(rec, policy.Allowed)
}

// deny answers a refused request by its reason: a credential outside
// Authorization as refuseMisplaced, a failed authentication (401) as
// refuseAuth, anything else as refuse, with retry as Retry-After.
func (g *Gateway) deny(w http.ResponseWriter, r *http.Request, rec *auditRecord, reason policy.Reason, retry time.Duration) error {
	switch {
	case reason == policy.MisplacedCredentials:
		return g.refuseMisplaced(w, r, rec)
	case reason.Status() == http.StatusUnauthorized:
		return g.refuseAuth(w, r, rec, reason)
	}
	return g.refuse(w, r, rec, reason, retry)
}

// unambiguous is step 1, pure: it refuses a request that carries an
// API-user credential outside Authorization, or that a backend could read
// as another request than the gateway decides (see policy.CheckPath and
// policy.QueryOverridesMethod), in this order: misplaced credentials,
// ambiguous path (reescaped: net/http re-escaped the path the client
// wrote; a path-override header), method override (a header or _method
// in the query), protocol upgrade or CONNECT. hdr is what the header scan
// found, upgrade whether the headers ask for an upgrade. The gateway and
// the management API's decide route both run it, so they cannot disagree;
// declared trailers are checked by the gateway after it.
func unambiguous(method, path, rawQuery string, reescaped bool, hdr *requestHeaders, upgrade bool) policy.Reason {
	switch {
	case hdr.credential || policy.CarriesCredential(path) || policy.CarriesCredential(rawQuery):
		return policy.MisplacedCredentials
	case policy.CheckPath(path) != policy.Allowed, reescaped, hdr.pathOverride:
		return policy.AmbiguousPath
	case hdr.methodOverride || policy.QueryOverridesMethod(rawQuery):
		return policy.MethodOverride
	case upgrade || method == http.MethodConnect:
		return policy.UpgradeRefused
	}
	return policy.Allowed
}

// authenticate is step 2: it finds the user behind the request's
// credential. A valid credential of a cached user is settled from the
// cache alone, before the lockout is consulted, so it passes even from a
// locked-out client and never waits on the lockout's locks; everything
// else (no credential, a malformed one, a cache miss, a wrong one) is
// refused with LockedOut while the client is locked out, and otherwise
// settled with the store. The reason is Allowed with the user, or why
// there is none, with how long a locked-out client must wait.
func (g *Gateway) authenticate(r *http.Request, rec *auditRecord, now time.Time) (*cachedUser, policy.Reason, time.Duration) {
	app := g.app
	auth := r.Header["Authorization"]
	var cred policy.Credential
	reason := policy.MissingCredentials
	switch len(auth) {
	case 0:
	case 1:
		cred, reason = policy.ParseAuthorization(auth[0])
	default:
		// Which of several credentials counts is ambiguous, and the
		// backend might pick another than the gateway did.
		reason = policy.MalformedCredentials
	}
	var h policy.Hash
	if reason == policy.Allowed {
		switch cred.Kind {
		case policy.BearerToken:
			h = policy.HashOf(cred.Token)
		case policy.KeyAndSecret:
			rec.credentialID, _ = policy.KeyIDOf(cred.Key)
		}
		if cu := app.cachedCredential(&cred, h, now, &rec.cacheHits); cu != nil {
			if cred.Kind == policy.BearerToken {
				rec.credentialID = cu.p.User.TokenID // computed once, at issue
				if rec.credentialID == "" {
					rec.credentialID = policy.TokenIDOf(h)
				}
			}
			return cu, policy.Allowed, 0
		}
	}
	if g.lockout != nil {
		if left, locked := g.lockout.locked(lockoutClient(rec.clientIP, g.LockoutIPv6Prefix)); locked {
			return nil, policy.LockedOut, left
		}
	}
	if reason != policy.Allowed {
		return nil, reason, 0
	}
	var cu *cachedUser
	var err error
	switch cred.Kind {
	case policy.BearerToken:
		cu, err = app.principalByToken(r.Context(), h)
		if cu != nil && cu.p != nil && cu.p.User.TokenID != "" {
			rec.credentialID = cu.p.User.TokenID
		} else {
			rec.credentialID = policy.TokenIDOf(h)
		}
	case policy.KeyAndSecret:
		cu, err = app.principal(r.Context(), cred.UserID)
		var u *policy.APIUser
		if cu != nil && cu.p != nil {
			u = cu.p.User
		}
		if _, ok := policy.VerifyKeyAndSecret(u, cred.Key, cred.Secret, now); !ok {
			cu = nil
		}
	}
	if err != nil {
		if errors.Is(err, errStoreDown) || errors.Is(err, errStoreStale) {
			// The follower has already logged the outage once at error
			// level; a line per refused request would flood the log.
			g.logger.Debug("refusing: the API-user store is unavailable", zap.Error(err))
		} else {
			g.logger.Error("reading the API-user store", zap.Error(err))
		}
		return nil, policy.StoreUnavailable, 0
	}
	if cu == nil || cu.p == nil {
		return nil, policy.InvalidCredentials, 0
	}
	return cu, policy.Allowed, 0
}

// passThrough forwards a request without an API-user credential, as
// PassThrough allows: the backend's own Authorization stays, the
// client-sent identity headers go.
func (g *Gateway) passThrough(w http.ResponseWriter, r *http.Request, rec *auditRecord, hdr *requestHeaders, next caddyhttp.Handler) error {
	g.headers.stripScanned(r.Header, true, hdr)
	g.headers.guardTrailers(r)
	// No user was authenticated: the placeholders are empty, rather than
	// left unknown, so a handler that copies {http.auth.user.id} into a
	// header sends an empty value and not the placeholder's own text.
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	for _, name := range userPlaceholders {
		repl.Set(name, "")
	}
	rec.passThrough = true
	rec.status = http.StatusOK
	g.decided(rec, policy.MissingCredentials)
	return next.ServeHTTP(w, r)
}

// decided hands a decision, once it is made and before the response is
// written or the request forwarded, to be counted (metrics, usage) and
// audited: by the audit queue's writer, off the request path, which does
// all three in bulk (see auditSink.count).
func (g *Gateway) decided(rec *auditRecord, reason policy.Reason) {
	rec.took = time.Since(rec.start)
	g.app.writeAudit(g.audit, rec, reason)
}

// userPlaceholders are the placeholders the gateway sets for an allowed
// request.
var userPlaceholders = []string{
	"http.auth.user.id",
	"http.auth.user.org",
	"http.auth.user.product",
	"http.auth.user.proxied_user",
	"http.auth.user.acting_user",
	"http.auth.user.endpoint",
	"http.auth.user.credential_id",
}

// apiUserVarKey marks a request the gateway authenticated as an API user,
// so the management handler can refuse it: API users are for machines, not
// administrators. Its value is the request's *authInfo.
const apiUserVarKey = "api_users.api_user"

// authInfo is what the gateway established about an allowed request. One
// allocation serves the upstream's identity headers (whose values share
// its array), the {http.auth.user.*} placeholders, the access log's extra
// fields and the management handler's check: this is the hot path, and a
// header slice, a boxed placeholder value and a log field each would cost
// an allocation of their own.
type authInfo struct {
	id, org, product, proxiedUser, acting, endpoint, credentialID string

	vals [5]string
}

// setHeaders sets the upstream's identity headers; the proxied-user header
// is named proxiedCanon.
func (ai *authInfo) setHeaders(h http.Header, proxiedCanon string) {
	ai.vals = [5]string{ai.id, ai.org, ai.product, ai.proxiedUser, ai.acting}
	h[HeaderAPIUser] = ai.vals[0:1:1]
	h[HeaderAPIUserOrg] = ai.vals[1:2:2]
	if ai.product != "" {
		h[HeaderAPIUserProduct] = ai.vals[2:3:3]
	}
	if ai.proxiedUser != "" {
		h[proxiedCanon] = ai.vals[3:4:4]
	}
	h[HeaderActingUser] = ai.vals[4:5:5]
}

// placeholder resolves the {http.auth.user.*} placeholders of
// userPlaceholders for Caddy's replacer.
func (ai *authInfo) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		return nil, false
	}
	switch name {
	case "id":
		return ai.id, true
	case "org":
		return ai.org, true
	case "product":
		return ai.product, true
	case "proxied_user":
		return ai.proxiedUser, true
	case "acting_user":
		return ai.acting, true
	case "endpoint":
		return ai.endpoint, true
	case "credential_id":
		return ai.credentialID, true
	}
	return nil, false
}

// MarshalLogObject adds the API user's org, its product when it is
// product-scoped, and the proxied user when there is one to Caddy's access
// log entry, next to Caddy's own user_id. The names follow the headers the
// upstream receives.
func (ai *authInfo) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("api_user_org", ai.org)
	if ai.product != "" {
		enc.AddString("api_user_product", ai.product)
	}
	if ai.proxiedUser != "" {
		enc.AddString("proxied_user", ai.proxiedUser)
	}
	return nil
}

// refuseAuth answers a failed authentication: 401 with a challenge, and a
// count against the client address.
func (g *Gateway) refuseAuth(w http.ResponseWriter, r *http.Request, rec *auditRecord, reason policy.Reason) error {
	if g.lockout != nil && (reason == policy.InvalidCredentials || reason == policy.MalformedCredentials) {
		g.lockout.fail(lockoutClient(rec.clientIP, g.LockoutIPv6Prefix), g.LockoutThreshold, time.Duration(g.LockoutWindow))
	}
	w.Header()["Www-Authenticate"] = wwwAuthenticate
	return g.refuse(w, r, rec, reason, 0)
}

var wwwAuthenticate = []string{`Bearer realm="api_users"`, `Basic realm="api_users"`}

// refuseMisplaced refuses a request that carries an API-user credential
// outside Authorization (its query, its path, another header). It is never
// forwarded, the audit record's path is redacted, and Caddy's access log
// skips the request, since it would write the URI and the headers with
// the credential in them; the audit record stands in for it.
func (g *Gateway) refuseMisplaced(w http.ResponseWriter, r *http.Request, rec *auditRecord) error {
	rec.path = policy.RedactCredentials(rec.path)
	caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)
	return g.refuse(w, r, rec, policy.MisplacedCredentials, 0)
}

// refuse writes the JSON error for reason and audits the decision. The
// request never reaches the next handler.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, rec *auditRecord, reason policy.Reason, retryAfter time.Duration) error {
	if retryAfter > 0 {
		secs := int64((retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	rec.status = reason.Status()
	g.decided(rec, reason)
	writeError(w, reason)
	return nil
}

// clientAddr parses the client address clientIP found: an address, or an
// address and port. What does not parse is the invalid address, which no
// allowed_ips list holds.
func clientAddr(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("")
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("")
	}
	return netip.Addr{}
}

// accessLogged reports whether the server handling r may write an access
// log entry for it.
func accessLogged(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return !ok || srv.Logs != nil
}

// clientIP is the client address as Caddy determined it, honouring the
// server's trusted_proxies.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		return ip
	}
	return r.RemoteAddr
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Gateway)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gateway)(nil)
)
