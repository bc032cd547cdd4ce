package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apiusers/caddy-api-users/policy"
)

// auditOut is where a test audit logger writes: it keeps every line,
// counts syncs, and can be made to block in Write, as a stuck disk would.
type auditOut struct {
	mu      sync.Mutex
	lines   []string
	syncs   int
	gate    chan struct{} // when set, Write waits until it is closed
	entered chan struct{}
}

func (o *auditOut) Write(p []byte) (int, error) {
	o.mu.Lock()
	gate, entered := o.gate, o.entered
	o.mu.Unlock()
	if gate != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		o.lines = append(o.lines, l)
	}
	return len(p), nil
}

func (o *auditOut) Sync() error {
	o.mu.Lock()
	o.syncs++
	o.mu.Unlock()
	return nil
}

func (o *auditOut) snapshot() ([]string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...), o.syncs
}

// has reports whether a written record has the path.
func (o *auditOut) has(path string) bool {
	lines, _ := o.snapshot()
	for _, l := range lines {
		if strings.Contains(l, `"path":"`+path+`"`) {
			return true
		}
	}
	return false
}

func newTestAuditSink(out *auditOut) *auditSink {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), out, zap.InfoLevel)
	return newAuditSink(zap.New(core).Named("http.handlers.api_users.audit"), nil, nil)
}

func testAuditRecord(path string) *auditRecord {
	return &auditRecord{start: time.Now(), method: "GET", path: path, clientIP: "192.0.2.1", status: http.StatusUnauthorized}
}

func newTestAuditQueue(t *testing.T, cfg AuditConfig) (*auditQueue, prometheus.Counter, *observer.ObservedLogs) {
	t.Helper()
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"})
	return newAuditQueue(cfg, dropped, zap.New(core)), dropped, logs
}

// TestAuditQueueFullDropsAndCounts: with the writer stuck, a request that
// finds the queue full waits briefly, then its record is dropped, counted
// in the metric and named in an error line; the queue keeps every other
// record, and takes new ones once the writer moves again.
func TestAuditQueueFullDropsAndCounts(t *testing.T) {
	out := &auditOut{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	sink := newTestAuditSink(out)
	q, dropped, logs := newTestAuditQueue(t, AuditConfig{MaxPending: 2, MaxDelay: caddy.Duration(time.Hour)})
	q.start()

	q.add(sink, testAuditRecord("/1"), policy.InvalidCredentials)
	q.add(sink, testAuditRecord("/2"), policy.InvalidCredentials) // half full: wakes the writer
	<-out.entered                                                 // the writer is stuck in its first write
	start := time.Now()
	q.add(sink, testAuditRecord("/3"), policy.InvalidCredentials) // no room: dropped
	waited := time.Since(start)
	if waited < auditFullWait {
		t.Errorf("a request finding the queue full waited %v before its record was dropped, want at least %v", waited, auditFullWait)
	}
	if got := counterValue(t, dropped); got != 1 {
		t.Errorf("dropped counter = %v, want 1", got)
	}
	lines := logs.FilterMessageSnippet("the audit queue is full").All()
	if len(lines) != 1 || lines[0].Level != zap.ErrorLevel || lines[0].ContextMap()["dropped"] != uint64(1) {
		t.Errorf("error lines about the full queue: %+v, want one at error level naming 1 dropped record", lines)
	}

	close(out.gate) // the disk comes back
	q.add(sink, testAuditRecord("/4"), policy.InvalidCredentials)
	q.close(true)
	for _, p := range []string{"/1", "/2", "/4"} {
		if !out.has(p) {
			t.Errorf("record %s is missing", p)
		}
	}
	if out.has("/3") {
		t.Error("the dropped record was written")
	}
	if got := counterValue(t, dropped); got != 1 {
		t.Errorf("dropped counter = %v after the writer recovered, want 1", got)
	}
}

// TestAuditQueueSyncMode: in sync mode a request returns only once its
// record is written and synced; concurrent requests share syncs.
func TestAuditQueueSyncMode(t *testing.T) {
	out := &auditOut{}
	sink := newTestAuditSink(out)
	q, _, _ := newTestAuditQueue(t, AuditConfig{Mode: AuditModeSync})
	q.start()
	defer q.close(true)

	const n = 64
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			path := fmt.Sprintf("/sync/%d", i)
			q.add(sink, testAuditRecord(path), policy.InvalidCredentials)
			if !out.has(path) {
				errs <- path
			}
		})
	}
	wg.Wait()
	close(errs)
	for p := range errs {
		t.Errorf("add returned before record %s was written", p)
	}
	lines, syncs := out.snapshot()
	if len(lines) != n {
		t.Errorf("%d records written, want %d", len(lines), n)
	}
	if syncs < 1 || syncs > n {
		t.Errorf("%d syncs for %d records, want between 1 and %d", syncs, n, n)
	}
	t.Logf("%d records in sync mode took %d syncs", n, syncs)
}

// TestAuditQueueWritesWithinMaxDelay: a queued record reaches the log
// without any flush, with the shape of a gateway record and its decision's
// time.
func TestAuditQueueWritesWithinMaxDelay(t *testing.T) {
	out := &auditOut{}
	sink := newTestAuditSink(out)
	q, _, _ := newTestAuditQueue(t, AuditConfig{MaxDelay: caddy.Duration(20 * time.Millisecond)})
	q.start()
	defer q.close(true)

	rec := testAuditRecord("/delayed")
	rec.start = time.Unix(1_800_000_000, 500_000_000)
	q.add(sink, rec, policy.InvalidCredentials)
	eventually(t, 10*time.Second, "the record is written", func() bool { return out.has("/delayed") })
	lines, _ := out.snapshot()
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["ts"] != 1_800_000_000.5 || m["logger"] != "http.handlers.api_users.audit" || m["msg"] != "gateway decision" || m["reason"] != "invalid_credentials" || m["decision"] != "deny" {
		t.Errorf("record %s: want the decision's time, logger, message, reason and decision", lines[0])
	}
	if len(m) != len(auditFields)+4 {
		t.Errorf("record has %d fields, want %d: %s", len(m), len(auditFields)+4, lines[0])
	}
}

// TestAuditQueueCloseDrains: records held by a queue whose MaxDelay has
// not come are all written by close, and a record added after close is
// written before add returns.
func TestAuditQueueCloseDrains(t *testing.T) {
	out := &auditOut{}
	sink := newTestAuditSink(out)
	q, _, _ := newTestAuditQueue(t, AuditConfig{MaxPending: 1000, MaxDelay: caddy.Duration(time.Hour)})
	q.start()
	for i := range 100 {
		q.add(sink, testAuditRecord(fmt.Sprintf("/held/%d", i)), policy.InvalidCredentials)
	}
	if lines, _ := out.snapshot(); len(lines) != 0 {
		t.Fatalf("%d records written before MaxDelay or half the queue, want 0", len(lines))
	}
	q.close(true)
	if lines, _ := out.snapshot(); len(lines) != 100 {
		t.Fatalf("%d records after close, want 100", len(lines))
	}
	q.add(sink, testAuditRecord("/late"), policy.InvalidCredentials)
	if !out.has("/late") {
		t.Error("a record added after close was not written at once")
	}
}

// TestAuditReloadAndStopLoseNothing runs a real Caddy whose audit log goes
// through the api_users_audit writer, with bounds so loose that nothing is
// written by time or by count: a config reload, then a graceful stop,
// must still write every decision, and exactly one record per request
// the upstream received.
func TestAuditReloadAndStopLoseNothing(t *testing.T) {
	dir := t.TempDir()
	auditPath := filepath.Join(dir, "audit.log")
	g := startGateway(t, gatewayOptions{
		gatewayBlock: "lockout off",
		appExtra:     "\t\taudit {\n\t\t\tmax_pending 100000\n\t\t\tmax_delay 1h\n\t\t}",
		globalExtra: `	log audit {
		output api_users_audit ` + auditPath + `
		format json
		include http.handlers.api_users.audit
	}`,
	})
	_, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	gatewayRecords := func() []map[string]any {
		data, err := os.ReadFile(auditPath) // as it is, unflushed
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var out []map[string]any
		for _, line := range bytes.Split(data, []byte("\n")) {
			var m map[string]any
			// Only allowed ones: the harness's readiness probe is refused.
			if json.Unmarshal(line, &m) == nil && m["msg"] == "gateway decision" && m["decision"] == "allow" {
				out = append(out, m)
			}
		}
		return out
	}
	send := func(n, from int) {
		for i := range n {
			if r := g.do("GET", fmt.Sprintf("/v1/products/1337/devices?n=%d", from+i), bearer(iss.Token)); r.Status != 200 {
				t.Fatalf("request %d: %d", from+i, r.Status)
			}
		}
	}

	send(150, 0)
	if n := len(gatewayRecords()); n != 0 {
		t.Fatalf("%d gateway records in the file before any flush, want 0 (the bounds should hold them)", n)
	}
	if err := caddy.Load(g.config, true); err != nil {
		t.Fatalf("reloading: %v", err)
	}
	if n, up := len(gatewayRecords()), len(g.upstream.take()); n != 150 || up != 150 {
		t.Fatalf("after the reload: %d gateway records for %d requests the upstream received, want 150 and 150", n, up)
	}

	send(70, 150)
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	recs := gatewayRecords()
	if up := len(g.upstream.take()); len(recs) != 220 || up != 70 {
		t.Fatalf("after a graceful stop: %d gateway records (want 220), the upstream received %d more (want 70)", len(recs), up)
	}
	for _, m := range recs {
		if m["logger"] != "http.handlers.api_users.audit" || m["reason"] != "allowed" {
			t.Fatalf("record %v: want an allowed decision on http.handlers.api_users.audit", m)
		}
	}
}

// TestAuditWriterRolls: the api_users_audit writer rolls its file as
// Caddy's file writer does, and loses no line across rolls.
func TestAuditWriterRolls(t *testing.T) {
	dir := t.TempDir()
	no := false
	w := AuditFileWriter{}
	w.Filename = filepath.Join(dir, "audit.log")
	w.RollSizeMB = 1
	w.RollKeep = 10
	w.RollCompress = &no
	wc, err := w.OpenWriter()
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(`{"msg":"gateway decision","path":"` + strings.Repeat("x", 200) + `"}` + "\n")
	const lines = 12000 // about 2.6 MB: two rolls of 1 MB
	for range lines {
		if _, err := wc.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "audit*.log"))
	if len(files) < 3 {
		t.Errorf("files %v: want the current file and at least two rolled ones", files)
	}
	total := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		total += bytes.Count(data, []byte("\n"))
	}
	if total != lines {
		t.Errorf("%d lines across %d files, want %d", total, len(files), lines)
	}
}

// TestAuditQueueCountsEveryDecision: the writer counts each decision in
// the metrics and the usage as it writes its record, a record the full
// queue drops is counted on its request's goroutine, and a usage taken
// after a flush holds every decision queued before it.
func TestAuditQueueCountsEveryDecision(t *testing.T) {
	out := &auditOut{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	m := newMetrics(nil, nil)
	usage := newUsageCounter()
	sink := newAuditSink(newTestAuditSink(out).log, m, usage)
	q, dropped, _ := newTestAuditQueue(t, AuditConfig{MaxPending: 2, MaxDelay: caddy.Duration(time.Hour)})
	q.start()

	user := &policy.Principal{User: &policy.APIUser{ID: "svc-1"}}
	decided := func(path string, hits cacheHits) {
		rec := testAuditRecord(path)
		rec.principal, rec.status, rec.took, rec.cacheHits = user, http.StatusForbidden, time.Millisecond, hits
		q.add(sink, rec, policy.InsufficientScope)
	}
	decided("/1", tokenCacheHit)
	decided("/2", tokenCacheHit|userCacheHit) // wakes the writer, which sticks in its write
	<-out.entered
	decided("/3", 0) // no room: dropped, and counted here
	if got := counterValue(t, dropped); got != 1 {
		t.Fatalf("dropped = %v, want 1", got)
	}
	decisions := m.decisions.WithLabelValues("none", policy.InsufficientScope.Code())
	if got := counterValue(t, decisions); got != 2 {
		// The writer counts a record just before it writes it: it counted
		// /1, and stuck writing it.
		t.Errorf("decisions counted while the writer is stuck: %v, want 2 (/1 by the writer, the dropped /3 by its request)", got)
	}
	close(out.gate)
	decided("/4", 0)
	q.flush()
	if got := counterValue(t, decisions); got != 4 {
		t.Errorf("decisions counted after a flush: %v, want 4", got)
	}
	if got := counterValue(t, m.cache.tokenHits); got != 2 {
		t.Errorf("token cache hits: %v, want 2", got)
	}
	if got := counterValue(t, m.cache.userHits); got != 1 {
		t.Errorf("user cache hits: %v, want 1", got)
	}
	var n int64
	for _, c := range usage.take() {
		if c.UserID != "svc-1" || c.Outcome != policy.InsufficientScope.Code() {
			t.Errorf("usage count %+v, want svc-1 insufficient_scope", c)
		}
		n += c.Count
	}
	if n != 4 {
		t.Errorf("usage counted %d decisions, want 4", n)
	}
	q.close(true)
}
