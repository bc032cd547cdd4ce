// Package caddymodule is the Caddy glue of API users: the app that owns the
// store, the catalog and the principal cache; the gateway handler that turns
// a request into a policy decision and forwards or refuses it; the
// management handler; Caddyfile parsing; the audit log; and the
// `caddy api-users` command. The decisions themselves live in package policy.
package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the `api_users` app: the one place in a Caddy process that holds
// the API-user store, the endpoint catalog, the orgs and products, the roles
// and the cache of compiled users. Every `api_users` gateway handler and
// every `api_users_admin` management handler in the process shares it, so a
// change made through the management API is enforced by the very next
// gateway request. It is configured with the `api_users` global option.
type App struct {
	// Store says where API users are kept. By default, a SQLite file in
	// Caddy's data directory.
	Store StoreConfig `json:"store,omitempty"`

	// Orgs are the tenants and their products. Routes may name a product by
	// its numeric ID or its slug.
	Orgs []OrgConfig `json:"orgs,omitempty"`

	// Roles are named sets of scopes; a user's effective scopes are its own
	// plus those of its roles.
	Roles []RoleConfig `json:"roles,omitempty"`

	// Endpoints is the catalog of routes the gateway lets API users reach.
	// A request that matches no endpoint is refused: deny by default.
	Endpoints []EndpointConfig `json:"endpoints,omitempty"`

	// Cache bounds the in-memory cache of users in front of the store.
	Cache CacheConfig `json:"cache,omitempty"`

	// SyncInterval is how often the app polls the store for changes made
	// by another process (the CLI, another gateway node) and drops the
	// affected cache entries. It bounds how long such a change, a
	// revocation above all, takes to be enforced here. With PostgreSQL a
	// change is also announced with NOTIFY and usually enforced within
	// milliseconds; the poll is the guarantee when an announcement is lost.
	// Default: 500ms.
	SyncInterval caddy.Duration `json:"sync_interval,omitempty"`

	// MaxStale bounds how long users already in the cache are still
	// admitted while the store's change log cannot be read (the database
	// is down or unreachable), counted from the last successful read:
	// during that time a revocation made elsewhere cannot be learnt. After
	// it, every API-user request is refused with 503 store_unavailable
	// until the log can be read again. A request that needs a store read
	// is refused with 503 at once, whatever MaxStale is. It must be at
	// least twice SyncInterval. Default: ten sync intervals, and at least
	// 5s.
	MaxStale caddy.Duration `json:"max_stale,omitempty"`

	// LastUsedInterval is how often last-used times are written to the
	// store. They are kept in memory in between, so a request never waits
	// for a store write. Default: 1m.
	LastUsedInterval caddy.Duration `json:"last_used_interval,omitempty"`

	// ChangeRetention is how long change records are kept. Once an hour
	// each node deletes older ones (never the newest), so the change log
	// does not grow without end. A node that was away for longer than this
	// finds its position pruned and drops its whole cache, which is safe.
	// Default: 168h (a week).
	ChangeRetention caddy.Duration `json:"change_retention,omitempty"`

	// Audit says how gateway decision records are written: in batches off
	// the request path (the default), or each on disk before its
	// response. See AuditConfig.
	Audit AuditConfig `json:"audit,omitempty"`

	// RateLimits says what a rate limit counts: "node" (the default),
	// each gateway node's own requests, so N nodes behind a load balancer
	// admit up to N times the limit; or "cluster", the user's requests
	// over every node sharing a PostgreSQL store, counted in fixed windows
	// of the limit's length and exchanged every sync_interval (see
	// counters.go for the bound on the error). "cluster" needs PostgreSQL:
	// with SQLite one node is the whole cluster.
	RateLimits string `json:"rate_limits,omitempty"`

	// Usage says how usage counts are written and kept. See UsageConfig.
	Usage UsageConfig `json:"usage,omitempty"`

	store   store.Store
	view    atomic.Pointer[view]
	viewMu  sync.Mutex // serialises reloadView
	cache   *principalCache
	touches *lastUsed
	limits  *processLimits // the lockout and rate limits (limits.go)
	limitsK string         // its key in limitsPool
	logger  *zap.Logger
	audit   *zap.Logger
	metrics *metrics
	auditQ  atomic.Pointer[auditQueue] // while the app runs

	// adminHandlers counts the management handlers on this app: the
	// gateway marks a request as an API user's for them alone.
	adminHandlers atomic.Int32

	now      func() time.Time
	lastSeq  atomic.Int64
	lastSync atomic.Int64 // unix nanoseconds of the last successful read of the change log
	stop     context.CancelFunc
	wg       sync.WaitGroup

	// Following the store (sync.go).
	maxStale   atomic.Int64 // MaxStale in nanoseconds once the follower runs; 0: not checked
	storeDown  atomic.Bool  // the last read of the change log failed
	downSince  time.Time    // follower goroutine only
	downLogged time.Time    // follower goroutine only
	pollOnly   bool         // tests: do not listen for announcements
}

// wrapStoreForTest, set only by tests, wraps the store an app opens, so a
// test can watch every call the gateway makes.
var wrapStoreForTest func(store.Store) store.Store

// UsageConfig says how often usage counts are written to the store and
// how long the store keeps them.
type UsageConfig struct {
	// FlushInterval is how often each node adds the usage it counted to
	// the store. A node killed without a graceful stop loses at most this
	// long of its own counts. Default: 10s.
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`

	// HourlyRetention is how long hourly buckets are kept. Default: 168h
	// (a week).
	HourlyRetention caddy.Duration `json:"hourly_retention,omitempty"`

	// DailyRetention is how long daily buckets are kept. Default: 9600h
	// (400 days).
	DailyRetention caddy.Duration `json:"daily_retention,omitempty"`
}

// The defaults of UsageConfig.
const (
	defaultUsageFlushInterval   = 10 * time.Second
	defaultUsageHourlyRetention = 7 * 24 * time.Hour
	defaultUsageDailyRetention  = 400 * 24 * time.Hour
)

// check sets the defaults and refuses what cannot work, naming the fix.
func (u *UsageConfig) check() error {
	if u.FlushInterval == 0 {
		u.FlushInterval = caddy.Duration(defaultUsageFlushInterval)
	}
	if u.HourlyRetention == 0 {
		u.HourlyRetention = caddy.Duration(defaultUsageHourlyRetention)
	}
	if u.DailyRetention == 0 {
		u.DailyRetention = caddy.Duration(defaultUsageDailyRetention)
	}
	switch {
	case u.FlushInterval < caddy.Duration(100*time.Millisecond) || u.FlushInterval > caddy.Duration(time.Hour):
		return fmt.Errorf("usage flush_interval %s is outside 100ms..1h: it bounds how much usage a crash loses; use a value such as 10s", time.Duration(u.FlushInterval))
	case u.HourlyRetention < caddy.Duration(time.Hour):
		return fmt.Errorf("usage hourly_retention %s is less than an hour: keep hourly buckets at least an hour, such as 168h", time.Duration(u.HourlyRetention))
	case u.DailyRetention < caddy.Duration(24*time.Hour):
		return fmt.Errorf("usage daily_retention %s is less than a day: keep daily buckets at least a day, such as 9600h", time.Duration(u.DailyRetention))
	}
	return nil
}

// clusterRates reports whether rate limits count over all nodes.
func (a *App) clusterRates() bool { return a.RateLimits == rateLimitsCluster }

const (
	rateLimitsNode    = "node"
	rateLimitsCluster = "cluster"

	errClusterNeedsPostgres = "api_users: rate_limits cluster needs a store that several nodes share: use store postgres, or rate_limits node (with SQLite, one node is the whole cluster)"
)

// StoreConfig selects and locates the store.
type StoreConfig struct {
	// Driver is "sqlite" (the default), or "postgres" for a database that
	// several gateway nodes share.
	Driver string `json:"driver,omitempty"`

	// Path is the SQLite database file. Default: api_users/api_users.db in
	// Caddy's data directory.
	Path string `json:"path,omitempty"`

	// URL is the PostgreSQL connection string, required with the
	// "postgres" driver: a URL such as
	// postgres://caddy:PASSWORD@db.internal:5432/api_users?sslmode=verify-full
	// or keyword=value pairs, as libpq takes them (pgxpool settings such as
	// pool_max_conns too). Placeholders are replaced when the app starts,
	// so the password can stay out of the config: {env.DATABASE_URL}, or
	// {file./run/secrets/database_url}. The password never appears in logs
	// or errors.
	URL string `json:"url,omitempty"`
}

// OrgConfig is one org and its products.
type OrgConfig struct {
	// ID names the org in routes ({org}) and in API users.
	ID string `json:"id"`
	// Slug, when set, names the org in routes too.
	Slug string `json:"slug,omitempty"`
	// Products belong to this org.
	Products []ProductConfig `json:"products,omitempty"`
}

// ProductConfig is one product of an org.
type ProductConfig struct {
	// ID is the product's numeric ID.
	ID int64 `json:"id"`
	// Slug is the product's name in routes, such as "my-product-v1".
	Slug string `json:"slug"`
}

// RoleConfig is a named set of scopes.
type RoleConfig struct {
	// Name names the role in API users' "roles".
	Name string `json:"name"`
	// Description is for humans.
	Description string `json:"description,omitempty"`
	// Scopes the role grants.
	Scopes []string `json:"scopes"`
}

// EndpointConfig is one route of the catalog.
type EndpointConfig struct {
	// Name names the endpoint in API users' "allowed_endpoints", in the
	// audit log and in metrics.
	Name string `json:"name"`
	// Methods are the HTTP methods the endpoint takes, such as ["GET"].
	Methods []string `json:"methods"`
	// Path is the path template, in the grammar of Go's net/http patterns:
	// literal segments, {name} for one segment, a final {name...} for the
	// rest. Matching is exact and case-sensitive.
	Path string `json:"path"`
	// Scope is the scope a user needs, such as "devices:list".
	Scope string `json:"scope"`
}

// CacheConfig bounds the cache of compiled users.
type CacheConfig struct {
	// MaxUsers is how many users (and as many tokens) the cache holds at
	// most; memory is bounded by it, not by the number of users in the
	// store. Default: 100000.
	MaxUsers int64 `json:"max_users,omitempty"`
	// TTL is how long an entry lives at most, as a second line of defence
	// behind change tracking. Default: 5m.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// NegativeTTL is how long an unknown token is remembered as unknown,
	// so invalid tokens do not reach the store again and again. Unknown
	// user IDs are remembered for TTL, like known ones, so that the time a
	// request takes does not say whether its user ID exists. Default: 30s.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "api_users",
		New: func() caddy.Module { return new(App) },
	}
}

const (
	defaultSyncInterval     = 500 * time.Millisecond
	defaultLastUsedInterval = time.Minute
	defaultChangeRetention  = 7 * 24 * time.Hour
	maxSyncInterval         = time.Minute
	changePruneInterval     = time.Hour
	defaultMaxUsers         = 100_000
	defaultCacheTTL         = 5 * time.Minute
	defaultNegativeTTL      = 30 * time.Second
)

// Provision opens the store and compiles the catalog.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	// Audit records of gateway decisions and management changes alike go
	// to http.handlers.api_users.audit, one name for operators to route.
	a.audit = ctx.Logger(Gateway{}).Named("audit")
	a.metrics = newMetrics(a.endpointNames(), a.syncLag)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		if err := a.metrics.register(reg); err != nil {
			return err
		}
	}
	if err := a.open(ctx); err != nil {
		return err
	}
	a.limitsK = limitsKey(a.Store)
	limits, err := loadLimits(a.limitsK, a.now)
	if err != nil {
		return fmt.Errorf("api_users: %w", err)
	}
	a.limits = limits
	if pg, ok := a.store.(*store.Postgres); ok {
		a.logger.Info("API users are kept in PostgreSQL", zap.String("database", pg.Where()),
			zap.Duration("sync_interval", time.Duration(a.SyncInterval)), zap.Duration("max_stale", time.Duration(a.MaxStale)))
	}
	return nil
}

// open does the work of Provision; the CLI uses it too, without starting
// the background loops.
func (a *App) open(ctx context.Context) error {
	if a.logger == nil {
		a.logger = zap.NewNop()
		a.audit = a.logger
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.metrics == nil {
		a.metrics = newMetrics(a.endpointNames(), a.syncLag)
	}
	if a.SyncInterval == 0 {
		a.SyncInterval = caddy.Duration(defaultSyncInterval)
	}
	if a.LastUsedInterval == 0 {
		a.LastUsedInterval = caddy.Duration(defaultLastUsedInterval)
	}
	if a.ChangeRetention == 0 {
		a.ChangeRetention = caddy.Duration(defaultChangeRetention)
	}
	if err := a.Audit.check(); err != nil {
		return fmt.Errorf("api_users: %w", err)
	}
	if err := a.Usage.check(); err != nil {
		return fmt.Errorf("api_users: %w", err)
	}
	switch a.RateLimits {
	case "", rateLimitsNode, rateLimitsCluster: // cluster is checked with the store
	default:
		return fmt.Errorf("api_users: rate_limits %q: use node (each node counts its own requests) or cluster (the total over every node of a PostgreSQL store)", a.RateLimits)
	}
	if a.Cache.MaxUsers == 0 {
		a.Cache.MaxUsers = defaultMaxUsers
	}
	if a.Cache.TTL == 0 {
		a.Cache.TTL = caddy.Duration(defaultCacheTTL)
	}
	if a.Cache.NegativeTTL == 0 {
		a.Cache.NegativeTTL = caddy.Duration(defaultNegativeTTL)
	}
	// A change made elsewhere must be learnt in bounded time, and the
	// arithmetic below must not overflow: sync_interval is at most a
	// minute.
	if a.SyncInterval < 0 || a.SyncInterval > caddy.Duration(maxSyncInterval) {
		return fmt.Errorf("api_users: sync_interval %s is outside (0, %s]: it bounds how long a revocation made by another process takes to be enforced here; use a value such as 500ms",
			time.Duration(a.SyncInterval), maxSyncInterval)
	}
	if a.MaxStale == 0 {
		a.MaxStale = caddy.Duration(defaultMaxStale(time.Duration(a.SyncInterval)))
	}
	if a.MaxStale < 2*a.SyncInterval {
		return fmt.Errorf("api_users: max_stale %s is less than twice sync_interval %s, so a node would refuse cached users between two reads of the change log: raise max_stale or lower sync_interval",
			time.Duration(a.MaxStale), time.Duration(a.SyncInterval))
	}
	if err := a.validateConfig(); err != nil {
		return err
	}

	var err error
	switch a.Store.Driver {
	case "", "sqlite":
		if a.Store.URL != "" {
			return errors.New("api_users: the sqlite store takes a path, not a url; for PostgreSQL set the driver to postgres")
		}
		if a.clusterRates() {
			return errors.New(errClusterNeedsPostgres)
		}
		path := a.Store.Path
		if path == "" {
			path = filepath.Join(caddy.AppDataDir(), "api_users", "api_users.db")
		}
		a.Store.Path = path
		a.store, err = store.OpenSQLite(path)
		if err != nil {
			return fmt.Errorf("api_users: opening the SQLite store %s: %w", path, err)
		}
	case "postgres":
		if a.Store.Path != "" {
			return errors.New("api_users: the postgres store takes a connection string (url), not a path")
		}
		// Replaced here, not in the config, so the password can come from
		// the environment or a file and is never stored back.
		conn := caddy.NewReplacer().ReplaceKnown(a.Store.URL, "")
		if strings.TrimSpace(conn) == "" {
			return fmt.Errorf("api_users: the postgres store needs a connection string, such as: store postgres {env.DATABASE_URL}; %q is empty once its placeholders are replaced (is the variable set in Caddy's environment?)", a.Store.URL)
		}
		a.store, err = store.OpenPostgres(ctx, conn)
		if err != nil {
			return fmt.Errorf("api_users: %w", err)
		}
	default:
		return fmt.Errorf("api_users: unknown store driver %q: use \"sqlite\" or \"postgres\"", a.Store.Driver)
	}
	if wrapStoreForTest != nil {
		a.store = wrapStoreForTest(a.store)
	}

	if err := a.seedTenancy(ctx); err != nil {
		_ = a.store.Close()
		return err
	}
	seq, err := a.store.LastChange(ctx)
	if err != nil {
		_ = a.store.Close()
		return fmt.Errorf("api_users: reading the store's change log: %w", err)
	}
	a.lastSeq.Store(seq)
	a.lastSync.Store(a.now().UnixNano())
	if err := a.reloadView(ctx); err != nil {
		_ = a.store.Close()
		return err
	}
	a.cache, err = newPrincipalCache(a.Cache)
	if err != nil {
		_ = a.store.Close()
		return err
	}
	a.cache.metrics = &a.metrics.cache
	a.touches = newLastUsed(time.Duration(a.LastUsedInterval))
	return nil
}

// validateConfig checks the parts of the config that do not need the store,
// so a bad catalog fails at load with a message that names it.
func (a *App) validateConfig() error {
	_, err := a.buildView(nil, nil, nil)
	return err
}

// Start runs the loops that follow the store's change log (sync.go) and
// write last-used times.
func (a *App) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	// From now on the follower keeps the cache fresh, and cached users
	// are admitted only while it does (see checkFresh).
	a.maxStale.Store(int64(a.MaxStale))
	q := newAuditQueue(a.Audit, a.metrics.auditDropped, a.logger)
	q.start()
	a.auditQ.Store(q)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.followChanges(ctx)
	}()
	a.every(ctx, time.Duration(a.SyncInterval), a.exchangeCounters)
	a.every(ctx, time.Duration(a.Usage.FlushInterval), a.flushUsage)
	a.every(ctx, time.Hour, a.pruneUsage)
	a.every(ctx, time.Duration(a.LastUsedInterval), a.flushLastUsed)
	a.every(ctx, changePruneInterval, a.pruneChanges)
	return nil
}

// changePruner is implemented by the stores whose change log can be
// pruned (both of ours).
type changePruner interface {
	PruneChanges(ctx context.Context, olderThan time.Time) error
}

// pruneChanges deletes change records older than ChangeRetention (at
// start and then every hour). Every node does it; the deletes are
// idempotent.
func (a *App) pruneChanges(ctx context.Context) {
	p, ok := a.store.(changePruner)
	if !ok {
		return
	}
	if err := p.PruneChanges(ctx, a.now().Add(-time.Duration(a.ChangeRetention))); err != nil && ctx.Err() == nil {
		a.metrics.storePrune.Inc()
		a.logger.Warn("pruning the API-user store's change log", zap.Error(err))
	}
}

// every runs fn on a goroutine of the app at once and then every
// interval, until ctx is done; Stop waits for it.
func (a *App) every(ctx context.Context, interval time.Duration, fn func(ctx context.Context)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			fn(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the loops, writes the audit records still queued and the
// last-used times still pending. A gateway record that comes after (a
// request still finishing while the HTTP server shuts down gracefully) is
// written at once, before the log writers close.
func (a *App) Stop() error {
	if q := a.auditQ.Load(); q != nil {
		q.close(true)
	}
	if a.stop != nil {
		a.stop()
	}
	a.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.flushLastUsed(ctx)
	a.flushUsage(ctx)
	a.exchangeCounters(ctx)
	return nil
}

// Cleanup releases the cache and the store, so a config reload leaks
// neither.
func (a *App) Cleanup() error {
	if q := a.auditQ.Load(); q != nil {
		q.close(true) // drained by Stop already, unless Stop never ran
	}
	if a.limits != nil {
		releaseLimits(a.limitsK)
	}
	if a.cache != nil {
		a.cache.close()
	}
	if a.store != nil {
		return a.store.Close()
	}
	return nil
}

// syncLag is the value of caddy_api_users_store_sync_lag_seconds: how long
// ago this process last read the store's change log successfully.
func (a *App) syncLag() float64 {
	last := a.lastSync.Load()
	if last == 0 || a.now == nil {
		return 0
	}
	return a.now().Sub(time.Unix(0, last)).Seconds()
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
