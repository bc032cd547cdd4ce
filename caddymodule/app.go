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
	"github.com/apiusers/caddy-api-users/policy"
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

// view is what decisions read, swapped whole when the catalog changes.
type view struct {
	catalog *policy.Catalog
	tenancy *policy.Tenancy
	roles   map[string][]policy.Scope
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

// buildView compiles the config's catalog, orgs and roles, plus any orgs,
// products and roles kept in the store. An entry in the config wins over a
// store entry of the same name, so the Caddyfile stays the source of truth
// for what it declares.
func (a *App) buildView(storeOrgs []policy.Org, storeProducts []policy.Product, storeRoles []store.Role) (*view, error) {
	endpoints := make([]policy.Endpoint, 0, len(a.Endpoints))
	for _, e := range a.Endpoints {
		endpoints = append(endpoints, policy.Endpoint{Name: e.Name, Methods: e.Methods, Path: e.Path, Scope: policy.Scope(e.Scope)})
	}
	catalog, err := policy.NewCatalog(endpoints)
	if err != nil {
		return nil, fmt.Errorf("api_users: endpoint catalog: %w", err)
	}

	orgs, products := a.tenancyConfig()
	if _, err := policy.NewTenancy(orgs, products); err != nil {
		return nil, fmt.Errorf("api_users: orgs and products: %w", err)
	}
	orgs, products = a.addStoreTenancy(orgs, products, storeOrgs, storeProducts)
	tenancy, err := policy.NewTenancy(orgs, products)
	if err != nil {
		// addStoreTenancy admits only entries that fit; this is a bug.
		return nil, fmt.Errorf("api_users: orgs and products: %w", err)
	}

	roles := map[string][]policy.Scope{}
	for _, r := range a.Roles {
		if !validRoleName(r.Name) {
			return nil, fmt.Errorf("api_users: role %q: a role name is lowercase letters, digits, '-' and '_', starting with a letter", r.Name)
		}
		if _, dup := roles[r.Name]; dup {
			return nil, fmt.Errorf("api_users: role %q is defined twice: give each role one definition", r.Name)
		}
		scopes, err := policy.ParseScopes(r.Scopes)
		if err != nil {
			return nil, fmt.Errorf("api_users: role %q: %w", r.Name, err)
		}
		roles[r.Name] = scopes
	}
	for _, r := range storeRoles {
		if _, fromConfig := roles[r.Name]; fromConfig {
			continue
		}
		scopes, err := policy.ParseScopes(r.Scopes)
		if err != nil {
			// A role written by an older or broken writer must not take
			// the gateway down; it grants nothing until it is fixed.
			a.logger.Error("ignoring invalid role in store", zap.String("role", r.Name), zap.Error(err))
			continue
		}
		roles[r.Name] = scopes
	}
	return &view{catalog: catalog, tenancy: tenancy, roles: roles}, nil
}

// addStoreTenancy appends to the config's orgs and products those of the
// store that fit beside them. The config wins for the IDs it declares. A
// store entry that is invalid or clashes with another (an org slug already
// naming another org, a product slug or ID already taken, a product of an
// unknown org) is left out and logged rather than failing the reload: one bad
// row written by another process must not take the catalog down, and
// leaving it out only takes rights away (requests naming it get 403).
func (a *App) addStoreTenancy(orgs []policy.Org, products []policy.Product, storeOrgs []policy.Org, storeProducts []policy.Product) ([]policy.Org, []policy.Product) {
	orgName := map[string]string{} // org ID or slug -> org ID
	for _, o := range orgs {
		orgName[o.ID] = o.ID
		if o.Slug != "" {
			orgName[o.Slug] = o.ID
		}
	}
	productID := map[int64]bool{}
	productSlug := map[string]bool{}
	for _, p := range products {
		productID[p.ID] = true
		if p.Slug != "" {
			productSlug[p.Slug] = true
		}
	}
	skip := func(what string, err error) {
		if a.logger != nil {
			a.logger.Warn("ignoring "+what+" in the store", zap.Error(err))
		}
	}
	for _, o := range storeOrgs {
		if owner, ok := orgName[o.ID]; ok && owner == o.ID {
			continue // declared in the config, which wins
		}
		if _, err := policy.NewTenancy([]policy.Org{o}, nil); err != nil {
			skip("invalid org", err)
			continue
		}
		if owner, ok := orgName[o.ID]; ok {
			skip("org", fmt.Errorf("org %q: the ID is already the slug of org %q", o.ID, owner))
			continue
		}
		if owner, ok := orgName[o.Slug]; ok && o.Slug != "" && o.Slug != o.ID {
			skip("org", fmt.Errorf("org %q: slug %q already names org %q", o.ID, o.Slug, owner))
			continue
		}
		orgs = append(orgs, o)
		orgName[o.ID] = o.ID
		if o.Slug != "" {
			orgName[o.Slug] = o.ID
		}
	}
	for _, p := range storeProducts {
		if productID[p.ID] {
			continue // declared in the config, or a duplicate row
		}
		if _, err := policy.NewTenancy([]policy.Org{{ID: p.Org}}, []policy.Product{p}); err != nil {
			skip("invalid product", err)
			continue
		}
		if owner, ok := orgName[p.Org]; !ok || owner != p.Org {
			skip("product", fmt.Errorf("product %d belongs to org %q, which is not known", p.ID, p.Org))
			continue
		}
		if p.Slug != "" && productSlug[p.Slug] {
			skip("product", fmt.Errorf("product %d: slug %q already names another product", p.ID, p.Slug))
			continue
		}
		products = append(products, p)
		productID[p.ID] = true
		if p.Slug != "" {
			productSlug[p.Slug] = true
		}
	}
	return orgs, products
}

// seedTenancy writes the orgs and products declared in the config to the
// store, where they are missing or differ, so every process on the store
// (other nodes, the CLI) knows them and the store can keep each user inside
// an existing org and product. The config stays authoritative for what it
// declares; the store may hold more, managed through the API.
func (a *App) seedTenancy(ctx context.Context) error {
	orgs, err := a.store.ListOrgs(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading orgs from the store: %w", err)
	}
	products, err := a.store.ListProducts(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading products from the store: %w", err)
	}
	haveOrg := map[string]policy.Org{}
	for _, o := range orgs {
		haveOrg[o.ID] = o
	}
	haveProduct := map[int64]policy.Product{}
	for _, p := range products {
		haveProduct[p.ID] = p
	}
	wantOrgs, wantProducts := a.tenancyConfig()
	for _, o := range wantOrgs {
		if have, ok := haveOrg[o.ID]; ok && have == o {
			continue
		}
		if err := a.store.PutOrg(ctx, o); err != nil {
			return fmt.Errorf("api_users: writing org %q of the config to the store: %w", o.ID, err)
		}
	}
	for _, p := range wantProducts {
		if have, ok := haveProduct[p.ID]; ok && have == p {
			continue
		}
		if err := a.store.PutProduct(ctx, p); err != nil {
			return fmt.Errorf("api_users: writing product %d of the config to the store: %w", p.ID, err)
		}
	}
	return nil
}

// reloadView rebuilds the view from the config and the store. Reloads are
// serialised: without that, a reload that read the store before a change
// could publish its view after the reload that read the change, and the
// change would be lost until the next one.
func (a *App) reloadView(ctx context.Context) error {
	a.viewMu.Lock()
	defer a.viewMu.Unlock()
	orgs, err := a.store.ListOrgs(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading orgs from the store: %w", err)
	}
	products, err := a.store.ListProducts(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading products from the store: %w", err)
	}
	roles, err := a.store.ListRoles(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading roles from the store: %w", err)
	}
	v, err := a.buildView(orgs, products, roles)
	if err != nil {
		return err
	}
	a.view.Store(v)
	return nil
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
	a.wg.Add(3)
	go func() {
		defer a.wg.Done()
		a.followChanges(ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.flushLastUsedLoop(ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.pruneChangesLoop(ctx)
	}()
	return nil
}

// changePruner is implemented by the stores whose change log can be
// pruned (both of ours).
type changePruner interface {
	PruneChanges(ctx context.Context, olderThan time.Time) error
}

// pruneChangesLoop deletes change records older than ChangeRetention, at
// start and then every hour. Every node does it; the deletes are idempotent.
func (a *App) pruneChangesLoop(ctx context.Context) {
	p, ok := a.store.(changePruner)
	if !ok {
		return
	}
	t := time.NewTicker(changePruneInterval)
	defer t.Stop()
	for {
		if err := p.PruneChanges(ctx, a.now().Add(-time.Duration(a.ChangeRetention))); err != nil && ctx.Err() == nil {
			a.metrics.storePrune.Inc()
			a.logger.Warn("pruning the API-user store's change log", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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

// flushLastUsedLoop writes last-used times every LastUsedInterval.
func (a *App) flushLastUsedLoop(ctx context.Context) {
	t := time.NewTicker(time.Duration(a.LastUsedInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.flushLastUsed(ctx)
		}
	}
}

func (a *App) flushLastUsed(ctx context.Context) {
	pending := a.touches.take()
	if len(pending) == 0 {
		return
	}
	if err := a.store.TouchUsers(ctx, pending); err != nil {
		a.metrics.storeTouchUsers.Inc()
		a.logger.Error("writing last-used times", zap.Int("users", len(pending)), zap.Error(err))
		a.touches.putBack(pending)
	}
}

// principal returns the compiled user for an ID, from the cache or the
// store. A nil principal with a nil error means no such user. It fails
// closed while the store cannot be followed (see sync.go).
func (a *App) principal(ctx context.Context, id string) (*cachedUser, error) {
	if err := a.checkFresh(); err != nil {
		return nil, err
	}
	return a.lookupPrincipal(ctx, id)
}

// lookupPrincipal is principal without the freshness check, for callers
// that made it already.
func (a *App) lookupPrincipal(ctx context.Context, id string) (*cachedUser, error) {
	return a.cache.user(id, func() (*policy.Principal, error) {
		if a.storeDown.Load() {
			return nil, errStoreDown
		}
		ctx, cancel := storeRead(ctx)
		defer cancel()
		u, err := a.store.GetUser(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			// Compile a decoy, as a known user is compiled, so that an
			// unknown ID's first request costs what a known one's does.
			policy.Compile(&decoyUser, a.view.Load().roles)
			return nil, nil
		}
		if err != nil {
			a.metrics.storeGetUser.Inc()
			return nil, err
		}
		return policy.Compile(u, a.view.Load().roles), nil
	})
}

// decoyUser is compiled in place of a user the store does not have.
var decoyUser = policy.APIUser{
	ID: "decoy", Org: "decoy",
	Scopes: []policy.Scope{"devices:list", "devices:get"},
	Keys:   []policy.Key{{ID: "0000000000000000"}},
}

// principalByToken returns the compiled user that holds the token with
// hash h, or nil when no user does.
func (a *App) principalByToken(ctx context.Context, h policy.Hash) (*cachedUser, error) {
	if err := a.checkFresh(); err != nil {
		return nil, err
	}
	te, err := a.cache.token(h, func() (string, error) {
		if a.storeDown.Load() {
			return "", errStoreDown
		}
		ctx, cancel := storeRead(ctx)
		defer cancel()
		id, err := a.store.UserIDByTokenHash(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil
		}
		if err != nil {
			a.metrics.storeUserByToken.Inc()
		}
		return id, err
	})
	if err != nil || te.owner == "" {
		return nil, err
	}
	// One lookup, the token's, is enough while its link to the owner's
	// entry holds; otherwise the owner is looked up by ID, and linked.
	cu := a.cache.linked(te)
	if cu == nil {
		if cu, err = a.lookupPrincipal(ctx, te.owner); err != nil || cu == nil || cu.p == nil {
			return nil, err
		}
		a.cache.link(te, cu)
	}
	if !policy.VerifyToken(cu.p.User, h) {
		// The owner no longer holds the token (it was replaced), or this
		// process's copy of the owner is older than the token (another
		// process replaced it, and the sync has not dropped the copy yet).
		// The token is not remembered as unknown: in the second case it is
		// the owner's current one and must work once the copy is dropped.
		// A replaced token costs no store read anyway: its owner entry
		// leads to the cached user.
		return nil, nil
	}
	return cu, nil
}

// cachedCredential returns the user a well-formed credential belongs to
// when the cache alone shows the credential is valid, and nil in every
// other case (a miss, an unknown or wrong credential, a store that cannot
// be followed), which the caller settles with the store. It never does
// I/O, so the gateway may use it before the lockout: a client that has a
// good credential passes even when others behind its address guessed too
// often, at no cost to the store. h is the token's hash, for a bearer
// token.
func (a *App) cachedCredential(cred *policy.Credential, h policy.Hash, now time.Time) *cachedUser {
	if a.checkFresh() != nil {
		return nil
	}
	switch cred.Kind {
	case policy.BearerToken:
		te, ok := a.cache.peekToken(h)
		if !ok || te.owner == "" {
			return nil
		}
		// One lookup, the token's, while its link to the owner's entry
		// holds (see principalByToken).
		cu := a.cache.linked(te)
		if cu == nil {
			if cu, ok = a.cache.peekUser(te.owner); !ok {
				return nil
			}
			a.cache.link(te, cu)
		}
		if cu.p == nil || !policy.VerifyToken(cu.p.User, h) {
			return nil
		}
		return cu
	case policy.KeyAndSecret:
		cu, ok := a.cache.peekUser(cred.UserID)
		if !ok {
			return nil
		}
		var u *policy.APIUser
		if cu.p != nil {
			u = cu.p.User
		}
		// Verified even for an unknown ID (u == nil, a dummy comparison),
		// so that a cached unknown ID costs what a cached known one does.
		if _, ok := policy.VerifyKeyAndSecret(u, cred.Key, cred.Secret, now); !ok {
			return nil
		}
		return cu
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

// endpointNames lists the catalog's endpoint names in configuration order,
// which is the order of policy.Endpoint.Index.
func (a *App) endpointNames() []string {
	names := make([]string, len(a.Endpoints))
	for i, e := range a.Endpoints {
		names[i] = e.Name
	}
	return names
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
