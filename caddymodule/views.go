package caddymodule

import (
	"slices"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// UserView is an API user as the management API and the CLI show it, with
// the spec's field names. It never carries a credential value: only the
// public IDs of the user's keys and token.
type UserView struct {
	Username            string              `json:"username"`
	IsProgrammatic      bool                `json:"is_programmatic"`
	FriendlyName        string              `json:"friendly_name"`
	Description         string              `json:"description"`
	Org                 string              `json:"org"`
	Product             *int64              `json:"product"`
	Scopes              []string            `json:"scopes"`
	Roles               []string            `json:"roles"`
	AllowedEndpoints    []string            `json:"allowed_endpoints"`
	AllowProxiedUsers   bool                `json:"allow_proxied_users"`
	AllowedProxiedUsers []string            `json:"allowed_proxied_users"`
	ResourceConstraints map[string][]string `json:"resource_constraints"`
	Retired             bool                `json:"retired"`
	ExpiresAt           *time.Time          `json:"expires_at"`
	IdleTimeout         string              `json:"idle_timeout"`
	RateLimit           *UserRateLimit      `json:"rate_limit"` // null: the gateway's rate_limit applies
	Quota               *UserQuota          `json:"quota"`      // null: the gateway's quota applies
	AllowedIPs          []string            `json:"allowed_ips"`
	CreatedAt           time.Time           `json:"created_at"`
	UpdatedAt           time.Time           `json:"updated_at"`
	LastUsedAt          *time.Time          `json:"last_used_at"`
	TokenID             string              `json:"token_id"`
	Keys                []KeyView           `json:"keys"`
}

// KeyView is a key's public part.
type KeyView struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// UpdatedView is an updated user; Tokens carries the new access token,
// shown this once, when the update replaced it, and is absent otherwise.
type UpdatedView struct {
	UserView
	Tokens []TokenView `json:"tokens,omitempty"`
}

// CreatedView is a created user plus its credentials, shown this once.
type CreatedView struct {
	UserView
	Tokens []TokenView `json:"tokens"`
	Secret string      `json:"secret"`
	Keys   []IssuedKey `json:"keys"`
}

// TokenView is an issued access token.
type TokenView struct {
	Token string `json:"token"`
}

// IssuedKey is an issued key, with its value.
type IssuedKey struct {
	ID        string     `json:"id"`
	Value     string     `json:"value"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func viewOf(u *policy.APIUser) UserView {
	v := UserView{
		Username:            u.ID,
		IsProgrammatic:      true,
		FriendlyName:        u.FriendlyName,
		Description:         u.Description,
		Org:                 u.Org,
		Scopes:              make([]string, 0, len(u.Scopes)),
		Roles:               nonNil(slices.Clone(u.Roles)),
		AllowedEndpoints:    nonNil(slices.Clone(u.AllowedEndpoints)),
		AllowProxiedUsers:   u.AllowProxiedUsers,
		AllowedProxiedUsers: nonNil(slices.Clone(u.AllowedProxiedUsers)),
		ResourceConstraints: make(map[string][]string, len(u.ResourceConstraints)),
		Retired:             u.Retired,
		CreatedAt:           u.CreatedAt,
		UpdatedAt:           u.UpdatedAt,
		TokenID:             u.TokenID,
		Keys:                make([]KeyView, 0, len(u.Keys)),
	}
	for name, values := range u.ResourceConstraints {
		v.ResourceConstraints[name] = nonNil(slices.Clone(values))
	}
	if u.Product != 0 {
		p := u.Product
		v.Product = &p
	}
	for _, s := range u.Scopes {
		v.Scopes = append(v.Scopes, string(s))
	}
	if !u.ExpiresAt.IsZero() {
		t := u.ExpiresAt
		v.ExpiresAt = &t
	}
	if u.RateLimit.Requests > 0 {
		v.RateLimit = &UserRateLimit{Requests: u.RateLimit.Requests, Window: u.RateLimit.Window.String()}
	}
	if u.Quota.Requests > 0 {
		v.Quota = &UserQuota{Requests: u.Quota.Requests, Period: u.Quota.Period.String()}
	}
	v.AllowedIPs = make([]string, len(u.AllowedIPs))
	for i, p := range u.AllowedIPs {
		v.AllowedIPs[i] = p.String()
	}
	if u.IdleTimeout != 0 {
		v.IdleTimeout = u.IdleTimeout.String()
	}
	if !u.LastUsedAt.IsZero() {
		t := u.LastUsedAt
		v.LastUsedAt = &t
	}
	for _, k := range u.Keys {
		kv := KeyView{ID: k.ID, CreatedAt: k.CreatedAt}
		if !k.ExpiresAt.IsZero() {
			t := k.ExpiresAt
			kv.ExpiresAt = &t
		}
		v.Keys = append(v.Keys, kv)
	}
	return v
}

// createdView shows a created user; the issued key's value goes with its ID.
func createdView(u *policy.APIUser, iss *Issued) CreatedView {
	return CreatedView{
		UserView: viewOf(u),
		Tokens:   []TokenView{{Token: iss.Token}},
		Secret:   iss.Secret,
		Keys:     []IssuedKey{{ID: iss.KeyID, Value: iss.Key}},
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Where a role, org or product is defined: the api_users config, which the
// management API and the CLI only read, or the store, where they manage it.
const (
	SourceConfig = "config"
	SourceStore  = "store"
)

// RoleView is a role as the management API and the CLI show it.
type RoleView struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Scopes      []string `json:"scopes"`
	Source      string   `json:"source"`
}

func roleView(r store.Role) RoleView {
	return RoleView{Name: r.Name, Description: r.Description, Scopes: nonNil(slices.Clone(r.Scopes)), Source: SourceStore}
}

// OrgView is an org with its products.
type OrgView struct {
	ID       string        `json:"id"`
	Slug     string        `json:"slug"`
	Source   string        `json:"source"`
	Products []ProductView `json:"products"`
}

// ProductView is a product of an org.
type ProductView struct {
	ID     int64  `json:"id"`
	Slug   string `json:"slug"`
	Org    string `json:"org"`
	Source string `json:"source"`
}

// EndpointView is an endpoint of the gateway's catalog, which only the
// config defines.
type EndpointView struct {
	Name    string   `json:"name"`
	Methods []string `json:"methods"`
	Path    string   `json:"path"`
	Scope   string   `json:"scope"`
}

func endpointViews(c *policy.Catalog) []EndpointView {
	out := []EndpointView{}
	for _, e := range c.Endpoints() {
		out = append(out, EndpointView{Name: e.Name, Methods: slices.Clone(e.Methods), Path: e.Path, Scope: string(e.Scope)})
	}
	return out
}
