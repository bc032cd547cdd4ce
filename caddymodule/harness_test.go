package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/internal/testwait"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// recordingUpstream is a backend that records every request it receives,
// with its raw request-URI and raw headers, so tests can prove what got
// through and what never did.
type recordingUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method     string
	RequestURI string
	Header     http.Header
}

func newRecordingUpstream(t testing.TB) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone()})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *recordingUpstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

// take returns and clears what the upstream received.
func (u *recordingUpstream) take() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.reqs
	u.reqs = nil
	return r
}

// testCatalog is the catalog of Caddyfile.example.
const testCatalog = `
		org acme {
			product 1337 my-product-v1
			product 4242 other-product
		}
		org globex {
			product 9001 globex-tracker
		}
		role device-reader devices:list devices:get
		endpoint list-devices  GET  /v1/products/{product}/devices                     devices:list
		endpoint get-device    GET  /v1/products/{product}/devices/{device}            devices:get
		endpoint update-device PUT  /v1/products/{product}/devices/{device}            devices:update
		endpoint call-function POST /v1/products/{product}/devices/{device}/{function} devices.function:call
		endpoint get-variable  GET  /v1/products/{product}/devices/{device}/{variable} devices.variable:get
		endpoint list-events   GET  /v1/products/{product}/events                      events:get
		endpoint get-events    GET  /v1/products/{product}/events/{prefix...}          events:get
		endpoint send-event    POST /v1/products/{product}/events                      events:send
		endpoint org-events    GET  /v1/orgs/{org}/events                              events:get
`

// testGateway is a real Caddy, loaded in this process from a Caddyfile,
// with the gateway in front of a recording upstream.
type testGateway struct {
	t        testing.TB
	url      string
	upstream *recordingUpstream
	app      *App
	dbPath   string
	client   *http.Client
	config   []byte // the JSON config loaded, for a reload
	// caddyfile is the config loaded, for reload, which changes it.
	caddyfile string
}

type gatewayOptions struct {
	// extraSites may name the gateway's upstream as {UPSTREAM}.
	appExtra     string // more lines in the api_users global option
	gatewayBlock string // lines inside the site's api_users block
	siteExtra    string // more directives in the site
	globalExtra  string // more global options, such as log or servers
	extraSites   string // more site blocks after the gateway's
	upstream     string // host:port the gateway proxies to; default: the recording upstream
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startGateway(t testing.TB, opts gatewayOptions) *testGateway {
	t.Helper()
	up := newRecordingUpstream(t)
	port := freePort(t)
	dbPath := filepath.Join(t.TempDir(), "api_users.db")
	upstream := up.addr()
	if opts.upstream != "" {
		upstream = opts.upstream
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
%s
	api_users {
		store sqlite %s
		sync_interval 50ms
%s
%s
	}
}

http://127.0.0.1:%d {
	api_users {
%s
	}
%s
	reverse_proxy %s
}
%s
`, opts.globalExtra, dbPath, testCatalog, opts.appExtra, port, opts.gatewayBlock, opts.siteExtra, upstream, strings.ReplaceAll(opts.extraSites, "{UPSTREAM}", upstream))
	cfgJSON, app := loadCaddyfile(t, caddyfile)
	g := &testGateway{
		t:        t,
		url:      fmt.Sprintf("http://127.0.0.1:%d", port),
		upstream: up,
		app:      app,
		dbPath:   dbPath,
		client:   &http.Client{Timeout: 10 * time.Second},
		config:   cfgJSON,

		caddyfile: caddyfile,
	}
	g.waitUp()
	return g
}

func (g *testGateway) waitUp() {
	g.t.Helper()
	eventually(g.t, 5*time.Second, "the gateway comes up", func() bool {
		resp, err := g.client.Get(g.url + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	g.upstream.take()
}

// loadCaddyfile adapts caddyfile and loads it in this process's Caddy,
// stopped when the test ends, and returns the JSON config loaded and its
// api_users app.
func loadCaddyfile(t testing.TB, caddyfile string) ([]byte, *App) {
	t.Helper()
	cfgJSON, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "formatted") {
			t.Logf("caddyfile warning: %s", w.String())
		}
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		t.Fatalf("loading the config: %v\n%s", err, caddyfile)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	app, err := caddy.ActiveContext().App("api_users")
	if err != nil {
		t.Fatal(err)
	}
	return cfgJSON, app.(*App)
}

// within and eventually wait for a condition (see testwait).
var (
	within     = testwait.Within
	eventually = testwait.Eventually
)

// result is a gateway response.
type result struct {
	Status int
	Header http.Header
	Body   []byte
	Error  errorBody
}

// do sends a request whose request-URI is sent exactly as given, without
// any client-side cleaning.
func (g *testGateway) do(method, rawPath string, header http.Header) result {
	g.t.Helper()
	req, err := http.NewRequest(method, g.url+"/", nil)
	if err != nil {
		g.t.Fatal(err)
	}
	req.URL.Opaque = rawPath // sent verbatim as the request-URI
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, rawPath, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := result{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(body, &r.Error); err != nil {
			g.t.Fatalf("%s %s: error body is not JSON: %q", method, rawPath, body)
		}
	}
	return r
}

// rawRequest writes a request by hand, for requests no Go client would
// send, and returns the status code. A "Host: x" line is replaced by the
// gateway's host.
func (g *testGateway) rawRequest(raw string) int {
	g.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		g.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	raw = strings.Replace(raw, "\r\nHost: x\r\n", "\r\nHost: "+strings.TrimPrefix(g.url, "http://")+"\r\n", 1)
	if _, err := io.WriteString(conn, raw); err != nil {
		g.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		g.t.Fatalf("reading response to %q: %v", raw, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// createUser makes a user through the app, as the CLI or the management
// API would.
func (g *testGateway) createUser(t Tenant, spec UserSpec) (string, *Issued) {
	g.t.Helper()
	u, iss, err := g.app.CreateUser(context.Background(), t, &spec)
	if err != nil {
		g.t.Fatalf("creating user: %v", err)
	}
	return u.ID, iss
}

func strs(s ...string) *[]string { return &s }
func ptr[T any](v T) *T          { return &v }
