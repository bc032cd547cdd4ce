package caddymodule

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/apiusers/caddy-api-users/policy"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// openAPIDocument describes every route of adminRoutes; a test keeps the
// two in step.
//
//go:embed openapi.json
var openAPIDocument []byte

// Admin is the `api_users_admin` HTTP handler: the management REST API of
// API users, their credentials, roles, orgs and products, with Particle's
// routes (/v1/orgs/{org}/team, /v1/products/{product}/team) and Momentus's
// Secret and Keys. It answers every request it receives, so mount it where
// the operator wants it and protect it with Caddy's own tools: bind it to
// loopback, put basic_auth or forward_auth before it. It takes the caller's
// identity for the audit log from what those set, and refuses any request
// the gateway authenticated as an API user: API users are for machines,
// not administrators.
//
// All changes go through the `api_users` app, the one the gateway uses, so
// the very next gateway request sees them.
type Admin struct {
	// Actor is the placeholder that names the caller in the audit log.
	// Default: {http.auth.user.id}, which basic_auth sets. Behind
	// forward_auth, copy the identity header of the auth service's answer
	// and name it here, such as {http.request.header.Remote-User}. When it
	// is empty, the audit log names the client address.
	Actor string `json:"actor,omitempty"`

	app    *App
	mux    *http.ServeMux
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_users_admin",
		New: func() caddy.Module { return new(Admin) },
	}
}

const defaultAdminActor = "{http.auth.user.id}"

// maxBodyBytes bounds a management request's body.
const maxBodyBytes = 1 << 20

// adminRoute is one route of the management API: a net/http ServeMux
// pattern's method and path, and what serves it. A handler returns the
// response body, answered with 200, or an error that errorStatus maps to a
// status and a JSON error.
type adminRoute struct {
	Method  string
	Pattern string
	serve   func(h *Admin, c *adminCall) (any, error)
}

// teamRoutes are the routes of the users under prefix, an org's or a
// product's: Particle's, plus token rotation and Momentus's Secret and Keys.
func teamRoutes(prefix string) []adminRoute {
	team, user := prefix+"/team", prefix+"/team/{username}"
	return []adminRoute{
		{"POST", team, (*Admin).createUser},
		{"GET", team, (*Admin).listTeam},
		{"GET", user, (*Admin).getUser},
		{"PUT", user, (*Admin).updateUser},
		{"DELETE", user, (*Admin).deleteUser},
		{"POST", user + "/token", (*Admin).rotateToken},
		{"POST", user + "/secret", (*Admin).regenerateSecret},
		{"POST", user + "/keys", (*Admin).addKey},
		{"DELETE", user + "/keys/{key_id}", (*Admin).deleteKey},
		{"GET", user + "/history", (*Admin).userHistory},
		{"POST", user + "/decide", (*Admin).decide},
		{"GET", user + "/usage", (*Admin).userUsage},
		{"GET", prefix + "/usage", (*Admin).topUsage},
	}
}

// adminRoutes is the whole management API. openapi.json documents exactly
// these routes.
var adminRoutes = slices.Concat(
	teamRoutes("/v1/orgs/{org}"),
	teamRoutes("/v1/products/{product}"),
	[]adminRoute{
		{"GET", "/v1/roles", (*Admin).listRoles},
		{"GET", "/v1/roles/{name}", (*Admin).getRole},
		{"PUT", "/v1/roles/{name}", (*Admin).putRole},
		{"DELETE", "/v1/roles/{name}", (*Admin).deleteRole},

		{"GET", "/v1/orgs", (*Admin).listOrgs},
		{"GET", "/v1/orgs/{org}", (*Admin).getOrg},
		{"PUT", "/v1/orgs/{org}", (*Admin).putOrg},
		{"DELETE", "/v1/orgs/{org}", (*Admin).deleteOrg},
		{"GET", "/v1/orgs/{org}/products", (*Admin).listProducts},
		{"GET", "/v1/orgs/{org}/products/{product}", (*Admin).getProduct},
		{"PUT", "/v1/orgs/{org}/products/{product}", (*Admin).putProduct},
		{"DELETE", "/v1/orgs/{org}/products/{product}", (*Admin).deleteProduct},

		{"GET", "/v1/endpoints", (*Admin).listEndpoints},
		{"GET", "/openapi.json", (*Admin).openAPI},
	},
)

// Provision finds the app and builds the router.
func (h *Admin) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	appIface, err := ctx.App("api_users")
	if err != nil {
		return fmt.Errorf("api_users_admin: loading the api_users app: %w", err)
	}
	h.app = appIface.(*App)
	h.app.adminHandlers.Add(1)
	if h.Actor == "" {
		h.Actor = defaultAdminActor
	}
	h.mux = http.NewServeMux()
	for _, rt := range adminRoutes {
		h.mux.Handle(rt.Method+" "+rt.Pattern, h.handler(rt))
	}
	h.mux.HandleFunc("GET /{$}", h.serveConsole)
	h.mux.HandleFunc("GET /console/{file}", h.serveConsole)
	h.mux.HandleFunc("/", h.noRoute)
	return nil
}

// adminCall is one management request being served.
type adminCall struct {
	w   http.ResponseWriter
	r   *http.Request
	ctx context.Context // carries the Actor for the audit log
}

// setETag sends the entity tag of the API user a response is about, for a
// later If-Match.
func (c *adminCall) setETag(u *policy.APIUser) {
	if u != nil {
		c.w.Header().Set("ETag", ETag(u))
	}
}

// ServeHTTP serves a management request. It never calls next: the
// management API answers everything under its mount point.
func (h *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	hdr := w.Header()
	// Responses carry credentials that are shown once: no cache may keep
	// them.
	hdr.Set("Cache-Control", "no-store")
	for k, v := range pageSecurityHeaders {
		hdr.Set(k, v)
	}

	if ai, _ := caddyhttp.GetVar(r.Context(), apiUserVarKey).(*authInfo); ai != nil {
		h.app.auditRefusedManagement(r, "api_user_forbidden", zap.String("actor", ActorAPIUser), zap.String("api_user", ai.id))
		writeJSONError(w, http.StatusForbidden, "api_user_forbidden",
			"API users cannot administer API users: call the management API with an operator's credentials, not an API user's")
		return nil
	}
	if why := crossSiteWrite(r); why != "" {
		h.app.auditRefusedManagement(r, "cross_site_request", zap.String("why", why))
		writeJSONError(w, http.StatusForbidden, "cross_site_request",
			"changes are accepted from this server's own pages and from clients that are not browsers, not from another site: "+why)
		return nil
	}
	// The router would redirect a path with "//", "." or ".." segments or
	// a trailing "/" to its clean form; a management API names its
	// resources exactly instead.
	if p := r.URL.Path; p == "" || path.Clean(p) != p {
		h.writeError(w, &NotFoundError{Message: fmt.Sprintf("no management route %s %s: paths have no empty, \".\" or \"..\" segments and no trailing \"/\"", r.Method, r.URL.EscapedPath())})
		return nil
	}
	h.mux.ServeHTTP(w, r)
	return nil
}

// handler adapts a route to the ServeMux: the actor goes into the context,
// and the result becomes a JSON body or a JSON error.
func (h *Admin) handler(rt adminRoute) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		actor := Actor{ClientIP: clientIP(r)}
		if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
			actor.ID = strings.TrimSpace(repl.ReplaceAll(h.Actor, ""))
		}
		c := &adminCall{w: w, r: r, ctx: WithActor(r.Context(), actor)}
		if ifMatch, ok := r.Header["If-Match"]; ok {
			// Conditional requests are offered where an entity tag is:
			// a single API user. Elsewhere the condition could not be
			// honoured, and an unconditional change is not what the
			// client asked for.
			if !strings.Contains(rt.Pattern, "{username}") {
				h.writeError(w, fieldErr("If-Match", "conditional requests are supported on a single API user's routes only (.../team/{username} and below); send this request without If-Match"))
				return
			}
			c.ctx = WithIfMatch(c.ctx, strings.Join(ifMatch, ","))
		}
		body, err := rt.serve(h, c)
		if err != nil {
			h.writeError(w, err)
			return
		}
		if raw, ok := body.(json.RawMessage); ok {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(raw)
			return
		}
		writeJSON(w, http.StatusOK, body)
	})
}

// noRoute answers a request no route matches: 405 with Allow when the path
// has routes for other methods, else 404.
func (h *Admin) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.WithContext(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "/" && pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeJSONError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s is not allowed on %s: use %s", r.Method, r.URL.EscapedPath(), strings.Join(allowed, ", ")))
		return
	}
	h.writeError(w, &NotFoundError{Message: fmt.Sprintf("no management route %s %s: GET /openapi.json lists them", r.Method, r.URL.EscapedPath())})
}

// writeError answers err as a JSON error: 400 for a FieldError, 404, 409,
// 412 for a PreconditionError, 501 for a NotImplementedError, and 503 for
// anything else, which means the store failed; its details go to the
// server log, not to the client.
func (h *Admin) writeError(w http.ResponseWriter, err error) {
	var fe *FieldError
	var nf *NotFoundError
	var ce *ConflictError
	var pe *PreconditionError
	var ni *NotImplementedError
	switch {
	case errors.As(err, &ni):
		writeJSONError(w, http.StatusNotImplemented, "not_implemented", ni.Error())
	case errors.As(err, &pe):
		writeJSONError(w, http.StatusPreconditionFailed, "precondition_failed", pe.Error())
	case errors.As(err, &fe):
		writeJSONError(w, http.StatusBadRequest, "invalid_request", fe.Error())
	case errors.As(err, &nf):
		writeJSONError(w, http.StatusNotFound, "not_found", nf.Error())
	case errors.As(err, &ce):
		writeJSONError(w, http.StatusConflict, "conflict", ce.Error())
	default:
		h.logger.Error("management request failed", zap.Error(err))
		writeJSONError(w, http.StatusServiceUnavailable, "store_unavailable",
			"the API-user store could not complete the request: read the resource to see whether the change was made, then try again; the server log has the details")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// okBody is a success body: {"ok": true} followed by its fields in order,
// as Particle writes them.
type okBody []okField

type okField struct {
	key   string
	value any
}

// okWith builds a success body from key, value pairs.
func okWith(kv ...any) okBody {
	b := make(okBody, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, okField{kv[i].(string), kv[i+1]})
	}
	return b
}

var okOnly = okBody{}

// MarshalJSON writes "ok" first, then the fields in order.
func (b okBody) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"ok":true`)
	for _, f := range b {
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.value)
		if err != nil {
			return nil, err
		}
		buf.WriteByte(',')
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// readBody decodes the request body, a JSON object, into v. Unknown
// fields, trailing data, bodies over 1 MiB, and what checkStrictJSON
// refuses (duplicate keys, field names in another case, invalid UTF-8) are
// refused with a message that names the field. An empty body leaves v as it is when optional.
// The fields a request may send are those of v's JSON tags, so a field
// added to a request's type is accepted and named in errors at once.
func (c *adminCall) readBody(v any, optional bool) error {
	fields := jsonFieldNames(reflect.TypeOf(v).Elem())
	data, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return fieldErr("body", "is larger than 1 MiB")
	}
	if err != nil {
		return fieldErr("body", "could not be read: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if optional {
			return nil
		}
		return fieldErr("body", "is empty: send a JSON object with the fields %s", strings.Join(fields, ", "))
	}
	if err := checkStrictJSON(data, v); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonFieldError(err, fields)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr("body", "has more after the JSON object: send one object")
	}
	return nil
}

// readOnlyFields are fields of responses that no request may set.
var readOnlyFields = []string{"org", "product", "created_at", "updated_at", "last_used_at", "is_programmatic", "token_id", "keys", "tokens", "secret", "source", "products", "id", "name"}

// jsonFieldError turns a decoding error into a FieldError naming the field.
func jsonFieldError(err error, fields []string) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe // from a field's own decoder, naming itself
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return fieldErr("body", "must be a JSON object, not %s", typeErr.Value)
		}
		return fieldErr(field, "must be %s, not %s", jsonTypeName(typeErr.Type.String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fieldErr("body", "is not valid JSON (at byte %d: %v); this API takes JSON only, such as {\"friendly_name\": \"…\"}", syntaxErr.Offset, syntaxErr)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fieldErr("body", "is not valid JSON: it ends early")
	}
	if name, found := strings.CutPrefix(err.Error(), "json: unknown field "); found {
		name = strings.Trim(name, `"`)
		if slices.Contains(readOnlyFields, name) {
			return fieldErr(name, "cannot be set by this request (it is read-only or named by the path); leave it out")
		}
		if len(fields) == 0 {
			return fieldErr(name, "is not a field of this request, which takes none: send no body, or {}")
		}
		return fieldErr(name, "is not a field of this request: use %s", strings.Join(fields, ", "))
	}
	return fieldErr("body", "%v", err)
}

func jsonTypeName(goType string) string {
	switch {
	case strings.Contains(goType, "map["):
		return "an object"
	case strings.Contains(goType, "[]"):
		return "an array"
	case strings.Contains(goType, "string"):
		return "a string"
	case strings.Contains(goType, "bool"):
		return "true or false"
	case strings.Contains(goType, "int"):
		return "a number"
	}
	return "a " + goType
}

// tenant is where a team route looks for users: the product of a product
// route, else the org.
func (c *adminCall) tenant() Tenant {
	if p := c.r.PathValue("product"); p != "" {
		return Tenant{Product: p}
	}
	return Tenant{Org: c.r.PathValue("org")}
}

func (h *Admin) createUser(c *adminCall) (any, error) {
	var spec UserSpec
	if err := c.readBody(&spec, false); err != nil {
		return nil, err
	}
	u, iss, err := h.app.CreateUser(c.ctx, c.tenant(), &spec)
	if err != nil {
		return nil, err
	}
	c.setETag(u)
	return okWith("created", createdView(u, iss)), nil
}

func (h *Admin) listTeam(c *adminCall) (any, error) {
	tq, err := teamQueryFrom(c.r.URL.Query())
	if err != nil {
		return nil, err
	}
	users, next, err := h.app.ListTeamPage(c.ctx, c.tenant(), tq)
	if err != nil {
		return nil, err
	}
	team := make([]UserView, 0, len(users))
	for _, u := range users {
		team = append(team, viewOf(u))
	}
	return okWith("team", team, "next", nextCursor(next)), nil
}

func (h *Admin) userHistory(c *adminCall) (any, error) {
	entries, next, err := h.app.UserHistory(c.ctx, c.tenant(), c.r.PathValue("username"), c.r.URL.Query())
	if err != nil {
		return nil, err
	}
	return okWith("history", nonNilSlice(entries), "next", nextCursor(next)), nil
}

func (h *Admin) decide(c *adminCall) (any, error) {
	var spec DecideSpec
	if err := c.readBody(&spec, false); err != nil {
		return nil, err
	}
	u, d, err := h.app.Explain(c.ctx, c.tenant(), c.r.PathValue("username"), spec)
	if err != nil {
		return nil, err
	}
	c.setETag(u)
	return okWith("decision", d), nil
}

func (h *Admin) getUser(c *adminCall) (any, error) {
	u, err := h.app.GetUser(c.ctx, c.tenant(), c.r.PathValue("username"))
	if err != nil {
		return nil, err
	}
	if err := checkIfMatch(c.ctx, u); err != nil {
		return nil, err
	}
	c.setETag(u)
	return okWith("user", viewOf(u)), nil
}

func (h *Admin) updateUser(c *adminCall) (any, error) {
	var spec UserSpec
	if err := c.readBody(&spec, false); err != nil {
		return nil, err
	}
	u, token, err := h.app.UpdateUser(c.ctx, c.tenant(), c.r.PathValue("username"), &spec)
	if err != nil {
		return nil, err
	}
	c.setETag(u)
	v := UpdatedView{UserView: viewOf(u)}
	if token != "" {
		v.Tokens = []TokenView{{Token: token}}
	}
	return okWith("token_replaced", token != "", "user", v), nil
}

func (h *Admin) deleteUser(c *adminCall) (any, error) {
	if _, err := h.app.DeleteUserAt(c.ctx, c.tenant(), c.r.PathValue("username")); err != nil {
		return nil, err
	}
	return okOnly, nil
}

func (h *Admin) rotateToken(c *adminCall) (any, error) {
	if err := c.readBody(&struct{}{}, true); err != nil {
		return nil, err
	}
	u, token, err := h.app.RotateToken(c.ctx, c.tenant(), c.r.PathValue("username"))
	if err != nil {
		return nil, err
	}
	c.setETag(u)
	return okWith("token", token), nil
}

func (h *Admin) regenerateSecret(c *adminCall) (any, error) {
	if err := c.readBody(&struct{}{}, true); err != nil {
		return nil, err
	}
	u, secret, err := h.app.RegenerateSecret(c.ctx, c.tenant(), c.r.PathValue("username"))
	if err != nil {
		return nil, err
	}
	c.setETag(u)
	return okWith("secret", secret), nil
}

func (h *Admin) addKey(c *adminCall) (any, error) {
	var spec KeySpec
	if err := c.readBody(&spec, true); err != nil {
		return nil, err
	}
	u, key, err := h.app.AddKey(c.ctx, c.tenant(), c.r.PathValue("username"), spec)
	if err != nil {
		return nil, err
	}
	c.setETag(u)
	return okWith("key", key), nil
}

func (h *Admin) deleteKey(c *adminCall) (any, error) {
	u, err := h.app.DeleteKey(c.ctx, c.tenant(), c.r.PathValue("username"), c.r.PathValue("key_id"))
	if err != nil {
		return nil, err
	}
	c.setETag(u)
	return okOnly, nil
}

func (h *Admin) listRoles(c *adminCall) (any, error) {
	roles, err := h.app.ListRoles(c.ctx)
	if err != nil {
		return nil, err
	}
	page, next, err := pageOf(nonNilSlice(roles), func(r RoleView) string { return r.Name }, c.r.URL.Query())
	if err != nil {
		return nil, err
	}
	return okWith("roles", page, "next", next), nil
}

func (h *Admin) getRole(c *adminCall) (any, error) {
	r, err := h.app.GetRole(c.ctx, c.r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	return okWith("role", r), nil
}

func (h *Admin) putRole(c *adminCall) (any, error) {
	var spec RoleSpec
	if err := c.readBody(&spec, false); err != nil {
		return nil, err
	}
	r, holders, err := h.app.PutRole(c.ctx, c.r.PathValue("name"), spec)
	if err != nil {
		return nil, err
	}
	// users_affected: how many users hold the role, whose rights changed
	// with it, at once and with the tokens they already have.
	return okWith("role", r, "users_affected", holders), nil
}

func (h *Admin) deleteRole(c *adminCall) (any, error) {
	if err := h.app.DeleteRole(c.ctx, c.r.PathValue("name")); err != nil {
		return nil, err
	}
	return okOnly, nil
}

func (h *Admin) listOrgs(c *adminCall) (any, error) {
	page, next, err := pageOf(h.app.ListOrgs(), func(o OrgView) string { return o.ID }, c.r.URL.Query())
	if err != nil {
		return nil, err
	}
	return okWith("orgs", page, "next", next), nil
}

func (h *Admin) getOrg(c *adminCall) (any, error) {
	o, err := h.app.GetOrg(c.r.PathValue("org"))
	if err != nil {
		return nil, err
	}
	return okWith("org", o), nil
}

func (h *Admin) putOrg(c *adminCall) (any, error) {
	var spec OrgSpec
	if err := c.readBody(&spec, true); err != nil {
		return nil, err
	}
	o, err := h.app.PutOrg(c.ctx, c.r.PathValue("org"), spec)
	if err != nil {
		return nil, err
	}
	return okWith("org", o), nil
}

func (h *Admin) deleteOrg(c *adminCall) (any, error) {
	if err := h.app.DeleteOrg(c.ctx, c.r.PathValue("org")); err != nil {
		return nil, err
	}
	return okOnly, nil
}

func (h *Admin) listProducts(c *adminCall) (any, error) {
	ps, err := h.app.ListProducts(c.r.PathValue("org"))
	if err != nil {
		return nil, err
	}
	page, next, err := pageOf(ps, func(p ProductView) string { return strconv.FormatInt(p.ID, 10) }, c.r.URL.Query())
	if err != nil {
		return nil, err
	}
	return okWith("products", page, "next", next), nil
}

func (h *Admin) getProduct(c *adminCall) (any, error) {
	p, err := h.app.GetProduct(c.r.PathValue("org"), c.r.PathValue("product"))
	if err != nil {
		return nil, err
	}
	return okWith("product", p), nil
}

func (h *Admin) putProduct(c *adminCall) (any, error) {
	var spec ProductSpec
	if err := c.readBody(&spec, true); err != nil {
		return nil, err
	}
	p, err := h.app.PutProduct(c.ctx, c.r.PathValue("org"), c.r.PathValue("product"), spec)
	if err != nil {
		return nil, err
	}
	return okWith("product", p), nil
}

func (h *Admin) deleteProduct(c *adminCall) (any, error) {
	if err := h.app.DeleteProduct(c.ctx, c.r.PathValue("org"), c.r.PathValue("product")); err != nil {
		return nil, err
	}
	return okOnly, nil
}

func (h *Admin) listEndpoints(*adminCall) (any, error) {
	c := h.app.view.Load().catalog
	scopes := []string{}
	for _, s := range c.Scopes() {
		scopes = append(scopes, string(s))
	}
	return okWith("endpoints", endpointViews(c), "scopes", scopes), nil
}

func (h *Admin) openAPI(*adminCall) (any, error) {
	return json.RawMessage(openAPIDocument), nil
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Admin)(nil)
	_ caddyhttp.MiddlewareHandler = (*Admin)(nil)
)
