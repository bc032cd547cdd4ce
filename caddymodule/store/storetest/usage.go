package storetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
)

// RunUsage runs the behaviour suite of store.UsageStore. open must return
// n stores opened separately on one new, empty database, as n gateway
// nodes open it; each must implement store.UsageStore. RunUsage closes
// them when the subtest ends.
func RunUsage(t *testing.T, open func(t *testing.T, n int) []store.Store) {
	tests := []struct {
		name    string
		handles int
		fn      func(t *testing.T, s []store.Store)
	}{
		{"AddUsageAddsUp", 1, testAddUsageAddsUp},
		{"AddUsageFromTwoNodes", 2, testAddUsageTwoNodes},
		{"AddUsageConcurrent", 2, testAddUsageConcurrent},
		{"UsageRangeAndOrder", 1, testUsageRangeAndOrder},
		{"TopUsers", 1, testTopUsers},
		{"PruneUsage", 1, testPruneUsage},
		{"Counters", 2, testCounters},
		{"UsageRefusals", 1, testUsageRefusals},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stores := open(t, tt.handles)
			if len(stores) != tt.handles {
				t.Fatalf("open returned %d stores, want %d", len(stores), tt.handles)
			}
			t.Cleanup(func() {
				for _, s := range stores {
					if err := s.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				}
			})
			tt.fn(t, stores)
		})
	}
}

// BenchmarkAddUsage measures AddUsage with batches of 1,000 counts, each
// of another bucket (100 users, 5 endpoints, 2 outcomes, one hour): a
// node's flush in a busy hour, which after the first adds to existing
// rows.
func BenchmarkAddUsage(b *testing.B, s store.Store) {
	u := usageStore(b, s)
	hour := time.Date(2031, time.March, 10, 9, 0, 0, 0, time.UTC)
	batch := make([]store.UsageCount, 1000)
	for i := range batch {
		batch[i] = store.UsageCount{
			UserID:   fmt.Sprintf("user-%03d", i/10),
			Endpoint: fmt.Sprintf("endpoint-%d", i%5),
			Outcome:  []string{store.OutcomeAllowed, "rate_limited"}[i/5%2],
			Hour:     hour,
			Count:    int64(1 + i%7),
			LastAt:   hour.Add(time.Duration(i) * time.Second),
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := u.AddUsage(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*float64(len(batch))/b.Elapsed().Seconds(), "counts/s")
}

func usageStore(t testing.TB, s store.Store) store.UsageStore {
	t.Helper()
	u, ok := s.(store.UsageStore)
	if !ok {
		t.Fatalf("%T does not implement store.UsageStore", s)
	}
	return u
}

// at is a time on a day of March 2031, given in UTC but returned in
// another zone, so the suite sees that stores bucket and return UTC.
func at(day, hour, minute int) time.Time {
	return time.Date(2031, time.March, day, hour, minute, 0, 0, time.UTC).In(time.FixedZone("UTC+2", 2*60*60))
}

// utcHour and utcDay are the buckets' starts as the store must return
// them.
func utcHour(day, hour int) time.Time {
	return time.Date(2031, time.March, day, hour, 0, 0, 0, time.UTC)
}
func utcDay(day int) time.Time { return time.Date(2031, time.March, day, 0, 0, 0, 0, time.UTC) }

func addUsage(t *testing.T, s store.UsageStore, counts ...store.UsageCount) {
	t.Helper()
	if err := s.AddUsage(t.Context(), counts); err != nil {
		t.Fatalf("AddUsage: %v", err)
	}
}

func usageOf(t *testing.T, s store.UsageStore, id string, g store.Granularity, from, to time.Time) []store.UsageBucket {
	t.Helper()
	got, err := s.Usage(t.Context(), store.UsageQuery{UserID: id, From: from, To: to, Granularity: g})
	if err != nil {
		t.Fatalf("Usage(%q, %s): %v", id, g, err)
	}
	for _, b := range got {
		if b.Start.Location() != time.UTC || (!b.LastAt.IsZero() && b.LastAt.Location() != time.UTC) {
			t.Errorf("Usage(%q): bucket %+v is not in UTC", id, b)
		}
	}
	return got
}

// wantBuckets fails t unless got is want, comparing times as instants.
func wantBuckets(t *testing.T, what string, got, want []store.UsageBucket) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d buckets, want %d:\n got %s\nwant %s", what, len(got), len(want), fmtBuckets(got), fmtBuckets(want))
		return
	}
	for i := range got {
		g, w := got[i], want[i]
		if !g.Start.Equal(w.Start) || g.Endpoint != w.Endpoint || g.Outcome != w.Outcome || g.Count != w.Count || !g.LastAt.Equal(w.LastAt) {
			t.Errorf("%s: bucket %d differs:\n got %s\nwant %s", what, i, fmtBuckets(got), fmtBuckets(want))
			return
		}
	}
}

func fmtBuckets(bs []store.UsageBucket) string {
	parts := make([]string, len(bs))
	for i, b := range bs {
		last := "-"
		if !b.LastAt.IsZero() {
			last = b.LastAt.UTC().Format(time.RFC3339Nano)
		}
		parts[i] = fmt.Sprintf("{%s %q %q %d %s}", b.Start.UTC().Format(time.RFC3339), b.Endpoint, b.Outcome, b.Count, last)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// checkHoursMatchDays fails t unless the user's daily buckets are the sums
// of its hourly buckets in [from, to), which must be whole UTC days.
func checkHoursMatchDays(t *testing.T, s store.UsageStore, id string, from, to time.Time) {
	t.Helper()
	type key struct {
		day               int64
		endpoint, outcome string
	}
	sums := map[key]int64{}
	for _, b := range usageOf(t, s, id, store.GranularityHour, from, to) {
		d := b.Start.UTC()
		day := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC)
		sums[key{day.Unix(), b.Endpoint, b.Outcome}] += b.Count
	}
	days := usageOf(t, s, id, store.GranularityDay, from, to)
	if len(days) != len(sums) {
		t.Errorf("user %q: %d daily buckets, but the hourly ones fall in %d", id, len(days), len(sums))
	}
	for _, b := range days {
		if want := sums[key{b.Start.Unix(), b.Endpoint, b.Outcome}]; b.Count != want {
			t.Errorf("user %q: daily bucket %s %q %q counts %d, its hours %d", id, b.Start.Format(time.DateOnly), b.Endpoint, b.Outcome, b.Count, want)
		}
	}
}

func testAddUsageAddsUp(t *testing.T, stores []store.Store) {
	s := usageStore(t, stores[0])
	// Usage is kept whether or not the user exists: none of these do.
	addUsage(t, s,
		store.UsageCount{UserID: "alice", Endpoint: "list-devices", Outcome: "allowed", Hour: at(10, 9, 15), Count: 3, LastAt: at(10, 9, 20)},
		// The same hour: merged within the batch.
		store.UsageCount{UserID: "alice", Endpoint: "list-devices", Outcome: "allowed", Hour: at(10, 9, 45), Count: 2, LastAt: at(10, 9, 50)},
		store.UsageCount{UserID: "alice", Endpoint: "list-devices", Outcome: "scope_denied", Hour: at(10, 9, 0), Count: 1, LastAt: at(10, 9, 1)},
		// 23:30 UTC is the next day in the caller's zone, but the
		// buckets are UTC days.
		store.UsageCount{UserID: "alice", Endpoint: "", Outcome: "allowed", Hour: at(10, 23, 30), Count: 4, LastAt: at(10, 23, 31)},
		store.UsageCount{UserID: "alice", Endpoint: "list-devices", Outcome: "allowed", Hour: at(11, 0, 5), Count: 1, LastAt: at(11, 0, 5)},
		store.UsageCount{UserID: "alice", Endpoint: "get-device", Outcome: "allowed", Hour: at(10, 10, 0), Count: 0, LastAt: at(10, 10, 0)},
		store.UsageCount{UserID: "bob", Endpoint: "get-device", Outcome: "allowed", Hour: at(10, 9, 0), Count: 7},
	)
	// A later flush adds; an earlier or zero last decision does not move
	// LastAt back.
	addUsage(t, s,
		store.UsageCount{UserID: "alice", Endpoint: "list-devices", Outcome: "allowed", Hour: at(10, 9, 10), Count: 10, LastAt: at(10, 9, 11)},
		store.UsageCount{UserID: "alice", Endpoint: "list-devices", Outcome: "scope_denied", Hour: at(10, 9, 30), Count: 2},
		store.UsageCount{UserID: "alice", Endpoint: "", Outcome: "allowed", Hour: at(10, 23, 59), Count: 1, LastAt: at(10, 23, 59)},
	)
	addUsage(t, s) // an empty batch is nothing to do

	from, to := utcDay(10), utcDay(12)
	wantBuckets(t, "alice's hours", usageOf(t, s, "alice", store.GranularityHour, from, to), []store.UsageBucket{
		{Start: utcHour(10, 9), Endpoint: "list-devices", Outcome: "allowed", Count: 15, LastAt: at(10, 9, 50)},
		{Start: utcHour(10, 9), Endpoint: "list-devices", Outcome: "scope_denied", Count: 3, LastAt: at(10, 9, 1)},
		{Start: utcHour(10, 23), Endpoint: "", Outcome: "allowed", Count: 5, LastAt: at(10, 23, 59)},
		{Start: utcHour(11, 0), Endpoint: "list-devices", Outcome: "allowed", Count: 1, LastAt: at(11, 0, 5)},
	})
	wantBuckets(t, "alice's days", usageOf(t, s, "alice", store.GranularityDay, from, to), []store.UsageBucket{
		{Start: utcDay(10), Endpoint: "", Outcome: "allowed", Count: 5, LastAt: at(10, 23, 59)},
		{Start: utcDay(10), Endpoint: "list-devices", Outcome: "allowed", Count: 15, LastAt: at(10, 9, 50)},
		{Start: utcDay(10), Endpoint: "list-devices", Outcome: "scope_denied", Count: 3, LastAt: at(10, 9, 1)},
		{Start: utcDay(11), Endpoint: "list-devices", Outcome: "allowed", Count: 1, LastAt: at(11, 0, 5)},
	})
	// A bucket that never had a last decision keeps the zero time.
	wantBuckets(t, "bob's days", usageOf(t, s, "bob", store.GranularityDay, from, to), []store.UsageBucket{
		{Start: utcDay(10), Endpoint: "get-device", Outcome: "allowed", Count: 7},
	})
	for _, id := range []string{"alice", "bob"} {
		checkHoursMatchDays(t, s, id, from, to)
	}
	if got := usageOf(t, s, "carol", store.GranularityHour, from, to); got != nil {
		t.Errorf("Usage of a user without usage = %#v, want nil", got)
	}
}

// testAddUsageTwoNodes has two nodes flush counts of the same buckets:
// their counts add up, and both read the same totals.
func testAddUsageTwoNodes(t *testing.T, stores []store.Store) {
	a, b := usageStore(t, stores[0]), usageStore(t, stores[1])
	c := store.UsageCount{UserID: "alice", Endpoint: "list-devices", Outcome: "allowed", Hour: at(10, 9, 0)}
	c1, c2, c3 := c, c, c
	c1.Count, c1.LastAt = 3, at(10, 9, 30)
	c2.Count, c2.LastAt = 4, at(10, 9, 20)
	c3.Count, c3.LastAt = 5, at(10, 9, 40)
	addUsage(t, a, c1)
	addUsage(t, b, c2)
	addUsage(t, a, c3)
	want := []store.UsageBucket{{Start: utcHour(10, 9), Endpoint: "list-devices", Outcome: "allowed", Count: 12, LastAt: at(10, 9, 40)}}
	for i, s := range []store.UsageStore{a, b} {
		wantBuckets(t, fmt.Sprintf("node %d's view", i), usageOf(t, s, "alice", store.GranularityHour, utcDay(10), utcDay(11)), want)
		checkHoursMatchDays(t, s, "alice", utcDay(10), utcDay(11))
	}
}

// testAddUsageConcurrent has several goroutines on two nodes flush
// overlapping batches, in different orders, at once: every count is kept
// exactly once, and no flush fails (PostgreSQL: no deadlock).
func testAddUsageConcurrent(t *testing.T, stores []store.Store) {
	nodes := []store.UsageStore{usageStore(t, stores[0]), usageStore(t, stores[1])}
	const workers, flushes = 6, 8
	users := []string{"u0", "u1", "u2", "u3"}
	endpoints := []string{"", "list-devices", "get-device"}
	outcomes := []string{"allowed", "rate_limited"}
	hours := []time.Time{at(10, 23, 0), at(11, 0, 0)} // two days
	var batch []store.UsageCount
	for _, u := range users {
		for _, e := range endpoints {
			for _, o := range outcomes {
				for _, h := range hours {
					batch = append(batch, store.UsageCount{UserID: u, Endpoint: e, Outcome: o, Hour: h, Count: 1, LastAt: h})
				}
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*flushes)
	for w := range workers {
		mine := slices.Clone(batch)
		if w%2 == 1 {
			slices.Reverse(mine)
		}
		s := nodes[w%2]
		wg.Go(func() {
			for range flushes {
				if err := s.AddUsage(t.Context(), mine); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent AddUsage: %v", err)
	}
	for _, u := range users {
		for _, g := range []store.Granularity{store.GranularityHour, store.GranularityDay} {
			got := usageOf(t, nodes[1], u, g, utcDay(10), utcDay(12))
			if want := len(endpoints) * len(outcomes) * len(hours); len(got) != want {
				t.Errorf("user %q: %d %s buckets, want %d", u, len(got), g, want)
			}
			for _, b := range got {
				if b.Count != workers*flushes {
					t.Errorf("user %q: %s bucket %s %q %q counts %d, want %d", u, g, b.Start.Format(time.RFC3339), b.Endpoint, b.Outcome, b.Count, workers*flushes)
				}
			}
		}
		checkHoursMatchDays(t, nodes[0], u, utcDay(10), utcDay(12))
	}
	if err := stores[0].Check(t.Context()); err != nil {
		t.Errorf("Check after concurrent flushes: %v", err)
	}
}

func testUsageRangeAndOrder(t *testing.T, stores []store.Store) {
	s := usageStore(t, stores[0])
	var counts []store.UsageCount
	// Endpoints and outcomes out of order, and names whose byte order
	// differs from a locale's ("Zeta" < "alpha" < "beta").
	for _, h := range []time.Time{at(10, 10, 0), at(10, 8, 0), at(11, 0, 0), at(10, 9, 0)} {
		for _, e := range []string{"beta", "", "alpha", "Zeta"} {
			for _, o := range []string{"scope_denied", "allowed", "Rate"} {
				counts = append(counts, store.UsageCount{UserID: "alice", Endpoint: e, Outcome: o, Hour: h, Count: 1, LastAt: h})
			}
		}
	}
	addUsage(t, s, counts...)
	addUsage(t, s, store.UsageCount{UserID: "bob", Outcome: "allowed", Hour: at(10, 9, 0), Count: 1})

	all := usageOf(t, s, "alice", store.GranularityHour, utcDay(1), utcDay(31))
	if len(all) != len(counts) {
		t.Fatalf("%d hourly buckets, want %d", len(all), len(counts))
	}
	if !slices.IsSortedFunc(all, func(a, b store.UsageBucket) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		if c := strings.Compare(a.Endpoint, b.Endpoint); c != 0 {
			return c
		}
		return strings.Compare(a.Outcome, b.Outcome)
	}) || all[0].Endpoint != "" || all[1].Endpoint != "" || all[3].Endpoint != "Zeta" || all[0].Outcome != "Rate" {
		t.Errorf("buckets not ordered by start, endpoint, outcome (byte-wise): %s", fmtBuckets(all))
	}

	hoursOf := func(bs []store.UsageBucket) []int {
		var hs []int
		for _, b := range bs {
			if h := b.Start.Hour(); len(hs) == 0 || hs[len(hs)-1] != h {
				hs = append(hs, h)
			}
		}
		return hs
	}
	for _, r := range []struct {
		from, to time.Time
		want     []int
	}{
		{utcHour(10, 9), utcHour(10, 10), []int{9}},                     // To is excluded
		{at(10, 8, 30), utcHour(10, 10).Add(time.Second), []int{9, 10}}, // a bucket starting before From is not in it
		{utcHour(10, 8), utcDay(11), []int{8, 9, 10}},
		{utcDay(11), utcDay(12), []int{0}},
		{utcHour(10, 9), utcHour(10, 9), nil}, // empty range
		{utcDay(12), utcDay(20), nil},
	} {
		got := usageOf(t, s, "alice", store.GranularityHour, r.from, r.to)
		if hs := hoursOf(got); !slices.Equal(hs, r.want) {
			t.Errorf("Usage [%s, %s): hours %v, want %v", r.from.UTC().Format(time.RFC3339), r.to.UTC().Format(time.RFC3339), hs, r.want)
		}
		if r.want == nil && got != nil {
			t.Errorf("Usage of an empty range = %#v, want nil", got)
		}
	}
	days := usageOf(t, s, "alice", store.GranularityDay, utcDay(10), utcDay(11))
	if len(days) != 12 || !days[0].Start.Equal(utcDay(10)) || days[0].Count != 3 {
		t.Errorf("days of March 10: %s, want 12 buckets of 3", fmtBuckets(days))
	}
	// A day's bucket starts at midnight: a range from later that day
	// leaves it out.
	if got := usageOf(t, s, "alice", store.GranularityDay, utcHour(10, 1), utcDay(11)); got != nil {
		t.Errorf("days from 01:00: %s, want none", fmtBuckets(got))
	}
}

func testTopUsers(t *testing.T, stores []store.Store) {
	Seed(t, stores[0])
	s := usageStore(t, stores[0])
	ctx := t.Context()
	for _, u := range []struct {
		id      string
		org     string
		product int64
	}{
		{"a1", "acme", 0}, {"a2", "acme", 1337}, {"a3", "acme", 1337}, {"a4", "acme", 4242},
		{"gone", "acme", 1337}, {"idle", "acme", 1337}, {"g1", "globex", 9001},
	} {
		create(t, stores[0], minimalUser(u.id, u.org, u.product))
	}
	c := func(id, outcome string, hour time.Time, n int64) store.UsageCount {
		return store.UsageCount{UserID: id, Endpoint: "list-devices", Outcome: outcome, Hour: hour, Count: n, LastAt: hour.Add(time.Minute)}
	}
	addUsage(t, s,
		c("a1", "allowed", at(10, 8, 0), 5),
		c("a2", "allowed", at(10, 8, 0), 4),
		c("a2", "allowed", at(10, 12, 0), 3),
		c("a2", "scope_denied", at(10, 9, 0), 2),
		c("a2", "rate_limited", at(10, 9, 0), 1),
		c("a3", "allowed", at(10, 10, 0), 10), // ties with a2: ID order
		c("a4", "quota_exceeded", at(10, 11, 0), 1),
		c("a4", "allowed", at(12, 11, 0), 1000), // outside the range
		c("gone", "allowed", at(10, 8, 0), 50),
		c("g1", "allowed", at(10, 8, 0), 100),
	)
	if err := stores[0].DeleteUser(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	top := func(q store.TopUsageQuery) []store.UserUsage {
		t.Helper()
		if q.From.IsZero() {
			q.From, q.To = utcDay(10), utcDay(11)
		}
		got, err := s.TopUsers(ctx, q)
		if err != nil {
			t.Fatalf("TopUsers(%+v): %v", q, err)
		}
		for _, u := range got {
			if !u.LastAt.IsZero() && u.LastAt.Location() != time.UTC {
				t.Errorf("TopUsers: LastAt of %q is not in UTC", u.UserID)
			}
		}
		return got
	}
	ids := func(us []store.UserUsage) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.UserID)
		}
		return out
	}

	for _, g := range []store.Granularity{store.GranularityDay, store.GranularityHour} {
		got := top(store.TopUsageQuery{Org: "acme", Granularity: g})
		if want := []string{"a2", "a3", "a1", "a4"}; !slices.Equal(ids(got), want) {
			t.Fatalf("TopUsers of acme by %s: %v, want %v (deleted users left out, ties by ID)", g, ids(got), want)
		}
		if a2 := got[0]; a2.Allowed != 7 || a2.Refused != 3 || a2.Total() != 10 || !a2.LastAt.Equal(at(10, 12, 1)) {
			t.Errorf("TopUsers by %s: a2 = %+v, want 7 allowed, 3 refused, last at 12:01", g, a2)
		}
		if a4 := got[3]; a4.Allowed != 0 || a4.Refused != 1 {
			t.Errorf("TopUsers by %s: a4 = %+v, want 0 allowed, 1 refused (its later usage is outside the range)", g, a4)
		}
	}
	for _, tc := range []struct {
		q    store.TopUsageQuery
		want []string
	}{
		{store.TopUsageQuery{Org: "acme", Granularity: store.GranularityDay, Limit: 2}, []string{"a2", "a3"}},
		{store.TopUsageQuery{Org: "acme", Product: 1337, ProductSet: true, Granularity: store.GranularityDay}, []string{"a2", "a3"}},
		{store.TopUsageQuery{Org: "acme", Product: 0, ProductSet: true, Granularity: store.GranularityDay}, []string{"a1"}},
		{store.TopUsageQuery{Org: "acme", Product: 4242, ProductSet: true, Granularity: store.GranularityDay}, []string{"a4"}},
		{store.TopUsageQuery{Org: "acme", Product: 9001, ProductSet: true, Granularity: store.GranularityDay}, nil}, // globex's product
		{store.TopUsageQuery{Org: "globex", Granularity: store.GranularityHour}, []string{"g1"}},
		{store.TopUsageQuery{Org: "acme", Granularity: store.GranularityHour, From: utcHour(10, 9), To: utcHour(10, 11)}, []string{"a3", "a2"}},
		{store.TopUsageQuery{Org: "acme", Granularity: store.GranularityDay, From: utcDay(11), To: utcDay(12)}, nil},
		{store.TopUsageQuery{Org: "initech", Granularity: store.GranularityDay}, nil},
	} {
		got := top(tc.q)
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("TopUsers(%+v) = %v, want %v", tc.q, ids(got), tc.want)
		}
		if tc.want == nil && got != nil {
			t.Errorf("TopUsers(%+v) = %#v, want nil", tc.q, got)
		}
	}
	// The deleted user's usage is still there, only not ranked.
	if got := usageOf(t, s, "gone", store.GranularityDay, utcDay(10), utcDay(11)); len(got) != 1 || got[0].Count != 50 {
		t.Errorf("usage of a deleted user: %s, want its bucket of 50", fmtBuckets(got))
	}
}

func testPruneUsage(t *testing.T, stores []store.Store) {
	s := usageStore(t, stores[0])
	ctx := t.Context()
	for _, d := range []int{10, 11, 12} {
		addUsage(t, s, store.UsageCount{UserID: "alice", Outcome: "allowed", Hour: at(d, 8, 0), Count: 1})
	}
	prune := func(hours, days time.Time, want int64) {
		t.Helper()
		n, err := s.PruneUsage(ctx, hours, days)
		if err != nil {
			t.Fatalf("PruneUsage: %v", err)
		}
		if n != want {
			t.Errorf("PruneUsage(%v, %v) deleted %d rows, want %d", hours, days, n, want)
		}
	}
	starts := func(g store.Granularity) []int {
		var ds []int
		for _, b := range usageOf(t, s, "alice", g, utcDay(1), utcDay(31)) {
			ds = append(ds, b.Start.Day())
		}
		return ds
	}
	prune(time.Time{}, time.Time{}, 0)
	// Hours before March 12 (two), days before March 11 (one); the
	// bucket that starts exactly at the bound stays.
	prune(at(12, 0, 0), utcDay(11), 3)
	if got := starts(store.GranularityHour); !slices.Equal(got, []int{12}) {
		t.Errorf("hourly buckets left on days %v, want [12]", got)
	}
	if got := starts(store.GranularityDay); !slices.Equal(got, []int{11, 12}) {
		t.Errorf("daily buckets left on days %v, want [11 12]", got)
	}
	prune(time.Time{}, utcDay(13), 2)
	if got := starts(store.GranularityHour); !slices.Equal(got, []int{12}) {
		t.Errorf("a zero hours bound pruned hourly buckets: left %v", got)
	}
	prune(utcDay(13), utcDay(13), 1)
}

func testCounters(t *testing.T, stores []store.Store) {
	a, b := usageStore(t, stores[0]), usageStore(t, stores[1])
	ctx := t.Context()
	put := func(s store.UsageStore, node string, cs ...store.Counter) {
		t.Helper()
		if err := s.PutCounters(ctx, node, cs); err != nil {
			t.Fatalf("PutCounters(%q): %v", node, err)
		}
	}
	var lastRead time.Time
	sumChanged := func(s store.UsageStore, since time.Time, except string, changedSince time.Time) []store.Counter {
		t.Helper()
		got, readAt, err := s.SumCounters(ctx, since, except, changedSince)
		if readAt.IsZero() || readAt.Location() != time.UTC {
			t.Errorf("SumCounters: read time %v, want a time in UTC", readAt)
		}
		lastRead = readAt
		if err != nil {
			t.Fatalf("SumCounters: %v", err)
		}
		for _, c := range got {
			if c.Window.Location() != time.UTC {
				t.Errorf("SumCounters: window %v is not in UTC", c.Window)
			}
		}
		return got
	}
	sum := func(s store.UsageStore, since time.Time, except string) []store.Counter {
		t.Helper()
		return sumChanged(s, since, except, time.Time{})
	}
	want := func(what string, got, want []store.Counter) {
		t.Helper()
		eq := len(got) == len(want)
		for i := 0; eq && i < len(got); i++ {
			eq = got[i].Kind == want[i].Kind && got[i].Key == want[i].Key && got[i].Window.Equal(want[i].Window) && got[i].Count == want[i].Count
		}
		if !eq {
			t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
		}
	}
	day, nextDay, month := at(10, 0, 0), at(11, 0, 0), utcDay(1)
	rate := at(11, 12, 30)

	put(a, "node-a",
		store.Counter{Kind: "quota_day", Key: "alice", Window: day, Count: 10},
		store.Counter{Kind: "quota_day", Key: "bob", Window: day, Count: 3},
		store.Counter{Kind: "rate", Key: "alice", Window: rate, Count: 5},
	)
	put(b, "node-b",
		store.Counter{Kind: "quota_day", Key: "alice", Window: day, Count: 7},
		store.Counter{Kind: "quota_month", Key: "alice", Window: month, Count: 40},
	)
	// A restarted node-a reports less: the stored count stays.
	put(b, "node-a", store.Counter{Kind: "quota_day", Key: "alice", Window: day, Count: 4})
	// One batch naming a counter twice: the larger count.
	put(a, "node-a",
		store.Counter{Kind: "quota_day", Key: "alice", Window: day, Count: 12},
		store.Counter{Kind: "quota_day", Key: "alice", Window: day, Count: 11},
	)
	put(a, "node-a") // nothing to do

	all := []store.Counter{
		{Kind: "quota_day", Key: "alice", Window: day, Count: 19},
		{Kind: "quota_day", Key: "bob", Window: day, Count: 3},
		{Kind: "quota_month", Key: "alice", Window: month, Count: 40},
		{Kind: "rate", Key: "alice", Window: rate, Count: 5},
	}
	want("the sum of all nodes, from node a", sum(a, time.Time{}, ""), all)
	want("the sum of all nodes, from node b", sum(b, month, ""), all)
	want("node a's view: the others' counts", sum(a, time.Time{}, "node-a"), []store.Counter{
		{Kind: "quota_day", Key: "alice", Window: day, Count: 7},
		{Kind: "quota_month", Key: "alice", Window: month, Count: 40},
	})
	want("node b's view: the others' counts", sum(b, time.Time{}, "node-b"), []store.Counter{
		{Kind: "quota_day", Key: "alice", Window: day, Count: 12},
		{Kind: "quota_day", Key: "bob", Window: day, Count: 3},
		{Kind: "rate", Key: "alice", Window: rate, Count: 5},
	})
	want("windows from the next day", sum(b, nextDay, ""), []store.Counter{{Kind: "rate", Key: "alice", Window: rate, Count: 5}})
	if got := sum(a, at(20, 0, 0), ""); got != nil {
		t.Errorf("SumCounters with no window = %#v, want nil", got)
	}

	// A count that rises is written, on either handle; a reader asking
	// for what changed since its last read gets that window alone, summed
	// over the nodes, and not what only it changed.
	sum(b, day, "node-b")
	since := lastRead
	put(b, "node-a", store.Counter{Kind: "quota_day", Key: "bob", Window: day, Count: 9})
	put(b, "node-b", store.Counter{Kind: "quota_day", Key: "alice", Window: day, Count: 8})
	want("after bob's count rose", sum(a, day, "node-b"), []store.Counter{
		{Kind: "quota_day", Key: "alice", Window: day, Count: 12},
		{Kind: "quota_day", Key: "bob", Window: day, Count: 9},
		{Kind: "rate", Key: "alice", Window: rate, Count: 5},
	})
	want("what changed since the last read, for node b", sumChanged(b, day, "node-b", since), []store.Counter{
		{Kind: "quota_day", Key: "bob", Window: day, Count: 9},
	})
	want("what changed since the last read, for node c", sumChanged(b, day, "node-c", since), []store.Counter{
		{Kind: "quota_day", Key: "alice", Window: day, Count: 20},
		{Kind: "quota_day", Key: "bob", Window: day, Count: 9},
	})
	if got := sumChanged(a, day, "node-b", lastRead.Add(time.Hour)); got != nil {
		t.Errorf("nothing changed after the read: got %+v", got)
	}

	prune := func(before time.Time, want int64) {
		t.Helper()
		n, err := a.PruneCounters(ctx, before)
		if err != nil {
			t.Fatalf("PruneCounters: %v", err)
		}
		if n != want {
			t.Errorf("PruneCounters(%v) deleted %d, want %d", before, n, want)
		}
	}
	prune(time.Time{}, 0)
	prune(nextDay, 4) // alice's day (two nodes), bob's day, the month
	want("after pruning", sum(b, time.Time{}, ""), []store.Counter{{Kind: "rate", Key: "alice", Window: rate, Count: 5}})
}

func testUsageRefusals(t *testing.T, stores []store.Store) {
	s := usageStore(t, stores[0])
	ctx := t.Context()
	ok := store.UsageCount{UserID: "alice", Outcome: "allowed", Hour: at(10, 9, 0), Count: 1}
	bad := func(mod func(c *store.UsageCount)) []store.UsageCount {
		c := ok
		mod(&c)
		return []store.UsageCount{ok, c}
	}
	for name, counts := range map[string][]store.UsageCount{
		"a negative count": bad(func(c *store.UsageCount) { c.Count = -1 }),
		"no user ID":       bad(func(c *store.UsageCount) { c.UserID = "" }),
		"no outcome":       bad(func(c *store.UsageCount) { c.Outcome = "" }),
		"no hour":          bad(func(c *store.UsageCount) { c.Hour = time.Time{} }),
		"an hour in 1066":  bad(func(c *store.UsageCount) { c.Hour = time.Date(1066, 10, 14, 9, 0, 0, 0, time.UTC) }),
	} {
		if err := s.AddUsage(ctx, counts); err == nil {
			t.Errorf("AddUsage with %s succeeded", name)
		}
	}
	if got := usageOf(t, s, "alice", store.GranularityHour, utcDay(1), utcDay(31)); got != nil {
		t.Errorf("a refused batch was partly added: %s", fmtBuckets(got))
	}

	from, to := utcDay(10), utcDay(11)
	for name, q := range map[string]store.UsageQuery{
		"no user":               {From: from, To: to, Granularity: store.GranularityHour},
		"no granularity":        {UserID: "alice", From: from, To: to},
		"an unknown one":        {UserID: "alice", From: from, To: to, Granularity: "minute"},
		"From after To":         {UserID: "alice", From: to, To: from, Granularity: store.GranularityDay},
		"no From":               {UserID: "alice", To: to, Granularity: store.GranularityDay},
		"no To":                 {UserID: "alice", From: from, Granularity: store.GranularityDay},
		"a range past the year": {UserID: "alice", From: from, To: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), Granularity: store.GranularityDay},
	} {
		if got, err := s.Usage(ctx, q); err == nil {
			t.Errorf("Usage with %s = %v, want an error", name, got)
		}
	}
	for name, q := range map[string]store.TopUsageQuery{
		"no org":             {From: from, To: to, Granularity: store.GranularityDay},
		"a negative limit":   {Org: "acme", From: from, To: to, Granularity: store.GranularityDay, Limit: -1},
		"a negative product": {Org: "acme", Product: -1, ProductSet: true, From: from, To: to, Granularity: store.GranularityDay},
		"no granularity":     {Org: "acme", From: from, To: to},
		"an unknown one":     {Org: "acme", From: from, To: to, Granularity: "week"},
		"From after To":      {Org: "acme", From: to, To: from, Granularity: store.GranularityDay},
	} {
		if got, err := s.TopUsers(ctx, q); err == nil {
			t.Errorf("TopUsers with %s = %v, want an error", name, got)
		}
	}

	okc := store.Counter{Kind: "quota_day", Key: "alice", Window: at(10, 0, 0), Count: 1}
	badc := func(mod func(c *store.Counter)) []store.Counter {
		c := okc
		mod(&c)
		return []store.Counter{okc, c}
	}
	for name, tc := range map[string]struct {
		node string
		cs   []store.Counter
	}{
		"no node":          {"", []store.Counter{okc}},
		"no node, nothing": {"", nil},
		"no kind":          {"n", badc(func(c *store.Counter) { c.Kind = "" })},
		"no key":           {"n", badc(func(c *store.Counter) { c.Key = "" })},
		"no window":        {"n", badc(func(c *store.Counter) { c.Window = time.Time{} })},
		"a negative count": {"n", badc(func(c *store.Counter) { c.Count = -5 })},
	} {
		if err := s.PutCounters(ctx, tc.node, tc.cs); err == nil {
			t.Errorf("PutCounters with %s succeeded", name)
		}
	}
	if got, _, err := s.SumCounters(ctx, time.Time{}, "", time.Time{}); err != nil || got != nil {
		t.Errorf("after refused PutCounters: SumCounters = %+v, %v; want nothing", got, err)
	}
	if _, _, err := s.SumCounters(ctx, time.Date(1066, 1, 1, 0, 0, 0, 0, time.UTC), "", time.Time{}); err == nil {
		t.Error("SumCounters since 1066 succeeded")
	}
	if _, err := s.PruneUsage(ctx, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}); err == nil {
		t.Error("PruneUsage before the year 3000 succeeded")
	}
}
