package policy

import (
	"maps"
	"net/netip"
	"slices"
	"time"
)

// APIUser is a service account as stored: its identity, its tenancy, what it
// may do, and the hashes of its credentials. It is plain data; Compile turns
// it into a Principal that decisions use.
type APIUser struct {
	// ID is the username: it names the user in management routes, in the
	// X-Api-User header, in the audit log and as the Basic-auth user name.
	ID           string
	FriendlyName string
	Description  string

	// Org is the ID of the org the user belongs to. Product, when non-zero,
	// makes the user product-scoped: it may reach only that product.
	Org     string
	Product int64

	Scopes           []Scope
	Roles            []string
	AllowedEndpoints []string // endpoint names; empty means all

	AllowProxiedUsers   bool
	AllowedProxiedUsers []string // empty means any valid user ID

	// ResourceConstraints maps a route variable to the values the user may
	// reach, such as {"device": ["0a1b2c"]}.
	ResourceConstraints map[string][]string

	Retired     bool
	ExpiresAt   time.Time     // zero: never
	IdleTimeout time.Duration // zero: never

	// RateLimit is the user's own request rate limit; zero Requests: none
	// of its own, so the gateway's rate_limit, if any, applies.
	RateLimit RateLimit

	// Quota is the most requests the user may have allowed per day or per
	// month; zero Requests: none of its own, so the gateway's quota, if
	// any, applies.
	Quota Quota

	// AllowedIPs, when not empty, are the only client networks the user
	// may be used from (see IPAllowed).
	AllowedIPs []netip.Prefix

	CreatedAt  time.Time
	UpdatedAt  time.Time
	LastUsedAt time.Time // coarse: written at most about once a minute

	// Version increases with every stored change; stores use it to refuse
	// a write based on a stale read.
	Version int64

	// Credentials, as SHA-256 hashes of their values only.
	TokenHash  Hash // the one valid access token
	TokenID    string
	SecretHash Hash
	Keys       []Key
}

// Key is one of a user's Keys: a public ID and the hash of its value. Any
// number may be valid at once, which is what makes rotation painless.
type Key struct {
	ID        string
	Hash      Hash
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never; set to end an overlap window
}

// Hash is the SHA-256 of a credential value.
type Hash [32]byte

// IsZero reports whether h was never set.
func (h Hash) IsZero() bool { return h == Hash{} }

// Org is a tenant. Its ID names it in routes; Slug, when set, names it too.
type Org struct {
	ID   string
	Slug string
}

// Product belongs to one org, and has a numeric ID and a slug; routes may
// name it by either.
type Product struct {
	ID   int64
	Slug string
	Org  string // the org's ID
}

// Clone copies u deeply enough that changes to the copy's slices and map
// never reach u. A new slice or map field of APIUser is copied here.
func (u *APIUser) Clone() *APIUser {
	c := *u
	c.Scopes = slices.Clone(u.Scopes)
	c.Roles = slices.Clone(u.Roles)
	c.AllowedEndpoints = slices.Clone(u.AllowedEndpoints)
	c.AllowedProxiedUsers = slices.Clone(u.AllowedProxiedUsers)
	c.AllowedIPs = slices.Clone(u.AllowedIPs)
	c.Keys = slices.Clone(u.Keys)
	if u.ResourceConstraints != nil {
		c.ResourceConstraints = maps.Clone(u.ResourceConstraints)
		for k, v := range c.ResourceConstraints {
			c.ResourceConstraints[k] = slices.Clone(v)
		}
	}
	return &c
}
