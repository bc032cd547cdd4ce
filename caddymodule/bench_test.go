package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// benchGateway provisions a gateway handler inside a running in-process
// Caddy, so the benchmark measures exactly the handler a server runs.
func benchGateway(b *testing.B) (*Gateway, *Issued, *Issued, string) {
	b.Helper()
	g := startGateway(b, gatewayOptions{})
	mod, err := caddy.ActiveContext().LoadModuleByID("http.handlers.api_users", []byte(`{"lockout_threshold": -1}`))
	if err != nil {
		b.Fatal(err)
	}
	gw := mod.(*Gateway)
	_, tokenUser := g.createUser(Tenant{Product: "my-product-v1"}, UserSpec{Scopes: strs("devices:list", "devices:get")})
	id, basicUser := g.createUser(Tenant{Product: "my-product-v1"}, UserSpec{Scopes: strs("devices:list", "devices:get")})
	return gw, tokenUser, basicUser, id
}

type nopNext struct{}

func (nopNext) ServeHTTP(http.ResponseWriter, *http.Request) error { return nil }

// BenchmarkGatewayDecision measures the whole gateway handler for a cached,
// active user: parse the credential, hash it, find the user in the cache,
// decide, rewrite the headers, set the placeholders and write the audit
// record. The next handler does nothing, so only the gateway is measured.
func BenchmarkGatewayDecision(b *testing.B) {
	gw, tokenUser, basicUser, id := benchGateway(b)
	jsonAudit := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(discard{}), zap.InfoLevel))
	cases := []struct {
		name  string
		auth  string
		audit *zap.Logger
		next  caddyhttp.Handler
	}{
		{"bearer/audit-off", "Bearer " + tokenUser.Token, zap.NewNop(), nopNext{}},
		{"bearer/audit-json", "Bearer " + tokenUser.Token, jsonAudit, nopNext{}},
		{"basic/audit-off", basicAuthValue(id, basicUser), zap.NewNop(), nopNext{}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			gw.app.audit, gw.audit = c.audit, newAuditSink(c.audit, gw.app.metrics, gw.app.limits.usage)
			w := httptest.NewRecorder()
			r := httptest.NewRequest("GET", "/v1/products/my-product-v1/devices/0a1b2c3d", nil)
			repl := caddy.NewReplacer()
			ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
			ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: "127.0.0.1"})
			r = r.WithContext(ctx)
			auth := []string{c.auth}
			b.ReportAllocs()
			for b.Loop() {
				// One request, reset each time as a fresh client would send
				// it: a header map sized as Go's server sizes it, and a
				// replacer without the previous request's placeholders.
				// The reset costs 5 allocations of its own (the
				// BenchmarkGatewayDecision/reset-only case).
				*repl = *caddy.NewReplacer()
				r.Header = make(http.Header, 8)
				r.Header["Authorization"] = auth
				r.Header["User-Agent"] = []string{"bench"}
				if err := gw.ServeHTTP(w, r, c.next); err != nil {
					b.Fatal(err)
				}
			}
			if w.Code != 200 || r.Header.Get(HeaderAPIUser) == "" {
				b.Fatalf("request refused: %d %s", w.Code, w.Body)
			}
			if id, _ := repl.GetString("http.auth.user.id"); id != r.Header.Get(HeaderAPIUser) {
				b.Fatalf("{http.auth.user.id} = %q, want %q", id, r.Header.Get(HeaderAPIUser))
			}
		})
	}
	// The per-iteration reset alone, to subtract from the cases above.
	b.Run("reset-only", func(b *testing.B) {
		repl := caddy.NewReplacer()
		r := &http.Request{}
		b.ReportAllocs()
		for b.Loop() {
			*repl = *caddy.NewReplacer()
			r.Header = make(http.Header, 8)
			r.Header["Authorization"] = []string{"x"}
			r.Header["User-Agent"] = []string{"bench"}
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) Sync() error                 { return nil }

func basicAuthValue(id string, iss *Issued) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(id, iss.Key+":"+iss.Secret)
	return r.Header.Get("Authorization")
}
