package store

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// What both drivers share about the users table: its columns, how a user
// becomes a row and a row a user, and the checks made before a write. The
// drivers differ only where their databases do (how a time or a boolean is
// kept, how they lock, how keys are read), and in nothing else.

// userFields are the users columns after id. userArgs gives their values
// in this order and userRow scans them in this order: a new column is
// added to all three, here, and nowhere else in Go.
var userFields = []string{
	"org", "product", "friendly_name", "description",
	"scopes", "roles", "allowed_endpoints",
	"allow_proxied_users", "allowed_proxied_users", "resource_constraints",
	"retired", "expires_at", "idle_timeout_ns",
	"created_at", "updated_at", "last_used_at", "version",
	"token_hash", "token_id", "secret_hash",
	"rate_limit_requests", "rate_limit_window_ns",
	"quota_requests", "quota_period", "allowed_ips",
}

// userColumns lists the users columns, prefixed with table (say "u."), in
// the order userRow scans them.
func userColumns(table string) string {
	return table + "id, " + table + strings.Join(userFields, ", "+table)
}

// valueEncoding is how a driver binds the values the two schemas keep
// differently: SQLite times as Unix nanoseconds and booleans as 0 or 1,
// PostgreSQL as timestamptz and boolean.
type valueEncoding struct {
	time func(e *encoder, what string, t time.Time) any
	bool func(b bool) any
}

var (
	sqliteValues = valueEncoding{
		time: (*encoder).time,
		bool: func(b bool) any { return boolInt(b) },
	}
	pgValues = valueEncoding{
		time: func(_ *encoder, _ string, t time.Time) any { return pgTime(t) },
		bool: func(b bool) any { return b },
	}
)

// userArgs encodes u's fields in userFields order.
func userArgs(u *policy.APIUser, v valueEncoding) ([]any, error) {
	var e encoder
	args := []any{
		u.Org, u.Product, u.FriendlyName, u.Description,
		encodeList(&e, "scopes", u.Scopes),
		encodeList(&e, "roles", u.Roles),
		encodeList(&e, "allowed endpoints", u.AllowedEndpoints),
		v.bool(u.AllowProxiedUsers),
		encodeList(&e, "allowed proxied users", u.AllowedProxiedUsers),
		encodeConstraints(&e, u.ResourceConstraints),
		v.bool(u.Retired),
		v.time(&e, "expiry", u.ExpiresAt),
		int64(u.IdleTimeout),
		v.time(&e, "creation time", u.CreatedAt),
		v.time(&e, "update time", u.UpdatedAt),
		v.time(&e, "last-used time", u.LastUsedAt),
		u.Version,
		e.hash(u.TokenHash),
		u.TokenID,
		e.hash(u.SecretHash),
		int64(u.RateLimit.Requests), int64(u.RateLimit.Window),
		u.Quota.Requests, quotaPeriodText(u.Quota),
		encodeList(&e, "allowed IPs", u.AllowedIPs),
	}
	if e.err != nil {
		return nil, fmt.Errorf("API user %q: %w", u.ID, e.err)
	}
	return args, nil
}

// userRow is one row of userColumns as a driver scans it; T is the type
// the driver reads a nullable time column into.
type userRow[T any] struct {
	u                                              policy.APIUser
	scopes, roles, endpoints, proxied, constraints string
	expires, created, updated, lastUsed            T
	idle, rlRequests, rlWindow                     int64
	tokenHash, secretHash                          []byte
	quotaRequests                                  int64
	quotaPeriod, allowedIPs                        string
}

// dest is where a scan puts the columns, in userColumns order.
func (r *userRow[T]) dest() []any {
	return []any{&r.u.ID, &r.u.Org, &r.u.Product, &r.u.FriendlyName, &r.u.Description,
		&r.scopes, &r.roles, &r.endpoints, &r.u.AllowProxiedUsers, &r.proxied, &r.constraints,
		&r.u.Retired, &r.expires, &r.idle, &r.created, &r.updated, &r.lastUsed, &r.u.Version,
		&r.tokenHash, &r.u.TokenID, &r.secretHash, &r.rlRequests, &r.rlWindow,
		&r.quotaRequests, &r.quotaPeriod, &r.allowedIPs}
}

// user decodes the scanned row, reading times with decodeTime. A column
// that does not decode is an error naming the user and the column: a
// damaged row never becomes a user with fewer checks.
func (r *userRow[T]) user(decodeTime func(T) time.Time) (*policy.APIUser, error) {
	u := r.u
	u.RateLimit = decodeRateLimit(r.rlRequests, r.rlWindow)
	u.ExpiresAt = decodeTime(r.expires)
	u.IdleTimeout = time.Duration(r.idle)
	u.CreatedAt = decodeTime(r.created)
	u.UpdatedAt = decodeTime(r.updated)
	u.LastUsedAt = decodeTime(r.lastUsed)
	var err error
	if u.Quota, err = decodeQuota(u.ID, r.quotaRequests, r.quotaPeriod); err != nil {
		return nil, err
	}
	if u.AllowedIPs, err = decodeList[netip.Prefix](fmt.Sprintf("the allowed IPs of API user %q", u.ID), r.allowedIPs); err != nil {
		return nil, err
	}
	if err := decodeUserColumns(&u, userText{r.scopes, r.roles, r.endpoints, r.proxied, r.constraints}, r.tokenHash, r.secretHash); err != nil {
		return nil, err
	}
	return &u, nil
}

// quotaPeriodText is the quota_period column: "" without a quota.
func quotaPeriodText(q policy.Quota) string {
	if q.Requests <= 0 {
		return ""
	}
	return q.Period.String()
}

// decodeQuota reads the two quota columns; zero requests is no quota of
// the user's own.
func decodeQuota(id string, requests int64, period string) (policy.Quota, error) {
	if requests <= 0 {
		return policy.Quota{}, nil
	}
	p, ok := policy.ParseQuotaPeriod(period)
	if !ok {
		return policy.Quota{}, fmt.Errorf("the quota of API user %q has an unknown period %q", id, period)
	}
	return policy.Quota{Requests: requests, Period: p}, nil
}

// validateUser checks what the schema cannot express, or would report
// less clearly.
func validateUser(u *policy.APIUser) error {
	switch {
	case u.ID == "":
		return errors.New("an API user needs an ID")
	case u.Org == "":
		return fmt.Errorf("API user %q needs an org", u.ID)
	case u.Product < 0:
		return fmt.Errorf("API user %q: product ID %d is negative; use 0 for an org-level user", u.ID, u.Product)
	case u.IdleTimeout < 0:
		return fmt.Errorf("API user %q: idle timeout %s is negative; use 0 for none", u.ID, u.IdleTimeout)
	case u.RateLimit.Requests < 0 || u.RateLimit.Window < 0:
		return fmt.Errorf("API user %q: rate limit %d per %s is negative; use 0 requests for none", u.ID, u.RateLimit.Requests, u.RateLimit.Window)
	case u.RateLimit.Requests > 0 && u.RateLimit.Interval() <= 0:
		return fmt.Errorf("API user %q: rate limit %d per %s has no time between requests; use a longer window", u.ID, u.RateLimit.Requests, u.RateLimit.Window)
	case u.Quota.Requests < 0:
		return fmt.Errorf("API user %q: quota %d is negative; use 0 for none", u.ID, u.Quota.Requests)
	case u.Quota.Requests > 0 && u.Quota.Period.String() == "":
		return fmt.Errorf("API user %q: quota %d has no period; use day or month", u.ID, u.Quota.Requests)
	}
	for _, p := range u.AllowedIPs {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("API user %q: allowed IP prefix %s is not a network address in CIDR form", u.ID, p)
		}
	}
	seen := make(map[string]bool, len(u.Keys))
	for i, k := range u.Keys {
		if k.ID == "" {
			return fmt.Errorf("API user %q: key %d has no ID", u.ID, i+1)
		}
		if seen[k.ID] {
			return fmt.Errorf("API user %q lists key %q twice", u.ID, k.ID)
		}
		seen[k.ID] = true
	}
	return nil
}

// newUser is the user CreateUser writes for u: validated, at version 1,
// created now unless u says when, updated when created unless u says.
func newUser(u *policy.APIUser, now func() time.Time) (*policy.APIUser, error) {
	if u == nil {
		return nil, errors.New("creating an API user: no user given")
	}
	if err := validateUser(u); err != nil {
		return nil, err
	}
	c := *u
	c.Version = 1
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now()
	}
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = c.CreatedAt
	}
	return &c, nil
}

// changeUser applies UpdateUser's fn to u, the user id as stored, and
// checks the result; it returns a copy of u from before the change.
func changeUser(u *policy.APIUser, id string, fn func(u *policy.APIUser) error) (*policy.APIUser, error) {
	before := u.Clone()
	if err := fn(u); err != nil {
		return nil, err
	}
	if u.ID != id {
		return nil, fmt.Errorf("API user %q: its ID cannot change (to %q); create a new user and delete this one instead", id, u.ID)
	}
	if err := validateUser(u); err != nil {
		return nil, err
	}
	return before, nil
}

// checkTenancy makes sure u's org exists and its product, if any, is one
// of that org's: a user whose product belongs to another org could reach
// that org's data. orgExists and productOrg read the driver's transaction;
// productOrg returns ErrNotFound for an unknown product.
func checkTenancy(u *policy.APIUser, orgExists func(org string) (bool, error), productOrg func(id int64) (string, error)) error {
	ok, err := orgExists(u.Org)
	if err != nil {
		return fmt.Errorf("API user %q: reading its org: %w", u.ID, err)
	}
	if !ok {
		return fmt.Errorf("API user %q: org %q: %w (create the org first)", u.ID, u.Org, ErrNotFound)
	}
	if u.Product == 0 {
		return nil
	}
	org, err := productOrg(u.Product)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("API user %q: product %d: %w (create the product first)", u.ID, u.Product, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("API user %q: reading its product: %w", u.ID, err)
	}
	if org != u.Org {
		return fmt.Errorf("API user %q: product %d belongs to org %q, not %q: %w", u.ID, u.Product, org, u.Org, ErrNotFound)
	}
	return nil
}

// checkDeletion runs DeleteUserIf's check, if any, on a copy of u, the
// user as stored inside the delete's transaction.
func checkDeletion(u *policy.APIUser, check func(u *policy.APIUser) error) error {
	if check == nil {
		return nil
	}
	return check(u.Clone())
}

// userConflict explains a unique violation on the users table;
// tokenHashTaken says the violated constraint is the token hash's.
func userConflict(u *policy.APIUser, tokenHashTaken bool) error {
	if tokenHashTaken {
		return fmt.Errorf("API user %q: its access token hash is another user's: %w", u.ID, ErrExists)
	}
	return fmt.Errorf("API user %q: %w", u.ID, ErrExists)
}

// listOrder is the part of ListUsers' query both drivers build alike: the
// cursor condition ("" when there is no cursor) and the ORDER BY list, for
// a sort key (as the indexes of migration 0003 have it; "" to sort by ID
// alone), the cursor's key value after, and the ID column idCol.
func listOrder(f *UserFilter, key string, after any, idCol string, bind func(any) string) (cond, order string) {
	op, dir := ">", ""
	if f.Desc {
		op, dir = "<", " DESC"
	}
	if f.After != "" {
		if key == "" {
			cond = idCol + " " + op + " " + bind(f.After)
		} else {
			a := bind(after)
			cond = "(" + key + " " + op + " " + a + " OR (" + key + " = " + a + " AND " + idCol + " " + op + " " + bind(f.After) + "))"
		}
	}
	if key != "" {
		order = key + dir + ", "
	}
	return cond, order + idCol + dir
}

// nullString keeps an empty slug as NULL, so any number of orgs or
// products may have none under the UNIQUE constraint.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// nullableText is a JSON document for a nullable column: NULL when absent.
func nullableText(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// stateCond is the condition that a user is in state, policy.Principal's
// rule in SQL, from each driver's conditions that it is retired, expired
// and idle: retired first, then expired, then idle.
func stateCond(state UserState, retired, expired, idle string) string {
	switch state {
	case StateRetired:
		return retired
	case StateExpired:
		return "(NOT " + retired + " AND " + expired + ")"
	case StateIdleExpired:
		return "(NOT " + retired + " AND NOT " + expired + " AND " + idle + ")"
	}
	return "(NOT " + retired + " AND NOT " + expired + " AND NOT " + idle + ")"
}
