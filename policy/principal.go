package policy

import (
	"slices"
	"strings"
	"time"
)

// Principal is an APIUser compiled for decisions: its effective scopes, its
// allowed endpoints, proxied users and resource constraints as sorted sets,
// so that the checks on the hot path are binary searches that do not
// allocate. It is immutable and safe for concurrent use; it is what an
// in-memory cache keeps for an active user. When the user changes, compile
// a new Principal.
type Principal struct {
	// User is Compile's own copy of the APIUser struct. The slices and map
	// it refers to are shared with the caller's APIUser and must not be
	// modified.
	User *APIUser

	scopes      []Scope      // own and roles', sorted, distinct
	endpoints   []string     // allowed endpoint names, sorted; nil means all
	proxied     []string     // allowed proxied user IDs, sorted; nil means any
	constraints []constraint // sorted by variable name
}

// A constraint limits one route variable to a set of raw values.
type constraint struct {
	name   string
	values []string // sorted; empty allows nothing
}

// Compile builds the Principal for u. Its effective scopes are u's own plus
// those of each of its roles found in roles; a role name missing from roles
// contributes nothing, so an unknown or deleted role fails closed. Compile
// never modifies u, and keeps a copy of the APIUser struct so that later
// changes to u's fields do not reach decisions.
func Compile(u *APIUser, roles map[string][]Scope) *Principal {
	uc := *u
	p := &Principal{User: &uc}

	p.scopes = slices.Clone(u.Scopes)
	for _, r := range u.Roles {
		p.scopes = append(p.scopes, roles[r]...)
	}
	p.scopes = sortedSet(p.scopes)

	if len(u.AllowedEndpoints) > 0 {
		p.endpoints = sortedSet(slices.Clone(u.AllowedEndpoints))
	}
	if len(u.AllowedProxiedUsers) > 0 {
		p.proxied = sortedSet(slices.Clone(u.AllowedProxiedUsers))
	}
	for name, values := range u.ResourceConstraints {
		p.constraints = append(p.constraints, constraint{name, sortedSet(slices.Clone(values))})
	}
	slices.SortFunc(p.constraints, func(a, b constraint) int { return strings.Compare(a.name, b.name) })
	return p
}

// sortedSet sorts s and removes duplicates, in place.
func sortedSet[T ~string](s []T) []T {
	slices.Sort(s)
	return slices.Compact(s)
}

// setHas reports whether the sorted set s holds v.
func setHas[T ~string](s []T, v T) bool {
	_, ok := slices.BinarySearch(s, v)
	return ok
}

// HasScope reports whether s is among the effective scopes.
func (p *Principal) HasScope(s Scope) bool { return setHas(p.scopes, s) }

// EffectiveScopes returns the user's own scopes and its roles', distinct and
// sorted.
func (p *Principal) EffectiveScopes() []Scope { return slices.Clone(p.scopes) }

// Active reports whether the user may authenticate at now: Retired if it is
// retired, Expired from its ExpiresAt on, IdleExpired once IdleTimeout has
// passed since its last activity, else Allowed. Its last activity is the
// latest of lastUsed (the caller's own, finer record, such as the cache's),
// User.LastUsedAt (written coarsely) and User.CreatedAt, so a user never used
// is idle from its creation. With all three unset, an idle timeout has long
// passed, which fails closed.
func (p *Principal) Active(now, lastUsed time.Time) Reason {
	u := p.User
	if u.Retired {
		return Retired
	}
	if !u.ExpiresAt.IsZero() && !now.Before(u.ExpiresAt) {
		return Expired
	}
	if u.IdleTimeout > 0 {
		last := lastUsed
		if u.LastUsedAt.After(last) {
			last = u.LastUsedAt
		}
		if u.CreatedAt.After(last) {
			last = u.CreatedAt
		}
		if !last.Add(u.IdleTimeout).After(now) {
			return IdleExpired
		}
	}
	return Allowed
}

// Authorize is step 4 of a decision: may the user call ep, matched with
// vars? It checks, in order, and returns the first failure:
//
//   - EndpointNotAllowed: the user lists allowed endpoints, and ep is not
//     among them.
//   - InsufficientScope: ep's scope is not among the effective scopes.
//   - TenantMismatch: a {product} variable names an unknown product, or one
//     that is neither the user's product (for a product-scoped user) nor of
//     the user's org (for an org user); or an {org} variable names an
//     unknown org or another org than the user's. A product-scoped user may
//     not use an endpoint with {org} but no {product}: it would reach the
//     whole org, beyond its one product. An endpoint with neither variable
//     is not tied to a tenant, so its scope alone decides; catalog authors
//     must give every tenant-owned route an {org} or {product}. With a nil
//     Tenancy, any {org} or {product} fails.
//   - ResourceConstraint: for each variable the user is constrained on, the
//     request has no such variable, or its raw value is not listed. A
//     request without the variable fails because a constraint means "only
//     these", and an endpoint without the variable (such as listing all
//     devices) would reach every value; failing closed keeps the promise.
//     Values compare raw and exactly, so list each spelling that should be
//     allowed (both 1337 and my-product-v1 for a product).
//
// A nil ep fails with NoEndpoint; a nil vars is taken as no variables.
func (p *Principal) Authorize(ep *Endpoint, vars *Vars, t *Tenancy) Reason {
	if ep == nil {
		return NoEndpoint
	}
	if vars == nil {
		vars = &Vars{}
	}
	if p.endpoints != nil && !setHas(p.endpoints, ep.Name) {
		return EndpointNotAllowed
	}
	if !p.HasScope(ep.Scope) {
		return InsufficientScope
	}
	if r := p.checkTenancy(vars, t); r != Allowed {
		return r
	}
	for i := range p.constraints {
		c := &p.constraints[i]
		v, ok := vars.Get(c.name)
		if !ok || !setHas(c.values, v) {
			return ResourceConstraint
		}
	}
	return Allowed
}

// checkTenancy checks the {org} and {product} variables; see Authorize.
func (p *Principal) checkTenancy(vars *Vars, t *Tenancy) Reason {
	orgName, hasOrg := vars.Get("org")
	productName, hasProduct := vars.Get("product")
	u := p.User
	if hasOrg {
		o, ok := t.Org(orgName)
		if !ok || o.ID != u.Org {
			return TenantMismatch
		}
		if u.Product != 0 && !hasProduct {
			return TenantMismatch
		}
	}
	if hasProduct {
		pr, ok := t.Product(productName)
		if !ok || pr.Org != u.Org {
			return TenantMismatch
		}
		if u.Product != 0 && pr.ID != u.Product {
			return TenantMismatch
		}
	}
	return Allowed
}

// CheckProxiedUser is step 5 of a decision, for a request that names a
// proxied user: InvalidProxiedUser if id is not a valid user ID,
// ProxiedUserNotAllowed if the user does not allow proxied users or lists
// them and id is not listed, else Allowed.
func (p *Principal) CheckProxiedUser(id string) Reason {
	if !ValidUserID(id) {
		return InvalidProxiedUser
	}
	if !p.User.AllowProxiedUsers {
		return ProxiedUserNotAllowed
	}
	if p.proxied != nil && !setHas(p.proxied, id) {
		return ProxiedUserNotAllowed
	}
	return Allowed
}

// UserIDSyntax describes a valid user ID, for error messages and
// documentation. API user IDs and proxied user IDs share it. It has no ":",
// which separates the fields of Basic credentials, and nothing that needs
// quoting in a header, a log line or a URL path.
const UserIDSyntax = `1 to 64 characters: a letter or digit, then letters, digits, ".", "_", "@", "+" or "-"`

// MaxUserIDLen is the longest valid user ID.
const MaxUserIDLen = 64

// ValidUserID reports whether id is a valid user ID: see UserIDSyntax.
func ValidUserID(id string) bool {
	if id == "" || len(id) > MaxUserIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '@' || c == '+' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}
