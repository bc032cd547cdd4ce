package caddymodule

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apiusers/caddy-api-users/policy"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("api_users", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("api_users", parseGatewayDirective)
	// Authentication comes before anything that routes or responds, like
	// Caddy's own basic_auth, so `api_users` then `reverse_proxy` in a site
	// block works without a global `order` line.
	httpcaddyfile.RegisterDirectiveOrder("api_users", httpcaddyfile.Before, "basic_auth")

	httpcaddyfile.RegisterHandlerDirective("api_users_admin", parseAdminDirective)
	// After basic_auth and forward_auth, which name the caller, and with
	// respond: the handler answers every request it gets.
	httpcaddyfile.RegisterDirectiveOrder("api_users_admin", httpcaddyfile.Before, "respond")
}

// parseGlobalOption sets up the api_users app from the global option:
//
//	api_users {
//		store sqlite [<path>]
//		store postgres <connection string>
//		cache {
//			max_users    <n>
//			ttl          <duration>
//			negative_ttl <duration>
//		}
//		sync_interval      <duration>
//		max_stale          <duration>
//		last_used_interval <duration>
//		change_retention <duration>
//		audit {
//			mode        batch | sync
//			max_pending <n>
//			max_delay   <duration>
//		}
//		rate_limits node | cluster
//		usage {
//			flush_interval   <duration>
//			hourly_retention <duration>
//			daily_retention  <duration>
//		}
//		org <id> [<slug>] {
//			product <id> <slug>
//		}
//		role <name> <scope...>
//		endpoint <name> <METHOD[,METHOD...]> <path template> <scope>
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the api_users global option is given twice: merge them into one block")
	}
	var app App
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "api_users", Value: caddyconfig.JSON(&app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens. Every value is
// checked here, so a mistake fails at load with its line and the fix.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "store":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("store takes a driver, such as: store sqlite /var/lib/caddy/api_users.db, or: store postgres {env.DATABASE_URL}")
			}
			switch args[0] {
			case "sqlite":
				if len(args) > 2 {
					return d.Errf("store sqlite takes an optional path, such as: store sqlite /var/lib/caddy/api_users.db")
				}
				a.Store.Driver = args[0]
				if len(args) == 2 {
					a.Store.Path = args[1]
				}
			case "postgres":
				// The connection string is not echoed in these errors: it
				// may hold a password.
				if len(args) != 2 {
					return d.Errf("store postgres takes one connection string, such as: store postgres {env.DATABASE_URL} (quote a keyword=value string, which has spaces)")
				}
				a.Store.Driver, a.Store.URL = args[0], args[1]
			default:
				return d.Errf("unknown store driver %q: use sqlite, or postgres for several gateway nodes", args[0])
			}
		case "cache":
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "max_users":
					var s string
					if !d.AllArgs(&s) {
						return d.ArgErr()
					}
					n, err := strconv.ParseInt(s, 10, 64)
					if err != nil || n <= 0 {
						return d.Errf("max_users %q: give a positive whole number, such as 100000", s)
					}
					a.Cache.MaxUsers = n
				case "ttl":
					dur, err := parsePositiveDuration(d)
					if err != nil {
						return err
					}
					a.Cache.TTL = dur
				case "negative_ttl":
					dur, err := parsePositiveDuration(d)
					if err != nil {
						return err
					}
					a.Cache.NegativeTTL = dur
				default:
					return d.Errf("unknown cache setting %q: use max_users, ttl or negative_ttl", d.Val())
				}
			}
		case "audit":
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "mode":
					if !d.AllArgs(&a.Audit.Mode) {
						return d.Errf("audit mode takes one value: batch (the default) or sync")
					}
					if a.Audit.Mode != AuditModeBatch && a.Audit.Mode != AuditModeSync {
						return d.Errf("audit mode %q: use batch (records written within max_delay) or sync (every record on disk before the response)", a.Audit.Mode)
					}
				case "max_pending":
					var s string
					if !d.AllArgs(&s) {
						return d.ArgErr()
					}
					n, err := strconv.Atoi(s)
					if err != nil || n <= 0 {
						return d.Errf("audit max_pending %q: give a positive number of records, such as %d", s, defaultAuditMaxPending)
					}
					a.Audit.MaxPending = n
				case "max_delay":
					dur, err := parsePositiveDuration(d)
					if err != nil {
						return err
					}
					if time.Duration(dur) < time.Millisecond {
						return d.Errf("audit max_delay %s: give a duration of at least 1ms, such as 200ms", time.Duration(dur))
					}
					a.Audit.MaxDelay = dur
				default:
					return d.Errf("unknown audit setting %q: use mode, max_pending or max_delay", d.Val())
				}
			}
		case "sync_interval":
			dur, err := parsePositiveDuration(d)
			if err != nil {
				return err
			}
			if time.Duration(dur) > maxSyncInterval {
				return d.Errf("sync_interval %s is longer than %s: it bounds how long a revocation made by another process takes to be enforced here; use a value such as 500ms", time.Duration(dur), maxSyncInterval)
			}
			if a.MaxStale != 0 && a.MaxStale < 2*dur {
				return d.Errf("sync_interval %s is more than half of max_stale %s, so a node would refuse cached users between two reads of the change log: lower sync_interval or raise max_stale", time.Duration(dur), time.Duration(a.MaxStale))
			}
			a.SyncInterval = dur
		case "max_stale":
			dur, err := parsePositiveDuration(d)
			if err != nil {
				return err
			}
			if a.SyncInterval != 0 && dur < 2*a.SyncInterval {
				return d.Errf("max_stale %s is less than twice sync_interval %s, so a node would refuse cached users between two reads of the change log: raise max_stale or lower sync_interval", time.Duration(dur), time.Duration(a.SyncInterval))
			}
			a.MaxStale = dur
		case "last_used_interval":
			dur, err := parsePositiveDuration(d)
			if err != nil {
				return err
			}
			a.LastUsedInterval = dur
		case "change_retention":
			dur, err := parsePositiveDuration(d)
			if err != nil {
				return err
			}
			a.ChangeRetention = dur
		case "org":
			args := d.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return d.Errf("org takes an ID and an optional slug, such as: org acme { product 1337 my-product-v1 }")
			}
			org := OrgConfig{ID: args[0]}
			if len(args) == 2 {
				org.Slug = args[1]
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if d.Val() != "product" {
					return d.Errf("unknown setting %q in org %s: use product <id> <slug>", d.Val(), org.ID)
				}
				var idStr, slug string
				if !d.AllArgs(&idStr, &slug) {
					return d.Errf("product takes a numeric ID and a slug, such as: product 1337 my-product-v1")
				}
				id, err := strconv.ParseInt(idStr, 10, 64)
				if err != nil || id <= 0 {
					return d.Errf("product ID %q: give a positive number, such as 1337", idStr)
				}
				org.Products = append(org.Products, ProductConfig{ID: id, Slug: slug})
			}
			a.Orgs = append(a.Orgs, org)
			if _, err := policy.NewTenancy(a.tenancyConfig()); err != nil {
				return d.Errf("%v", err)
			}
		case "role":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("role takes a name and one or more scopes, such as: role device-reader devices:list devices:get")
			}
			if !validRoleName(args[0]) {
				return d.Errf("role name %q: use lowercase letters, digits, '-' and '_', starting with a letter", args[0])
			}
			for _, r := range a.Roles {
				if r.Name == args[0] {
					return d.Errf("role %q is defined twice: give each role one definition", args[0])
				}
			}
			if _, err := policy.ParseScopes(args[1:]); err != nil {
				return d.Errf("role %s: %v", args[0], err)
			}
			a.Roles = append(a.Roles, RoleConfig{Name: args[0], Scopes: args[1:]})
		case "endpoint":
			var name, methods, path, scope string
			if !d.AllArgs(&name, &methods, &path, &scope) {
				return d.Errf("endpoint takes a name, methods, a path template and a scope, such as: endpoint list-devices GET /v1/products/{product}/devices devices:list")
			}
			if err := policy.ParseTemplate(path); err != nil {
				return d.Errf("endpoint %s: %v", name, err)
			}
			if _, err := policy.ParseScope(scope); err != nil {
				return d.Errf("endpoint %s: %v", name, err)
			}
			ep := EndpointConfig{Name: name, Methods: strings.Split(methods, ","), Path: path, Scope: scope}
			a.Endpoints = append(a.Endpoints, ep)
			if _, err := policy.NewCatalog(a.policyEndpoints()); err != nil {
				return d.Errf("%v", err)
			}
		case "rate_limits":
			if !d.AllArgs(&a.RateLimits) {
				return d.Errf("rate_limits takes one value: node (each node counts its own requests, the default) or cluster (a user's total over every node of a PostgreSQL store)")
			}
			if a.RateLimits != rateLimitsNode && a.RateLimits != rateLimitsCluster {
				return d.Errf("rate_limits %q: use node (each node counts its own requests) or cluster (a user's total over every node of a PostgreSQL store)", a.RateLimits)
			}
		case "usage":
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				setting := d.Val()
				dur, err := parsePositiveDuration(d)
				if err != nil {
					return err
				}
				switch setting {
				case "flush_interval":
					a.Usage.FlushInterval = dur
				case "hourly_retention":
					a.Usage.HourlyRetention = dur
				case "daily_retention":
					a.Usage.DailyRetention = dur
				default:
					return d.Errf("unknown usage setting %q: use flush_interval, hourly_retention or daily_retention", setting)
				}
				if err := (&UsageConfig{FlushInterval: a.Usage.FlushInterval, HourlyRetention: a.Usage.HourlyRetention, DailyRetention: a.Usage.DailyRetention}).check(); err != nil {
					return d.Errf("%v", err)
				}
			}
		default:
			return d.Errf("unknown api_users setting %q: use store, cache, sync_interval, max_stale, last_used_interval, change_retention, audit, rate_limits, usage, org, role or endpoint", d.Val())
		}
	}
	if a.clusterRates() && a.Store.Driver != "postgres" {
		return d.Errf("%s", strings.TrimPrefix(errClusterNeedsPostgres, "api_users: "))
	}
	return nil
}

// parsePositiveDuration reads one duration argument, such as 500ms or 5m.
func parsePositiveDuration(d *caddyfile.Dispenser) (caddy.Duration, error) {
	name := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s %q: give a positive duration, such as 500ms, 30s or 5m", name, s)
	}
	return caddy.Duration(dur), nil
}

// parseGatewayDirective sets up the gateway handler:
//
//	api_users {
//		proxied_user_header <name>
//		lockout <failures> <window> | off
//		lockout_ipv6_prefix <bits>
//		rate_limit <requests> <window>
//		quota <requests> day | month
//		pass_through
//		audit_log <name>
//	}
func parseGatewayDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var g Gateway
	if err := g.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return &g, nil
}

// UnmarshalCaddyfile sets up the gateway handler from Caddyfile tokens.
func (g *Gateway) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.Errf("api_users takes no arguments here; the users, catalog and store are set in the api_users global option")
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "proxied_user_header":
			if !d.AllArgs(&g.ProxiedUserHeader) {
				return d.ArgErr()
			}
			if err := checkProxiedUserHeader(g.ProxiedUserHeader); err != nil {
				return d.Errf("%v", err)
			}
		case "pass_through":
			if d.NextArg() {
				return d.Errf("pass_through takes no arguments: write it alone to pass requests without an API-user credential to the upstream")
			}
			g.PassThrough = true
		case "audit_log":
			if !d.AllArgs(&g.AuditLog) {
				return d.Errf("audit_log takes one name, such as: audit_log partners (records go to http.handlers.api_users.audit.partners)")
			}
			if err := checkAuditLogName(g.AuditLog); err != nil {
				return d.Errf("%v", err)
			}
		case "lockout":
			args := d.RemainingArgs()
			if len(args) == 1 && args[0] == "off" {
				g.LockoutThreshold = -1
				continue
			}
			if len(args) != 2 {
				return d.Errf("lockout takes a number of failures and a window, such as: lockout 10 5m (or: lockout off)")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return d.Errf("lockout failures %q: give a positive whole number, such as 10", args[0])
			}
			dur, err := caddy.ParseDuration(args[1])
			if err != nil || dur <= 0 {
				return d.Errf("lockout window %q: give a positive duration, such as 5m", args[1])
			}
			g.LockoutThreshold, g.LockoutWindow = n, caddy.Duration(dur)
		case "lockout_ipv6_prefix":
			var arg string
			if !d.AllArgs(&arg) {
				return d.Errf("lockout_ipv6_prefix takes the number of leading bits of an IPv6 address that name one client, such as: lockout_ipv6_prefix 64")
			}
			n, err := strconv.Atoi(strings.TrimPrefix(arg, "/"))
			if err != nil || n < 16 || n > 128 {
				return d.Errf("lockout_ipv6_prefix %q: give a prefix length from 16 to 128, such as 64 (one client's usual allocation) or 128 (each address alone)", arg)
			}
			g.LockoutIPv6Prefix = n
		case "rate_limit":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("rate_limit takes a number of requests and a window, such as: rate_limit 600 1m (each API user may send 600 requests a minute)")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return d.Errf("rate_limit requests %q: give a positive whole number, such as 600", args[0])
			}
			dur, err := caddy.ParseDuration(args[1])
			if err != nil {
				return d.Errf("rate_limit window %q: give a duration of at least 1s, such as 1m", args[1])
			}
			g.RateLimit = &RateLimitConfig{Requests: n, Window: caddy.Duration(dur)}
			if err := g.RateLimit.check(); err != nil {
				return d.Errf("%v", err)
			}
		case "quota":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("quota takes a number of requests and a period, such as: quota 100000 month (each API user may have 100000 requests allowed per calendar month, UTC)")
			}
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return d.Errf("quota requests %q: give a positive whole number, such as 100000", args[0])
			}
			g.Quota = &QuotaConfig{Requests: n, Period: args[1]}
			if _, err := g.Quota.quota(); err != nil {
				return d.Errf("%v", err)
			}
		default:
			return d.Errf("unknown api_users setting %q: use proxied_user_header, lockout, lockout_ipv6_prefix, rate_limit, quota, pass_through or audit_log (users, endpoints and the store go in the api_users global option)", d.Val())
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Gateway)(nil)
	_ caddyfile.Unmarshaler = (*Admin)(nil)
)

// parseAdminDirective sets up the management handler:
//
//	api_users_admin {
//		actor <placeholder>
//	}
func parseAdminDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var a Admin
	if err := a.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return &a, nil
}

// UnmarshalCaddyfile sets up the management handler from Caddyfile tokens.
func (h *Admin) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.Errf("api_users_admin takes no arguments; mount it with handle or route, and protect it with bind, basic_auth or forward_auth")
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "actor":
			if !d.AllArgs(&h.Actor) {
				return d.Errf("actor takes one placeholder that names the caller, such as: actor {http.request.header.Remote-User}")
			}
		default:
			return d.Errf("unknown api_users_admin setting %q: use actor", d.Val())
		}
	}
	return nil
}
