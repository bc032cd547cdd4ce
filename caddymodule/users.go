package caddymodule

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds the user life cycle that the management API and the CLI
// share: validation against the catalog, credential issuing, the rule for
// replacing the access token, and writing through the store with the cache
// kept in step and one audit record per change. The management handler and
// the CLI only translate requests and flags into these calls.

// FieldError is a validation failure of one field of a management request.
// It becomes a 400 whose message names the field.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFoundError says that what a management request names does not exist
// where the request looks for it. It becomes a 404. For API users the
// message is the same whether the user does not exist at all or lives in
// another org or product, so a path never tells one tenant's operator about
// another's users.
type NotFoundError struct{ Message string }

func (e *NotFoundError) Error() string { return e.Message }

// ConflictError says that a valid request cannot be applied to the current
// state: a taken name, a role still in use, an entry the Caddyfile defines.
// It becomes a 409.
type ConflictError struct{ Message string }

func (e *ConflictError) Error() string { return e.Message }

func conflictErr(format string, args ...any) error {
	return &ConflictError{Message: fmt.Sprintf(format, args...)}
}

// UserSpec is what a create or update request may set. A nil field is left
// as it is (update) or takes its default (create).
type UserSpec struct {
	Username            *string              `json:"username,omitempty"`
	FriendlyName        *string              `json:"friendly_name,omitempty"`
	Description         *string              `json:"description,omitempty"`
	Scopes              *[]string            `json:"scopes,omitempty"`
	Roles               *[]string            `json:"roles,omitempty"`
	AllowedEndpoints    *[]string            `json:"allowed_endpoints,omitempty"`
	AllowProxiedUsers   *bool                `json:"allow_proxied_users,omitempty"`
	AllowedProxiedUsers *[]string            `json:"allowed_proxied_users,omitempty"`
	Retired             *bool                `json:"retired,omitempty"`
	ExpiresAt           *string              `json:"expires_at,omitempty"`   // RFC 3339; "" clears
	IdleTimeout         *string              `json:"idle_timeout,omitempty"` // Go duration; "" or "0" clears
	RateLimit           *UserRateLimit       `json:"rate_limit,omitempty"`   // requests 0 clears
	ResourceConstraints *map[string][]string `json:"resource_constraints,omitempty"`
}

// Issued holds credential values created by an operation. They are shown
// once, in the response that creates them, and never stored.
type Issued struct {
	Token  string
	Secret string
	Key    string
	KeyID  string
}

// Tenant names where a user lives: an org, and optionally one of its
// products by ID or slug.
type Tenant struct {
	Org     string
	Product string
}

// Actor is who makes a management change, for the audit log: the caller's
// identity as an authentication handler established it (or "cli:<login>"
// for the CLI), and the client address.
type Actor struct {
	ID       string
	ClientIP string
}

type actorKey struct{}

// PreconditionError is a conditional change (If-Match) whose condition
// does not hold: the user changed since the caller read it.
type PreconditionError struct{ Message string }

func (e *PreconditionError) Error() string { return e.Message }

type ifMatchKey struct{}

// WithIfMatch returns a context whose changes to an API user happen only
// if the user's current entity tag is among the tags of an If-Match header
// value ("*" matches any existing user). The check runs inside the store
// transaction that makes the change, so no change made in between is lost.
func WithIfMatch(ctx context.Context, header string) context.Context {
	return context.WithValue(ctx, ifMatchKey{}, header)
}

// ETag is the entity tag of a stored API user: its version and creation
// time, so a user deleted and created again never matches an old tag.
func ETag(u *policy.APIUser) string {
	return `"` + strconv.FormatInt(u.Version, 10) + "." + strconv.FormatInt(u.CreatedAt.UnixNano(), 36) + `"`
}

// checkIfMatch enforces the If-Match condition of ctx, if any, on u as it
// is stored now. Entity tags compare strongly: a weak tag (W/"...") never
// matches.
func checkIfMatch(ctx context.Context, u *policy.APIUser) error {
	header, ok := ctx.Value(ifMatchKey{}).(string)
	if !ok {
		return nil
	}
	current := ETag(u)
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || tag == current {
			return nil
		}
	}
	return &PreconditionError{Message: fmt.Sprintf("API user %q changed since it was read: If-Match %s does not match its current entity tag %s; read it again, then retry", u.ID, header, current)}
}

// WithActor returns a context that carries the actor of the management
// changes made with it.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

func actorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}

// resolveTenant checks that the org and product exist and returns the org
// ID and product ID.
func (a *App) resolveTenant(t Tenant) (string, int64, error) {
	v := a.view.Load()
	if t.Product != "" {
		p, ok := v.tenancy.Product(t.Product)
		if !ok {
			return "", 0, fieldErr("product", "unknown product %q: use the ID or slug of a product in the catalog", t.Product)
		}
		if t.Org != "" {
			o, ok := v.tenancy.Org(t.Org)
			if !ok || o.ID != p.Org {
				return "", 0, fieldErr("org", "product %q does not belong to org %q", t.Product, t.Org)
			}
		}
		return p.Org, p.ID, nil
	}
	o, ok := v.tenancy.Org(t.Org)
	if !ok {
		return "", 0, fieldErr("org", "unknown org %q: use the ID or slug of an org in the catalog", t.Org)
	}
	return o.ID, 0, nil
}

// place is where a management request looks for users: one org's org-level
// users, one product's users, or (for the CLI, naming a user by its
// username alone) anywhere.
type place struct {
	anywhere bool
	org      string
	product  int64
	label    string // "org \"acme\"", "product \"1337\"", for messages
}

// placeOf resolves t; the zero Tenant is anywhere. The org route holds the
// org's org-level users only, and a product route that product's users:
// Particle's org team and product team are separate lists, and each user
// is reachable through exactly one path.
func (a *App) placeOf(t Tenant) (place, error) {
	if t == (Tenant{}) {
		return place{anywhere: true}, nil
	}
	org, product, err := a.resolveTenant(t)
	if err != nil {
		return place{}, err
	}
	if product != 0 {
		return place{org: org, product: product, label: "product " + strconv.Quote(t.Product)}, nil
	}
	return place{org: org, label: "org " + strconv.Quote(t.Org)}, nil
}

func (p place) holds(u *policy.APIUser) bool {
	return p.anywhere || (u.Org == p.org && u.Product == p.product)
}

func (p place) notFound(id string) error {
	if p.anywhere {
		return &NotFoundError{Message: fmt.Sprintf("no API user %q", id)}
	}
	return &NotFoundError{Message: fmt.Sprintf("no API user %q in %s", id, p.label)}
}

// checkUsername refuses a username no user can have, before any lookup.
func checkUsername(id string) error {
	if !policy.ValidUserID(id) {
		return fieldErr("username", "%q is not a valid username: 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit", id)
	}
	return nil
}

// applySpec validates spec against the catalog and applies it to u.
func (a *App) applySpec(u *policy.APIUser, spec *UserSpec) error {
	v := a.view.Load()
	if spec.FriendlyName != nil {
		if err := checkText("friendly_name", *spec.FriendlyName, 200, false); err != nil {
			return err
		}
		u.FriendlyName = *spec.FriendlyName
	}
	if spec.Description != nil {
		if err := checkText("description", *spec.Description, 4000, true); err != nil {
			return err
		}
		u.Description = *spec.Description
	}
	if spec.Scopes != nil {
		scopes, err := knownScopes(v.catalog, "scopes", *spec.Scopes)
		if err != nil {
			return err
		}
		u.Scopes = scopes
	}
	if spec.Roles != nil {
		roles := dedupe(*spec.Roles)
		for _, r := range roles {
			if _, ok := v.roles[r]; !ok {
				return fieldErr("roles", "unknown role %q: use a role of the api_users config or one created with PUT /v1/roles/{name}", r)
			}
		}
		u.Roles = roles
	}
	if spec.AllowedEndpoints != nil {
		eps := dedupe(*spec.AllowedEndpoints)
		for _, e := range eps {
			if _, ok := v.catalog.Endpoint(e); !ok {
				return fieldErr("allowed_endpoints", "unknown endpoint %q: use the name of an endpoint in the catalog (GET /v1/endpoints lists them)", e)
			}
		}
		u.AllowedEndpoints = eps
	}
	if spec.AllowProxiedUsers != nil {
		u.AllowProxiedUsers = *spec.AllowProxiedUsers
	}
	if spec.AllowedProxiedUsers != nil {
		ids := dedupe(*spec.AllowedProxiedUsers)
		for _, id := range ids {
			if !policy.ValidUserID(id) {
				return fieldErr("allowed_proxied_users", "%q is not a valid user ID: 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit", id)
			}
		}
		u.AllowedProxiedUsers = ids
	}
	if spec.Retired != nil {
		u.Retired = *spec.Retired
	}
	if spec.ExpiresAt != nil {
		t, err := parseOptionalTime("expires_at", *spec.ExpiresAt)
		if err != nil {
			return err
		}
		u.ExpiresAt = t
	}
	if spec.IdleTimeout != nil {
		switch s := *spec.IdleTimeout; s {
		case "", "0":
			u.IdleTimeout = 0
		default:
			d, err := time.ParseDuration(s)
			if err != nil || d < time.Minute {
				return fieldErr("idle_timeout", "%q is not a duration of at least a minute, such as 720h", s)
			}
			u.IdleTimeout = d
		}
	}
	if spec.RateLimit != nil {
		rl, err := spec.RateLimit.parse()
		if err != nil {
			return err
		}
		u.RateLimit = rl
	}
	if spec.ResourceConstraints != nil {
		rc := map[string][]string{}
		for name, values := range *spec.ResourceConstraints {
			if !slices.Contains(v.catalog.VarNames(), name) {
				return fieldErr("resource_constraints", "no endpoint in the catalog has a route variable {%s}", name)
			}
			if len(values) == 0 {
				return fieldErr("resource_constraints", "{%s} lists no values: list at least one, or remove the constraint", name)
			}
			for _, value := range values {
				if value == "" || len(value) > 1024 || !utf8.ValidString(value) || strings.ContainsFunc(value, unicode.IsControl) || strings.ContainsFunc(value, bidiControl) {
					return fieldErr("resource_constraints", "{%s} value %q can never match a path segment: give the value as it appears in the path, 1 to 1024 bytes without control characters", name, value)
				}
			}
			rc[name] = dedupe(values)
		}
		if len(rc) == 0 {
			rc = nil
		}
		u.ResourceConstraints = rc
	}
	return nil
}

// UserRateLimit is an API user's own request rate limit: Requests per
// Window (a Go duration of at least 1s), in bursts of up to Requests. It
// takes the place of the gateway's rate_limit for this user. In an update,
// Requests 0 removes the user's own limit, so the gateway's applies again.
type UserRateLimit struct {
	Requests int    `json:"requests"`
	Window   string `json:"window,omitempty"`
}

// UnmarshalJSON reads a rate limit object, naming the field of any error
// as rate_limit.<name>.
func (r *UserRateLimit) UnmarshalJSON(data []byte) error {
	type plain UserRateLimit
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var v plain
	if err := dec.Decode(&v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return fieldErr("rate_limit."+typeErr.Field, "must be %s, not %s", map[string]string{"requests": "a whole number", "window": "a duration string such as \"1m\""}[typeErr.Field], typeErr.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return fieldErr("rate_limit."+name, "is not a field of a rate limit: use requests and window, such as {\"requests\": 600, \"window\": \"1m\"}")
		}
		return fieldErr("rate_limit", "must be an object such as {\"requests\": 600, \"window\": \"1m\"}")
	}
	*r = UserRateLimit(v)
	return nil
}

func (r *UserRateLimit) parse() (policy.RateLimit, error) {
	if r.Requests == 0 {
		return policy.RateLimit{}, nil
	}
	if r.Requests < 0 || r.Requests > 1_000_000_000 {
		return policy.RateLimit{}, fieldErr("rate_limit.requests", "%d is not a number of requests from 1 to 1000000000 (or 0 to remove the user's own limit)", r.Requests)
	}
	w, err := time.ParseDuration(r.Window)
	if err != nil || w < time.Second || w > 366*24*time.Hour {
		return policy.RateLimit{}, fieldErr("rate_limit.window", "%q is not a duration from 1s to 8784h, such as 1m", r.Window)
	}
	return policy.RateLimit{Requests: r.Requests, Window: w}, nil
}

// checkText checks a free-text field: valid UTF-8, at most max characters,
// and no control characters (but tabs and line breaks where multiline):
// PostgreSQL refuses NUL, and a terminal or a log viewer may obey the rest.
func checkText(field, s string, max int, multiline bool) error {
	if !utf8.ValidString(s) {
		return fieldErr(field, "is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fieldErr(field, "is %d characters long, more than %d", n, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t' || r == '\r')) {
			return fieldErr(field, "holds the control character %U: remove it", r)
		}
		if bidiControl(r) {
			return fieldErr(field, "holds the bidirectional control %U, which can make text display in another order than it is stored: remove it", r)
		}
	}
	return nil
}

// bidiControl reports whether r is one of Unicode's bidirectional
// formatting characters (the embeddings, overrides and isolates, and the
// implicit marks), which make a name such as "admin\u202Egnp.exe" display
// differently from what it is (CVE-2021-42574, "Trojan Source").
func bidiControl(r rune) bool {
	return r >= 0x202A && r <= 0x202E || r >= 0x2066 && r <= 0x2069 || r == 0x200E || r == 0x200F || r == 0x061C
}

// knownScopes parses scopes and checks that some endpoint requires each: a
// scope nothing requires is a typo that would grant nothing.
func knownScopes(c *policy.Catalog, field string, in []string) ([]policy.Scope, error) {
	known := c.Scopes()
	var scopes []policy.Scope
	for _, s := range dedupe(in) {
		sc, err := policy.ParseScope(s)
		if err != nil {
			return nil, fieldErr(field, "%v", err)
		}
		if _, ok := slices.BinarySearch(known, sc); !ok {
			return nil, fieldErr(field, "unknown scope %q: no endpoint in the catalog requires it (GET /v1/endpoints lists the scopes)", s)
		}
		scopes = append(scopes, sc)
	}
	return scopes, nil
}

// Times the management API accepts: both stores keep them exactly, to the
// microsecond.
var (
	minSpecTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxSpecTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// parseOptionalTime reads an RFC 3339 time, cut to the microsecond as both
// stores keep it; "" is the zero time ("never"), the only way to say so.
func parseOptionalTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fieldErr(field, "%q is not an RFC 3339 time such as 2027-01-31T00:00:00Z", s)
	}
	if t.Before(minSpecTime) || !t.Before(maxSpecTime) {
		return time.Time{}, fieldErr(field, "%q is outside the years 1970 to 2261 that the store keeps (use \"\" for never)", s)
	}
	return t.UTC().Truncate(time.Microsecond), nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// newUsername generates a user ID for a create request that proposed none.
func newUsername() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails; see crypto/rand
	return "apiu-" + hex.EncodeToString(b)
}

// storeErr turns the store's sentinel errors into the management errors
// callers map to statuses; anything else means the store is unavailable.
func storeErr(err error, notFound func() error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound) && notFound != nil:
		return notFound()
	case errors.Is(err, store.ErrConflict):
		return conflictErr("the record changed while this request was writing it; send the request again")
	case errors.Is(err, store.ErrInUse), errors.Is(err, store.ErrExists):
		return &ConflictError{Message: err.Error()}
	}
	return err
}

// CreateUser validates spec, issues a token, a Secret and a first Key, and
// stores the user. Nothing is written unless everything is valid.
func (a *App) CreateUser(ctx context.Context, t Tenant, spec *UserSpec) (*policy.APIUser, *Issued, error) {
	ctx = a.withHistory(ctx, "create_user", "")
	if spec.Roles != nil {
		catalogMu.RLock()
		defer catalogMu.RUnlock()
	}
	org, product, err := a.resolveTenant(t)
	if err != nil {
		return nil, nil, err
	}
	now := a.now().UTC()
	u := &policy.APIUser{Org: org, Product: product, CreatedAt: now, UpdatedAt: now}
	if spec.Username != nil {
		if err := checkUsername(*spec.Username); err != nil {
			return nil, nil, err
		}
		u.ID = *spec.Username
	} else {
		u.ID = newUsername()
	}
	if err := a.applySpec(u, spec); err != nil {
		return nil, nil, err
	}
	var iss Issued
	iss.Token, u.TokenHash = policy.NewToken()
	u.TokenID = policy.TokenIDOf(u.TokenHash)
	iss.Secret, u.SecretHash = policy.NewSecret()
	var k policy.Key
	iss.Key, k = policy.NewKey(now)
	iss.KeyID = k.ID
	u.Keys = []policy.Key{k}
	if err := a.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, nil, conflictErr("username: %q is taken: choose another, or leave it out to have one generated", u.ID)
		}
		return nil, nil, storeErr(err, nil)
	}
	a.cache.invalidateUser(u.ID)
	a.auditUserChange(ctx, "create_user", nil, u)
	return u, &iss, nil
}

// GetUser returns the user id, if it lives at t (the zero Tenant: anywhere).
func (a *App) GetUser(ctx context.Context, t Tenant, id string) (*policy.APIUser, error) {
	if err := checkUsername(id); err != nil {
		return nil, err
	}
	p, err := a.placeOf(t)
	if err != nil {
		return nil, err
	}
	u, err := a.store.GetUser(ctx, id)
	if err != nil {
		return nil, storeErr(err, func() error { return p.notFound(id) })
	}
	if !p.holds(u) {
		return nil, p.notFound(id)
	}
	return a.withLastSeen(u), nil
}

// withLastSeen moves u's LastUsedAt forward to when this process's gateway
// last saw the user: the store's record is written only every
// last_used_interval, while the batch waiting for that write and the cache
// entry know better.
func (a *App) withLastSeen(u *policy.APIUser) *policy.APIUser {
	seen := a.touches.pendingFor(u.ID)
	if cu, ok := a.cache.users.Get(u.ID); ok && cu.p != nil && cu.lastSeen().After(seen) {
		seen = cu.lastSeen()
	}
	if seen.After(u.LastUsedAt) {
		u.LastUsedAt = seen.UTC()
	}
	return u
}

// pendingFor returns the last-used time of the user id still waiting to be
// written to the store, or the zero time.
func (l *lastUsed) pendingFor(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending[id]
}

// ListTeam lists the users at t, ordered by username: an org's org-level
// users, or one product's users. The zero Tenant lists every user.
func (a *App) ListTeam(ctx context.Context, t Tenant) ([]*policy.APIUser, error) {
	p, err := a.placeOf(t)
	if err != nil {
		return nil, err
	}
	f := store.UserFilter{}
	if !p.anywhere {
		f = store.UserFilter{Org: p.org, Product: p.product, ProductSet: true}
	}
	users, err := a.store.ListUsers(ctx, f)
	if err != nil {
		return nil, storeErr(err, nil)
	}
	for _, u := range users {
		a.withLastSeen(u)
	}
	return users, nil
}

// changeUser runs fn on the user id inside one store transaction, after
// checking that the user lives at t, and then drops the user's cache entry
// so the very next gateway request in this process sees the change (other
// processes see it within their sync interval). fn may run again if a store
// retries the transaction, so it must set its results afresh each time.
func (a *App) changeUser(ctx context.Context, t Tenant, id string, fn func(u *policy.APIUser) error) (before, after *policy.APIUser, err error) {
	if err := checkUsername(id); err != nil {
		return nil, nil, err
	}
	p, err := a.placeOf(t)
	if err != nil {
		return nil, nil, err
	}
	after, err = a.store.UpdateUser(ctx, id, func(u *policy.APIUser) error {
		if !p.holds(u) {
			return p.notFound(id)
		}
		if err := checkIfMatch(ctx, u); err != nil {
			return err
		}
		before = u.Clone()
		return fn(u)
	})
	if err != nil {
		return nil, nil, storeErr(err, func() error { return p.notFound(id) })
	}
	a.cache.invalidateUser(id)
	return before, after, nil
}

// UpdateUser applies spec to the user id at t. If the change may let the
// user's access token do anything it could not do before (see
// tokenMustChange), the token is replaced in the same transaction and the
// new value returned; otherwise newToken is "". The old token fails on the
// very next gateway request.
func (a *App) UpdateUser(ctx context.Context, t Tenant, id string, spec *UserSpec) (u *policy.APIUser, newToken string, err error) {
	ctx = a.withHistory(ctx, "update_user", "")
	if spec.Username != nil && *spec.Username != id {
		return nil, "", fieldErr("username", "a username cannot change (from %q to %q): create a new user and delete this one instead", id, *spec.Username)
	}
	if spec.Roles != nil {
		catalogMu.RLock()
		defer catalogMu.RUnlock()
	}
	before, after, err := a.changeUser(ctx, t, id, func(u *policy.APIUser) error {
		newToken = ""
		prev := u.Clone()
		if err := a.applySpec(u, spec); err != nil {
			return err
		}
		if tokenMustChange(prev, u) {
			newToken = replaceToken(u)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	a.auditUserChange(ctx, "update_user", before, after)
	return after, newToken, nil
}

// tokenMustChange is the rule for replacing the access token on an update,
// after Particle: a leaked old token must never gain anything. The token is
// replaced when the update
//
//   - changes what the user may do, in either direction: scopes, roles,
//     allowed_endpoints, allow_proxied_users, allowed_proxied_users or
//     resource_constraints (compared as sets, so reordering is no change);
//   - or lengthens the token's life: un-retiring, a later or cleared
//     expires_at, a longer or cleared idle_timeout.
//
// It is kept when the update changes only friendly_name or description, or
// only shortens the user's life: retiring, setting an earlier expires_at or
// a shorter idle_timeout. Keys and the Secret are never replaced by an
// update; rotate them with their own routes.
func tokenMustChange(before, after *policy.APIUser) bool {
	switch {
	case !sameSet(before.Scopes, after.Scopes),
		!sameSet(before.Roles, after.Roles),
		!sameSet(before.AllowedEndpoints, after.AllowedEndpoints),
		before.AllowProxiedUsers != after.AllowProxiedUsers,
		!sameSet(before.AllowedProxiedUsers, after.AllowedProxiedUsers),
		!sameConstraints(before.ResourceConstraints, after.ResourceConstraints):
		return true
	case before.Retired && !after.Retired,
		later(before.ExpiresAt, after.ExpiresAt),
		longer(before.IdleTimeout, after.IdleTimeout):
		return true
	}
	return false
}

// later reports whether expiry b ends after expiry a; zero means never.
func later(a, b time.Time) bool {
	if a.IsZero() {
		return false
	}
	return b.IsZero() || b.After(a)
}

// longer reports whether idle timeout b is longer than a; zero means none.
func longer(a, b time.Duration) bool {
	if a == 0 {
		return false
	}
	return b == 0 || b > a
}

func sameSet[T ~string](a, b []T) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

func sameConstraints(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !sameSet(va, vb) {
			return false
		}
	}
	return true
}

// replaceToken gives u a fresh access token and returns its value.
func replaceToken(u *policy.APIUser) string {
	var value string
	value, u.TokenHash = policy.NewToken()
	u.TokenID = policy.TokenIDOf(u.TokenHash)
	return value
}

// RotateToken replaces the user's access token; the old one fails on the
// very next gateway request.
func (a *App) RotateToken(ctx context.Context, t Tenant, id string) (*policy.APIUser, string, error) {
	ctx = a.withHistory(ctx, "rotate_token", "")
	var token string
	before, after, err := a.changeUser(ctx, t, id, func(u *policy.APIUser) error {
		token = replaceToken(u)
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	a.auditUserChange(ctx, "rotate_token", before, after)
	return after, token, nil
}

// RegenerateSecret replaces the user's Secret; every Key stops working with
// the old one at once.
func (a *App) RegenerateSecret(ctx context.Context, t Tenant, id string) (*policy.APIUser, string, error) {
	ctx = a.withHistory(ctx, "regenerate_secret", "")
	var secret string
	before, after, err := a.changeUser(ctx, t, id, func(u *policy.APIUser) error {
		secret, u.SecretHash = policy.NewSecret()
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	a.auditUserChange(ctx, "regenerate_secret", before, after)
	return after, secret, nil
}

// KeySpec is what adding a Key may set.
type KeySpec struct {
	// ExpiresAt, RFC 3339, ends the new key itself: a temporary key.
	ExpiresAt string `json:"expires_at,omitempty"`
	// PreviousKeysExpireAt, RFC 3339, is the end of an overlap window: the
	// user's other keys keep working until then (or until their own,
	// earlier expiry) and stop at that moment, so a rotation needs no
	// second call to delete the old key.
	PreviousKeysExpireAt string `json:"previous_keys_expire_at,omitempty"`
}

// maxKeys bounds a user's keys: rotation needs two or three, and a loop
// that adds keys by mistake should fail before the store fills up.
const maxKeys = 20

// AddKey gives the user another Key; the existing ones keep working (until
// spec.PreviousKeysExpireAt, if set).
func (a *App) AddKey(ctx context.Context, t Tenant, id string, spec KeySpec) (*policy.APIUser, IssuedKey, error) {
	now := a.now().UTC()
	expires, err := parseOptionalTime("expires_at", spec.ExpiresAt)
	if err != nil {
		return nil, IssuedKey{}, err
	}
	if !expires.IsZero() && !expires.After(now) {
		return nil, IssuedKey{}, fieldErr("expires_at", "%s is not in the future: a key must be valid for some time", spec.ExpiresAt)
	}
	othersEnd, err := parseOptionalTime("previous_keys_expire_at", spec.PreviousKeysExpireAt)
	if err != nil {
		return nil, IssuedKey{}, err
	}
	if !othersEnd.IsZero() && !othersEnd.After(now) {
		return nil, IssuedKey{}, fieldErr("previous_keys_expire_at", "%s is not in the future: to stop a key now, delete it", spec.PreviousKeysExpireAt)
	}
	// The key is made before the transaction, so its ID can go into the
	// user's history; a retried transaction adds the same key.
	value, key := policy.NewKey(now)
	key.ExpiresAt = expires
	issued := IssuedKey{ID: key.ID, Value: value}
	if !expires.IsZero() {
		issued.ExpiresAt = &expires
	}
	ctx = a.withHistory(ctx, "add_key", key.ID)
	before, after, err := a.changeUser(ctx, t, id, func(u *policy.APIUser) error {
		if len(u.Keys) >= maxKeys {
			return conflictErr("API user %q has %d keys, the most it may have: delete one first", id, len(u.Keys))
		}
		if !othersEnd.IsZero() {
			for i := range u.Keys {
				if k := &u.Keys[i]; k.ExpiresAt.IsZero() || k.ExpiresAt.After(othersEnd) {
					k.ExpiresAt = othersEnd
				}
			}
		}
		u.Keys = append(u.Keys, key)
		return nil
	})
	if err != nil {
		return nil, IssuedKey{}, err
	}
	a.auditUserChange(ctx, "add_key", before, after, "key_id", issued.ID)
	return after, issued, nil
}

// DeleteKey removes one of the user's Keys; it stops working at once.
// Deleting the last key is allowed, as in Momentus, where deleting keys is
// the way to lock an application out: the user then authenticates only
// with its access token until a key is added.
func (a *App) DeleteKey(ctx context.Context, t Tenant, id, keyID string) (*policy.APIUser, error) {
	ctx = a.withHistory(ctx, "delete_key", keyID)
	if !policy.ValidKeyID(keyID) {
		return nil, fieldErr("key_id", "%q is not a key ID: 16 lowercase hexadecimal digits, as listed in the user's keys", keyID)
	}
	before, after, err := a.changeUser(ctx, t, id, func(u *policy.APIUser) error {
		i := slices.IndexFunc(u.Keys, func(k policy.Key) bool { return k.ID == keyID })
		if i < 0 {
			return &NotFoundError{Message: fmt.Sprintf("API user %q has no key %q", id, keyID)}
		}
		u.Keys = slices.Delete(u.Keys, i, i+1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.auditUserChange(ctx, "delete_key", before, after, "key_id", keyID)
	return after, nil
}

// DeleteUser removes a user and all its credentials; they stop working at
// once in this process and within the sync interval elsewhere.
func (a *App) DeleteUser(ctx context.Context, id string) error {
	_, err := a.DeleteUserAt(ctx, Tenant{}, id)
	return err
}

// DeleteUserAt removes the user id if it lives at t (and, with
// WithIfMatch, if it is unchanged), and returns it as it was. Both checks
// run inside the delete's transaction, so a user moved or changed in
// between is not deleted by a request meant for what it was.
func (a *App) DeleteUserAt(ctx context.Context, t Tenant, id string) (*policy.APIUser, error) {
	ctx = a.withHistory(ctx, "delete_user", "")
	if err := checkUsername(id); err != nil {
		return nil, err
	}
	p, err := a.placeOf(t)
	if err != nil {
		return nil, err
	}
	var deleted *policy.APIUser
	err = a.store.DeleteUserIf(ctx, id, func(u *policy.APIUser) error {
		if !p.holds(u) {
			return p.notFound(id)
		}
		if err := checkIfMatch(ctx, u); err != nil {
			return err
		}
		deleted = a.withLastSeen(u.Clone())
		return nil
	})
	a.cache.invalidateUser(id)
	if err != nil {
		return nil, storeErr(err, func() error { return p.notFound(id) })
	}
	a.auditUserChange(ctx, "delete_user", deleted, nil)
	return deleted, nil
}

// productLabel is the product ID as text, or "" for an org user.
func productLabel(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

// auditUserChange writes the audit record of a change to an API user:
// who (the actor), what (action), to whom, and the user before and after
// as views, which hold no secret or token value, only public IDs. extra
// are more string fields as key, value pairs, such as the key ID.
func (a *App) auditUserChange(ctx context.Context, action string, before, after *policy.APIUser, extra ...string) {
	u := after
	if u == nil {
		u = before
	}
	fields := []zap.Field{zap.String("api_user", u.ID), zap.String("org", u.Org)}
	if u.Product != 0 {
		fields = append(fields, zap.String("product", productLabel(u.Product)))
	}
	if before != nil {
		fields = append(fields, zap.Any("before", viewOf(before)))
	}
	if after != nil {
		fields = append(fields, zap.Any("after", viewOf(after)))
	}
	for i := 0; i+1 < len(extra); i += 2 {
		fields = append(fields, zap.String(extra[i], extra[i+1]))
	}
	a.auditChange(ctx, action, fields...)
}

// auditChange writes one management audit record to the logger
// http.handlers.api_users.audit, beside the gateway's decisions. Its "by"
// field names the caller: the identity the admin handler's actor option
// resolved, or the client address when no authentication handler named
// one. ("actor" is kept for the gateway records' actor kind.)
func (a *App) auditChange(ctx context.Context, action string, fields ...zap.Field) {
	act := actorFrom(ctx)
	who := actorName(act)
	all := make([]zap.Field, 0, len(fields)+3)
	all = append(all, zap.String("by", who), zap.String("action", action))
	all = append(all, fields...)
	if act.ClientIP != "" {
		all = append(all, zap.String("client_ip", act.ClientIP))
	}
	a.audit.Info("management change", all...)
	a.auditWritten()
}
