package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
)

// usageResponse is the body of GET .../team/{username}/usage.
type usageResponse struct {
	Usage UsageReport `json:"usage"`
}

// topUsageResponse is the body of GET .../usage.
type topUsageResponse struct {
	Usage TopUsageReport `json:"usage"`
}

// seedUsage adds counts straight to the store, as a gateway node's flush
// would.
func seedUsage(t *testing.T, a *testAdmin, counts ...store.UsageCount) {
	t.Helper()
	us, ok := a.app.store.(store.UsageStore)
	if !ok {
		t.Fatal("the test store keeps no usage")
	}
	if err := us.AddUsage(context.Background(), counts); err != nil {
		t.Fatal(err)
	}
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestUsageRoutes reads a user's usage through the management API: every
// bucket of the range is present, zeros included, with its outcomes and
// endpoints; totals add up; a user of another org or product is not found,
// as GET .../team/{username} says it; and the busiest users of an org or a
// product come most first, at most limit.
func TestUsageRoutes(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	a.createVia("/v1/orgs/acme", map[string]any{"username": "org-bot", "scopes": []string{"events:get"}})
	a.createVia("/v1/products/1337", map[string]any{"username": "prod-bot", "friendly_name": "Product bot", "scopes": []string{"devices:list"}})
	a.createVia("/v1/products/4242", map[string]any{"username": "other-bot", "scopes": []string{"devices:list"}})
	a.createVia("/v1/products/globex-tracker", map[string]any{"username": "globex-bot", "scopes": []string{"devices:list"}})

	seedUsage(t, a,
		store.UsageCount{UserID: "prod-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: at("2025-03-10T10:05:00Z"), Count: 5, LastAt: at("2025-03-10T10:59:00Z")},
		store.UsageCount{UserID: "prod-bot", Endpoint: "get-device", Outcome: "insufficient_scope", Hour: at("2025-03-10T10:10:00Z"), Count: 2},
		store.UsageCount{UserID: "prod-bot", Endpoint: "list-devices", Outcome: "rate_limited", Hour: at("2025-03-10T12:00:00Z"), Count: 1, LastAt: at("2025-03-10T12:30:00Z")},
		store.UsageCount{UserID: "prod-bot", Endpoint: "", Outcome: "no_endpoint", Hour: at("2025-03-10T12:00:00Z"), Count: 1},
		store.UsageCount{UserID: "prod-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: at("2025-03-11T08:00:00Z"), Count: 3, LastAt: at("2025-03-11T08:01:00Z")},
		store.UsageCount{UserID: "org-bot", Endpoint: "org-events", Outcome: "allowed", Hour: at("2025-03-10T11:00:00Z"), Count: 20},
		store.UsageCount{UserID: "other-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: at("2025-03-10T11:00:00Z"), Count: 40},
		store.UsageCount{UserID: "other-bot", Endpoint: "list-devices", Outcome: "quota_exceeded", Hour: at("2025-03-10T11:00:00Z"), Count: 10},
		store.UsageCount{UserID: "globex-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: at("2025-03-10T11:00:00Z"), Count: 99},
	)

	t.Run("hours", func(t *testing.T) {
		for _, prefix := range []string{"/v1/products/1337", "/v1/products/my-product-v1"} {
			var r usageResponse
			a.must("GET", prefix+"/team/prod-bot/usage?granularity=hour&from=2025-03-10T09:30:00Z&to=2025-03-10T14:00:00Z", nil, &r)
			u := r.Usage
			if u.Username != "prod-bot" || u.Org != "acme" || u.Product == nil || *u.Product != 1337 || u.Granularity != "hour" ||
				u.From != "2025-03-10T09:00:00Z" || u.To != "2025-03-10T14:00:00Z" {
				t.Fatalf("%s: report header %+v", prefix, u)
			}
			var starts []string
			for _, b := range u.Series {
				starts = append(starts, b.Start)
			}
			if got := strings.Join(starts, " "); got != "2025-03-10T09:00:00Z 2025-03-10T10:00:00Z 2025-03-10T11:00:00Z 2025-03-10T12:00:00Z 2025-03-10T13:00:00Z" {
				t.Fatalf("bucket starts %s, want every hour from 09 to 13", got)
			}
			for _, i := range []int{0, 2, 4} {
				if b := u.Series[i]; b.Allowed != 0 || b.Refused != 0 || len(b.ByOutcome) != 0 || len(b.ByEndpoint) != 0 || b.ByOutcome == nil || b.ByEndpoint == nil {
					t.Errorf("empty hour %s: %+v, want zeros and empty objects", b.Start, b)
				}
			}
			if b := u.Series[1]; b.Allowed != 5 || b.Refused != 2 || b.ByOutcome["allowed"] != 5 || b.ByOutcome["insufficient_scope"] != 2 ||
				b.ByEndpoint["list-devices"] != (EndpointCounts{Allowed: 5}) || b.ByEndpoint["get-device"] != (EndpointCounts{Refused: 2}) {
				t.Errorf("10:00: %+v", b)
			}
			if b := u.Series[3]; b.Allowed != 0 || b.Refused != 2 || b.ByOutcome["rate_limited"] != 1 || b.ByOutcome["no_endpoint"] != 1 ||
				b.ByEndpoint[""] != (EndpointCounts{Refused: 1}) {
				t.Errorf("12:00: %+v", b)
			}
			tot := u.Totals
			if tot.Allowed != 5 || tot.Refused != 4 || len(tot.ByOutcome) != 4 || tot.ByEndpoint["list-devices"] != (EndpointCounts{Allowed: 5, Refused: 1}) {
				t.Errorf("totals %+v", tot)
			}
			if u.LastDecisionAt == nil || *u.LastDecisionAt != "2025-03-10T12:30:00Z" || u.LastUsedAt != nil {
				t.Errorf("last decision %v, last used %v", u.LastDecisionAt, u.LastUsedAt)
			}
		}
	})

	t.Run("days", func(t *testing.T) {
		var r usageResponse
		a.must("GET", "/v1/products/1337/team/prod-bot/usage?granularity=day&from=2025-03-09T00:00:00Z&to=2025-03-12T00:00:00Z", nil, &r)
		var got []int64
		for _, b := range r.Usage.Series {
			got = append(got, b.Allowed, b.Refused)
		}
		if len(r.Usage.Series) != 3 || r.Usage.Series[0].Start != "2025-03-09T00:00:00Z" || !equalInts(got, []int64{0, 0, 5, 4, 3, 0}) {
			t.Fatalf("days: %+v", r.Usage.Series)
		}
		if r.Usage.Totals.Allowed != 8 || r.Usage.Totals.Refused != 4 {
			t.Errorf("day totals %+v", r.Usage.Totals)
		}
	})

	t.Run("defaults", func(t *testing.T) {
		seedUsage(t, a, store.UsageCount{UserID: "org-bot", Endpoint: "org-events", Outcome: "allowed", Hour: time.Now(), Count: 7})
		var r usageResponse
		a.must("GET", "/v1/orgs/acme/team/org-bot/usage", nil, &r)
		if r.Usage.Granularity != "hour" || len(r.Usage.Series) != 24 || r.Usage.Totals.Allowed != 7 {
			t.Errorf("default: granularity %s, %d buckets, %d allowed; want hour, 24, 7", r.Usage.Granularity, len(r.Usage.Series), r.Usage.Totals.Allowed)
		}
		a.must("GET", "/v1/orgs/acme/team/org-bot/usage?granularity=day", nil, &r)
		if len(r.Usage.Series) != 30 || r.Usage.Totals.Allowed != 7 || !strings.HasSuffix(r.Usage.Series[0].Start, "T00:00:00Z") {
			t.Errorf("granularity=day: %d buckets from %s, %d allowed; want 30 days, 7", len(r.Usage.Series), r.Usage.From, r.Usage.Totals.Allowed)
		}
		// A to on a bucket's start ends the range before that bucket.
		a.must("GET", "/v1/orgs/acme/team/org-bot/usage?to=2025-03-10T12:00:00Z", nil, &r)
		if len(r.Usage.Series) != 24 || r.Usage.From != "2025-03-09T12:00:00Z" || r.Usage.Series[23].Start != "2025-03-10T11:00:00Z" {
			t.Errorf("to on an hour: %d buckets from %s", len(r.Usage.Series), r.Usage.From)
		}
	})

	t.Run("tenancy", func(t *testing.T) {
		for _, p := range []string{"/v1/orgs/acme/team/prod-bot", "/v1/products/4242/team/prod-bot", "/v1/products/9001/team/prod-bot", "/v1/products/1337/team/nobody"} {
			user := a.call("GET", p, nil)
			usage := a.call("GET", p+"/usage", nil)
			if user.Status != 404 || usage.Status != 404 || usage.Error != user.Error {
				t.Errorf("%s/usage: %d %+v; the user itself: %d %+v; want the same 404", p, usage.Status, usage.Error, user.Status, user.Error)
			}
		}
		if r := a.call("GET", "/v1/orgs/nowhere/usage", nil); r.Status != 400 || !strings.HasPrefix(r.Error.Description, "org: ") {
			t.Errorf("unknown org: %d %+v", r.Status, r.Error)
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		user := "/v1/products/1337/team/prod-bot/usage?"
		top := "/v1/orgs/acme/usage?"
		for _, tc := range []struct{ path, field, says string }{
			{user + "granularity=week", "granularity", "hour or day"},
			{user + "from=yesterday", "from", "RFC 3339"},
			{user + "to=2025-13-01T00:00:00Z", "to", "RFC 3339"},
			{user + "from=1969-12-31T00:00:00Z", "from", "1970"},
			{user + "from=2025-03-10T12:00:00Z&to=2025-03-10T12:00:00Z", "to", "not after from"},
			{user + "from=2025-03-11T00:00:00Z&to=2025-03-10T00:00:00Z", "to", "not after from"},
			{user + "from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z", "from", "granularity=day"},
			{user + "granularity=day&from=2020-01-01T00:00:00Z&to=2025-03-01T00:00:00Z", "from", "400 days"},
			{user + "from=2025-03-10T00:00:00Z&from=2025-03-11T00:00:00Z", "from", "given 2 times"},
			{user + "limit=5", "limit", "not a parameter"},
			{top + "limit=0", "limit", "1 to 100"},
			{top + "limit=101", "limit", "1 to 100"},
			{top + "limit=ten", "limit", "1 to 100"},
			{top + "granularity=minute", "granularity", "hour or day"},
			{top + "user=prod-bot", "user", "not a parameter"},
		} {
			r := a.call("GET", tc.path, nil)
			if r.Status != 400 || r.Error.Error != "invalid_request" || !strings.HasPrefix(r.Error.Description, tc.field+": ") || !strings.Contains(r.Error.Description, tc.says) {
				t.Errorf("%s: %d %+v, want 400 naming %s and saying %q", tc.path, r.Status, r.Error, tc.field, tc.says)
			}
		}
		// Within the caps: a month of hours, 400 days.
		a.must("GET", user+"from=2025-03-01T00:00:00Z&to=2025-04-01T00:00:00Z", nil, nil)
		a.must("GET", user+"granularity=day&from=2024-02-05T00:00:00Z&to=2025-03-11T00:00:00Z", nil, nil)
	})

	t.Run("top users", func(t *testing.T) {
		rng := "from=2025-03-10T00:00:00Z&to=2025-03-12T00:00:00Z"
		names := func(r topUsageResponse) string {
			var out []string
			for _, u := range r.Usage.Users {
				out = append(out, u.Username)
			}
			return strings.Join(out, " ")
		}
		var r topUsageResponse
		a.must("GET", "/v1/orgs/acme/usage?"+rng, nil, &r)
		if got := names(r); got != "other-bot org-bot prod-bot" || r.Usage.Org != "acme" || r.Usage.Product != nil {
			t.Fatalf("acme's busiest: %q (%+v), want other-bot org-bot prod-bot", got, r.Usage)
		}
		first, last := r.Usage.Users[0], r.Usage.Users[2]
		if first.Total != 50 || first.Allowed != 40 || first.Refused != 10 || first.Product == nil || *first.Product != 4242 {
			t.Errorf("first: %+v", first)
		}
		if last.Total != 12 || last.FriendlyName != "Product bot" || r.Usage.Users[1].Product != nil {
			t.Errorf("org-bot and prod-bot: %+v %+v", r.Usage.Users[1], last)
		}
		a.must("GET", "/v1/orgs/acme/usage?limit=2&"+rng, nil, &r)
		if got := names(r); got != "other-bot org-bot" {
			t.Errorf("limit=2: %q", got)
		}
		a.must("GET", "/v1/products/my-product-v1/usage?"+rng, nil, &r)
		if got := names(r); got != "prod-bot" || r.Usage.Product == nil || *r.Usage.Product != 1337 {
			t.Errorf("product 1337's busiest: %q", got)
		}
		a.must("GET", "/v1/orgs/globex/usage?granularity=day&"+rng, nil, &r)
		if got := names(r); got != "globex-bot" {
			t.Errorf("globex's busiest: %q", got)
		}
		// No usage in the range: an empty list, not null.
		res := a.call("GET", "/v1/products/1337/usage", nil)
		if res.Status != 200 || !strings.Contains(string(res.Body), `"users": []`) {
			t.Errorf("no usage: %d %s", res.Status, res.Body)
		}
	})
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// storeWithoutUsage is a store that keeps no usage counts.
type storeWithoutUsage struct{ store.Store }

// TestUsageNotImplemented: on a store that keeps no usage, the usage
// routes answer 501 with the standard error body.
func TestUsageNotImplemented(t *testing.T) {
	app := &App{store: storeWithoutUsage{}}
	h := &Admin{app: app, logger: zap.NewNop()}
	for name, call := range map[string]func() error{
		"user usage": func() error {
			_, err := app.UserUsage(context.Background(), Tenant{Org: "acme"}, "bot", UsageRequest{})
			return err
		},
		"top users": func() error {
			_, err := app.TopUsage(context.Background(), Tenant{Org: "acme"}, UsageRequest{}, 0)
			return err
		},
	} {
		rec := httptest.NewRecorder()
		h.writeError(rec, call())
		var body errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusNotImplemented || body.Error != "not_implemented" || !strings.Contains(body.Description, "usage") {
			t.Errorf("%s: %d %s, want 501 not_implemented", name, rec.Code, rec.Body)
		}
	}
}

// TestUsageRange checks how a request's range is resolved: defaults,
// alignment to bucket starts, and the caps.
func TestUsageRange(t *testing.T) {
	now := at("2025-03-10T10:20:00Z")
	for _, tc := range []struct {
		q                 string
		from, to          string
		buckets           int
		wantErrFieldStart string
	}{
		{q: "", from: "2025-03-09T11:00:00Z", to: "2025-03-10T10:20:00Z", buckets: 24},
		{q: "granularity=day", from: "2025-02-09T00:00:00Z", to: "2025-03-10T10:20:00Z", buckets: 30},
		{q: "from=2025-03-10T08:59:59Z", from: "2025-03-10T08:00:00Z", to: "2025-03-10T10:20:00Z", buckets: 3},
		{q: "from=2025-03-10T08:00:00+02:00&to=2025-03-10T09:00:00%2B02:00", from: "2025-03-10T06:00:00Z", to: "2025-03-10T07:00:00Z", buckets: 1},
		{q: "granularity=day&to=2025-03-10T00:00:00Z", from: "2025-02-08T00:00:00Z", to: "2025-03-10T00:00:00Z", buckets: 30},
		{q: "from=2025-02-07T10:00:00Z", from: "2025-02-07T10:00:00Z", to: "2025-03-10T10:20:00Z", buckets: 745, wantErrFieldStart: "from: "},
		{q: "from=2025-02-07T11:00:00Z", from: "2025-02-07T11:00:00Z", to: "2025-03-10T10:20:00Z", buckets: 744},
	} {
		q, err := url.ParseQuery(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		r, err := usageRequestFrom(q).rangeAt(now)
		if tc.wantErrFieldStart != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErrFieldStart) {
				t.Errorf("%q: %v, want an error on %s", tc.q, err, tc.wantErrFieldStart)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.q, err)
			continue
		}
		if got := usageTime(r.From) + " " + usageTime(r.To); got != tc.from+" "+tc.to || len(r.starts()) != tc.buckets {
			t.Errorf("%q: %s with %d buckets, want %s %s with %d", tc.q, got, len(r.starts()), tc.from, tc.to, tc.buckets)
		}
	}
}
