package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/caddymodule/store/pgtest"
)

// usageKey is one usage count: an endpoint's name ("" when none matched)
// and an outcome ("allowed" or a refusal's code).
type usageKey struct{ endpoint, outcome string }

// storedUsage reads the usage of user from the store, at granularity g,
// summed over every bucket of the last day and the next, per endpoint
// and outcome.
func storedUsage(t *testing.T, us store.UsageStore, user string, g store.Granularity) map[usageKey]int64 {
	t.Helper()
	now := time.Now().UTC()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	buckets, err := us.Usage(ctx, store.UsageQuery{UserID: user, From: now.Add(-48 * time.Hour), To: now.Add(48 * time.Hour), Granularity: g})
	if err != nil {
		t.Fatalf("reading the usage of %s: %v", user, err)
	}
	out := map[usageKey]int64{}
	for _, b := range buckets {
		out[usageKey{b.Endpoint, b.Outcome}] += b.Count
	}
	return out
}

func formatUsage(m map[usageKey]int64) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b usageKey) int {
		return strings.Compare(a.endpoint+" "+a.outcome, b.endpoint+" "+b.outcome)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s/%s=%d", k.endpoint, k.outcome, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// openUsageStore opens the database the gateways share, as the test's
// own reader of usage.
func openUsageStore(t *testing.T, dbURL string) store.UsageStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := store.OpenPostgres(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	return pg
}

// TestUsageAcrossTwoNodes sends a known mix of requests through two
// gateway processes on one PostgreSQL database, flushing usage every
// 500ms: allowed requests on two endpoints, and refusals of authenticated
// users for an insufficient scope, no matching endpoint, a rate limit, a
// quota and a client address outside allowed_ips. The usage the store
// holds, hourly and daily, must equal the mix exactly, per user,
// endpoint and outcome: the two nodes' flushes add up, none overwrites
// another, and nothing is counted twice.
func TestUsageAcrossTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if now := time.Now().UTC(); nextUTCMidnight(now).Sub(now) < 2*time.Minute {
		t.Skip("the UTC day ends within two minutes: the daily quota in the mix would reset under the test")
	}
	const flush = 500 * time.Millisecond
	srv := pgtest.Start(t)
	dbURL := srv.NewRole(t, srv.NewDatabase(t), "gateway", "pw-Usage-2b8a")
	bin := buildCaddy(t)
	up := newRecorder(t)
	gws := []*gwNode{
		startGateway(t, "A", bin, dbURL, up, gwConfig{syncInterval: clusterSync, usageFlush: flush}),
		startGateway(t, "B", bin, dbURL, up, gwConfig{syncInterval: clusterSync, usageFlush: flush}),
	}
	us := openUsageStore(t, dbURL)

	reader, readerAuth := gws[0].createUser(t, `"scopes": ["devices:list", "devices:get"]`)
	limited, limitedAuth := gws[1].createUser(t, `"scopes": ["devices:list"], "rate_limit": {"requests": 3, "window": "1h"}`)
	metered, meteredAuth := gws[0].createUser(t, `"scopes": ["devices:list"], "quota": {"requests": 4, "period": "day"}`)
	fenced, fencedAuth := gws[1].createUser(t, `"scopes": ["devices:list"], "allowed_ips": ["192.0.2.0/24"]`)
	auths := map[string]string{reader: readerAuth, limited: limitedAuth, metered: meteredAuth, fenced: fencedAuth}

	// What the nodes answered, per user: the truth the store must hold.
	sent := map[string]map[usageKey]int64{}
	for u := range auths {
		sent[u] = map[usageKey]int64{}
	}
	send := func(node int, user, method, path, endpoint, want string) {
		t.Helper()
		a := gws[node].send(node, method, path, auths[user])
		if a.err != nil {
			t.Fatalf("node %s: %v", gws[node].name, a.err)
		}
		outcome := a.code
		if a.status == 200 {
			outcome = store.OutcomeAllowed
		}
		if want != "" && outcome != want {
			t.Errorf("%s %s by %s on node %s: %d %s, want %s", method, path, user, gws[node].name, a.status, outcome, want)
		}
		sent[user][usageKey{endpoint, outcome}]++
	}
	const (
		list   = "/v1/products/1337/devices"
		device = "/v1/products/1337/devices/d-17"
	)
	// Three rounds, each through both nodes, a flush apart, so the store
	// adds several flushes of each node.
	for round := 1; round <= 3; round++ {
		for node := range gws {
			for range 2 + round + node {
				send(node, reader, "GET", list, "list-devices", store.OutcomeAllowed)
			}
			for range round {
				send(node, reader, "GET", device, "get-device", store.OutcomeAllowed)
			}
			send(node, reader, "DELETE", device, "delete-device", "insufficient_scope")
			send(node, reader, "GET", "/v1/products/1337/firmware", "", "no_endpoint")
			// 3 an hour, counted by each node alone: 2, 1 and 0
			// allowed in the rounds.
			send(node, limited, "GET", list, "list-devices", "")
			send(node, limited, "GET", list, "list-devices", "")
			send(node, fenced, "GET", list, "", "ip_not_allowed")
		}
		time.Sleep(flush + 200*time.Millisecond)
	}
	// The quota of 4 a day, over both nodes: 3 through A; once B has
	// heard of them (within 2 x sync_interval), 1 more allowed through
	// B, then refusals.
	for range 3 {
		send(0, metered, "GET", list, "list-devices", store.OutcomeAllowed)
	}
	time.Sleep(4 * clusterSync)
	send(1, metered, "GET", list, "list-devices", store.OutcomeAllowed)
	send(1, metered, "GET", list, "list-devices", "quota_exceeded")
	send(1, metered, "GET", list, "list-devices", "quota_exceeded")
	// And once A has heard of B's, refusals through A too.
	time.Sleep(4 * clusterSync)
	send(0, metered, "GET", list, "list-devices", "quota_exceeded")

	if got := sent[limited]; got[usageKey{"list-devices", store.OutcomeAllowed}] != 6 || got[usageKey{"list-devices", "rate_limited"}] != 6 {
		t.Errorf("the rate-limited user: answered %s, want 3 allowed and 3 rate_limited per node", formatUsage(got))
	}
	for u := range auths {
		checkUpstream(t, up, gws, u, int(sent[u][usageKey{"list-devices", store.OutcomeAllowed}]+sent[u][usageKey{"get-device", store.OutcomeAllowed}]))
	}

	// The store must come to hold exactly the answers, and keep holding
	// them after more flushes.
	equal := func() (bool, string) {
		for u := range auths {
			for _, g := range []store.Granularity{store.GranularityHour, store.GranularityDay} {
				if got := storedUsage(t, us, u, g); !maps.Equal(got, sent[u]) {
					return false, fmt.Sprintf("user %s, %s buckets: stored %s, sent %s", u, g, formatUsage(got), formatUsage(sent[u]))
				}
			}
		}
		return true, ""
	}
	var diff string
	if !within(5*time.Second, func() bool { ok, d := equal(); diff = d; return ok }) {
		t.Fatalf("5s after the last request: %s", diff)
	}
	time.Sleep(3 * flush)
	if ok, d := equal(); !ok {
		t.Errorf("3 flushes later: %s", d)
	}
	for u := range auths {
		t.Logf("user %s: sent and stored %s", u, formatUsage(sent[u]))
	}
}

// TestUsageLossOnKill sends a stream of allowed requests through one
// gateway process that flushes usage every second, kills it with SIGKILL
// in the middle of the stream, and compares the usage stored with what
// the gateway admitted, for several rounds. What a kill loses must be at
// most what the process admitted in its last flush_interval (plus the
// time one flush takes: a kill during a flush loses the counts it was
// writing). A graceful stop (SIGTERM) must lose nothing.
func TestUsageLossOnKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	const (
		flush     = time.Second
		flushTime = 250 * time.Millisecond // what a flush in flight may add to the interval
		workers   = 4
		rounds    = 3
	)
	srv := pgtest.Start(t)
	dbURL := srv.NewRole(t, srv.NewDatabase(t), "gateway", "pw-Loss-91c4")
	bin := buildCaddy(t)
	up := newRecorder(t)
	g := startGateway(t, "K", bin, dbURL, up, gwConfig{syncInterval: clusterSync, usageFlush: flush})
	us := openUsageStore(t, dbURL)
	user, auth := g.createUser(t, `"scopes": ["devices:list"]`)
	stored := func() int64 {
		return storedUsage(t, us, user, store.GranularityHour)[usageKey{"list-devices", store.OutcomeAllowed}]
	}
	const path = "/v1/products/1337/devices"

	// stream sends requests until stop is set, and returns how many were
	// allowed, their times, and how many got no answer.
	stream := func(stop *atomic.Bool) (allowed []time.Time, unanswered int) {
		answers := drive([]*gwNode{g}, workers, 0, path, auth, func(*answer) bool { return stop.Load() })
		for _, a := range answers {
			switch {
			case a.err != nil:
				if !stop.Load() {
					t.Errorf("a request failed before the kill: %v", a.err)
				}
				unanswered++ // in flight at the kill
			case a.status == 200:
				allowed = append(allowed, a.at)
			default:
				t.Errorf("refused: %d %s", a.status, a.code)
			}
		}
		return allowed, unanswered
	}

	var report []string
	for round := 1; round <= rounds; round++ {
		before := stored()
		// Kill at a random point of the flush cycle.
		after := 2*time.Second + rand.N(time.Second)
		var stop atomic.Bool
		var allowed []time.Time
		var unanswered int
		streamed := make(chan struct{})
		go func() {
			defer close(streamed)
			allowed, unanswered = stream(&stop)
		}()
		time.Sleep(after)
		// No new requests from now on; those in flight meet the kill.
		stop.Store(true)
		killedAt := time.Now()
		g.kill(t)
		<-streamed
		n := int64(len(allowed))
		kept := stored() - before
		lost := n - kept
		// The bound: what the process admitted in its last flush
		// interval (and a flush in flight) before the kill.
		bound := int64(0)
		for _, at := range allowed {
			if at.After(killedAt.Add(-flush - flushTime)) {
				bound++
			}
		}
		line := fmt.Sprintf("round %d: killed after %v: %d allowed, %d stored, lost %d (bound %d: allowed in the last %v); %d unanswered at the kill",
			round, after.Round(time.Millisecond), n, kept, lost, bound, flush+flushTime, unanswered)
		t.Log(line)
		report = append(report, line)
		if lost > bound {
			t.Errorf("round %d: the kill lost %d allowed requests' usage, more than the %d allowed in the last flush interval", round, lost, bound)
		}
		// A request answered by no one may still have been counted and
		// flushed; one answered 200 must not be counted twice.
		if lost < -int64(unanswered) {
			t.Errorf("round %d: the store holds %d more requests than were allowed (%d unanswered)", round, -lost, unanswered)
		}
		g.start(t)
	}

	// A graceful stop flushes what is counted.
	before := stored()
	var stop atomic.Bool
	go func() {
		time.Sleep(2*time.Second + rand.N(time.Second))
		stop.Store(true)
	}()
	allowed, unanswered := stream(&stop)
	if unanswered > 0 {
		t.Fatalf("%d requests unanswered without a kill", unanswered)
	}
	g.stop(t)
	kept := stored() - before
	t.Logf("graceful stop (SIGTERM): %d allowed, %d stored, lost %d", len(allowed), kept, int64(len(allowed))-kept)
	if kept != int64(len(allowed)) {
		t.Errorf("a graceful stop: %d allowed, %d stored; want all of them", len(allowed), kept)
	}
}

// TestCaddyfileUsageBlock adapts the global option's usage block as the
// README writes it. (It once switched on each setting's duration instead
// of its name, and refused every setting.)
func TestCaddyfileUsageBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCaddy(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	cfg := `{
	api_users {
		store sqlite ` + filepath.Join(dir, "api_users.db") + `
		usage {
			flush_interval 500ms
			hourly_retention 48h
			daily_retention 800h
		}
	}
}

http://127.0.0.1:1 {
	api_users
	respond "ok"
}
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "adapt", "--config", path).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy adapt refuses the usage block: %v\n%s", err, out)
	}
	var got struct {
		Apps struct {
			APIUsers struct {
				Usage struct {
					FlushInterval   int64 `json:"flush_interval"`
					HourlyRetention int64 `json:"hourly_retention"`
					DailyRetention  int64 `json:"daily_retention"`
				} `json:"usage"`
			} `json:"api_users"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if u := got.Apps.APIUsers.Usage; time.Duration(u.FlushInterval) != 500*time.Millisecond || time.Duration(u.HourlyRetention) != 48*time.Hour || time.Duration(u.DailyRetention) != 800*time.Hour {
		t.Errorf("adapted usage %+v, want flush_interval 500ms, hourly_retention 48h, daily_retention 800h\n%s", u, out)
	}
}
