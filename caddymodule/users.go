package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds the user life cycle that the management API and the CLI
// share: validation against the catalog, credential issuing, the rule for
// replacing the access token, and writing through the store with the cache
// kept in step and one audit record per change. The management handler and
// the CLI only translate requests and flags into these calls.

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func (e *NotFoundError) Error() string { return e.Message }

func (e *ConflictError) Error() string { return e.Message }

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

// newUsername generates a user ID for a create request that proposed none.
func newUsername() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails; see crypto/rand
	return "apiu-" + hex.EncodeToString(b)
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
		!sameConstraints(before.ResourceConstraints, after.ResourceConstraints),
		!samePrefixes(before.AllowedIPs, after.AllowedIPs):
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

// samePrefixes reports whether two allowed_ips lists hold the same
// networks. Any change to them is a privilege change: narrowing one is
// what an operator does when a credential may have leaked elsewhere.
func samePrefixes(a, b []netip.Prefix) bool {
	key := func(p []netip.Prefix) []string {
		s := make([]string, len(p))
		for i, x := range p {
			s[i] = x.String()
		}
		return s
	}
	return sameSet(key(a), key(b))
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
