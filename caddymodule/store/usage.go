package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// UsageStore keeps usage counts per API user, and the per-node counters of
// quotas and cluster-wide rate limits. Both stores implement it; it is an
// interface of its own, beside Store, so that a Store need not.
//
// Gateway nodes count decisions in memory and flush them in batches; with
// PostgreSQL several nodes flush into the same rows, and their counts add
// up, never overwrite each other. Quota and rate-limit counters are kept
// per node instead (each node writes only its own rows, so no row is
// locked by every node for every request) and summed when read.
//
// The conventions of Store hold: empty lists come back nil, times in UTC
// (PostgreSQL keeps microseconds, SQLite nanoseconds), a zero time stays
// zero.
type UsageStore interface {
	// AddUsage adds each count to its user's hourly bucket (the UTC hour
	// of Hour) and daily bucket (the UTC day of Hour), all in one
	// transaction: counts add up, and a bucket's LastAt only moves
	// forward. Zero counts are ignored; a negative count, an empty user ID
	// or outcome, or a zero Hour is refused and nothing is added. The user
	// need not exist (it may have been deleted since): usage outlives the
	// user, as its history does.
	AddUsage(ctx context.Context, counts []UsageCount) error

	// Usage returns the buckets of one user at the granularity whose
	// Start is in [From, To), ordered by Start, then Endpoint, then
	// Outcome (byte-wise).
	Usage(ctx context.Context, q UsageQuery) ([]UsageBucket, error)

	// TopUsers returns the users of an org (or of one product of it, or
	// its org-level users only) with the most decisions (allowed and
	// refused) in buckets whose Start is in [From, To), most first, ties
	// by user ID; at most Limit (0 = no limit). Who belongs to the org or
	// product is read from the users as they are now: users deleted since
	// are left out, and a user moved to another product counts there.
	TopUsers(ctx context.Context, q TopUsageQuery) ([]UserUsage, error)

	// PruneUsage deletes the hourly buckets that start before hours and
	// the daily buckets that start before days (a zero time deletes none
	// of that granularity), and returns how many it deleted.
	PruneUsage(ctx context.Context, hours, days time.Time) (int64, error)

	// PutCounters sets node's own count of each counter (Kind, Key,
	// Window) to Count, unless what is stored is already larger: within a
	// window a count only rises, so a node that restarted with a lower
	// count cannot lower the total. One transaction. If a batch names a
	// counter twice, the larger count wins.
	PutCounters(ctx context.Context, node string, counters []Counter) error

	// SumCounters returns, for every counter whose Window is at or after
	// since, the sum of the counts of all nodes but except ("" for all
	// nodes), ordered by Kind, Key, Window. A counter only except has
	// counted is left out. With a changedSince that is not zero, only the
	// counters that some node but except raised at or after changedSince
	// are summed (each over all those nodes): a reader that passes the
	// time the previous call returned, less a margin longer than a
	// PutCounters takes, reads what changed instead of every live window.
	// The time returned is the store's clock when the read began.
	SumCounters(ctx context.Context, since time.Time, except string, changedSince time.Time) ([]Counter, time.Time, error)

	// PruneCounters deletes the counters of every node whose Window starts
	// before before (pass the start of the oldest window still current),
	// and returns how many it deleted. A zero time deletes none.
	PruneCounters(ctx context.Context, before time.Time) (int64, error)
}

// UsageCount is a number of decisions of one outcome about one user at one
// endpoint within one hour, as a gateway node counted them.
type UsageCount struct {
	UserID   string
	Endpoint string    // the endpoint's name in the catalog; "" when none matched
	Outcome  string    // OutcomeAllowed, or the reason code of a refusal
	Hour     time.Time // any time within the hour
	Count    int64
	LastAt   time.Time // the last decision counted; zero if unknown
}

// OutcomeAllowed is the outcome of an allowed request; every other outcome
// is a refusal, named by its reason code ("scope_denied", "rate_limited",
// "quota_exceeded", ...).
const OutcomeAllowed = "allowed"

// Granularity is the length of the usage buckets a query reads.
type Granularity string

// The granularities of usage buckets.
const (
	GranularityHour Granularity = "hour" // UTC hours
	GranularityDay  Granularity = "day"  // UTC days
)

// UsageQuery selects one user's usage buckets.
type UsageQuery struct {
	UserID      string
	From, To    time.Time // buckets with From <= Start < To; both required
	Granularity Granularity
}

// UsageBucket is the usage of one user at one endpoint with one outcome in
// one hour or day.
type UsageBucket struct {
	Start    time.Time // the start of the hour or day, UTC
	Endpoint string
	Outcome  string
	Count    int64
	LastAt   time.Time
}

// TopUsageQuery selects the users TopUsers ranks. Org and Product follow
// UserFilter: Product with ProductSet is 0 for the org-level users only,
// >0 for that product's users.
type TopUsageQuery struct {
	Org         string // required
	Product     int64
	ProductSet  bool
	From, To    time.Time // buckets with From <= Start < To; both required
	Granularity Granularity
	Limit       int // 0 = no limit
}

// UserUsage is one user's total usage in a TopUsers range.
type UserUsage struct {
	UserID  string
	Allowed int64 // decisions with OutcomeAllowed
	Refused int64 // all other decisions
	LastAt  time.Time
}

// Total is all the decisions counted.
func (u UserUsage) Total() int64 { return u.Allowed + u.Refused }

// Counter is one node's count (PutCounters), or the sum of several nodes'
// counts (SumCounters), of one quota or rate-limit window.
type Counter struct {
	Kind   string    // e.g. "quota_day", "quota_month", "rate"
	Key    string    // e.g. a user ID
	Window time.Time // the instant that names the window (the gateway uses its end)
	Count  int64
}

// usageRow is one bucket to add to: a UsageCount with its start truncated
// to the bucket's granularity, merged with the batch's other counts of the
// same bucket.
type usageRow struct {
	userID, endpoint, outcome string
	start                     time.Time
	count                     int64
	lastAt                    time.Time
}

func compareUsageRows(a, b usageRow) int {
	return cmp.Or(
		cmp.Compare(a.userID, b.userID),
		a.start.Compare(b.start),
		cmp.Compare(a.endpoint, b.endpoint),
		cmp.Compare(a.outcome, b.outcome),
	)
}

// usageBuckets checks counts and merges them into hourly and daily rows,
// each list sorted by key, so that writers that flush at once lock rows in
// one order and cannot deadlock, and no statement names a row twice.
func usageBuckets(counts []UsageCount) (hourly, daily []usageRow, err error) {
	type key struct {
		userID, endpoint, outcome string
		start                     int64
	}
	hours := map[key]*usageRow{}
	days := map[key]*usageRow{}
	add := func(m map[key]*usageRow, c UsageCount, start time.Time) {
		k := key{c.UserID, c.Endpoint, c.Outcome, start.UnixNano()}
		r := m[k]
		if r == nil {
			r = &usageRow{userID: c.UserID, endpoint: c.Endpoint, outcome: c.Outcome, start: start}
			m[k] = r
		}
		r.count += c.Count
		if c.LastAt.After(r.lastAt) {
			r.lastAt = c.LastAt.UTC()
		}
	}
	for i, c := range counts {
		switch {
		case c.Count == 0:
			continue
		case c.Count < 0:
			return nil, nil, fmt.Errorf("adding usage: count %d of API user %q is negative", c.Count, c.UserID)
		case c.UserID == "":
			return nil, nil, fmt.Errorf("adding usage: count %d of the batch has no user ID", i)
		case c.Outcome == "":
			return nil, nil, fmt.Errorf("adding usage: the count of API user %q has no outcome", c.UserID)
		case c.Hour.IsZero():
			return nil, nil, fmt.Errorf("adding usage: the count of API user %q has no hour", c.UserID)
		case c.Hour.Before(minTime) || c.Hour.After(maxTime):
			return nil, nil, fmt.Errorf("adding usage: the hour %s of API user %q is outside the range the store keeps (years 1678 to 2262)", c.Hour.Format(time.RFC3339), c.UserID)
		case !c.LastAt.IsZero() && (c.LastAt.Before(minTime) || c.LastAt.After(maxTime)):
			return nil, nil, fmt.Errorf("adding usage: the last decision %s of API user %q is outside the range the store keeps (years 1678 to 2262)", c.LastAt.Format(time.RFC3339), c.UserID)
		}
		h := c.Hour.UTC()
		add(hours, c, h.Truncate(time.Hour))
		add(days, c, time.Date(h.Year(), h.Month(), h.Day(), 0, 0, 0, 0, time.UTC))
	}
	list := func(m map[key]*usageRow) []usageRow {
		if len(m) == 0 {
			return nil
		}
		rows := make([]usageRow, 0, len(m))
		for _, r := range m {
			rows = append(rows, *r)
		}
		slices.SortFunc(rows, compareUsageRows)
		return rows
	}
	return list(hours), list(days), nil
}

// checkUsageRange refuses a range and granularity no store can read.
func checkUsageRange(what string, g Granularity, from, to time.Time) error {
	switch g {
	case GranularityHour, GranularityDay:
	case "":
		return fmt.Errorf("%s: no granularity given (%q or %q)", what, GranularityHour, GranularityDay)
	default:
		return fmt.Errorf("%s: unknown granularity %q (want %q or %q)", what, g, GranularityHour, GranularityDay)
	}
	switch {
	case from.IsZero() || to.IsZero():
		return fmt.Errorf("%s: both ends of the time range are required", what)
	case from.After(to):
		return fmt.Errorf("%s: the range starts (%s) after it ends (%s)", what, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	case from.Before(minTime) || to.After(maxTime):
		return fmt.Errorf("%s: the range %s to %s is outside the range the store keeps (years 1678 to 2262)", what, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	}
	return nil
}

func (q *UsageQuery) check() error {
	if q.UserID == "" {
		return fmt.Errorf("reading usage: no user ID given")
	}
	return checkUsageRange(fmt.Sprintf("reading the usage of API user %q", q.UserID), q.Granularity, q.From, q.To)
}

func (q *TopUsageQuery) check() error {
	switch {
	case q.Org == "":
		return fmt.Errorf("ranking users by usage: no org given")
	case q.Limit < 0:
		return fmt.Errorf("ranking users by usage: negative limit %d", q.Limit)
	case q.ProductSet && q.Product < 0:
		return fmt.Errorf("ranking users by usage: negative product ID %d", q.Product)
	}
	return checkUsageRange("ranking users by usage", q.Granularity, q.From, q.To)
}

// usageTable is the table of a granularity's buckets; the granularity has
// been checked.
func usageTable(g Granularity) string {
	if g == GranularityDay {
		return "usage_daily"
	}
	return "usage_hourly"
}

// mergeCounters checks a batch of counters and merges repeated ones
// (the larger count wins), sorted by key, so that no statement names a row
// twice and a failure is reproducible.
func mergeCounters(node string, counters []Counter) ([]Counter, error) {
	if node == "" {
		return nil, fmt.Errorf("putting counters: no node name given")
	}
	type key struct {
		kind, key string
		window    int64
	}
	m := make(map[key]int, len(counters))
	var out []Counter
	for _, c := range counters {
		switch {
		case c.Kind == "":
			return nil, fmt.Errorf("putting counters of node %q: a counter of %q has no kind", node, c.Key)
		case c.Key == "":
			return nil, fmt.Errorf("putting counters of node %q: a %q counter has no key", node, c.Kind)
		case c.Count < 0:
			return nil, fmt.Errorf("putting counters of node %q: the %q counter of %q is negative (%d)", node, c.Kind, c.Key, c.Count)
		case c.Window.IsZero():
			return nil, fmt.Errorf("putting counters of node %q: the %q counter of %q has no window", node, c.Kind, c.Key)
		case c.Window.Before(minTime) || c.Window.After(maxTime):
			return nil, fmt.Errorf("putting counters of node %q: the window %s of the %q counter of %q is outside the range the store keeps (years 1678 to 2262)", node, c.Window.Format(time.RFC3339), c.Kind, c.Key)
		}
		c.Window = c.Window.UTC()
		k := key{c.Kind, c.Key, c.Window.UnixNano()}
		if i, ok := m[k]; ok {
			out[i].Count = max(out[i].Count, c.Count)
			continue
		}
		m[k] = len(out)
		out = append(out, c)
	}
	slices.SortFunc(out, compareCounters)
	return out, nil
}

func compareCounters(a, b Counter) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Key, b.Key), a.Window.Compare(b.Window))
}

// checkTime refuses a time the store cannot compare with what it keeps.
func checkTime(what string, t time.Time) error {
	if !t.IsZero() && (t.Before(minTime) || t.After(maxTime)) {
		return fmt.Errorf("%s: %s is outside the range the store keeps (years 1678 to 2262)", what, t.UTC().Format(time.RFC3339))
	}
	return nil
}
