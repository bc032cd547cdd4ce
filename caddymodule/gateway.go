package caddymodule

import (
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
// handler in the process.
type Gateway struct {
	// ProxiedUserHeader is the request header that names the user an API
	// user acts on behalf of. Default: X-Proxied-User.
	ProxiedUserHeader string `json:"proxied_user_header,omitempty"`

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
	if !validHeaderName(g.ProxiedUserHeader) {
		return fmt.Errorf("api_users: proxied_user_header %q is not a valid header name: use letters, digits and '-', such as X-Proxied-User", g.ProxiedUserHeader)
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
// each, and calls next only for an allowed request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	app := g.app
	now := app.now()
	rec := auditRecord{method: r.Method, clientIP: clientIP(r)}

	// Step 1: an ambiguous request is refused before anything else. The
	// path checked and matched is the one the upstream will receive.
	path := r.URL.EscapedPath()
	rec.path = path
	hdr := g.headers.scan(r.Header)
	if reason := policy.CheckPath(path); reason != policy.Allowed {
		return g.refuse(w, r, &rec, reason, 0)
	}
	if hdr.methodOverride {
		return g.refuse(w, r, &rec, policy.MethodOverride, 0)
	}

	// Step 2: authenticate.
	if left, locked := g.lockout.locked(rec.clientIP); locked {
		return g.refuse(w, r, &rec, policy.LockedOut, left)
	}
	cred, reason := policy.ParseAuthorization(r.Header.Get("Authorization"))
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
		g.logger.Error("reading the API-user store", zap.Error(err))
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
		req.ProxiedUser = hdr.proxiedUser
	}
	v := app.view.Load()
	d := policy.Decide(&req, p, v.catalog, v.tenancy, now, cu.lastSeen())
	if hdr.proxiedCount > 1 && d.Reason == policy.Allowed {
		d.Reason = policy.InvalidProxiedUser
	}
	rec.decision = &d
	if d.Reason != policy.Allowed {
		if d.Reason.Status() == http.StatusUnauthorized {
			return g.refuseAuth(w, r, &rec, d.Reason)
		}
		return g.refuse(w, r, &rec, d.Reason, 0)
	}
	app.touches.seen(p.User.ID, cu, now)

	// Step 6: forward with the identity the decision established.
	g.headers.strip(r.Header)
	u := p.User
	r.Header[HeaderAPIUser] = []string{u.ID}
	r.Header[HeaderAPIUserOrg] = []string{u.Org}
	product := ""
	if u.Product != 0 {
		product = strconv.FormatInt(u.Product, 10)
		r.Header[HeaderAPIUserProduct] = []string{product}
	}
	acting := u.ID
	if d.ProxiedUser != "" {
		r.Header[g.headers.proxiedCanon] = []string{d.ProxiedUser}
		acting = d.ProxiedUser
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

	rec.status = http.StatusOK
	g.app.writeAudit(&rec, policy.Allowed)
	return next.ServeHTTP(w, r)
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
	g.app.writeAudit(rec, reason)
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

func validHeaderName(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Gateway)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gateway)(nil)
)
