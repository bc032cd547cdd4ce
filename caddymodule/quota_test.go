package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

func openUsageStore(t *testing.T) *store.SQLite {
	t.Helper()
	s, err := store.OpenSQLite(filepath.Join(t.TempDir(), "api_users.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestWindowCountersAcrossNodes: two nodes on one store decide locally,
// learn each other's counts at each exchange, and together admit no more
// than the limit once both have exchanged; a new period starts afresh.
func TestWindowCountersAcrossNodes(t *testing.T) {
	ctx := context.Background()
	s := openUsageStore(t)
	a, b := newWindowCounters(), newWindowCounters()
	if a.node == b.node {
		t.Fatalf("two processes share the node name %q", a.node)
	}
	q := policy.Quota{Requests: 10, Period: policy.QuotaDay}
	now := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	_, end := q.Window(now)
	admitN := func(wc *windowCounters, n int) (admitted int) {
		for range n {
			if wc.admit(counterQuotaDay, "u1", end, q.Requests) {
				admitted++
			}
		}
		return admitted
	}
	// Before any exchange each node knows only its own requests: this is
	// the overshoot the README bounds.
	if got := admitN(a, 6); got != 6 {
		t.Fatalf("node a admitted %d of 6", got)
	}
	if got := admitN(b, 6); got != 6 {
		t.Fatalf("node b admitted %d of 6 before hearing of a", got)
	}
	for _, wc := range []*windowCounters{a, b, a} {
		if err := wc.exchange(ctx, s, now); err != nil {
			t.Fatal(err)
		}
	}
	if ca, cb := a.count(counterQuotaDay, "u1", end), b.count(counterQuotaDay, "u1", end); ca != 12 || cb != 12 {
		t.Fatalf("after exchanging, a counts %d and b %d, want 12 each", ca, cb)
	}
	if got := admitN(a, 3) + admitN(b, 3); got != 0 {
		t.Fatalf("over the quota, the nodes admitted %d more", got)
	}
	// Counts only rise: an exchange of a node with fewer requests does not
	// lower anybody's.
	if err := b.exchange(ctx, s, now); err != nil {
		t.Fatal(err)
	}
	if cb := b.count(counterQuotaDay, "u1", end); cb != 12 {
		t.Fatalf("b counts %d after another exchange, want 12", cb)
	}

	// A restarted node (a new name) reads its former self's rows as another
	// node's: a restart does not reset a quota.
	c := newWindowCounters()
	if err := c.exchange(ctx, s, now); err != nil {
		t.Fatal(err)
	}
	if got := c.count(counterQuotaDay, "u1", end); got != 12 {
		t.Fatalf("a node started afresh counts %d, want the 12 of the others", got)
	}

	// The next day is a new window, and the ended one is forgotten at the
	// next exchange.
	tomorrow := now.Add(24 * time.Hour)
	_, end2 := q.Window(tomorrow)
	if !a.admit(counterQuotaDay, "u1", end2, q.Requests) {
		t.Fatal("the next day's first request was refused")
	}
	if err := a.exchange(ctx, s, tomorrow); err != nil {
		t.Fatal(err)
	}
	if got := a.count(counterQuotaDay, "u1", end); got != 0 {
		t.Fatalf("yesterday's window still counts %d after its end", got)
	}
	sums, _, err := s.SumCounters(ctx, tomorrow.Add(time.Nanosecond), "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 1 || sums[0].Count != 1 || !sums[0].Window.Equal(end2) {
		t.Fatalf("live windows in the store: %+v, want one of tomorrow's with 1", sums)
	}
	if n, err := s.PruneCounters(ctx, tomorrow); err != nil || n != 2 {
		t.Fatalf("pruning the ended day: %d rows, %v; want a's and b's rows", n, err)
	}
}

// TestQuotaWindows: calendar periods in UTC, and epoch-aligned rate
// windows.
func TestQuotaWindows(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 59, 59, 0, time.FixedZone("UTC-5", -5*3600)) // 2027-01-01 04:59:59 UTC
	for _, c := range []struct {
		q          policy.Quota
		start, end string
	}{
		{policy.Quota{Requests: 1, Period: policy.QuotaDay}, "2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z"},
		{policy.Quota{Requests: 1, Period: policy.QuotaMonth}, "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"},
	} {
		start, end := c.q.Window(at)
		if start.Format(time.RFC3339) != c.start || end.Format(time.RFC3339) != c.end {
			t.Errorf("%v per %s at %v: [%v, %v), want [%s, %s)", c.q.Requests, c.q.Period, at, start, end, c.start, c.end)
		}
	}
	now := time.Unix(1_000_000_007, 0)
	if end := rateWindowEnd(now, 10*time.Second); end.Unix() != 1_000_000_010 {
		t.Errorf("rate window end %d, want 1000000010", end.Unix())
	}
	if end := rateWindowEnd(time.Unix(1_000_000_010, 0), 10*time.Second); end.Unix() != 1_000_000_020 {
		t.Errorf("a request at a window's end starts the next: end %d, want 1000000020", end.Unix())
	}
}

// TestUsageCounter: counts add up by user, endpoint, outcome and hour,
// take empties them, and what a failed flush gives back is written next.
func TestUsageCounter(t *testing.T) {
	uc := newUsageCounter()
	h := time.Date(2026, 12, 1, 13, 5, 0, 0, time.UTC)
	for range 3 {
		uc.add("u1", "list-devices", policy.Allowed, h)
	}
	uc.add("u1", "list-devices", policy.InsufficientScope, h.Add(time.Minute))
	uc.add("u1", "list-devices", policy.Allowed, h.Add(time.Hour))
	uc.add("u2", "", policy.IPNotAllowed, h)
	got := map[string]int64{}
	counts := uc.take()
	for _, c := range counts {
		got[fmt.Sprintf("%s/%s/%s/%s", c.UserID, c.Endpoint, c.Outcome, c.Hour.Format("15"))] += c.Count
	}
	want := map[string]int64{
		"u1/list-devices/allowed/13":            3,
		"u1/list-devices/insufficient_scope/13": 1,
		"u1/list-devices/allowed/14":            1,
		"u2//ip_not_allowed/13":                 1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	if again := uc.take(); len(again) != 0 {
		t.Fatalf("a second take got %v, want nothing", again)
	}
	uc.add("u1", "list-devices", policy.Allowed, h)
	if dropped := uc.giveBack(counts); dropped != 0 {
		t.Fatalf("giveBack dropped %d", dropped)
	}
	var total int64
	for _, c := range uc.take() {
		total += c.Count
	}
	if total != 7 {
		t.Fatalf("after giving back, %d counted, want 7", total)
	}
}

// awayFromMidnight returns once the next 00:00 UTC is more than margin
// away, sleeping past it if it is closer, so that a test of a daily quota
// does not see the quota reset.
func awayFromMidnight(margin time.Duration) {
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	if left := midnight.Sub(now); left < margin {
		time.Sleep(left + time.Second)
	}
}

// countingStore counts the store calls a gateway makes.
type countingStore struct {
	*store.SQLite
	calls atomic.Int64
	// The reads the app's loops make once at start.
	syncs, sums atomic.Int64
}

func (c *countingStore) GetUser(ctx context.Context, id string) (*policy.APIUser, error) {
	c.calls.Add(1)
	return c.SQLite.GetUser(ctx, id)
}

func (c *countingStore) UserIDByTokenHash(ctx context.Context, h policy.Hash) (string, error) {
	c.calls.Add(1)
	return c.SQLite.UserIDByTokenHash(ctx, h)
}

func (c *countingStore) ListUsers(ctx context.Context, f store.UserFilter) ([]*policy.APIUser, error) {
	c.calls.Add(1)
	return c.SQLite.ListUsers(ctx, f)
}

func (c *countingStore) TouchUsers(ctx context.Context, m map[string]time.Time) error {
	c.calls.Add(1)
	return c.SQLite.TouchUsers(ctx, m)
}

func (c *countingStore) AddUsage(ctx context.Context, counts []store.UsageCount) error {
	c.calls.Add(1)
	return c.SQLite.AddUsage(ctx, counts)
}

func (c *countingStore) PutCounters(ctx context.Context, node string, counters []store.Counter) error {
	c.calls.Add(1)
	return c.SQLite.PutCounters(ctx, node, counters)
}

func (c *countingStore) SumCounters(ctx context.Context, since time.Time, except string, changedSince time.Time) ([]store.Counter, time.Time, error) {
	c.calls.Add(1)
	c.sums.Add(1)
	return c.SQLite.SumCounters(ctx, since, except, changedSince)
}

func (c *countingStore) LastChange(ctx context.Context) (int64, error) {
	c.calls.Add(1)
	return c.SQLite.LastChange(ctx)
}

func (c *countingStore) Changes(ctx context.Context, after int64, limit int) ([]store.Change, error) {
	c.calls.Add(1)
	c.syncs.Add(1)
	return c.SQLite.Changes(ctx, after, limit)
}

// TestQuotaThroughGateway: a user's quota admits exactly that many
// requests, refuses the next with 429 quota_exceeded and a Retry-After
// pointing at the period's reset, never forwards them, counts them in
// usage, and does all this without a store call for a cached user.
// Raising the quota admits again; the site's quota applies to users
// without one of their own.
func TestQuotaThroughGateway(t *testing.T) {
	var counting *countingStore
	wrapStoreForTest = func(s store.Store) store.Store {
		counting = &countingStore{SQLite: s.(*store.SQLite)}
		return counting
	}
	g := startGateway(t, gatewayOptions{
		gatewayBlock: "lockout off\n\t\tquota 2 day",
		// Nothing in the background reads the store while the test runs.
		appExtra: "\t\tsync_interval 1m\n\t\tmax_stale 10m\n\t\tlast_used_interval 1h\n\t\tusage {\n\t\t\tflush_interval 1h\n\t\t}",
	})
	wrapStoreForTest = nil
	if counting == nil {
		t.Fatal("the store was not wrapped")
	}
	id, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), Quota: &UserQuota{Requests: 5, Period: "day"}})
	_, other := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	list := func(token string) result { return g.do("GET", "/v1/products/1337/devices", bearer(token)) }
	awayFromMidnight(10 * time.Second) // a daily quota resets at 00:00 UTC
	if r := list(iss.Token); r.Status != 200 {
		t.Fatalf("first request: %d %s", r.Status, r.Body)
	}
	// The loops read the store once as they start (the change log, the
	// other nodes' counts), then not for a minute.
	eventually(t, 10*time.Second, "the app's first reads of the store", func() bool {
		return counting.syncs.Load() > 0 && counting.sums.Load() > 0
	})
	before := counting.calls.Load()
	statuses := map[int]int{}
	var refused result
	for range 9 {
		r := list(iss.Token)
		statuses[r.Status]++
		if r.Status != 200 {
			refused = r
		}
	}
	if calls := counting.calls.Load() - before; calls != 0 {
		t.Errorf("%d store calls for 9 requests of a cached user, want none", calls)
	}
	if statuses[200] != 4 || statuses[429] != 5 {
		t.Fatalf("statuses %v after the first, want 4 more admitted and 5 refused (quota 5)", statuses)
	}
	if refused.Error.Error != "quota_exceeded" {
		t.Fatalf("refusal %q, want quota_exceeded", refused.Error.Error)
	}
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	retry, err := strconv.Atoi(refused.Header.Get("Retry-After"))
	if err != nil || time.Duration(retry)*time.Second < time.Until(midnight)-2*time.Second || time.Duration(retry)*time.Second > time.Until(midnight)+2*time.Second {
		t.Errorf("Retry-After %q, want about %v (until midnight UTC)", refused.Header.Get("Retry-After"), time.Until(midnight).Round(time.Second))
	}
	if n := len(g.upstream.take()); n != 5 {
		t.Fatalf("upstream got %d requests, want the 5 admitted", n)
	}

	// The site's quota (2 a day) for a user without its own.
	var otherStatuses []int
	for range 3 {
		otherStatuses = append(otherStatuses, list(other.Token).Status)
	}
	if fmt.Sprint(otherStatuses) != "[200 200 429]" {
		t.Errorf("a user under the site's quota 2 day: %v, want [200 200 429]", otherStatuses)
	}

	// Usage: flushed at a graceful stop, or here by hand.
	g.app.flushUsage(context.Background())
	buckets, err := counting.Usage(context.Background(), store.UsageQuery{UserID: id, From: now.Add(-48 * time.Hour), To: now.Add(48 * time.Hour), Granularity: store.GranularityDay})
	if err != nil {
		t.Fatal(err)
	}
	byOutcome := map[string]int64{}
	for _, b := range buckets {
		if b.Endpoint != "list-devices" {
			t.Errorf("usage of endpoint %q, want list-devices", b.Endpoint)
		}
		byOutcome[b.Outcome] += b.Count
	}
	if byOutcome["allowed"] != 5 || byOutcome["quota_exceeded"] != 5 || len(byOutcome) != 2 {
		t.Errorf("usage %v, want 5 allowed and 5 quota_exceeded", byOutcome)
	}

	// Raising the quota is not a privilege change, and applies at once.
	_, newToken, err := g.app.UpdateUser(context.Background(), Tenant{Org: "acme"}, id, &UserSpec{Quota: &UserQuota{Requests: 7, Period: "day"}})
	if err != nil || newToken != "" {
		t.Fatalf("raising the quota: new token %q, %v; want the token kept", newToken, err)
	}
	var after []int
	for range 3 {
		after = append(after, list(iss.Token).Status)
	}
	if fmt.Sprint(after) != "[200 200 429]" {
		t.Errorf("after raising the quota to 7: %v, want [200 200 429]", after)
	}
}

// TestAllowedIPsThroughGateway: behind a trusted proxy the client address
// is the one X-Forwarded-For names, IPv4 and IPv6; a request from outside
// the user's networks is refused with 403 ip_not_allowed and never
// forwarded; changing the list replaces the token.
func TestAllowedIPsThroughGateway(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off", globalExtra: "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}"})
	id, iss := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowedIPs: strs("192.0.2.0/24", "2001:db8:1::/48", "198.51.100.7")})
	from := func(xff string) result {
		h := bearer(iss.Token)
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		return g.do("GET", "/v1/products/1337/devices", h)
	}
	for _, c := range []struct {
		xff  string
		want int
	}{
		{"192.0.2.7", 200},
		{"192.0.2.255", 200},
		{"198.51.100.7", 200},
		{"198.51.100.8", 403},
		{"192.0.3.1", 403},
		{"2001:db8:1:ffff::1", 200},
		{"2001:db8:2::1", 403},
		{"::ffff:192.0.2.9", 200}, // IPv4-mapped: compared as IPv4
		{"", 403},                 // the proxy itself is not in the list
	} {
		r := from(c.xff)
		if r.Status != c.want {
			t.Errorf("from %q: %d %q, want %d", c.xff, r.Status, r.Error.Error, c.want)
		}
		if r.Status == 403 && r.Error.Error != "ip_not_allowed" {
			t.Errorf("from %q: code %q, want ip_not_allowed", c.xff, r.Error.Error)
		}
	}
	if n := len(g.upstream.take()); n != 5 {
		t.Errorf("upstream got %d requests, want the 5 allowed", n)
	}

	// Changing the list is a privilege change: the old token stops.
	_, newToken, err := g.app.UpdateUser(context.Background(), Tenant{Org: "acme"}, id, &UserSpec{AllowedIPs: strs("192.0.2.0/25")})
	if err != nil || newToken == "" {
		t.Fatalf("narrowing allowed_ips: new token %q, %v; want a new token", newToken, err)
	}
	if r := from("192.0.2.7"); r.Status != 401 {
		t.Errorf("the old token after the change: %d, want 401", r.Status)
	}
	h := bearer(newToken)
	h.Set("X-Forwarded-For", "192.0.2.200")
	if r := g.do("GET", "/v1/products/1337/devices", h); r.Status != 403 {
		t.Errorf("the new token from outside the narrowed list: %d, want 403", r.Status)
	}
}

// TestAllowedIPsIgnoreUntrustedForwardedFor: without trusted_proxies, a
// client cannot claim an allowed address with X-Forwarded-For.
func TestAllowedIPsIgnoreUntrustedForwardedFor(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off"})
	_, outside := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowedIPs: strs("192.0.2.0/24")})
	_, local := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowedIPs: strs("127.0.0.1")})
	spoof := func(token, xff string) int {
		return g.do("GET", "/v1/products/1337/devices", http.Header{"Authorization": {"Bearer " + token}, "X-Forwarded-For": {xff}}).Status
	}
	if s := spoof(outside.Token, "192.0.2.7"); s != 403 {
		t.Errorf("a spoofed allowed address from an untrusted peer: %d, want 403", s)
	}
	if s := spoof(local.Token, "203.0.113.9"); s != 200 {
		t.Errorf("the real, allowed peer with a spoofed X-Forwarded-For: %d, want 200", s)
	}
}

// TestQuotaAndAllowedIPsSpec: the management API's refusals name the field.
func TestQuotaAndAllowedIPsSpec(t *testing.T) {
	a := openSQLiteApp(t, filepath.Join(t.TempDir(), "api_users.db"), nil)
	for _, c := range []struct {
		spec  UserSpec
		field string
	}{
		{UserSpec{Quota: &UserQuota{Requests: 5, Period: "week"}}, "quota.period"},
		{UserSpec{Quota: &UserQuota{Requests: -1, Period: "day"}}, "quota.requests"},
		{UserSpec{AllowedIPs: strs("10.0.0.1/8")}, "allowed_ips"},
		{UserSpec{AllowedIPs: strs("not-an-ip")}, "allowed_ips"},
		{UserSpec{AllowedIPs: strs("::ffff:10.0.0.0/104")}, "allowed_ips"},
		{UserSpec{AllowedIPs: strs("fe80::1%eth0")}, "allowed_ips"},
	} {
		_, _, err := a.CreateUser(context.Background(), Tenant{Org: "acme"}, &c.spec)
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != c.field {
			t.Errorf("%+v: %v, want a FieldError on %s", c.spec, err, c.field)
		}
	}
	u, _, err := a.CreateUser(context.Background(), Tenant{Org: "acme"}, &UserSpec{Scopes: strs("devices:list"), Quota: &UserQuota{Requests: 100, Period: "month"}, AllowedIPs: strs("10.1.2.3", "2001:db8::/32", "10.1.2.3")})
	if err != nil {
		t.Fatal(err)
	}
	// Try a request: allowed_ips are checked when a client address is given.
	for _, c := range []struct {
		ip   *string
		want string
	}{
		{nil, "allowed"},
		{ptr("10.1.2.3"), "allowed"},
		{ptr("10.1.2.4"), "ip_not_allowed"},
		{ptr("2001:db8:ff::1"), "allowed"},
	} {
		_, dv, err := a.Explain(context.Background(), Tenant{Org: "acme"}, u.ID, DecideSpec{Method: "GET", Path: "/v1/products/1337/devices", ClientIP: c.ip})
		if err != nil || dv.Reason != c.want {
			t.Errorf("explain from %v: %q, %v; want %s", c.ip, dv.Reason, err, c.want)
		}
	}
	if _, _, err := a.Explain(context.Background(), Tenant{Org: "acme"}, u.ID, DecideSpec{Method: "GET", Path: "/", ClientIP: ptr("nope")}); err == nil || err.(*FieldError).Field != "client_ip" {
		t.Errorf("explain from a bad address: %v, want a FieldError on client_ip", err)
	}
	v := viewOf(u)
	if v.Quota == nil || v.Quota.Requests != 100 || v.Quota.Period != "month" || fmt.Sprint(v.AllowedIPs) != "[10.1.2.3/32 2001:db8::/32]" {
		t.Errorf("view: quota %+v, allowed_ips %v", v.Quota, v.AllowedIPs)
	}
}
