package caddymodule

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
)

// This file holds the read side of usage: how many requests of each API
// user the gateway allowed and refused, by outcome and endpoint, per UTC
// hour or day, as the management API, the CLI and the console show it.
// Gateway nodes count decisions in memory and flush them into the store's
// usage buckets, where the counts of every node add up; what is read here
// is that cluster-wide sum, as of the nodes' last flush. A report has a
// bucket for every hour or day of its range, zeros included, so a chart or
// a table needs no logic for gaps.

// Limits of a usage range, in buckets: a month of hours, a bit over a year
// of days. They bound the work of one request and the size of its answer.
const (
	maxUsageHours = 31 * 24
	maxUsageDays  = 400

	defaultUsageHours = 24 // the current hour and the 23 before it
	defaultUsageDays  = 30 // today and the 29 days before it

	defaultTopUsers = 10
	maxTopUsers     = 100
)

// NotImplementedError says that this server cannot do what a valid
// request asks, whatever the request: here, a store that keeps no usage.
// It becomes a 501.
type NotImplementedError struct{ Message string }

func (e *NotImplementedError) Error() string { return e.Message }

// usageStore is the app's store as a UsageStore, or a 501 when it keeps no
// usage.
func (a *App) usageStore() (store.UsageStore, error) {
	if us, ok := a.store.(store.UsageStore); ok {
		return us, nil
	}
	return nil, &NotImplementedError{Message: "this server's API-user store keeps no usage counts: use the sqlite or postgres store"}
}

// UsageRange is the time range and granularity a usage request reads:
// the buckets that start in [From, To). From is the start of a bucket.
type UsageRange struct {
	Granularity store.Granularity
	From, To    time.Time
}

// bucketLen is the length of one bucket.
func (r UsageRange) bucketLen() time.Duration {
	if r.Granularity == store.GranularityDay {
		return 24 * time.Hour
	}
	return time.Hour
}

// bucketStart is the start of the bucket t is in. UTC days are 24 hours
// long (UTC has no daylight saving), so truncating the time since the
// epoch finds both hours and days.
func (r UsageRange) bucketStart(t time.Time) time.Time {
	return t.UTC().Truncate(r.bucketLen())
}

// starts lists the start of every bucket of the range, in order.
func (r UsageRange) starts() []time.Time {
	var out []time.Time
	for s := r.From; s.Before(r.To); s = s.Add(r.bucketLen()) {
		out = append(out, s)
	}
	return out
}

// UsageRequest is what a usage route or command asks for, as given: empty
// strings take the defaults.
type UsageRequest struct {
	From, To, Granularity string
}

// usageParams are the query parameters of the usage routes.
var (
	userUsageParams = []string{"from", "to", "granularity"}
	topUsageParams  = []string{"from", "to", "granularity", "limit"}
)

// checkParams refuses unknown and repeated query parameters, naming them.
func checkParams(q url.Values, allowed []string) error {
	for name, values := range q {
		if !slices.Contains(allowed, name) {
			return fieldErr(name, "is not a parameter of this route: use %s", strings.Join(allowed, ", "))
		}
		if len(values) > 1 {
			return fieldErr(name, "is given %d times: give it once", len(values))
		}
	}
	return nil
}

// usageRequestFrom reads the range parameters of a usage route. A query
// string decodes an unescaped "+" as a space, so a time with a positive
// offset typed as is (from=2025-03-10T08:00:00+02:00) arrives with a space
// where its sign was; no RFC 3339 time has a space, so it is put back.
func usageRequestFrom(q url.Values) UsageRequest {
	plus := func(s string) string { return strings.ReplaceAll(s, " ", "+") }
	return UsageRequest{From: plus(q.Get("from")), To: plus(q.Get("to")), Granularity: q.Get("granularity")}
}

// rangeAt resolves the request at now: granularity hour by default; to
// defaults to now; from to the start of the bucket 23 hours (hour) or 29
// days (day) before the bucket of to, so a default range is 24 hours or 30
// days, the current one included. A from inside a bucket reads from the
// start of that bucket.
func (ur UsageRequest) rangeAt(now time.Time) (UsageRange, error) {
	var r UsageRange
	var defaultBuckets, maxBuckets int
	switch ur.Granularity {
	case "", "hour":
		r.Granularity, defaultBuckets, maxBuckets = store.GranularityHour, defaultUsageHours, maxUsageHours
	case "day":
		r.Granularity, defaultBuckets, maxBuckets = store.GranularityDay, defaultUsageDays, maxUsageDays
	default:
		return r, fieldErr("granularity", "%q is not a granularity: use hour or day", ur.Granularity)
	}
	to, err := parseOptionalTime("to", ur.To)
	if err != nil {
		return r, err
	}
	if to.IsZero() {
		to = now.UTC().Truncate(time.Microsecond)
	}
	from, err := parseOptionalTime("from", ur.From)
	if err != nil {
		return r, err
	}
	if from.IsZero() {
		from = r.bucketStart(to).Add(-time.Duration(defaultBuckets-1) * r.bucketLen())
		if to.Equal(r.bucketStart(to)) {
			from = from.Add(-r.bucketLen()) // to is itself a bucket start, outside the range
		}
	}
	if !from.Before(to) {
		return r, fieldErr("to", "%s is not after from %s: the range would be empty", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	r.From, r.To = r.bucketStart(from), to
	if n := len(r.starts()); n > maxBuckets {
		unit := "hours"
		hint := " or use granularity=day"
		if r.Granularity == store.GranularityDay {
			unit, hint = "days", ""
		}
		return r, fieldErr("from", "the range %s to %s holds %d %s, more than the %d %s one request reads: narrow it%s",
			r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), n, unit, maxBuckets, unit, hint)
	}
	return r, nil
}

// UsageCounts are the decisions counted in a bucket or a range: allowed,
// refused (every other outcome), and each outcome's count.
type UsageCounts struct {
	Allowed   int64            `json:"allowed"`
	Refused   int64            `json:"refused"`
	ByOutcome map[string]int64 `json:"by_outcome"`
}

func (c *UsageCounts) add(outcome string, n int64) {
	if outcome == store.OutcomeAllowed {
		c.Allowed += n
	} else {
		c.Refused += n
	}
	if c.ByOutcome == nil {
		c.ByOutcome = map[string]int64{}
	}
	c.ByOutcome[outcome] += n
}

// EndpointCounts are the decisions counted at one endpoint.
type EndpointCounts struct {
	Allowed int64 `json:"allowed"`
	Refused int64 `json:"refused"`
}

// UsageTotals are the counts of a whole range, with its endpoints.
type UsageTotals struct {
	UsageCounts
	ByEndpoint map[string]EndpointCounts `json:"by_endpoint"`
}

// UsageBucketView is one hour or day of a user's usage. by_endpoint is
// keyed by the endpoint's name in the catalog; "" counts the requests that
// matched no endpoint.
type UsageBucketView struct {
	Start string `json:"start"`
	UsageCounts
	ByEndpoint map[string]EndpointCounts `json:"by_endpoint"`
}

// UsageReport is one user's usage over a range, as the management API and
// the CLI show it.
type UsageReport struct {
	Username       string            `json:"username"`
	Org            string            `json:"org"`
	Product        *int64            `json:"product"`
	Granularity    string            `json:"granularity"`
	From           string            `json:"from"`
	To             string            `json:"to"`
	Totals         UsageTotals       `json:"totals"`
	Series         []UsageBucketView `json:"series"`
	LastDecisionAt *string           `json:"last_decision_at"`
	LastUsedAt     *string           `json:"last_used_at"`
}

// usageTime is how usage reports write times: RFC 3339 in UTC, to the
// second when that is exact.
func usageTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

func optionalUsageTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := usageTime(t)
	return &s
}

// UserUsage returns the usage of the user id living at t (the zero Tenant:
// anywhere) over the range ur asks for. A user that does not live at t is
// not found, exactly as GetUser says it.
func (a *App) UserUsage(ctx context.Context, t Tenant, id string, ur UsageRequest) (*UsageReport, error) {
	us, err := a.usageStore()
	if err != nil {
		return nil, err
	}
	r, err := ur.rangeAt(a.now())
	if err != nil {
		return nil, err
	}
	u, err := a.GetUser(ctx, t, id)
	if err != nil {
		return nil, err
	}
	buckets, err := us.Usage(ctx, store.UsageQuery{UserID: u.ID, From: r.From, To: r.To, Granularity: r.Granularity})
	if err != nil {
		return nil, storeErr(err, nil)
	}
	rep := &UsageReport{
		Username: u.ID, Org: u.Org, Granularity: string(r.Granularity),
		From: usageTime(r.From), To: usageTime(r.To),
		Totals:     UsageTotals{UsageCounts: UsageCounts{ByOutcome: map[string]int64{}}, ByEndpoint: map[string]EndpointCounts{}},
		LastUsedAt: optionalUsageTime(u.LastUsedAt),
	}
	if u.Product != 0 {
		p := u.Product
		rep.Product = &p
	}
	starts := r.starts()
	rep.Series = make([]UsageBucketView, len(starts))
	index := make(map[int64]int, len(starts))
	for i, s := range starts {
		rep.Series[i] = UsageBucketView{Start: usageTime(s), UsageCounts: UsageCounts{ByOutcome: map[string]int64{}}, ByEndpoint: map[string]EndpointCounts{}}
		index[s.UnixNano()] = i
	}
	var last time.Time
	for _, b := range buckets {
		i, ok := index[b.Start.UnixNano()]
		if !ok {
			continue // not a bucket start of this granularity: cannot happen with a sound store
		}
		sb := &rep.Series[i]
		sb.add(b.Outcome, b.Count)
		rep.Totals.add(b.Outcome, b.Count)
		addEndpoint(sb.ByEndpoint, b.Endpoint, b.Outcome, b.Count)
		addEndpoint(rep.Totals.ByEndpoint, b.Endpoint, b.Outcome, b.Count)
		if b.LastAt.After(last) {
			last = b.LastAt
		}
	}
	rep.LastDecisionAt = optionalUsageTime(last)
	return rep, nil
}

func addEndpoint(m map[string]EndpointCounts, endpoint, outcome string, n int64) {
	c := m[endpoint]
	if outcome == store.OutcomeAllowed {
		c.Allowed += n
	} else {
		c.Refused += n
	}
	m[endpoint] = c
}

// TopUsageView is one of the busiest users of an org or a product.
type TopUsageView struct {
	Username       string  `json:"username"`
	FriendlyName   string  `json:"friendly_name"`
	Product        *int64  `json:"product"`
	Total          int64   `json:"total"`
	Allowed        int64   `json:"allowed"`
	Refused        int64   `json:"refused"`
	LastDecisionAt *string `json:"last_decision_at"`
}

// TopUsageReport ranks the users of an org or a product by usage.
type TopUsageReport struct {
	Org         string         `json:"org"`
	Product     *int64         `json:"product"`
	Granularity string         `json:"granularity"`
	From        string         `json:"from"`
	To          string         `json:"to"`
	Users       []TopUsageView `json:"users"`
}

// TopUsage returns the busiest users at t over the range ur asks for, at
// most limit (0: the default, 10). An org's ranking counts all its users,
// its products' too, and says which product each belongs to; a product's
// counts its own. Users deleted since are left out.
func (a *App) TopUsage(ctx context.Context, t Tenant, ur UsageRequest, limit int) (*TopUsageReport, error) {
	us, err := a.usageStore()
	if err != nil {
		return nil, err
	}
	switch {
	case limit == 0:
		limit = defaultTopUsers
	case limit < 1 || limit > maxTopUsers:
		return nil, fieldErr("limit", "%d is not a whole number from 1 to %d", limit, maxTopUsers)
	}
	r, err := ur.rangeAt(a.now())
	if err != nil {
		return nil, err
	}
	p, err := a.placeOf(t)
	if err != nil {
		return nil, err
	}
	if p.anywhere {
		return nil, fieldErr("org", "name an org or a product to rank its users")
	}
	q := store.TopUsageQuery{Org: p.org, From: r.From, To: r.To, Granularity: r.Granularity, Limit: limit}
	rep := &TopUsageReport{Org: p.org, Granularity: string(r.Granularity), From: usageTime(r.From), To: usageTime(r.To), Users: []TopUsageView{}}
	if p.product != 0 {
		q.Product, q.ProductSet = p.product, true
		id := p.product
		rep.Product = &id
	}
	top, err := us.TopUsers(ctx, q)
	if err != nil {
		return nil, storeErr(err, nil)
	}
	for _, uu := range top {
		v := TopUsageView{Username: uu.UserID, Total: uu.Total(), Allowed: uu.Allowed, Refused: uu.Refused, LastDecisionAt: optionalUsageTime(uu.LastAt)}
		// The names and products, for people: at most maxTopUsers reads,
		// and a user deleted since the ranking is simply shown without.
		if u, err := a.store.GetUser(ctx, uu.UserID); err == nil {
			v.FriendlyName = u.FriendlyName
			if u.Product != 0 {
				id := u.Product
				v.Product = &id
			}
		}
		rep.Users = append(rep.Users, v)
	}
	return rep, nil
}

func (h *Admin) userUsage(c *adminCall) (any, error) {
	q := c.r.URL.Query()
	if err := checkParams(q, userUsageParams); err != nil {
		return nil, err
	}
	rep, err := h.app.UserUsage(c.ctx, c.tenant(), c.r.PathValue("username"), usageRequestFrom(q))
	if err != nil {
		return nil, err
	}
	return okWith("usage", rep), nil
}

func (h *Admin) topUsage(c *adminCall) (any, error) {
	q := c.r.URL.Query()
	if err := checkParams(q, topUsageParams); err != nil {
		return nil, err
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxTopUsers {
			return nil, fieldErr("limit", "%q is not a whole number from 1 to %d", v, maxTopUsers)
		}
		limit = n
	}
	rep, err := h.app.TopUsage(c.ctx, c.tenant(), usageRequestFrom(q), limit)
	if err != nil {
		return nil, err
	}
	return okWith("usage", rep), nil
}
