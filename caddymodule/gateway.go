package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

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
	LockoutWindow caddy.Duration `json:"lockout_window,omitempty"`

	app     *App
	headers *headerRules
	lockout *lockout
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Gateway) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_users",
		New: func() caddy.Module { return new(Gateway) },
	}
}

const (
	defaultLockoutThreshold = 10
	defaultLockoutWindow    = 5 * time.Minute
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
	if g.LockoutThreshold == 0 {
		g.LockoutThreshold = defaultLockoutThreshold
	}
	if g.LockoutWindow == 0 {
		g.LockoutWindow = caddy.Duration(defaultLockoutWindow)
	}
	if g.LockoutThreshold > 0 {
		if g.LockoutWindow < 0 {
			return fmt.Errorf("api_users: lockout window %s is negative: give a positive duration such as 5m", time.Duration(g.LockoutWindow))
		}
		g.lockout = newLockout(g.LockoutThreshold, time.Duration(g.LockoutWindow), g.app.now)
		go g.pruneLockout(ctx)
	}
	if len(g.app.Endpoints) == 0 {
		g.logger.Warn("the endpoint catalog is empty, so every API-user request is refused; add endpoints to the api_users global option")
	}
	return nil
}

func (g *Gateway) pruneLockout(ctx caddy.Context) {
	t := time.NewTicker(time.Duration(g.LockoutWindow))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.lockout.prune()
		}
	}
}

// ServeHTTP runs the decision steps of the spec in order, failing closed at
// each, and calls next only for an allowed request (or, with PassThrough, a
// request without an API-user credential).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	app := g.app
	rec := auditRecord{start: time.Now(), method: r.Method, clientIP: clientIP(r)}
	now := app.now()

	// Step 1: an ambiguous request is refused before anything else. The
	// path checked and matched is the one the upstream will receive.
	path := r.URL.EscapedPath()
	rec.path = path
	hdr := g.headers.scan(r.Header)
	if reason := policy.CheckPath(path); reason != policy.Allowed {
		return g.refuse(w, r, &rec, reason, 0)
	}
	if hdr.methodOverride || (r.Trailer != nil && g.headers.declaresOverride(r.Trailer)) {
		return g.refuse(w, r, &rec, policy.MethodOverride, 0)
	}

	// Step 2: authenticate.
	if left, locked := g.lockout.locked(rec.clientIP); locked {
		return g.refuse(w, r, &rec, policy.LockedOut, left)
	}
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
	if reason == policy.MissingCredentials && g.PassThrough {
		return g.passThrough(w, r, &rec, next)
	}
	if reason != policy.Allowed {
		return g.refuseAuth(w, r, &rec, reason)
	}
	var cu *cachedUser
	var err error
	switch cred.Kind {
	case policy.BearerToken:
		h := policy.HashOf(cred.Token)
		rec.credentialID = policy.TokenIDOf(h)
		cu, err = app.principalByToken(r.Context(), h)
	case policy.KeyAndSecret:
		rec.credentialID, _ = policy.KeyIDOf(cred.Key)
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
		return g.refuse(w, r, &rec, policy.StoreUnavailable, 0)
	}
	if cu == nil || cu.p == nil {
		return g.refuseAuth(w, r, &rec, policy.InvalidCredentials)
	}
	p := cu.p
	rec.principal = p

	// Steps 3 to 5, and the user's retired, expiry and idle checks.
	req := policy.Request{Method: r.Method, Path: path}
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
	v := app.view.Load()
	d := policy.Decide(&req, p, v.catalog, v.tenancy, now, cu.lastSeen())
	rec.endpoint = d.Endpoint
	if d.Reason != policy.Allowed {
		if d.Reason.Status() == http.StatusUnauthorized {
			return g.refuseAuth(w, r, &rec, d.Reason)
		}
		return g.refuse(w, r, &rec, d.Reason, 0)
	}
	app.touches.seen(p.User.ID, cu, now)

	// Step 6: forward with the identity the decision established.
	g.headers.strip(r.Header, false)
	g.headers.guardTrailers(r)
	u := p.User
	r.Header[HeaderAPIUser] = []string{u.ID}
	r.Header[HeaderAPIUserOrg] = []string{u.Org}
	product := ""
	if u.Product != 0 {
		product = strconv.FormatInt(u.Product, 10)
		r.Header[HeaderAPIUserProduct] = []string{product}
	}
	rec.product = product
	acting := u.ID
	if d.ProxiedUser != "" {
		r.Header[g.headers.proxiedCanon] = []string{d.ProxiedUser}
		acting = d.ProxiedUser
		rec.actingFor = d.ProxiedUser
	}
	r.Header[HeaderActingUser] = []string{acting}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", u.ID)
	repl.Set("http.auth.user.org", u.Org)
	repl.Set("http.auth.user.product", product)
	repl.Set("http.auth.user.proxied_user", d.ProxiedUser)
	repl.Set("http.auth.user.acting_user", acting)
	repl.Set("http.auth.user.endpoint", d.Endpoint.Name)
	repl.Set("http.auth.user.credential_id", rec.credentialID)
	caddyhttp.SetVar(r.Context(), apiUserVarKey, u.ID)

	// Caddy's access log names the user by {http.auth.user.id} (its
	// user_id field); these add where the user belongs and for whom it
	// acts, in one field so the access log's field list grows once.
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Inline(accessLogFields{org: u.Org, product: product, proxiedUser: d.ProxiedUser}))
	}

	rec.status = http.StatusOK
	g.decided(&rec, policy.Allowed)
	return next.ServeHTTP(w, r)
}

// passThrough forwards a request without an API-user credential, as
// PassThrough allows: the backend's own Authorization stays, the
// client-sent identity headers go.
func (g *Gateway) passThrough(w http.ResponseWriter, r *http.Request, rec *auditRecord, next caddyhttp.Handler) error {
	g.headers.strip(r.Header, true)
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

// decided counts and audits a decision, once it is made and before the
// response is written or the request forwarded.
func (g *Gateway) decided(rec *auditRecord, reason policy.Reason) {
	outcome, endpoint := int(reason), -1
	if rec.passThrough {
		outcome = passThroughOutcome
	}
	if rec.endpoint != nil {
		endpoint = rec.endpoint.Index()
	}
	g.app.metrics.decided(endpoint, outcome, time.Since(rec.start))
	g.app.writeAudit(rec, reason)
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
// administrators.
const apiUserVarKey = "api_users.api_user"

// refuseAuth answers a failed authentication: 401 with a challenge, and a
// count against the client address.
func (g *Gateway) refuseAuth(w http.ResponseWriter, r *http.Request, rec *auditRecord, reason policy.Reason) error {
	if reason == policy.InvalidCredentials || reason == policy.MalformedCredentials {
		g.lockout.fail(rec.clientIP)
	}
	w.Header()["Www-Authenticate"] = wwwAuthenticate
	return g.refuse(w, r, rec, reason, 0)
}

var wwwAuthenticate = []string{`Bearer realm="api_users"`, `Basic realm="api_users"`}

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
