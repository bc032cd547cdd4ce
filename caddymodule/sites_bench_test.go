package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkSites measures a whole request through Caddy's server, handler
// chain and reverse_proxy to a real upstream on loopback (in this process),
// for the sites scripts/loadbench.sh compares, and two that take the
// gateway's request path apart:
//
//   - plain: reverse_proxy alone, the reference;
//   - api_file: api_users + reverse_proxy, audit records to a file through
//     the api_users_audit writer;
//   - api_discard: the same, records discarded;
//   - basic_auth: Caddy's basic_auth, credential cached, + reverse_proxy;
//   - noop_mw: a handler that does next to nothing (vars) + reverse_proxy:
//     what one more handler in the chain costs;
//   - plain_ids: the plain site, the request carrying the four identity
//     headers api_users hands on instead of Authorization: what those
//     headers cost Caddy's proxy and the upstream, whoever sets them.
//
// There is no client and no other process in the figure: the request is
// handed to Caddy's server as net/http would hand it, 32 at a time (as the
// load script's 32 connections) on GOMAXPROCS cores. cpu-ns/op is the
// whole process's CPU per request (the upstream's included), allocs/op is
// exact, and a -cpuprofile of one site says where its time goes:
//
//	go test -run '^$' -bench BenchmarkSites -benchmem -count 6 ./caddymodule
func BenchmarkSites(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("bench-password"), bcrypt.MinCost)
	if err != nil {
		b.Fatal(err)
	}
	ports := map[string]int{"plain": freePort(b), "basic_auth": freePort(b), "api_discard": freePort(b), "noop_mw": freePort(b)}
	dir := b.TempDir()
	auditPath := filepath.Join(dir, "audit.log")
	// An upstream that answers like the load script's and keeps nothing.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	b.Cleanup(upstream.Close)
	g := startGateway(b, gatewayOptions{
		upstream: strings.TrimPrefix(upstream.URL, "http://"),
		// The default, not the tests' 50ms: the app's periodic store reads
		// would be billed to the requests.
		appExtra: "sync_interval 500ms",
		globalExtra: fmt.Sprintf(`
	log default {
		exclude http.handlers.api_users.audit
		output file %s {
			roll_disabled
		}
	}
	log audit {
		include http.handlers.api_users.audit
		exclude http.handlers.api_users.audit.discarded
		output api_users_audit %s {
			roll_disabled
		}
	}
	log audit_discarded {
		include http.handlers.api_users.audit.discarded
		output discard
	}`, filepath.Join(dir, "caddy.log"), auditPath),
		extraSites: fmt.Sprintf(`
http://127.0.0.1:%d {
	reverse_proxy {UPSTREAM}
}
http://127.0.0.1:%d {
	basic_auth {
		bench %s
	}
	reverse_proxy {UPSTREAM}
}
http://127.0.0.1:%d {
	api_users {
		audit_log discarded
	}
	reverse_proxy {UPSTREAM}
}
http://127.0.0.1:%d {
	vars foo bar
	reverse_proxy {UPSTREAM}
}
`, ports["plain"], ports["basic_auth"], hash, ports["api_discard"], ports["noop_mw"]),
	})
	ports["api_file"] = portOf(b, g.url)
	id, user := g.createUser(Tenant{Product: "my-product-v1"}, UserSpec{Scopes: strs("devices:get")})
	basic := &http.Request{Header: http.Header{}}
	basic.SetBasicAuth("bench", "bench-password")
	auth := map[string]string{
		"plain":       "",
		"api_file":    "Bearer " + user.Token,
		"api_discard": "Bearer " + user.Token,
		"basic_auth":  basic.Header.Get("Authorization"),
	}
	// What api_users hands on for this user.
	idHeaders := http.Header{HeaderAPIUser: {id}, HeaderAPIUserOrg: {"acme"}, HeaderAPIUserProduct: {"my-product-v1"}, HeaderActingUser: {id}}
	httpApp, err := caddy.ActiveContext().App("http")
	if err != nil {
		b.Fatal(err)
	}
	server := func(port int) *caddyhttp.Server {
		for _, s := range httpApp.(*caddyhttp.App).Servers {
			for _, l := range s.Listen {
				if strings.HasSuffix(l, fmt.Sprintf(":%d", port)) {
					return s
				}
			}
		}
		b.Fatalf("no server listens on port %d", port)
		return nil
	}
	for _, site := range []string{"plain", "api_file", "api_discard", "basic_auth", "noop_mw", "plain_ids"} {
		b.Run(site, func(b *testing.B) {
			port := ports[site]
			header := http.Header{"User-Agent": {"wrk"}, "Accept": {"*/*"}}
			if auth[site] != "" {
				header["Authorization"] = []string{auth[site]}
			}
			if site == "plain_ids" {
				// What api_users hands on: the identity headers in place
				// of Authorization.
				port = ports["plain"]
				for k, v := range idHeaders {
					header[k] = v
				}
			}
			srv := server(port)
			url := fmt.Sprintf("http://127.0.0.1:%d/v1/products/my-product-v1/devices/0a1b2c3d", port)
			serve := func() error {
				r := httptest.NewRequest("GET", url, nil)
				r.RemoteAddr = "127.0.0.1:40000"
				r.Header = header.Clone()
				w := httptest.NewRecorder()
				srv.ServeHTTP(w, r)
				if w.Code != 200 {
					return fmt.Errorf("%s answered %d: %s", site, w.Code, w.Body)
				}
				return nil
			}
			if err := serve(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			// 32 requests at a time on two cores, as the load script's 32
			// connections: what contends, contends here too.
			b.SetParallelism(16)
			before := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := serve(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(processCPU(b)-before)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time this process has used, user and system, in
// nanoseconds: a request's cost on a shared machine, where wall time also
// counts waiting for the other processes.
func processCPU(t testing.TB) int64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func portOf(t testing.TB, url string) int {
	t.Helper()
	var port int
	if _, err := fmt.Sscanf(url[strings.LastIndex(url, ":")+1:], "%d", &port); err != nil {
		t.Fatalf("no port in %s: %v", url, err)
	}
	return port
}
