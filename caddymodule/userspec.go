package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apiusers/caddy-api-users/policy"
)

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
	Quota               *UserQuota           `json:"quota,omitempty"`        // requests 0 clears
	AllowedIPs          *[]string            `json:"allowed_ips,omitempty"`  // CIDRs or addresses; [] clears
	ResourceConstraints *map[string][]string `json:"resource_constraints,omitempty"`
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
	if spec.Quota != nil {
		q, err := spec.Quota.parse()
		if err != nil {
			return err
		}
		u.Quota = q
	}
	if spec.AllowedIPs != nil {
		prefixes, err := parseAllowedIPs("allowed_ips", *spec.AllowedIPs)
		if err != nil {
			return err
		}
		u.AllowedIPs = prefixes
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
	return decodeSpecObject(data, (*plain)(r), "rate_limit", map[string]string{"requests": "a whole number", "window": "a duration string such as \"1m\""}, `{"requests": 600, "window": "1m"}`)
}

// decodeSpecObject decodes a small JSON object of a spec into v, refusing
// unknown fields; its errors name the field as name.<field>, with what
// each field must be (kinds) and an example of the whole object.
func decodeSpecObject(data []byte, v any, name string, kinds map[string]string, example string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return fieldErr(name+"."+typeErr.Field, "must be %s, not %s", kinds[typeErr.Field], typeErr.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return fieldErr(name+"."+field, "is not a field of a %s: use %s, such as %s", strings.ReplaceAll(name, "_", " "), strings.Join(slices.Sorted(maps.Keys(kinds)), " and "), example)
		}
		return fieldErr(name, "must be an object such as %s", example)
	}
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

// UserQuota is an API user's own quota: at most Requests allowed requests
// per Period ("day" or "month", calendar, UTC). It takes the place of the
// gateway's quota for this user. In an update, Requests 0 removes the
// user's own quota, so the gateway's applies again.
type UserQuota struct {
	Requests int64  `json:"requests"`
	Period   string `json:"period,omitempty"`
}

// UnmarshalJSON reads a quota object, naming the field of any error as
// quota.<name>.
func (q *UserQuota) UnmarshalJSON(data []byte) error {
	type plain UserQuota
	return decodeSpecObject(data, (*plain)(q), "quota", map[string]string{"requests": "a whole number", "period": "\"day\" or \"month\""}, `{"requests": 100000, "period": "month"}`)
}

func (q *UserQuota) parse() (policy.Quota, error) {
	if q.Requests == 0 {
		return policy.Quota{}, nil
	}
	if q.Requests < 0 || q.Requests > 1_000_000_000_000 {
		return policy.Quota{}, fieldErr("quota.requests", "%d is not a number of requests from 1 to 1000000000000 (or 0 to remove the user's own quota)", q.Requests)
	}
	p, ok := policy.ParseQuotaPeriod(q.Period)
	if !ok {
		return policy.Quota{}, fieldErr("quota.period", "%q is not a quota period: use \"day\" or \"month\" (calendar, UTC)", q.Period)
	}
	return policy.Quota{Requests: q.Requests, Period: p}, nil
}

// maxAllowedIPs bounds a user's allowed_ips; the check runs on every
// request of the user.
const maxAllowedIPs = 64

// parseAllowedIPs reads allowed_ips: CIDRs such as 203.0.113.0/24 or
// 2001:db8::/32, or single addresses (a /32 or /128). A prefix with host
// bits set is refused rather than silently widened or narrowed.
func parseAllowedIPs(field string, in []string) ([]netip.Prefix, error) {
	if len(in) > maxAllowedIPs {
		return nil, fieldErr(field, "lists %d networks; at most %d are allowed: use wider prefixes", len(in), maxAllowedIPs)
	}
	var out []netip.Prefix
	for _, s := range in {
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, fieldErr(field, "%q is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32", s)
			}
			if p != p.Masked() {
				return nil, fieldErr(field, "%q has host bits set: write the network, %s", s, p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fieldErr(field, "%q is not an IP address or a CIDR such as 203.0.113.0/24 or 2001:db8::/32", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fieldErr(field, "%q is an IPv4-mapped IPv6 network: write it as IPv4", s)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
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
