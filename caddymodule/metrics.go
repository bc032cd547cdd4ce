package caddymodule

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/apiusers/caddy-api-users/policy"
)

// The api_users metrics live in Caddy's metrics registry, next to Caddy's
// own, so the `metrics` handler and the admin endpoint's /metrics serve them
// with no extra setup:
//
//	caddy_api_users_decisions_total{endpoint, reason}
//	caddy_api_users_decision_duration_seconds
//	caddy_api_users_cache_requests_total{cache, result}
//	caddy_api_users_store_errors_total{operation}
//	caddy_api_users_store_sync_lag_seconds
//	caddy_api_users_audit_dropped_total
//	caddy_api_users_counter_exchange_duration_seconds
//	caddy_api_users_usage_dropped_total
//
// Quota refusals are decisions_total{reason="quota_exceeded"}; a failed
// exchange of quota and rate counts is store_errors_total{operation=
// "exchange_counters"}, a failed usage flush {operation="flush_usage"}.
//
// No label grows with the number of users: endpoint names are bounded by
// the catalog, reasons by the policy, and the rest are fixed sets. Caddy
// gives every loaded config its own registry, and a config has exactly one
// api_users app, so the app registers the collectors once per registry and
// a reload starts from a fresh set.
//
// The hot path does no map lookup and, after the first request of each
// kind, no allocation for metrics: every counter a request can touch is
// resolved once and kept in a slice (decision counters) or a field (cache
// and store counters).

const (
	metricsNamespace = "caddy"
	metricsSubsystem = "api_users"

	// noEndpointLabel is the endpoint label of a decision made before or
	// without a catalog match.
	noEndpointLabel = "none"

	// passThroughCode is the reason code, in the audit log and in metrics,
	// of a request the gateway passed to the upstream without an API-user
	// credential because pass_through is on. It is not a policy.Reason:
	// policy never decides it, the gateway's configuration does.
	passThroughCode = "pass_through"
)

// Store operations counted by caddy_api_users_store_errors_total.
const (
	storeOpGetUser     = "get_user"
	storeOpUserByToken = "user_by_token"
	storeOpSyncChanges = "sync_changes"
	storeOpUsage       = "flush_usage"
	storeOpCounters    = "exchange_counters"
	storeOpTouchUsers  = "touch_users"
	storeOpPrune       = "prune_changes"
)

// outcomes are the reason labels of decisions: every policy.Reason in
// order, then pass_through.
var (
	outcomeCodes       = outcomeLabels()
	passThroughOutcome = len(outcomeCodes) - 1
)

func outcomeLabels() []string {
	var codes []string
	for _, r := range policy.Reasons() {
		codes = append(codes, r.Code())
	}
	return append(codes, passThroughCode)
}

// metrics are one app's collectors and the counters resolved from them.
type metrics struct {
	decisions       *prometheus.CounterVec
	decisionSeconds prometheus.Histogram
	cacheRequests   *prometheus.CounterVec
	storeErrors     *prometheus.CounterVec
	syncLag         prometheus.GaugeFunc
	auditDropped    prometheus.Counter
	exchangeSeconds prometheus.Histogram
	usageDropped    prometheus.Counter

	// endpoints are the endpoint labels by policy.Endpoint.Index, then
	// noEndpointLabel. cells holds a decision counter per endpoint label
	// and outcome, resolved on first use so that a catalog of many
	// endpoints does not export a zero series for every combination that
	// never happens (most reasons come before any endpoint matches).
	endpoints []string
	cells     []atomic.Pointer[counterCell]

	cache cacheMetrics

	storeGetUser, storeUserByToken, storeSyncChanges, storeTouchUsers, storePrune prometheus.Counter
	storeUsage, storeCounters                                                     prometheus.Counter
}

type counterCell struct{ c prometheus.Counter }

// cacheMetrics are the principal cache's hit and miss counters. A nil
// *cacheMetrics counts nothing, for caches built without an app.
type cacheMetrics struct {
	userHits, userMisses, tokenHits, tokenMisses prometheus.Counter
}

func (m *cacheMetrics) userHit() {
	if m != nil {
		m.userHits.Inc()
	}
}

func (m *cacheMetrics) userMiss() {
	if m != nil {
		m.userMisses.Inc()
	}
}

func (m *cacheMetrics) tokenHit() {
	if m != nil {
		m.tokenHits.Inc()
	}
}

func (m *cacheMetrics) tokenMiss() {
	if m != nil {
		m.tokenMisses.Inc()
	}
}

// newMetrics builds the collectors for a catalog whose endpoints are named
// endpointNames, in configuration order. syncLag reports the store sync
// lag in seconds at scrape time. Until register is called, the collectors
// count but nothing exports them (the CLI never registers them).
func newMetrics(endpointNames []string, syncLag func() float64) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "decisions_total",
			Help:      `Gateway decisions, by endpoint ("none" when no endpoint matched) and reason code ("allowed", a refusal's code, or "pass_through").`,
		}, []string{"endpoint", "reason"}),
		decisionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "decision_duration_seconds",
			Help:      "Time from a request reaching the gateway to its decision, store reads included, the upstream excluded.",
			// 1µs to about 0.26s: a cached user is decided in microseconds,
			// a cache miss waits for the store.
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}),
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "cache_requests_total",
			Help:      `Lookups in the in-memory cache, by cache ("user": users by ID, "token": token owners by token hash) and result ("hit" or "miss"; a miss reads the store).`,
		}, []string{"cache", "result"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "store_errors_total",
			Help:      "Failed store operations of the gateway and its background loops, by operation.",
		}, []string{"operation"}),
		syncLag: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "store_sync_lag_seconds",
			Help:      "Seconds since this process last read the store's change log successfully: a change made elsewhere (another node, the CLI) is enforced here within about this long. It stays below sync_interval while syncing works, and grows while it fails.",
		}, syncLag),
		auditDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "audit_dropped_total",
			Help:      "Gateway decision records dropped because the audit queue stayed full (audit max_pending) for 10ms; each drop is also reported in the log.",
		}),
		exchangeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "counter_exchange_duration_seconds",
			Help:      "Time each exchange of this node's quota and rate-limit counts with the store took (one every sync_interval, successful or not): how stale other nodes' counts can be here.",
			Buckets:   prometheus.ExponentialBuckets(1e-4, 4, 9),
		}),
		usageDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Subsystem: metricsSubsystem,
			Name:      "usage_dropped_total",
			Help:      "Usage counts dropped because the store stayed unreachable and the counts kept in memory reached their bound; each drop is also reported in the log.",
		}),
		endpoints: append(slices.Clone(endpointNames), noEndpointLabel),
	}
	m.cells = make([]atomic.Pointer[counterCell], len(m.endpoints)*len(outcomeCodes))
	m.resolve()
	return m
}

// resolve fetches the counters kept in fields from their vectors.
func (m *metrics) resolve() {
	m.cache = cacheMetrics{
		userHits:    m.cacheRequests.WithLabelValues("user", "hit"),
		userMisses:  m.cacheRequests.WithLabelValues("user", "miss"),
		tokenHits:   m.cacheRequests.WithLabelValues("token", "hit"),
		tokenMisses: m.cacheRequests.WithLabelValues("token", "miss"),
	}
	m.storeGetUser = m.storeErrors.WithLabelValues(storeOpGetUser)
	m.storeUserByToken = m.storeErrors.WithLabelValues(storeOpUserByToken)
	m.storeSyncChanges = m.storeErrors.WithLabelValues(storeOpSyncChanges)
	m.storeTouchUsers = m.storeErrors.WithLabelValues(storeOpTouchUsers)
	m.storePrune = m.storeErrors.WithLabelValues(storeOpPrune)
	m.storeUsage = m.storeErrors.WithLabelValues(storeOpUsage)
	m.storeCounters = m.storeErrors.WithLabelValues(storeOpCounters)
	for i := range m.cells {
		m.cells[i].Store(nil)
	}
}

// register adds the collectors to reg. Should reg already hold an
// identical collector (a second app on one registry, which Caddy does not
// do today), the existing one is adopted, so the series keep counting in
// one place instead of failing the config load.
func (m *metrics) register(reg prometheus.Registerer) error {
	var err error
	if m.decisions, err = registerOrReuse(reg, m.decisions); err != nil {
		return err
	}
	if m.decisionSeconds, err = registerOrReuse(reg, m.decisionSeconds); err != nil {
		return err
	}
	if m.cacheRequests, err = registerOrReuse(reg, m.cacheRequests); err != nil {
		return err
	}
	if m.storeErrors, err = registerOrReuse(reg, m.storeErrors); err != nil {
		return err
	}
	if m.syncLag, err = registerOrReuse(reg, m.syncLag); err != nil {
		return err
	}
	if m.auditDropped, err = registerOrReuse(reg, m.auditDropped); err != nil {
		return err
	}
	if m.exchangeSeconds, err = registerOrReuse(reg, m.exchangeSeconds); err != nil {
		return err
	}
	if m.usageDropped, err = registerOrReuse(reg, m.usageDropped); err != nil {
		return err
	}
	m.resolve()
	return nil
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("api_users: registering metrics: %w", err)
}

// decided counts one gateway decision. endpoint is the matched endpoint's
// policy.Endpoint.Index, or -1 for none; outcome is a policy.Reason or
// passThroughOutcome.
func (m *metrics) decided(endpoint, outcome int, took time.Duration) {
	m.decisionSeconds.Observe(took.Seconds())
	none := len(m.endpoints) - 1
	if endpoint < 0 || endpoint >= none {
		endpoint = none
	}
	if outcome < 0 || outcome >= len(outcomeCodes) {
		outcome = int(policy.StoreUnavailable)
	}
	cell := &m.cells[endpoint*len(outcomeCodes)+outcome]
	if c := cell.Load(); c != nil {
		c.c.Inc()
		return
	}
	c := &counterCell{m.decisions.WithLabelValues(m.endpoints[endpoint], outcomeCodes[outcome])}
	cell.Store(c)
	c.c.Inc()
}
