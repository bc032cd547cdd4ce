package caddymodule

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apiusers/caddy-api-users/policy"
)

// The BenchmarkLayer_ benchmarks measure the steps of the gateway's
// decision path that live in this package, one at a time, so a regression
// in BenchmarkGatewayDecision (the whole handler) can be traced to a step.
// The steps that live in package policy (credential parsing, token
// hashing, path check, catalog match, authorization) are benchmarked
// there. Each benchmark checks its result, so it cannot silently measure a
// failure path.

const layerPath = "/v1/products/my-product-v1/devices/0a1b2c3d"

// counterValue reads a Prometheus counter.
func counterValue(tb testing.TB, c prometheus.Counter) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// BenchmarkLayer_CacheLookup is the lookup of a cached user, as the gateway
// makes it: by ID for a key and secret (App.principal), by token hash for
// a bearer token (App.principalByToken: the token's owner, then the owner,
// then a check of the owner's current token hash), and for a token nobody
// holds, which the cache remembers as unknown. The store behind the cache
// is real, but a benchmark fails if any lookup in it misses the cache.
func BenchmarkLayer_CacheLookup(b *testing.B) {
	g := startGateway(b, gatewayOptions{})
	app := g.app
	id, iss := g.createUser(Tenant{Product: "my-product-v1"}, UserSpec{Scopes: strs("devices:list", "devices:get")})
	unknown, _ := policy.NewToken()
	ctx := context.Background()
	tokenHash, unknownHash := policy.HashOf(iss.Token), policy.HashOf(unknown)

	// Let the change follower read the user's creation before the cache
	// fills, so that it drops nothing during the measurement.
	time.Sleep(200 * time.Millisecond)

	cm := &app.metrics.cache
	noMisses := func(b *testing.B, f func(b *testing.B)) {
		userMisses, tokenMisses := counterValue(b, cm.userMisses), counterValue(b, cm.tokenMisses)
		f(b)
		if n := counterValue(b, cm.userMisses) - userMisses; n != 0 {
			b.Fatalf("%v user lookups missed the cache", n)
		}
		if n := counterValue(b, cm.tokenMisses) - tokenMisses; n != 0 {
			b.Fatalf("%v token lookups missed the cache", n)
		}
	}

	b.Run("user-hit", func(b *testing.B) {
		want, err := app.principal(ctx, id) // fills the cache
		if err != nil || want == nil || want.p == nil || want.p.User.ID != id {
			b.Fatalf("user %s: %+v, %v", id, want, err)
		}
		noMisses(b, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if cu, _ := app.principal(ctx, id); cu != want {
					b.Fatalf("user %s: got %p, want the cached %p", id, cu, want)
				}
			}
		})
	})
	b.Run("token-hit", func(b *testing.B) {
		want, err := app.principalByToken(ctx, tokenHash) // fills the cache
		if err != nil || want == nil || want.p == nil || want.p.User.ID != id {
			b.Fatalf("token of %s: %+v, %v", id, want, err)
		}
		noMisses(b, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if cu, _ := app.principalByToken(ctx, tokenHash); cu != want {
					b.Fatalf("token of %s: got %p, want the cached %p", id, cu, want)
				}
			}
		})
	})
	b.Run("token-unknown-negative-hit", func(b *testing.B) {
		// The first lookup reads the store and remembers the token as
		// unknown; the measured ones must not read it again.
		if cu, err := app.principalByToken(ctx, unknownHash); cu != nil || err != nil {
			b.Fatalf("unknown token: %+v, %v", cu, err)
		}
		noMisses(b, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if cu, err := app.principalByToken(ctx, unknownHash); cu != nil || err != nil {
					b.Fatalf("unknown token: %+v, %v", cu, err)
				}
			}
		})
	})
}

// layerHeaderSets are request headers as the gateway receives them:
// "minimal" is BenchmarkGatewayDecision's, "realistic" what an HTTP client
// library behind a load balancer sends.
func layerHeaderSets(auth string) []struct {
	name string
	h    http.Header
} {
	return []struct {
		name string
		h    http.Header
	}{
		{"minimal", http.Header{"Authorization": {auth}, "User-Agent": {"bench"}}},
		{"realistic", http.Header{
			"Authorization":     {auth},
			"User-Agent":        {"python-requests/2.32.3"},
			"Accept":            {"application/json"},
			"Accept-Encoding":   {"gzip, deflate, br"},
			"Accept-Language":   {"en-GB,en;q=0.9"},
			"Connection":        {"keep-alive"},
			"Traceparent":       {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			"X-Request-Id":      {"5f0c6a7e-2b1d-4c8e-9a3f-7d6e5c4b3a21"},
			"X-Forwarded-For":   {"203.0.113.7"},
			"X-Forwarded-Proto": {"https"},
			"X-Amzn-Trace-Id":   {"Root=1-67891233-abcdef012345678912345678"},
		}},
	}
}

// layerUser is read through a variable, so the compiler cannot treat its
// fields as constants, as the gateway cannot.
var layerUser = &policy.APIUser{ID: "svc-1337", Org: "acme", Product: 1337}

// newAuthInfo is what the gateway establishes about an allowed request of
// a product-scoped user acting for itself: one allocation per request.
func newAuthInfo(u *policy.APIUser) *authInfo {
	return &authInfo{
		id: u.ID, org: u.Org, product: "1337", acting: u.ID,
		endpoint: "get-device", credentialID: "at_0123456789ab",
	}
}

var sinkRequestHeaders requestHeaders

// BenchmarkLayer_Headers is the header work of an allowed request: the scan
// for method overrides and the proxied-user header, the strip of the
// client's Authorization and identity headers (and of identity names in
// Connection), and the rewrite that sets the identity headers, with the
// request's authInfo, whose allocation serves the placeholders too. Each
// iteration puts back the Authorization the strip removed, one map write,
// so every iteration strips what a fresh request would make it strip; the
// identity headers the previous iteration set are stripped too, as a
// client's spoofed ones would be.
func BenchmarkLayer_Headers(b *testing.B) {
	hr := newHeaderRules("")
	tok, _ := policy.NewToken()
	auth := []string{"Bearer " + tok}
	u := layerUser
	for _, set := range layerHeaderSets(auth[0]) {
		b.Run(set.name+"/scan", func(b *testing.B) {
			h := set.h.Clone()
			h[hr.proxiedCanon] = []string{"alice"}
			if got := hr.scan(h); got.proxiedCount != 1 || got.proxiedUser != "alice" || got.methodOverride {
				b.Fatalf("scan: %+v", got)
			}
			delete(h, hr.proxiedCanon)
			b.ReportAllocs()
			for b.Loop() {
				sinkRequestHeaders = hr.scan(h)
			}
		})
		b.Run(set.name+"/strip", func(b *testing.B) {
			h := set.h.Clone()
			hr.strip(h, false)
			if _, ok := h["Authorization"]; ok {
				b.Fatal("strip kept the Authorization header")
			}
			b.ReportAllocs()
			for b.Loop() {
				h["Authorization"] = auth
				hr.strip(h, false)
			}
		})
		b.Run(set.name+"/rewrite", func(b *testing.B) {
			h := set.h.Clone()
			b.ReportAllocs()
			for b.Loop() {
				newAuthInfo(u).setHeaders(h, hr.proxiedCanon)
			}
			if h.Get(HeaderAPIUserProduct) != "1337" {
				b.Fatalf("rewrite: %v", h)
			}
		})
		b.Run(set.name+"/scan+strip+rewrite", func(b *testing.B) {
			h := set.h.Clone()
			want := len(h) - 1 + 4 // no Authorization; four identity headers
			b.ReportAllocs()
			for b.Loop() {
				h["Authorization"] = auth
				sinkRequestHeaders = hr.scan(h)
				hr.strip(h, false)
				newAuthInfo(u).setHeaders(h, hr.proxiedCanon)
			}
			if _, ok := h["Authorization"]; ok || len(h) != want || h.Get(HeaderActingUser) != u.ID {
				b.Fatalf("headers after the gateway: %v", h)
			}
			if c, ok := set.h["Connection"]; ok && h.Get("Connection") != c[0] {
				b.Fatalf("strip changed Connection to %q", h.Get("Connection"))
			}
		})
	}
}

// countingSink is the audit log's destination: it counts records and keeps
// the first.
type countingSink struct {
	mu    sync.Mutex
	n     int
	first []byte
}

func (s *countingSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.n == 0 {
		s.first = bytes.Clone(p)
	}
	s.n++
	s.mu.Unlock()
	return len(p), nil
}

func (s *countingSink) Sync() error { return nil }

// layerAuditRecord is the record of an allowed bearer-token request.
func layerAuditRecord(b *testing.B) *auditRecord {
	b.Helper()
	c, err := policy.NewCatalog([]policy.Endpoint{
		{Name: "get-device", Methods: []string{"GET"}, Path: "/v1/products/{product}/devices/{device}", Scope: "devices:get"},
	})
	if err != nil {
		b.Fatal(err)
	}
	ep, _, ok := c.Match("GET", layerPath)
	if !ok {
		b.Fatal("the catalog does not match")
	}
	_, h := policy.NewToken()
	p := policy.Compile(&policy.APIUser{ID: "svc-1337", Org: "acme", Product: 1337, Scopes: []policy.Scope{"devices:get"}}, nil)
	return &auditRecord{
		start: time.Now(), method: "GET", path: layerPath, clientIP: "203.0.113.7",
		credentialID: policy.TokenIDOf(h), principal: p, endpoint: ep, product: "1337", status: http.StatusOK,
	}
}

// BenchmarkLayer_Audit writes the audit record of an allowed request:
// "json" through a zap logger with a JSON encoder, as Caddy's default log
// has, to a writer that discards it; "off" with the audit logger disabled.
func BenchmarkLayer_Audit(b *testing.B) {
	rec := layerAuditRecord(b)
	b.Run("json", func(b *testing.B) {
		out := &countingSink{}
		app := &App{audit: zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), out, zap.InfoLevel))}
		sink := newAuditSink(app.audit, nil, nil)
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			app.writeAudit(sink, rec, policy.Allowed)
			n++
		}
		if out.n != n {
			b.Fatalf("%d records for %d decisions", out.n, n)
		}
		for _, want := range []string{`"decision":"allow"`, `"api_user":"svc-1337"`, `"endpoint":"get-device"`, `"credential_id":"at_`} {
			if !bytes.Contains(out.first, []byte(want)) {
				b.Fatalf("audit record lacks %s: %s", want, out.first)
			}
		}
	})
	b.Run("off", func(b *testing.B) {
		app := &App{audit: zap.NewNop()}
		sink := newAuditSink(app.audit, nil, nil)
		if app.audit.Check(zapcore.InfoLevel, "") != nil {
			b.Fatal("the audit logger is enabled")
		}
		b.ReportAllocs()
		for b.Loop() {
			app.writeAudit(sink, rec, policy.Allowed)
		}
	})
}

// BenchmarkLayer_Metrics counts one decision, as the gateway does for
// every request: a histogram observation and a counter increment.
func BenchmarkLayer_Metrics(b *testing.B) {
	m := newMetrics([]string{"list-devices", "get-device"}, func() float64 { return 0 })
	const endpoint, outcome = 1, int(policy.Allowed)
	m.decided(endpoint, outcome, time.Microsecond) // resolves the counter
	cell := m.cells[endpoint*len(outcomeCodes)+outcome].Load()
	if cell == nil {
		b.Fatal("the decision counter was not resolved")
	}
	before := counterValue(b, cell.c)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		m.decided(endpoint, outcome, time.Microsecond)
		n++
	}
	if got := counterValue(b, cell.c) - before; got != float64(n) {
		b.Fatalf("counted %v decisions of %d", got, n)
	}
}

// BenchmarkLayer_Placeholders makes the {http.auth.user.*} placeholders
// and the request variable of an allowed request, as the gateway does, on a
// replacer as Caddy's HTTP server makes one per request (a copy of a
// template, so no request's providers pile up on the next's), then reads
// one placeholder back, as an access log or a header_up naming it would.
func BenchmarkLayer_Placeholders(b *testing.B) {
	template := caddyhttp.NewTestReplacer(httptest.NewRequest("GET", layerPath, nil))
	repl := new(caddy.Replacer)
	ctx := context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{})
	ai := newAuthInfo(layerUser)
	b.ReportAllocs()
	for b.Loop() {
		*repl = *template
		repl.Map(ai.placeholder)
		caddyhttp.SetVar(ctx, apiUserVarKey, ai)
		sinkString, _ = repl.GetString("http.auth.user.id")
	}
	if sinkString != layerUser.ID || caddyhttp.GetVar(ctx, apiUserVarKey) != ai {
		b.Fatalf("{http.auth.user.id} = %q", sinkString)
	}
}

var sinkString string

// BenchmarkLayer_RateLimit admits one request for a user already tracked,
// under a limit high enough that every request is admitted.
func BenchmarkLayer_RateLimit(b *testing.B) {
	rl := newRateLimiter(time.Now)
	limit := policy.RateLimit{Requests: 1 << 30, Window: time.Second}
	rl.admit("prod-reader", limit)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := rl.admit("prod-reader", limit); !ok {
			b.Fatal("refused under a limit never reached")
		}
	}
}
