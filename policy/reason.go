package policy

import "net/http"

// Reason says why a gateway request was allowed or refused. Each reason has
// a stable, machine-readable code that appears in the JSON error body, in the
// audit log and as a metric label, so clients and dashboards may depend on it.
type Reason uint8

// The reasons, in the order of the decision steps that produce them.
const (
	// Allowed: every check passed.
	Allowed Reason = iota

	// Step 1: the request itself is ambiguous.
	AmbiguousPath  // encoded slash/backslash/dot, dot segment, "//", ";", NUL, bad escape
	MethodOverride // X-HTTP-Method-Override and friends are present
	UpgradeRefused // a protocol upgrade (h2c, WebSocket) or CONNECT tunnel
	// MisplacedCredentials: an API-user credential outside Authorization
	// (in the query, the path or another header), where it would be
	// forwarded and logged.
	MisplacedCredentials

	// Step 2: authentication.
	MissingCredentials // no Authorization header, or a scheme we do not take
	MalformedCredentials
	InvalidCredentials // unknown token, unknown user, wrong key or secret
	Retired
	Expired
	IdleExpired
	LockedOut // too many failures from this client address
	// IPNotAllowed: the user has allowed_ips and the client address is
	// outside them. Decided right after the user is known to be active.
	IPNotAllowed

	// Step 3: the endpoint catalog.
	NoEndpoint // no endpoint in the catalog matches method and path

	// Step 4: authorization.
	EndpointNotAllowed // endpoint not in the user's allowed endpoints
	InsufficientScope  // required scope not in the user's effective scopes
	TenantMismatch     // {org} or {product} outside the user's tenancy
	ResourceConstraint // a constrained route variable has a value not allowed

	// Step 5: proxied user.
	ProxiedUserNotAllowed // user does not allow proxied users, or ID not listed
	InvalidProxiedUser    // the proxied-user header is not a valid user ID

	// After the decision: the user's request rate.
	RateLimited // the API user sent more requests than its rate limit allows
	// QuotaExceeded: the API user has used up its quota for the day or
	// the month.
	QuotaExceeded

	// Failures of the gateway itself, never of the client.
	StoreUnavailable

	numReasons
)

var reasonInfo = [numReasons]struct {
	code        string
	status      int
	description string
}{
	Allowed:               {"allowed", http.StatusOK, "allowed"},
	AmbiguousPath:         {"ambiguous_path", http.StatusBadRequest, "the request path is ambiguous: encoded slashes, backslashes or dots, dot segments, empty segments, ';', NUL and path-override headers (X-Original-URL, X-Rewrite-URL) are refused"},
	MethodOverride:        {"method_override", http.StatusBadRequest, "method overrides (X-HTTP-Method-Override and similar headers, a _method query parameter) are not accepted; send the real method"},
	UpgradeRefused:        {"upgrade_not_allowed", http.StatusBadRequest, "protocol upgrades and tunnels (Upgrade, HTTP2-Settings, Connection: upgrade, CONNECT) are not accepted: requests inside a tunnel would reach the backend without being decided"},
	MisplacedCredentials:  {"misplaced_credentials", http.StatusBadRequest, "API-user credentials go in the Authorization header only (Bearer <token> or Basic <id:key:secret>), never in the query, the path or another header; treat the credential as leaked and replace it"},
	MissingCredentials:    {"missing_credentials", http.StatusUnauthorized, "an API-user credential is required: Authorization: Bearer <token> or Basic <id:key:secret>"},
	MalformedCredentials:  {"malformed_credentials", http.StatusUnauthorized, "the Authorization header is malformed"},
	InvalidCredentials:    {"invalid_credentials", http.StatusUnauthorized, "the credentials are not valid"},
	Retired:               {"user_retired", http.StatusUnauthorized, "the API user is retired"},
	Expired:               {"user_expired", http.StatusUnauthorized, "the API user has expired"},
	IdleExpired:           {"user_idle_expired", http.StatusUnauthorized, "the API user expired after being idle too long"},
	LockedOut:             {"too_many_failures", http.StatusTooManyRequests, "too many failed authentication attempts from this address; retry later"},
	IPNotAllowed:          {"ip_not_allowed", http.StatusForbidden, "the API user may not be used from this client address"},
	NoEndpoint:            {"no_endpoint", http.StatusForbidden, "no endpoint in the catalog matches this method and path"},
	EndpointNotAllowed:    {"endpoint_not_allowed", http.StatusForbidden, "the API user may not use this endpoint"},
	InsufficientScope:     {"insufficient_scope", http.StatusForbidden, "the API user lacks the scope this endpoint requires"},
	TenantMismatch:        {"tenant_mismatch", http.StatusForbidden, "the org or product in the path is outside the API user's tenancy"},
	ResourceConstraint:    {"resource_constraint", http.StatusForbidden, "a resource in the path is outside the API user's resource constraints"},
	ProxiedUserNotAllowed: {"proxied_user_not_allowed", http.StatusForbidden, "the API user may not act on behalf of this user"},
	InvalidProxiedUser:    {"invalid_proxied_user", http.StatusForbidden, "the proxied-user header is not a valid user ID"},
	RateLimited:           {"rate_limited", http.StatusTooManyRequests, "the API user has sent too many requests; retry after the time Retry-After gives"},
	QuotaExceeded:         {"quota_exceeded", http.StatusTooManyRequests, "the API user has used up its quota for this period; retry after the time Retry-After gives, when the period resets"},
	StoreUnavailable:      {"store_unavailable", http.StatusServiceUnavailable, "the credential store is unavailable; try again later"},
}

// Code is the reason's stable machine-readable code, such as "insufficient_scope".
func (r Reason) Code() string { return r.info().code }

// Status is the HTTP status the gateway answers with for this reason.
func (r Reason) Status() int { return r.info().status }

// Description is a sentence for humans, safe to show to any client: it never
// says whether a user ID exists.
func (r Reason) Description() string { return r.info().description }

// String returns the code.
func (r Reason) String() string { return r.Code() }

func (r Reason) info() struct {
	code        string
	status      int
	description string
} {
	if r >= numReasons {
		return reasonInfo[StoreUnavailable]
	}
	return reasonInfo[r]
}

// Reasons lists every reason, for metrics pre-registration and documentation.
func Reasons() []Reason {
	rs := make([]Reason, numReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}
