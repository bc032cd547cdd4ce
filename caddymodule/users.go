package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds the user life cycle that the management API and the CLI
// share: validation against the catalog, credential issuing, and writing
// through the store with the cache kept in step.

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

// applySpec validates spec against the catalog and applies it to u.
func (a *App) applySpec(u *policy.APIUser, spec *UserSpec) error {
	v := a.view.Load()
	if spec.FriendlyName != nil {
		if len(*spec.FriendlyName) > 200 {
			return fieldErr("friendly_name", "is longer than 200 characters")
		}
		u.FriendlyName = *spec.FriendlyName
	}
	if spec.Description != nil {
		if len(*spec.Description) > 4000 {
			return fieldErr("description", "is longer than 4000 characters")
		}
		u.Description = *spec.Description
	}
	if spec.Scopes != nil {
		known := map[policy.Scope]bool{}
		for _, s := range v.catalog.Scopes() {
			known[s] = true
		}
		var scopes []policy.Scope
		for _, s := range dedupe(*spec.Scopes) {
			sc, err := policy.ParseScope(s)
			if err != nil {
				return fieldErr("scopes", "%v", err)
			}
			if !known[sc] {
				return fieldErr("scopes", "unknown scope %q: no endpoint in the catalog requires it", s)
			}
			scopes = append(scopes, sc)
		}
		u.Scopes = scopes
	}
	if spec.Roles != nil {
		roles := dedupe(*spec.Roles)
		for _, r := range roles {
			if _, ok := v.roles[r]; !ok {
				return fieldErr("roles", "unknown role %q", r)
			}
		}
		u.Roles = roles
	}
	if spec.AllowedEndpoints != nil {
		eps := dedupe(*spec.AllowedEndpoints)
		for _, e := range eps {
			if _, ok := v.catalog.Endpoint(e); !ok {
				return fieldErr("allowed_endpoints", "unknown endpoint %q", e)
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
		if *spec.ExpiresAt == "" {
			u.ExpiresAt = time.Time{}
		} else {
			t, err := time.Parse(time.RFC3339, *spec.ExpiresAt)
			if err != nil {
				return fieldErr("expires_at", "%q is not an RFC 3339 time such as 2027-01-31T00:00:00Z", *spec.ExpiresAt)
			}
			u.ExpiresAt = t.UTC()
		}
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
	if spec.ResourceConstraints != nil {
		rc := map[string][]string{}
		for name, values := range *spec.ResourceConstraints {
			if !catalogHasVar(v.catalog, name) {
				return fieldErr("resource_constraints", "no endpoint in the catalog has a route variable {%s}", name)
			}
			if len(values) == 0 {
				return fieldErr("resource_constraints", "{%s} lists no values: list at least one, or remove the constraint", name)
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

func catalogHasVar(c *policy.Catalog, name string) bool {
	for _, e := range c.Endpoints() {
		if templateHasVar(e.Path, name) {
			return true
		}
	}
	return false
}

func templateHasVar(template, name string) bool {
	for i := 0; i+len(name)+2 <= len(template); i++ {
		if template[i] == '{' {
			rest := template[i+1:]
			if len(rest) >= len(name) && rest[:len(name)] == name {
				tail := rest[len(name):]
				if len(tail) > 0 && (tail[0] == '}' || (len(tail) >= 4 && tail[:4] == "...}")) {
					return true
				}
			}
		}
	}
	return false
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

// CreateUser validates spec, issues a token, a Secret and a first Key, and
// stores the user. Nothing is written unless everything is valid.
func (a *App) CreateUser(ctx context.Context, t Tenant, spec *UserSpec) (*policy.APIUser, *Issued, error) {
	org, product, err := a.resolveTenant(t)
	if err != nil {
		return nil, nil, err
	}
	now := a.now().UTC()
	u := &policy.APIUser{Org: org, Product: product, CreatedAt: now, UpdatedAt: now}
	if spec.Username != nil {
		if !policy.ValidUserID(*spec.Username) {
			return nil, nil, fieldErr("username", "%q is not a valid username: 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit", *spec.Username)
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
			return nil, nil, fieldErr("username", "%q is taken: choose another, or leave it out to have one generated", u.ID)
		}
		return nil, nil, err
	}
	a.cache.invalidateUser(u.ID)
	return u, &iss, nil
}

// DeleteUser removes a user and all its credentials; they stop working at
// once in this process and within the sync interval elsewhere.
func (a *App) DeleteUser(ctx context.Context, id string) error {
	err := a.store.DeleteUser(ctx, id)
	a.cache.invalidateUser(id)
	return err
}

// ListUsers lists users of an org (all its users, or one product's).
func (a *App) ListUsers(ctx context.Context, f store.UserFilter) ([]*policy.APIUser, error) {
	return a.store.ListUsers(ctx, f)
}

// productLabel is the product ID as text, or "" for an org user.
func productLabel(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}
