package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// The soak test runs for -soak (default 3s) with -soak-clients concurrent
// clients. A longer run, such as
//
//	go test ./caddymodule -run Soak -soak=5m
//
// is the proof under load; the default keeps the suite fast under -race.
var (
	soakDuration = flag.Duration("soak", 3*time.Second, "how long TestSoak sends requests")
	soakClients  = flag.Int("soak-clients", 16, "how many concurrent clients TestSoak runs")
)

// TestSoak puts a real gateway (Caddy in this process, on loopback) under
// concurrent load for a fixed time with a mix of valid, invalid, malformed,
// out-of-scope, other-tenant and proxied-user requests, while a revoker
// keeps creating users and revoking them, through the management API and
// through the App, in every way there is: deleting the user, rotating its
// token, deleting its key, retiring it, regenerating its Secret, narrowing
// its scopes. Every response is checked against the decision it must have:
// status and error code, and for an allowed request the identity the
// upstream saw. A request sent after a revocation was acknowledged must be
// refused; one that raced with it may go either way, but only to the state
// before or the state after. Any other answer is a wrong decision, and one
// is enough to fail. Transport errors are counted, not judged. Nothing is
// timed.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test")
	}
	echo := newEchoUpstream(t)
	adminPort := freePort(t)
	g := startGateway(t, gatewayOptions{
		// Every client is 127.0.0.1, and a tenth of the requests fail
		// authentication on purpose.
		gatewayBlock: "lockout off",
		// Decisions are audited as in production, to a sink, so a long run
		// does not fill the disk.
		globalExtra: "\tlog {\n\t\toutput discard\n\t}",
		// Last-used times are flushed to the store during the run, racing
		// with the revocations.
		appExtra:   "\t\tlast_used_interval 200ms",
		upstream:   echo.addr(),
		extraSites: fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tapi_users_admin\n}\n", adminPort),
	})
	clients := max(*soakClients, 1)
	tr := &http.Transport{MaxIdleConns: 2 * clients, MaxIdleConnsPerHost: 2 * clients, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	s := &soak{
		g:          g,
		admin:      fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		client:     &http.Client{Transport: tr, Timeout: 30 * time.Second},
		mgmtClient: &http.Client{Timeout: 30 * time.Second},
		base:       time.Now(),
		stats:      map[string]*soakCounts{},
	}
	s.pool.Store(&[]*probe{})
	static := s.staticProbes(t)
	hitsBefore := echo.hits.Load()

	runtime.GC()
	rssStart := residentMemory()
	t.Logf("soak: %s with %d clients, %d fixed probes; resident memory at start %s", *soakDuration, clients, len(static), rssStart)

	ctx, cancel := context.WithTimeout(context.Background(), *soakDuration)
	defer cancel()
	var wg sync.WaitGroup
	var revoked []*revocableUser
	var revokerErr error
	wg.Go(func() { revoked, revokerErr = s.revoke(ctx) })
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				p := static[rand.IntN(len(static))]
				if dyn := *s.pool.Load(); len(dyn) > 0 && rand.IntN(2) == 0 {
					p = dyn[rand.IntN(len(dyn))]
				}
				s.send(p)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(s.base)
	if revokerErr != nil {
		t.Errorf("revoker: %v", revokerErr)
	}

	// Every revocation once more, surely after its acknowledgement, so
	// each is judged in its revoked state however the load went.
	for _, ru := range revoked {
		for _, p := range ru.probes {
			s.send(p)
		}
	}
	runtime.GC()
	rssEnd := residentMemory()

	s.mu.Lock()
	defer s.mu.Unlock()
	var total soakCounts
	for _, name := range []string{"valid", "proxied", "invalid", "malformed", "out-of-scope", "other-tenant", "revocable"} {
		c := s.stats[name]
		if c == nil {
			t.Errorf("no %s request was sent", name)
			continue
		}
		t.Logf("soak: %-12s %8d requests, %d wrong, %d transport errors", name, c.requests, c.wrong, c.transport)
		total.requests += c.requests
		total.wrong += c.wrong
		total.transport += c.transport
	}
	t.Logf("soak: %d requests in %s (%.0f/s), %d wrong decisions, %d transport errors",
		total.requests, elapsed.Round(time.Millisecond), float64(total.requests)/elapsed.Seconds(), total.wrong, total.transport)
	t.Logf("soak: %d users revoked while in use; revoked credentials judged %d times after the acknowledgement, %d times racing with it",
		len(revoked), s.afterAck.Load(), s.racing.Load())
	hits := echo.hits.Load() - hitsBefore
	t.Logf("soak: %d allowed answers, %d requests reached the upstream", s.allowed.Load(), hits)
	t.Logf("soak: resident memory %s at start, %s at end", rssStart, rssEnd)

	if total.wrong > 0 {
		t.Errorf("%d wrong decisions; the first ones:\n%s", total.wrong, strings.Join(s.wrongs, "\n"))
	}
	if s.afterAck.Load() == 0 {
		t.Error("no revoked credential was judged after its revocation")
	}
	if total.transport == 0 && s.allowed.Load() != hits {
		t.Errorf("%d allowed answers but %d requests reached the upstream: a refused request got through, or an answer did not come from the upstream", s.allowed.Load(), hits)
	}
}

// echoUpstream answers every request with the identity headers it
// received, copied into Echo-* response headers, so each client can check
// what the upstream saw for its own request without a shared record that
// would grow with the run.
type echoUpstream struct {
	srv  *httptest.Server
	hits atomic.Int64
}

// echoedHeaders are the headers the echo upstream reports.
var echoedHeaders = []string{"Authorization", HeaderAPIUser, HeaderAPIUserOrg, HeaderAPIUserProduct, "X-Proxied-User", HeaderActingUser}

func newEchoUpstream(t testing.TB) *echoUpstream {
	e := &echoUpstream{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		h := w.Header()
		for _, name := range echoedHeaders {
			// Every value, so a duplicated header shows.
			h.Set("Echo-"+name, strings.Join(r.Header.Values(name), "|"))
		}
		h.Set("Echo", "1")
		_, _ = io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *echoUpstream) addr() string { return strings.TrimPrefix(e.srv.URL, "http://") }

// want is the decision a request must get: a refusal with status and
// code, or an allowance (status 200) with the identity the upstream must
// see.
type want struct {
	status        int
	code          string
	user, acting  string
	org, product  string
	proxied       string
	allowedAnswer bool // set by allowed()
}

func allowed(user, org, product, proxied string) want {
	acting := user
	if proxied != "" {
		acting = proxied
	}
	return want{status: 200, user: user, acting: acting, org: org, product: product, proxied: proxied, allowedAnswer: true}
}

func refused(status int, code string) want { return want{status: status, code: code} }

func (w want) String() string {
	if w.allowedAnswer {
		return fmt.Sprintf("200 for %s (acting %s, org %s, product %q)", w.user, w.acting, w.org, w.product)
	}
	return fmt.Sprintf("%d %s", w.status, w.code)
}

// answer is what a client got.
type answer struct {
	status int
	code   string
	echo   http.Header
}

// mismatch says how a differs from w, or "" when it matches.
func (a *answer) mismatch(w want) string {
	if a.status != w.status {
		return fmt.Sprintf("status %d (%s), want %s", a.status, a.code, w)
	}
	if !w.allowedAnswer {
		if a.code != w.code {
			return fmt.Sprintf("code %q, want %s", a.code, w)
		}
		return ""
	}
	if a.echo.Get("Echo") != "1" {
		return fmt.Sprintf("a 200 that did not come from the upstream, want %s", w)
	}
	for _, c := range []struct{ name, want string }{
		{"Authorization", ""},
		{HeaderAPIUser, w.user},
		{HeaderActingUser, w.acting},
		{HeaderAPIUserOrg, w.org},
		{HeaderAPIUserProduct, w.product},
		{"X-Proxied-User", w.proxied},
	} {
		if got := a.echo.Get("Echo-" + c.name); got != c.want {
			return fmt.Sprintf("the upstream saw %s %q, want %q (%s)", c.name, got, c.want, w)
		}
	}
	return ""
}

// revocation is when a revocation started and when it was acknowledged,
// in nanoseconds since the soak's base time (0: not yet).
type revocation struct {
	what           string
	started, acked atomic.Int64
}

// probe is one kind of request and the decision it must get: pre, or,
// when rev is set and the revocation was acknowledged before the request
// was sent, post.
type probe struct {
	category     string
	name         string
	method, path string
	auth         string // the Authorization header; "" for none
	freshToken   bool   // a new unknown, well-formed token each time
	header       http.Header
	pre, post    want
	rev          *revocation
}

type soakCounts struct{ requests, wrong, transport int }

type soak struct {
	g          *testGateway
	admin      string
	client     *http.Client
	mgmtClient *http.Client
	base       time.Time
	pool       atomic.Pointer[[]*probe] // probes of the users the revoker has in play

	allowed, afterAck, racing atomic.Int64

	mu     sync.Mutex
	stats  map[string]*soakCounts
	wrongs []string // the first few, for the failure message
}

// now is the time since the soak's base, monotonic.
func (s *soak) now() int64 { return int64(time.Since(s.base)) + 1 }

// send sends the request of p and judges the answer.
func (s *soak) send(p *probe) {
	req, err := http.NewRequest(p.method, s.g.url+"/", nil)
	if err != nil {
		panic(err)
	}
	req.URL.Opaque = p.path // sent verbatim
	for k, vs := range p.header {
		req.Header[k] = vs
	}
	switch {
	case p.freshToken:
		token, _ := policy.NewToken()
		req.Header.Set("Authorization", "Bearer "+token)
	case p.auth != "":
		req.Header.Set("Authorization", p.auth)
	}
	sent := s.now()
	resp, err := s.client.Do(req)
	if err != nil {
		s.record(p, "", true)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		s.record(p, "", true)
		return
	}
	a := answer{status: resp.StatusCode, echo: resp.Header}
	if resp.StatusCode >= 400 {
		var e errorBody
		if err := json.Unmarshal(body, &e); err != nil {
			s.record(p, fmt.Sprintf("%s: status %d with a body that is not a JSON error: %q", p.name, resp.StatusCode, body), false)
			return
		}
		a.code = e.Error
	} else if a.echo.Get("Echo") == "1" {
		s.allowed.Add(1)
	}
	s.record(p, s.judge(p, &a, sent), false)
}

// judge returns what is wrong with the answer a to p sent at sent, or "".
func (s *soak) judge(p *probe, a *answer, sent int64) string {
	if p.rev == nil {
		if m := a.mismatch(p.pre); m != "" {
			return p.name + ": " + m
		}
		return ""
	}
	// Read after the answer came: a revocation not started by now cannot
	// have decided this request.
	started, acked := p.rev.started.Load(), p.rev.acked.Load()
	switch {
	case started == 0:
		if m := a.mismatch(p.pre); m != "" {
			return fmt.Sprintf("%s, before %s: %s", p.name, p.rev.what, m)
		}
	case acked != 0 && sent > acked:
		s.afterAck.Add(1)
		if m := a.mismatch(p.post); m != "" {
			return fmt.Sprintf("%s, sent %s after %s was acknowledged: %s", p.name, time.Duration(sent-acked), p.rev.what, m)
		}
	default:
		s.racing.Add(1)
		mPre, mPost := a.mismatch(p.pre), a.mismatch(p.post)
		if mPre != "" && mPost != "" {
			return fmt.Sprintf("%s, racing with %s: neither the state before (%s) nor after (%s)", p.name, p.rev.what, mPre, mPost)
		}
	}
	return ""
}

func (s *soak) record(p *probe, wrong string, transport bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.stats[p.category]
	if c == nil {
		c = &soakCounts{}
		s.stats[p.category] = c
	}
	c.requests++
	if transport {
		c.transport++
	}
	if wrong != "" {
		c.wrong++
		if len(s.wrongs) < 20 {
			s.wrongs = append(s.wrongs, wrong)
		}
	}
}

func soakBasic(id, key, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+key+":"+secret))
}

// staticProbes creates the users that live through the whole run and
// returns the requests the clients send besides the revoker's.
func (s *soak) staticProbes(t *testing.T) []*probe {
	g := s.g
	acme1337, globex, acme := Tenant{Product: "1337"}, Tenant{Org: "globex"}, Tenant{Org: "acme"}
	prod, prodIss := g.createUser(acme1337, UserSpec{Scopes: strs("devices:list", "devices:get")})
	org, orgIss := g.createUser(globex, UserSpec{Scopes: strs("devices:list", "events:get")})
	proxy, proxyIss := g.createUser(acme, UserSpec{Scopes: strs("devices:list"), AllowProxiedUsers: ptr(true), AllowedProxiedUsers: strs("alice", "bob@example.com")})
	limited, limitedIss := g.createUser(acme1337, UserSpec{Scopes: strs("devices:get"), AllowedEndpoints: strs("get-device"), ResourceConstraints: &map[string][]string{"device": {"0a1b2c"}}})

	bearerOf := func(iss *Issued) string { return "Bearer " + iss.Token }
	prodBasic := soakBasic(prod, prodIss.Key, prodIss.Secret)
	unknownToken, _ := policy.NewToken()
	otherSecret, _ := policy.NewSecret()
	otherKey, _ := policy.NewKey(time.Now())
	proxied := func(ids ...string) http.Header { return http.Header{"X-Proxied-User": ids} }
	spoof := http.Header{"X-Api-User": {"root"}, "X-Acting-User": {"root"}, "X-Api-User-Org": {"globex"}, "X-Api-User-Product": {"9001"}}

	ps := []*probe{
		{category: "valid", name: "product user, token", path: "/v1/products/1337/devices", auth: bearerOf(prodIss), pre: allowed(prod, "acme", "1337", "")},
		{category: "valid", name: "product user, token, slug", path: "/v1/products/my-product-v1/devices/0a1b2c", auth: bearerOf(prodIss), pre: allowed(prod, "acme", "1337", "")},
		{category: "valid", name: "product user, key and secret", path: "/v1/products/1337/devices/3d4e5f", auth: prodBasic, pre: allowed(prod, "acme", "1337", "")},
		{category: "valid", name: "org user, org route", path: "/v1/orgs/globex/events", auth: bearerOf(orgIss), pre: allowed(org, "globex", "", "")},
		{category: "valid", name: "org user, product route", path: "/v1/products/globex-tracker/devices", auth: soakBasic(org, orgIss.Key, orgIss.Secret), pre: allowed(org, "globex", "", "")},
		{category: "valid", name: "constrained user, its device", path: "/v1/products/1337/devices/0a1b2c", auth: bearerOf(limitedIss), pre: allowed(limited, "acme", "1337", "")},
		{category: "valid", name: "spoofed identity headers", path: "/v1/products/1337/devices", auth: bearerOf(prodIss), header: spoof, pre: allowed(prod, "acme", "1337", "")},

		{category: "proxied", name: "proxied user alice", path: "/v1/products/4242/devices", auth: bearerOf(proxyIss), header: proxied("alice"), pre: allowed(proxy, "acme", "", "alice")},
		{category: "proxied", name: "proxied user bob, key and secret", path: "/v1/products/1337/devices", auth: soakBasic(proxy, proxyIss.Key, proxyIss.Secret), header: proxied("bob@example.com"), pre: allowed(proxy, "acme", "", "bob@example.com")},
		{category: "proxied", name: "proxy user acting for itself", path: "/v1/products/1337/devices", auth: bearerOf(proxyIss), pre: allowed(proxy, "acme", "", "")},
		{category: "proxied", name: "unlisted proxied user", path: "/v1/products/1337/devices", auth: bearerOf(proxyIss), header: proxied("mallory"), pre: refused(403, "proxied_user_not_allowed")},
		{category: "proxied", name: "proxied user for a user that allows none", path: "/v1/products/1337/devices", auth: bearerOf(prodIss), header: proxied("alice"), pre: refused(403, "proxied_user_not_allowed")},
		{category: "proxied", name: "repeated proxied-user header", path: "/v1/products/1337/devices", auth: bearerOf(proxyIss), header: proxied("alice", "bob@example.com"), pre: refused(403, "invalid_proxied_user")},

		{category: "invalid", name: "unknown token", path: "/v1/products/1337/devices", auth: "Bearer " + unknownToken, pre: refused(401, "invalid_credentials")},
		{category: "invalid", name: "fresh unknown token", path: "/v1/products/1337/devices", freshToken: true, pre: refused(401, "invalid_credentials")},
		{category: "invalid", name: "wrong secret", path: "/v1/products/1337/devices", auth: soakBasic(prod, prodIss.Key, otherSecret), pre: refused(401, "invalid_credentials")},
		{category: "invalid", name: "another user's key", path: "/v1/products/1337/devices", auth: soakBasic(prod, otherKey, prodIss.Secret), pre: refused(401, "invalid_credentials")},
		{category: "invalid", name: "unknown user ID", path: "/v1/products/1337/devices", auth: soakBasic("nobody-here", prodIss.Key, prodIss.Secret), pre: refused(401, "invalid_credentials")},
		{category: "invalid", name: "no credential", path: "/v1/products/1337/devices", pre: refused(401, "missing_credentials")},

		{category: "malformed", name: "short token", path: "/v1/products/1337/devices", auth: "Bearer " + policy.TokenPrefix + "0123", pre: refused(401, "malformed_credentials")},
		{category: "malformed", name: "Basic that is not base64", path: "/v1/products/1337/devices", auth: "Basic !!!", pre: refused(401, "malformed_credentials")},
		{category: "malformed", name: "ambiguous path", path: "/v1/products/1337/devices/%2e%2e/4242", auth: bearerOf(prodIss), pre: refused(400, "ambiguous_path")},
		{category: "malformed", name: "method override", method: "POST", path: "/v1/products/1337/devices/0a1b2c/reset", auth: bearerOf(prodIss), header: http.Header{"X-Http-Method-Override": {"GET"}}, pre: refused(400, "method_override")},

		{category: "out-of-scope", name: "missing scope", method: "POST", path: "/v1/products/1337/events", auth: bearerOf(prodIss), pre: refused(403, "insufficient_scope")},
		{category: "out-of-scope", name: "no endpoint", path: "/v1/products/1337/firmware", auth: bearerOf(prodIss), pre: refused(403, "no_endpoint")},
		{category: "out-of-scope", name: "endpoint not allowed", path: "/v1/products/1337/devices", auth: bearerOf(limitedIss), pre: refused(403, "endpoint_not_allowed")},
		{category: "out-of-scope", name: "constrained device", path: "/v1/products/1337/devices/3d4e5f", auth: bearerOf(limitedIss), pre: refused(403, "resource_constraint")},

		{category: "other-tenant", name: "other product of the org", path: "/v1/products/4242/devices", auth: bearerOf(prodIss), pre: refused(403, "tenant_mismatch")},
		{category: "other-tenant", name: "other org's product", path: "/v1/products/globex-tracker/devices", auth: prodBasic, pre: refused(403, "tenant_mismatch")},
		{category: "other-tenant", name: "org user, other org", path: "/v1/orgs/acme/events", auth: bearerOf(orgIss), pre: refused(403, "tenant_mismatch")},
		{category: "other-tenant", name: "org user, other org's product", path: "/v1/products/1337/devices", auth: bearerOf(orgIss), pre: refused(403, "tenant_mismatch")},
	}
	for _, p := range ps {
		if p.method == "" {
			p.method = "GET"
		}
	}
	// Each probe once, alone, so a wrong expectation shows here and not
	// as noise under load.
	for _, p := range ps {
		s.send(p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.wrongs) > 0 {
		t.Fatalf("the probes fail without load:\n%s", strings.Join(s.wrongs, "\n"))
	}
	s.stats = map[string]*soakCounts{}
	s.allowed.Store(0)
	return ps
}

// revocableUser is a user the revoker creates, puts in play, and revokes.
type revocableUser struct {
	id     string
	probes []*probe
}

// revocations are the ways the revoker takes a credential away, each done
// in turn through the management API and through the App.
var revocations = []string{"delete the user", "rotate the token", "delete the key", "retire the user", "regenerate the secret", "narrow the scopes"}

// revoke creates users and revokes them, one after the other, until ctx is
// done, keeping the last few in the clients' pool. It returns every user
// it revoked.
func (s *soak) revoke(ctx context.Context) ([]*revocableUser, error) {
	const inPlay = 24
	var all []*revocableUser
	var extra []*probe // new credentials issued by revocations, in play too
	publish := func() {
		var ps []*probe
		from := max(0, len(all)-inPlay)
		for _, ru := range all[from:] {
			ps = append(ps, ru.probes...)
		}
		extra = extra[max(0, len(extra)-inPlay):]
		ps = append(ps, extra...)
		s.pool.Store(&ps)
	}
	pause := func() {
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(10+rand.IntN(40)) * time.Millisecond):
		}
	}
	for i := 0; ctx.Err() == nil; i++ {
		what := revocations[i%len(revocations)]
		viaAPI := (i/len(revocations))%2 == 0
		via := "the App"
		if viaAPI {
			via = "the management API"
		}
		ru, creds, err := s.createRevocable(i, viaAPI)
		if err != nil {
			return all, err
		}
		rev := &revocation{what: what + " through " + via}
		bearer, basic := "Bearer "+creds.Token, soakBasic(ru.id, creds.Key, creds.Secret)
		ok := allowed(ru.id, "acme", "1337", "")
		invalid, retired := refused(401, "invalid_credentials"), refused(401, "user_retired")
		list := "/v1/products/1337/devices"
		if i%2 == 1 {
			list = "/v1/products/my-product-v1/devices"
		}
		bp := &probe{category: "revocable", name: "revocable user " + ru.id + ", token", method: "GET", path: list, auth: bearer, pre: ok, post: ok, rev: rev}
		kp := &probe{category: "revocable", name: "revocable user " + ru.id + ", key and secret", method: "GET", path: list, auth: basic, pre: ok, post: ok, rev: rev}
		switch what {
		case "delete the user":
			bp.post, kp.post = invalid, invalid
		case "rotate the token", "narrow the scopes":
			bp.post = invalid
			if what == "narrow the scopes" {
				kp.post = refused(403, "insufficient_scope")
			}
		case "delete the key", "regenerate the secret":
			kp.post = invalid
		case "retire the user":
			bp.post, kp.post = retired, retired
		}
		ru.probes = []*probe{bp, kp}
		all = append(all, ru)
		publish()
		pause()

		rev.started.Store(s.now())
		fresh, err := s.revokeOne(ru.id, creds.KeyID, what, viaAPI)
		if err != nil {
			return all, fmt.Errorf("%s of %s: %w", rev.what, ru.id, err)
		}
		rev.acked.Store(s.now())
		// What a revocation issues works from the moment it is
		// acknowledged.
		switch what {
		case "rotate the token":
			extra = append(extra, &probe{category: "revocable", name: "rotated token of " + ru.id, method: "GET", path: list, auth: "Bearer " + fresh, pre: ok})
		case "narrow the scopes":
			extra = append(extra,
				&probe{category: "revocable", name: "token of " + ru.id + " after narrowing, kept scope", method: "GET", path: "/v1/products/1337/devices/0a1b2c", auth: "Bearer " + fresh, pre: ok},
				&probe{category: "revocable", name: "token of " + ru.id + " after narrowing, dropped scope", method: "GET", path: list, auth: "Bearer " + fresh, pre: refused(403, "insufficient_scope")})
		case "regenerate the secret":
			extra = append(extra, &probe{category: "revocable", name: "new secret of " + ru.id, method: "GET", path: list, auth: soakBasic(ru.id, creds.Key, fresh), pre: ok})
		}
		publish()
		pause()
	}
	return all, nil
}

// createRevocable creates the i-th revocable user, a product user of 1337
// that may list and get devices.
func (s *soak) createRevocable(i int, viaAPI bool) (*revocableUser, *Issued, error) {
	id := fmt.Sprintf("soak-%d", i)
	scopes := []string{"devices:list", "devices:get"}
	if !viaAPI {
		u, iss, err := s.g.app.CreateUser(context.Background(), Tenant{Product: "1337"}, &UserSpec{Username: &id, Scopes: &scopes})
		if err != nil {
			return nil, nil, err
		}
		return &revocableUser{id: u.ID}, iss, nil
	}
	var c createdResponse
	if err := s.manage("POST", "/v1/products/1337/team", map[string]any{"username": id, "scopes": scopes}, &c); err != nil {
		return nil, nil, err
	}
	if len(c.Created.Tokens) != 1 || len(c.Created.Keys) != 1 {
		return nil, nil, fmt.Errorf("create answered %+v", c)
	}
	iss := &Issued{Token: c.Created.Tokens[0].Token, Secret: c.Created.Secret, Key: c.Created.Keys[0].Value, KeyID: c.Created.Keys[0].ID}
	return &revocableUser{id: c.Created.Username}, iss, nil
}

// revokeOne revokes the user id in the way what, and returns the
// credential the revocation issued, if any.
func (s *soak) revokeOne(id, keyID, what string, viaAPI bool) (string, error) {
	ctx, t := context.Background(), Tenant{Product: "1337"}
	user := "/v1/products/1337/team/" + id
	narrow := []string{"devices:get"}
	if viaAPI {
		switch what {
		case "delete the user":
			return "", s.manage("DELETE", user, nil, nil)
		case "rotate the token":
			var r struct{ Token string }
			err := s.manage("POST", user+"/token", nil, &r)
			return r.Token, err
		case "delete the key":
			return "", s.manage("DELETE", user+"/keys/"+keyID, nil, nil)
		case "retire the user":
			return "", s.manage("PUT", user, map[string]any{"retired": true}, nil)
		case "regenerate the secret":
			var r struct{ Secret string }
			err := s.manage("POST", user+"/secret", nil, &r)
			return r.Secret, err
		case "narrow the scopes":
			var r updatedResponse
			err := s.manage("PUT", user, map[string]any{"scopes": narrow}, &r)
			if err == nil && (!r.TokenReplaced || len(r.User.Tokens) != 1) {
				err = errors.New("narrowing the scopes did not replace the token")
			}
			if err != nil {
				return "", err
			}
			return r.User.Tokens[0].Token, nil
		}
	}
	switch what {
	case "delete the user":
		return "", s.g.app.DeleteUser(ctx, id)
	case "rotate the token":
		_, token, err := s.g.app.RotateToken(ctx, t, id)
		return token, err
	case "delete the key":
		_, err := s.g.app.DeleteKey(ctx, t, id, keyID)
		return "", err
	case "retire the user":
		_, _, err := s.g.app.UpdateUser(ctx, t, id, &UserSpec{Retired: ptr(true)})
		return "", err
	case "regenerate the secret":
		_, secret, err := s.g.app.RegenerateSecret(ctx, t, id)
		return secret, err
	case "narrow the scopes":
		_, token, err := s.g.app.UpdateUser(ctx, t, id, &UserSpec{Scopes: &narrow})
		if err == nil && token == "" {
			err = errors.New("narrowing the scopes did not replace the token")
		}
		return token, err
	}
	return "", fmt.Errorf("unknown revocation %q", what)
}

// manage calls the management API; a 2xx answer's body is decoded into
// out (when not nil), anything else is an error.
func (s *soak) manage(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.admin+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.mgmtClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// residentMemory is this process's resident set size, from
// /proc/self/status, or "unknown" where there is none.
func residentMemory() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
