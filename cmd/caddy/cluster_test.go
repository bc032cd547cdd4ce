package main

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store/pgtest"
)

// The bound of counters.go, checked on real processes: with N nodes each
// admitting at most A requests of one user in 2 x sync_interval, a window
// (a quota's day, a cluster rate limit's window) admits at most
// limit + (N-1) x A, and never more than N x limit.

// clusterSync is the sync_interval of the cluster tests: short, so the
// bound is tight and the tests are quick.
const clusterSync = 200 * time.Millisecond

// TestQuotaAcrossThreeNodes runs three gateway processes on one
// PostgreSQL database and drives one user with a daily quota through all
// three at once. The admitted total, as the upstream counts it, must be
// at least the quota and within the documented bound of it; every
// refusal must be 429 quota_exceeded with a Retry-After that points at
// the next UTC midnight, and must never reach the upstream. Then a
// change of the user's quota through one node's management API must
// apply on every node: raised, all admit again (up to the new quota,
// within the bound again); lowered, all refuse; removed, all admit.
func TestQuotaAcrossThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if now := time.Now().UTC(); nextUTCMidnight(now).Sub(now) < 2*time.Minute {
		t.Skip("the UTC day ends within two minutes: the quota's period would change under the test")
	}
	const (
		quota   = 400
		nodes   = 3
		workers = 3                     // per node
		pace    = 15 * time.Millisecond // per worker: about 200 requests/s per node
	)
	srv := pgtest.Start(t)
	dbURL := srv.NewRole(t, srv.NewDatabase(t), "gateway", "pw-Quota-7f1e")
	bin := buildCaddy(t)
	up := newRecorder(t)
	var gws []*gwNode
	for i := range nodes {
		gws = append(gws, startGateway(t, string(rune('A'+i)), bin, dbURL, up, gwConfig{syncInterval: clusterSync}))
	}
	user, auth := gws[0].createUser(t, fmt.Sprintf(`"scopes": ["devices:list"], "quota": {"requests": %d, "period": "day"}`, quota))
	const path = "/v1/products/1337/devices"

	// hammer drives the user through every node until no node has
	// admitted a request for 5 x sync_interval, and checks the answers;
	// it returns how many it admitted and the bound on them.
	hammer := func(phase string, limit, before int) (admitted int) {
		t.Helper()
		var lastAdmit atomic.Int64
		lastAdmit.Store(time.Now().UnixNano())
		start := time.Now()
		answers := drive(gws, workers, pace, path, auth, func(last *answer) bool {
			if last != nil && last.status == 200 {
				lastAdmit.Store(last.at.UnixNano())
			}
			return time.Since(time.Unix(0, lastAdmit.Load())) > 5*clusterSync || time.Since(start) > 30*time.Second
		})
		perNode := make([][]time.Time, nodes)
		refused, badRefusals := 0, 0
		for _, a := range answers {
			switch {
			case a.err != nil:
				t.Fatalf("node %s: %v", gws[a.node].name, a.err)
			case a.status == 200:
				admitted++
				perNode[a.node] = append(perNode[a.node], a.at)
			default:
				refused++
				if msg := checkQuotaRefusal(a); msg != "" {
					if badRefusals++; badRefusals <= 5 {
						t.Errorf("%s: node %s: %s", phase, gws[a.node].name, msg)
					}
				}
			}
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("%s: the nodes still admitted requests after 30s", phase)
		}
		// The most one node admitted in any 2 x sync_interval.
		a := 0
		for _, ts := range perNode {
			a = max(a, maxInWindow(ts, 2*clusterSync))
		}
		total := before + admitted
		bound := min(limit+(nodes-1)*a, nodes*limit)
		t.Logf("%s: %d requests over %v; admitted %d (per node %d/%d/%d), %d in all against a quota of %d: overshoot %d; A (most one node admitted in 2 x sync_interval) = %d, bound %d + %d x %d = %d; refused %d",
			phase, len(answers), time.Since(start).Round(time.Millisecond), admitted, len(perNode[0]), len(perNode[1]), len(perNode[2]),
			total, limit, total-limit, a, limit, nodes-1, a, limit+(nodes-1)*a, refused)
		if total < limit {
			t.Errorf("%s: %d admitted in all, fewer than the quota %d", phase, total, limit)
		}
		if total > bound {
			t.Errorf("%s: %d admitted in all, more than the documented bound %d (quota %d, %d nodes, A = %d)", phase, total, bound, limit, nodes, a)
		}
		if refused == 0 {
			t.Errorf("%s: no request was refused", phase)
		}
		return admitted
	}

	first := hammer("quota "+fmt.Sprint(quota), quota, 0)
	checkUpstream(t, up, gws, user, first)

	// Change the quota through node A: every node must apply the change
	// within sync_interval and a margin (the change log; with NOTIFY
	// usually at once). Each change turns the answers around: removed,
	// the refused user is admitted; lowered below the count, refused;
	// raised above it, admitted again, up to the new quota.
	changed := func(what string, spec string, wantStatus int) {
		t.Helper()
		for i, n := range gws {
			if a := n.send(i, "GET", path, auth); a.status == wantStatus {
				t.Fatalf("before %s: node %s answers %d already", what, n.name, a.status)
			}
		}
		gws[0].manage(t, "PUT", "/v1/products/1337/team/"+user, spec)
		at := time.Now()
		for i, n := range gws {
			var last answer
			if !within(5*time.Second, func() bool {
				last = n.send(i, "GET", path, auth)
				return last.status == wantStatus
			}) {
				t.Fatalf("%s: node %s still answers %d %s 5s later, want %d", what, n.name, last.status, last.code, wantStatus)
			}
			d := time.Since(at)
			t.Logf("%s through node A: node %s answers %d after %v", what, n.name, wantStatus, d.Round(time.Millisecond))
			if bound := clusterSync + 500*time.Millisecond; d > bound {
				t.Errorf("%s: node %s answered %d only after %v, more than sync_interval plus a margin (%v)", what, n.name, wantStatus, d, bound)
			}
		}
	}
	changed("removing the quota", `{"quota": {"requests": 0}}`, 200)
	changed("setting the quota to "+fmt.Sprint(quota/2), fmt.Sprintf(`{"quota": {"requests": %d, "period": "day"}}`, quota/2), 429)
	// The requests admitted while the user had no quota are counted by
	// no quota window; those from here on are.
	uncounted := int(up.total.Load()) - first
	changed("raising the quota to "+fmt.Sprint(2*quota), fmt.Sprintf(`{"quota": {"requests": %d, "period": "day"}}`, 2*quota), 200)
	before := int(up.total.Load()) - uncounted
	second := hammer("quota raised to "+fmt.Sprint(2*quota), 2*quota, before)
	checkUpstream(t, up, gws, user, before+uncounted+second)
}

// checkQuotaRefusal checks that a refusal is 429 quota_exceeded with a
// Retry-After that points at the next UTC midnight: the decision was
// made between a.sent and a.at, and Retry-After rounds up to a second.
func checkQuotaRefusal(a answer) string {
	if a.status != 429 || a.code != "quota_exceeded" {
		return fmt.Sprintf("refused with %d %q, want 429 quota_exceeded", a.status, a.code)
	}
	ra, ok := retryAfterSeconds(a.retryAfter)
	if !ok {
		return fmt.Sprintf("Retry-After %q is not a number of seconds", a.retryAfter)
	}
	midnight := nextUTCMidnight(a.sent)
	if reset := a.at.Add(ra); reset.Before(midnight) || reset.After(midnight.Add(2*time.Second)) {
		return fmt.Sprintf("Retry-After %s points at %s, not at the next UTC midnight %s", a.retryAfter, reset.UTC().Format(time.RFC3339Nano), midnight.Format(time.RFC3339))
	}
	return ""
}

func nextUTCMidnight(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

// checkUpstream checks that exactly want requests of user reached the
// upstream: every admitted request, and no refused one.
func checkUpstream(t *testing.T, up *recorder, gws []*gwNode, user string, want int) {
	t.Helper()
	got := 0
	var per []string
	for _, n := range gws {
		c := up.of(n.name, user)
		got += c
		per = append(per, fmt.Sprintf("%s %d", n.name, c))
	}
	if got != want {
		t.Errorf("the upstream received %d requests of the user (%s), want the %d the nodes admitted", got, strings.Join(per, ", "), want)
	}
}

// rateRow is one line of TestClusterRateLimit's table.
type rateRow struct {
	processes       int
	mode            string
	admitted, limit int
	a, bound        int // A, and the bound on admitted
	low             int // the least admitted that passes
}

// TestClusterRateLimit drives one user, limited to R requests per window
// by the site's rate_limit, well past the limit through 1, 2 and 3
// gateway processes on one PostgreSQL database, and counts what one
// window admitted. With rate_limits cluster it must be at least R and at
// most R + (N-1) x A (A: the most one node admitted in 2 x
// sync_interval), never more than N x R. With rate_limits node each
// process counts alone: 3 processes admit about 3R.
func TestClusterRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	const (
		limit   = 100
		window  = 2 * time.Second
		workers = 3                     // per node
		pace    = 22 * time.Millisecond // per worker: about 135 requests/s per node
	)
	srv := pgtest.Start(t)
	dbURL := srv.NewRole(t, srv.NewDatabase(t), "gateway", "pw-Rate-31d0")
	bin := buildCaddy(t)
	up := newRecorder(t)
	site := fmt.Sprintf("\t\trate_limit %d %s", limit, window)
	const path = "/v1/products/1337/devices"

	// measure drives a new user through the first n of gws for one whole
	// window and returns what that window admitted. In node mode the
	// drive starts a window early, so each node's limiter has used its
	// burst and admits at its rate: the window then holds what the rate
	// allows, not a burst on top.
	measure := func(gws []*gwNode, mode string, n int) rateRow {
		t.Helper()
		user, auth := gws[0].createUser(t, `"scopes": ["devices:list"]`)
		// Each node reads the user from the store once, before the window.
		for i, g := range gws[:n] {
			if a := g.send(i, "GET", path, auth); a.status != 200 {
				t.Fatalf("the user's first request on node %s: %d %s", g.name, a.status, a.code)
			}
		}
		lead := 200 * time.Millisecond
		if mode == "node" {
			lead = 1500 * time.Millisecond
		}
		// Windows are fixed and epoch-aligned: the next one starts at
		// the next multiple of the window since the Unix epoch.
		start := time.Now().Add(lead).Truncate(window).Add(window)
		end := start.Add(window)
		var warm []answer
		if mode == "node" {
			warm = drive(gws[:n], workers, pace, path, auth, func(*answer) bool { return time.Until(start) < 50*time.Millisecond })
		}
		time.Sleep(time.Until(start.Add(10 * time.Millisecond)))
		// In cluster mode the drive stops 250ms before the window's end,
		// so every request counted is decided within the window even on
		// a loaded machine. In node mode the windows mean nothing (each
		// node's limiter admits at a steady rate once its burst is
		// spent), and the drive lasts the whole window.
		margin := 250 * time.Millisecond
		if mode == "node" {
			margin = 20 * time.Millisecond
		}
		answers := drive(gws[:n], workers, pace, path, auth, func(*answer) bool { return time.Until(end) < margin })
		row := rateRow{processes: n, mode: mode, limit: limit}
		perNode := make([][]time.Time, n)
		bad, ok200, late := 0, n, 0
		for _, a := range warm {
			if a.status == 200 {
				ok200++
			}
		}
		for _, a := range answers {
			switch {
			case a.err != nil:
				t.Fatalf("node %s: %v", gws[a.node].name, a.err)
			case a.sent.Before(start) || !a.sent.Before(end.Add(-margin)):
				t.Fatalf("a request sent outside the window: sent %v; window %v to %v", a.sent, start, end)
			case a.status == 200:
				// Decided between sent and at; if at is after the
				// window's end (a stalled machine), it was most likely
				// decided at once, within the window: counting it can
				// only make the check stricter.
				if !a.at.Before(end) {
					late++
				}
				ok200++
				row.admitted++
				perNode[a.node] = append(perNode[a.node], a.at)
			default:
				if msg := checkRateRefusal(a, mode, end); msg != "" {
					if bad++; bad <= 5 {
						t.Errorf("%d processes, %s mode: node %s: %s", n, mode, gws[a.node].name, msg)
					}
				}
			}
		}
		for _, ts := range perNode {
			row.a = max(row.a, maxInWindow(ts, 2*clusterSync))
		}
		if mode == "cluster" {
			row.low, row.bound = limit, min(limit+(n-1)*row.a, n*limit)
		} else {
			// Each node admits its own limit in a window: at the rate
			// of R per window once its burst is spent, plus what the
			// 60ms pause around the window's start let it save (5%
			// of R in all) and one for rounding.
			row.low, row.bound = limit*n*5/6, n*(limit*21/20+1)
		}
		t.Logf("%d processes, %s mode: %d requests in the window, %d admitted (limit %d, pass if in [%d, %d]; %d answered after the window's end), A = %d",
			n, mode, len(answers), row.admitted, limit, row.low, row.bound, late, row.a)
		if row.admitted < row.low || row.admitted > row.bound {
			t.Errorf("%d processes, %s mode: the window admitted %d requests, outside [%d, %d]", n, mode, row.admitted, row.low, row.bound)
		}
		checkUpstream(t, up, gws, user, ok200)
		return row
	}

	var rows []rateRow
	cluster := make([]*gwNode, 3)
	for i := range cluster {
		cluster[i] = startGateway(t, fmt.Sprintf("C%d", i+1), bin, dbURL, up, gwConfig{syncInterval: clusterSync, rateLimits: "cluster", site: site})
	}
	for n := 1; n <= 3; n++ {
		rows = append(rows, measure(cluster, "cluster", n))
	}
	for _, g := range cluster {
		g.stop(t)
	}
	perNode := make([]*gwNode, 3)
	for i := range perNode {
		perNode[i] = startGateway(t, fmt.Sprintf("N%d", i+1), bin, dbURL, up, gwConfig{syncInterval: clusterSync, rateLimits: "node", site: site})
	}
	rows = append(rows, measure(perNode, "node", 3))

	var b strings.Builder
	fmt.Fprintf(&b, "rate_limit %d %s, sync_interval %s, about %d requests/s per process:\n", limit, window, clusterSync, int(time.Second/pace)*workers)
	fmt.Fprintf(&b, "| processes | mode    | admitted | limit | bound |\n")
	fmt.Fprintf(&b, "|-----------|---------|----------|-------|-------|\n")
	for _, r := range rows {
		bound := fmt.Sprintf("%d x (%d x 1.05 + 1) = %d (each its own; at least %d)", r.processes, r.limit, r.bound, r.low)
		if r.mode == "cluster" {
			bound = fmt.Sprintf("%d + %d x %d = %d", r.limit, r.processes-1, r.a, r.limit+(r.processes-1)*r.a)
		}
		fmt.Fprintf(&b, "| %9d | %-7s | %8d | %5d | %s |\n", r.processes, r.mode, r.admitted, r.limit, bound)
	}
	t.Log("\n" + b.String())
}

// checkRateRefusal checks that a refusal is 429 rate_limited with a
// Retry-After: in cluster mode the end of the fixed window end (the
// decision was made between a.sent and a.at, and Retry-After rounds up
// to a second); in node mode at most the window.
func checkRateRefusal(a answer, mode string, end time.Time) string {
	if a.status != 429 || a.code != "rate_limited" {
		return fmt.Sprintf("refused with %d %q, want 429 rate_limited", a.status, a.code)
	}
	ra, ok := retryAfterSeconds(a.retryAfter)
	if !ok || ra == 0 {
		return fmt.Sprintf("Retry-After %q is not a positive number of seconds", a.retryAfter)
	}
	if mode == "cluster" {
		if reset := a.at.Add(ra); reset.Before(end) || reset.After(end.Add(2*time.Second)) {
			return fmt.Sprintf("Retry-After %s points at %s, not at the window's end %s", a.retryAfter, reset.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano))
		}
	}
	return ""
}
