package caddymodule

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/apiusers/caddy-api-users/policy"
)

// scrape reads a Prometheus text exposition into series → value, keyed by
// the series as printed, such as
// caddy_api_users_decisions_total{endpoint="none",reason="allowed"}.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func metricsSite(port int) string {
	return fmt.Sprintf("http://127.0.0.1:%d {\n\tmetrics\n}\n", port)
}

// TestMetricsMove drives decisions of several kinds and reads Caddy's
// /metrics: the decision counters, the duration histogram and the cache
// counters move by exactly the right amounts, the sync lag gauge is
// small, and a failing store shows in the error counters and the lag.
func TestMetricsMove(t *testing.T) {
	port := freePort(t)
	g := startGateway(t, gatewayOptions{gatewayBlock: "pass_through\n\t\tlockout off", extraSites: metricsSite(port)})
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	id, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	basicID, basicIss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	// The follower drops the users' cache entries when it reads their
	// creation from the change log; after that, nothing but the requests
	// below moves the cache counters.
	waitCaughtUp(t, g.app)

	flushAudit() // the decisions of the start-up requests are counted
	before := scrape(t, metricsURL)
	devices := "/v1/products/1337/devices"
	for _, req := range []struct {
		method, path string
		header       http.Header
		status       int
	}{
		{"GET", devices, bearer(iss.Token), 200},                             // token miss, user miss
		{"GET", devices, bearer(iss.Token), 200},                             // token hit, which leads to the user
		{"GET", devices, basic(basicID, basicIss.Key, basicIss.Secret), 200}, // user miss
		{"PUT", devices + "/abc", bearer(iss.Token), 403},                    // token hit
		{"GET", "/v1/products/1337/nothing", bearer(iss.Token), 403},         // token hit
		{"GET", devices, basic(basicID, basicIss.Key, basicIss.Secret), 200}, // user hit
		{"GET", devices, bearer(policy.TokenPrefix + "x"), 401},
		{"GET", devices, nil, 200}, // passed through
		{"GET", devices + "/..", nil, 400},
	} {
		if r := g.do(req.method, req.path, req.header); r.Status != req.status {
			t.Fatalf("%s %s: %d, want %d", req.method, req.path, r.Status, req.status)
		}
	}
	// Decisions are counted by the audit queue's writer, as it writes
	// their records.
	flushAudit()
	after := scrape(t, metricsURL)

	want := map[string]float64{
		`caddy_api_users_decisions_total{endpoint="list-devices",reason="allowed"}`:             4,
		`caddy_api_users_decisions_total{endpoint="update-device",reason="insufficient_scope"}`: 1,
		`caddy_api_users_decisions_total{endpoint="none",reason="no_endpoint"}`:                 1,
		`caddy_api_users_decisions_total{endpoint="none",reason="malformed_credentials"}`:       1,
		`caddy_api_users_decisions_total{endpoint="none",reason="pass_through"}`:                1,
		`caddy_api_users_decisions_total{endpoint="none",reason="ambiguous_path"}`:              1,
		`caddy_api_users_decision_duration_seconds_count`:                                       9,
		`caddy_api_users_cache_requests_total{cache="token",result="miss"}`:                     1,
		`caddy_api_users_cache_requests_total{cache="token",result="hit"}`:                      3,
		`caddy_api_users_cache_requests_total{cache="user",result="miss"}`:                      2,
		`caddy_api_users_cache_requests_total{cache="user",result="hit"}`:                       1,
	}
	for series, delta := range want {
		if got := after[series] - before[series]; got != delta {
			t.Errorf("%s moved by %v, want %v", series, got, delta)
		}
	}
	if after[`caddy_api_users_decision_duration_seconds_sum`] <= before[`caddy_api_users_decision_duration_seconds_sum`] {
		t.Error("the decision duration sum did not grow")
	}
	for series := range after {
		if strings.Contains(series, id) || strings.Contains(series, basicID) {
			t.Errorf("a metric names a user: %s", series)
		}
	}
	lag, ok := after["caddy_api_users_store_sync_lag_seconds"]
	if !ok || lag < 0 || lag > 2 {
		t.Errorf("sync lag %v (present %v), want between 0 and 2 seconds with a 50ms sync interval", lag, ok)
	}

	// A store that fails: a user read, and the sync loop.
	otherID, other := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	if err := g.app.store.Close(); err != nil {
		t.Fatal(err)
	}
	if r := g.do("GET", devices, basic(otherID, other.Key, other.Secret)); r.Status != 503 || r.Error.Error != "store_unavailable" {
		t.Fatalf("with the store closed: %d %q", r.Status, r.Error.Error)
	}
	var getUser, syncs, lagNow float64
	if !within(5*time.Second, func() bool {
		m := scrape(t, metricsURL)
		getUser = m[`caddy_api_users_store_errors_total{operation="get_user"}`] - before[`caddy_api_users_store_errors_total{operation="get_user"}`]
		syncs = m[`caddy_api_users_store_errors_total{operation="sync_changes"}`]
		lagNow = m["caddy_api_users_store_sync_lag_seconds"]
		// The read of the user fails, unless the sync loop saw the store
		// fail first, in which case the gateway does not even try it.
		return getUser <= 1 && syncs >= 2 && lagNow >= 0.1
	}) {
		t.Fatalf("with the store closed: get_user errors %v, sync errors %v, lag %v", getUser, syncs, lagNow)
	}
	flushAudit()
	if got := scrape(t, metricsURL)[`caddy_api_users_decisions_total{endpoint="none",reason="store_unavailable"}`]; got != 1 {
		t.Errorf("store_unavailable decisions: %v, want 1", got)
	}
}

// TestMetricsAcrossReloads loads a config, reloads it, and scrapes: Caddy
// gives each config its own registry, the app registers into it once, and
// the new config counts from zero.
func TestMetricsAcrossReloads(t *testing.T) {
	port, metricsPort := freePort(t), freePort(t)
	up := newRecordingUpstream(t)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	api_users {
		store sqlite %s
%s
	}
}
http://127.0.0.1:%d {
	api_users
	reverse_proxy %s
}
%s`, filepath.Join(t.TempDir(), "api_users.db"), testCatalog, port, up.addr(), metricsSite(metricsPort))
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	for load := range 3 {
		if err := caddy.Load(cfg, true); err != nil {
			t.Fatalf("load %d: %v", load, err)
		}
		g := &testGateway{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port), upstream: up, client: &http.Client{Timeout: 10 * time.Second}}
		g.waitUp()
		series := `caddy_api_users_decisions_total{endpoint="none",reason="missing_credentials"}`
		flushAudit()
		before := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))[series]
		g.do("GET", "/v1/products/1337/devices", nil)
		flushAudit()
		got := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))[series]
		if got-before != 1 || got > 2 {
			t.Fatalf("load %d: %s went from %v to %v; want one more, counted since this load", load, series, before, got)
		}
	}
}

// TestMetricsRegisterTwiceOnOneRegistry: should two apps ever share a
// registry, the second adopts the first's collectors instead of failing.
func TestMetricsRegisterTwiceOnOneRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a := newMetrics([]string{"list-devices"}, func() float64 { return 0 })
	b := newMetrics([]string{"list-devices"}, func() float64 { return 0 })
	if err := a.register(reg); err != nil {
		t.Fatal(err)
	}
	if err := b.register(reg); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	a.decided(0, int(policy.Allowed), time.Microsecond)
	b.decided(0, int(policy.Allowed), time.Microsecond)
	b.decided(-1, passThroughOutcome, time.Microsecond)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "caddy_api_users_decisions_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(labels, ",")] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"endpoint=list-devices,reason=allowed": 2, "endpoint=none,reason=pass_through": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("decision series %v, want %v: one registration, and only combinations that happened", got, want)
	}
}

// TestDecisionMetricsDoNotAllocate: once a counter is resolved, counting a
// decision allocates nothing.
func TestDecisionMetricsDoNotAllocate(t *testing.T) {
	m := newMetrics([]string{"a", "b"}, func() float64 { return 0 })
	m.decided(1, int(policy.InsufficientScope), time.Microsecond)
	if n := testing.AllocsPerRun(100, func() {
		m.decided(1, int(policy.InsufficientScope), time.Microsecond)
		m.cache.userHit()
	}); n != 0 {
		t.Errorf("%v allocations per decision", n)
	}
}
