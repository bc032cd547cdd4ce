package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// This file is the adversarial catalogue: every known trick for getting a
// request past a gateway, or for getting a mangled one through, sent by
// hand to a real gateway in front of an upstream that records every byte
// it is sent. Each row names the attack, the status and error code the
// gateway must answer with, and, for the few that are allowed, exactly
// what the upstream must receive. The invariants are:
//
//   - nothing refused reaches the upstream: not a request, not a byte;
//   - nothing allowed is mangled: the upstream gets exactly one request
//     with the method and request-target that were matched, byte for byte
//     (query included), the identity headers the decision set and no
//     Authorization, and no API-user credential anywhere in its bytes;
//   - at the end, the upstream saw as many requests as there were allowed
//     rows.

// beforeGateway is the code of a row answered before the gateway handler
// runs, by Go's HTTP server (a 400, 431 or 501 in plain text, or its own
// answer to OPTIONS *) or by Caddy (no site for the host): the body is not
// the gateway's JSON.
const beforeGateway = "(before the gateway)"

// advRow is one attack.
type advRow struct {
	name   string
	raw    string // the request bytes; "Host: x" and {gw} become the gateway's address
	status int
	code   string      // error code of a refusal, netHTTP, or "" when allowed
	fwd    *advForward // what the upstream receives, for an allowed row
	// then are the error codes of the further responses on the
	// connection, for rows that smuggle a second request; each must be a
	// refusal, so that nothing more reaches the upstream.
	then []string
}

// advForward is what an allowed row must deliver to the upstream.
type advForward struct {
	method string
	target string            // the exact request-target, query included
	ident  map[string]string // identity header lines (normalised name → value)
}

// rq builds a raw HTTP/1.1 request with the given header lines, asking the
// server to close the connection after answering.
func rq(method, target string, lines ...string) string {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: x\r\n")
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.String()
}

func authz(v string) string        { return "Authorization: " + v }
func bearerLine(tok string) string { return authz("Bearer " + tok) }
func basicValue(s string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(s))
}

// advUpstream is a backend that records every connection that delivers a
// single byte, whether or not the bytes parse as a request, so that a
// refused request cannot go unnoticed because the backend could not read
// it. Each connection carries one request: the answer closes it.
type advUpstream struct {
	ln       net.Listener
	mu       sync.Mutex
	hits     []advHit
	total    int
	inFlight int // connections accepted and not yet recorded
}

type advHit struct {
	rawRecorded
	method, target string
	err            error // the bytes were not one well-formed request
}

func newAdvUpstream(t *testing.T) *advUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &advUpstream{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.inFlight++
			u.mu.Unlock()
			go u.serve(conn)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

func (u *advUpstream) serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &raw))
	if _, err := br.Peek(1); err != nil {
		u.mu.Lock()
		u.inFlight-- // a connection that never sent a byte
		u.mu.Unlock()
		return
	}
	h := advHit{}
	req, err := http.ReadRequest(br)
	if err == nil {
		_, err = io.Copy(io.Discard, req.Body)
		h.Header, h.Trailer = req.Header, req.Trailer
		h.method = req.Method
	}
	h.err = err
	h.Raw = bytes.Clone(raw.Bytes())
	if line, _, ok := bytes.Cut(h.Raw, []byte("\r\n")); ok {
		if f := strings.Split(string(line), " "); len(f) == 3 {
			h.target = f[1]
		}
	}
	u.mu.Lock()
	u.hits = append(u.hits, h)
	u.total++
	u.inFlight--
	u.mu.Unlock()
	_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nupstream ok")
}

func (u *advUpstream) addr() string { return u.ln.Addr().String() }

// take returns and clears what the upstream received. A request is
// recorded before the upstream answers it, so before the gateway can
// answer the client; but a request the gateway gave up on (a broken body,
// say) is recorded only when its connection ends, so take first waits for
// every accepted connection to be recorded or to end empty.
func (u *advUpstream) take() []advHit {
	within(2*time.Second, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.inFlight == 0
	})
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.hits
	u.hits = nil
	return h
}

func (u *advUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.total
}

// advResponse is one response read off the client's connection.
type advResponse struct {
	status int
	header http.Header
	body   []byte
}

// advSend writes raw to the gateway over a fresh connection and reads
// every response until the server closes it.
func advSend(t *testing.T, g *testGateway, raw string) []advResponse {
	t.Helper()
	host := strings.TrimPrefix(g.url, "http://")
	raw = strings.Replace(raw, "\r\nHost: x\r\n", "\r\nHost: "+host+"\r\n", 1)
	raw = strings.ReplaceAll(raw, "{gw}", host)
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Write from another goroutine: the server may answer and close
	// before it has read everything (an oversized header, say).
	go func() { _, _ = io.WriteString(conn, raw) }()
	method, _, _ := strings.Cut(raw, " ")
	br := bufio.NewReader(conn)
	var out []advResponse
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			if len(out) == 0 {
				t.Fatalf("no response to %.200q: %v", raw, err)
			}
			return out
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, advResponse{status: resp.StatusCode, header: resp.Header, body: body})
		method = "GET"
	}
}

// TestAdversarial runs the whole catalogue against one gateway.
func TestAdversarial(t *testing.T) {
	up := newAdvUpstream(t)
	g := startGateway(t, gatewayOptions{upstream: up.addr(), gatewayBlock: "lockout off"})
	ctx := context.Background()
	up.take()

	all := []string{"devices:list", "devices:get", "devices:update", "events:get", "events:send"}
	prodID, prod := g.createUser(Tenant{Product: "1337"}, UserSpec{Username: ptr("adv-prod"), Scopes: strs(all...), AllowProxiedUsers: ptr(true), AllowedProxiedUsers: strs("alice")})
	orgID, org := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-org"), Scopes: strs(all...)})
	_, otherProd := g.createUser(Tenant{Product: "other-product"}, UserSpec{Username: ptr("adv-other-prod"), Scopes: strs(all...)})
	_, globex := g.createUser(Tenant{Org: "globex"}, UserSpec{Username: ptr("adv-globex"), Scopes: strs(all...)})
	_, globexProd := g.createUser(Tenant{Product: "globex-tracker"}, UserSpec{Username: ptr("adv-globex-prod"), Scopes: strs(all...)})
	_, constrained := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-constrained"), Scopes: strs(all...), ResourceConstraints: &map[string][]string{"device": {"dev1"}}})
	_, listOnly := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-list-only"), Scopes: strs("devices:list")})
	retiredID, retired := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-retired"), Scopes: strs(all...), Retired: ptr(true)})
	_, expired := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-expired"), Scopes: strs(all...), ExpiresAt: ptr(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))})

	// Credentials that were good once: each is used (so the cache holds
	// it) before it is revoked.
	warmed := 0
	warm := func(h string) {
		t.Helper()
		warmed++
		r := advSend(t, g, rq("GET", "/v1/products/1337/devices", h))
		if r[0].status != 200 {
			t.Fatalf("warming %q: status %d %s", h, r[0].status, r[0].body)
		}
	}
	deletedID, deleted := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-deleted"), Scopes: strs(all...)})
	warm(bearerLine(deleted.Token))
	warm(authz(basicValue(deletedID + ":" + deleted.Key + ":" + deleted.Secret)))
	if err := g.app.DeleteUser(ctx, deletedID); err != nil {
		t.Fatal(err)
	}
	rotatedID, rotatedOld := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-rotated"), Scopes: strs(all...)})
	warm(bearerLine(rotatedOld.Token))
	_, rotatedNew, err := g.app.RotateToken(ctx, Tenant{Org: "acme"}, rotatedID)
	if err != nil {
		t.Fatal(err)
	}
	regrantedID, regrantedOld := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-regranted"), Scopes: strs("devices:list")})
	warm(bearerLine(regrantedOld.Token))
	_, regrantedNew, err := g.app.UpdateUser(ctx, Tenant{Org: "acme"}, regrantedID, &UserSpec{Scopes: strs("devices:list", "devices:get")})
	if err != nil || regrantedNew == "" {
		t.Fatalf("granting a scope: new token %q, %v", regrantedNew, err)
	}
	retiredLaterID, retiredLater := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-retired-later"), Scopes: strs(all...)})
	warm(bearerLine(retiredLater.Token))
	if _, tok, err := g.app.UpdateUser(ctx, Tenant{Org: "acme"}, retiredLaterID, &UserSpec{Retired: ptr(true)}); err != nil || tok != "" {
		t.Fatalf("retiring: new token %q, %v", tok, err)
	}
	// An idle timeout is at least a minute: make a user idle for two hours
	// under a one-hour timeout behind the app's back, then drop it from
	// the cache, so the gateway reads it as a client would find it.
	idleID, idle := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-idle"), Scopes: strs(all...)})
	if _, err := g.app.store.UpdateUser(ctx, idleID, func(u *policy.APIUser) error {
		u.CreatedAt, u.IdleTimeout = time.Now().Add(-2*time.Hour), time.Hour
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g.app.cache.invalidateUser(idleID)
	keysID, keys := g.createUser(Tenant{Org: "acme"}, UserSpec{Username: ptr("adv-keys"), Scopes: strs(all...)})
	keyA := keys.Key
	warm(authz(basicValue(keysID + ":" + keyA + ":" + keys.Secret)))
	_, keyB, err := g.app.AddKey(ctx, Tenant{Org: "acme"}, keysID, KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	keyAID, _ := policy.KeyIDOf(keyA)
	if _, err := g.app.DeleteKey(ctx, Tenant{Org: "acme"}, keysID, keyAID); err != nil {
		t.Fatal(err)
	}
	oldSecret := keys.Secret
	warm(authz(basicValue(keysID + ":" + keyB.Value + ":" + oldSecret)))
	_, newSecret, err := g.app.RegenerateSecret(ctx, Tenant{Org: "acme"}, keysID)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(up.take()); n != warmed {
		t.Fatalf("the warm-up requests: upstream got %d, want %d", n, warmed)
	}

	tok := prod.Token
	auth := bearerLine(tok)
	orgAuth := bearerLine(org.Token)
	// identities of the allowed requests
	asProd := map[string]string{"x-api-user": prodID, "x-api-user-org": "acme", "x-api-user-product": "1337", "x-acting-user": prodID}
	asOrg := map[string]string{"x-api-user": orgID, "x-api-user-org": "acme", "x-acting-user": orgID}
	as := func(id, org, product string) map[string]string {
		m := map[string]string{"x-api-user": id, "x-api-user-org": org, "x-acting-user": id}
		if product != "" {
			m["x-api-user-product"] = product
		}
		return m
	}
	allow := func(method, target string, ident map[string]string) *advForward {
		return &advForward{method: method, target: target, ident: ident}
	}
	refusedPath := func(name, target string) advRow {
		return advRow{name: name, raw: rq("GET", target, orgAuth), status: 400, code: "ambiguous_path"}
	}
	refusedByServer := func(name, target string) advRow {
		return advRow{name: name, raw: rq("GET", target, orgAuth), status: 400, code: beforeGateway}
	}
	noEndpoint := func(name, method, target string) advRow {
		return advRow{name: name, raw: rq(method, target, orgAuth), status: 403, code: "no_endpoint"}
	}
	fresh, _ := policy.NewToken()
	hex48 := fresh[len(policy.TokenPrefix):]

	catalogue := []struct {
		category string
		rows     []advRow
	}{
		{"path confusion", []advRow{
			// The baseline: the canonical spelling goes through untouched.
			{name: "canonical path", raw: rq("GET", "/v1/products/1337/devices/dev1", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices/dev1", asOrg)},
			{name: "query kept byte for byte", raw: rq("GET", "/v1/products/1337/devices/dev1?a=%2F..%2f&b=;x&c=%00&c=%c0%ae&d", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices/dev1?a=%2F..%2f&b=;x&c=%00&c=%c0%ae&d", asOrg)},
			{name: "raw UTF-8 and a bad escape in the query kept", raw: rq("GET", "/v1/products/1337/devices?q=caf\xc3\xa9&r=%zz&s=a/../b", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices?q=caf\xc3\xa9&r=%zz&s=a/../b", asOrg)},
			{name: "empty query kept", raw: rq("GET", "/v1/products/1337/devices?", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices?", asOrg)},
			{name: "lower-case escape kept as sent", raw: rq("GET", "/v1/products/1337/devices/caf%c3%a9", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices/caf%c3%a9", asOrg)},
			{name: "escaped space kept as sent", raw: rq("GET", "/v1/products/1337/events/temp%20high", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/events/temp%20high", asOrg)},
			{name: "sub-delimiters kept as sent", raw: rq("GET", "/v1/products/1337/devices/a!$&'()*+,=:@~b", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices/a!$&'()*+,=:@~b", asOrg)},

			{name: "rest wildcard, nested", raw: rq("GET", "/v1/products/1337/events/a/b/c", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/events/a/b/c", asOrg)},
			noEndpoint("rest wildcard, trailing slash", "GET", "/v1/products/1337/events/a/"),
			refusedPath("rest wildcard, dot segments", "/v1/products/1337/events/a/../../../9001/events"),
			refusedPath("rest wildcard, //", "/v1/products/1337/events/a//b"),

			// Dot segments, plain and encoded.
			refusedPath("dot-dot segments", "/v1/products/1337/devices/../../9001/devices"),
			refusedPath("dot segment", "/v1/products/1337/./devices"),
			refusedPath("trailing dot-dot", "/v1/products/1337/devices/dev1/.."),
			refusedPath("trailing dot", "/v1/products/1337/devices/."),
			refusedPath("%2e%2e", "/v1/products/9001/devices/%2e%2e/%2e%2e/1337/devices"),
			refusedPath("%2E%2E", "/v1/products/1337/devices/%2E%2E"),
			refusedPath("%2e", "/v1/products/1337/%2e/devices"),
			refusedPath(".%2e", "/v1/products/1337/devices/.%2e/x"),
			refusedPath("%2e.", "/v1/products/1337/devices/%2e./x"),
			refusedPath("escaped letter", "/v1/products/1337/devices/%64ev1"),
			refusedPath("escaped tilde", "/v1/products/1337/devices/%7edev1"),
			// A malformed escape is refused by net/http's URL parser.
			refusedByServer("IIS %u escape", "/v1/products/1337/devices/%u002e%u002e"),
			refusedByServer("truncated escape", "/v1/products/1337/devices/dev1%2"),
			refusedByServer("bad hex escape", "/v1/products/1337/devices/dev1%zz"),

			// Encoded slash and backslash.
			refusedPath("%2f", "/v1/products/1337/devices/..%2f..%2f9001%2fdevices"),
			refusedPath("%2F", "/v1/products/1337/devices/dev1%2Fsecrets"),
			refusedPath("double-encoded %252f", "/v1/products/1337/devices/..%252f9001"),
			refusedPath("%5c", "/v1/products/1337/devices/..%5c..%5c9001"),
			refusedPath("%5C", "/v1/products/1337/devices/dev1%5Cx"),
			refusedPath("raw backslash", "/v1/products/1337/devices/..\\..\\9001"),
			refusedPath("raw backslash before a segment", "/v1/products/1337\\devices"),

			// Empty segments.
			refusedPath("leading //", "//v1/products/1337/devices"),
			refusedPath("inner //", "/v1/products//1337/devices"),
			refusedPath("trailing //", "/v1/products/1337/devices//"),
			refusedPath("/// path", "///v1/products/1337/devices"),

			// Matrix parameters, Tomcat's /..;/.
			refusedPath("; parameter on a literal", "/v1/products/1337/devices;x/dev1"),
			refusedPath("; parameter on a variable", "/v1/products/1337;x/devices"),
			refusedPath("; at the end", "/v1/products/1337/devices;jsessionid=1"),
			refusedPath("/..;/", "/v1/products/1337/devices/..;/..;/9001/devices"),
			refusedPath("%3b", "/v1/products/1337/devices%3bx"),

			// NUL and control characters.
			refusedPath("%00", "/v1/products/1337/devices/dev1%00.json"),
			refusedPath("%0a", "/v1/products/1337/devices/dev1%0a"),
			refusedPath("%0d%0a header injection", "/v1/products/1337/devices/dev1%0d%0aX-Api-User:%20admin"),
			refusedPath("%09", "/v1/products/1337/devices/dev1%09"),
			refusedPath("%7f", "/v1/products/1337/devices/dev1%7f"),
			refusedPath("%c2%85 (NEL)", "/v1/products/1337/devices/dev1%c2%85"),
			refusedByServer("raw NUL", "/v1/products/1337/devices/dev1\x00"),
			refusedByServer("raw tab", "/v1/products/1337/devices/dev1\tx"),
			refusedByServer("raw DEL", "/v1/products/1337/devices/dev1\x7f"),
			refusedByServer("raw escape char", "/v1/products/1337/devices/dev1\x1b"),
			refusedPath("raw high byte, escaped by net/http", "/v1/products/1337/devices/dev1\x80"),

			// Overlong and confusable UTF-8.
			refusedPath("%c0%ae overlong dot", "/v1/products/1337/devices/%c0%ae%c0%ae/9001"),
			refusedPath("%c0%af overlong slash", "/v1/products/1337/devices/..%c0%af9001"),
			refusedPath("%e0%80%ae 3-byte overlong dot", "/v1/products/1337/devices/%e0%80%ae%e0%80%ae"),
			refusedPath("%c1%9c overlong backslash", "/v1/products/1337/devices/..%c1%9c9001"),
			refusedPath("%f0%80%80%af 4-byte overlong slash", "/v1/products/1337/devices/..%f0%80%80%af9001"),
			refusedPath("%ef%bc%8f fullwidth solidus", "/v1/products/1337/devices/..%ef%bc%8f9001"),
			refusedPath("%ef%bc%8e fullwidth dot", "/v1/products/1337/devices/%ef%bc%8e%ef%bc%8e"),
			refusedPath("%e2%80%a5 two-dot leader", "/v1/products/1337/devices/%e2%80%a5"),
			refusedPath("%ed%a0%80 surrogate", "/v1/products/1337/devices/%ed%a0%80"),
			refusedPath("lone continuation byte", "/v1/products/1337/devices/%80"),

			// Case and trailing slashes: other paths, so no endpoint.
			noEndpoint("upper-case version", "GET", "/V1/products/1337/devices"),
			noEndpoint("upper-case literals", "GET", "/v1/Products/1337/Devices"),
			noEndpoint("all upper case", "GET", "/V1/PRODUCTS/1337/DEVICES"),
			noEndpoint("trailing slash", "GET", "/v1/products/1337/devices/"),
			noEndpoint("trailing slash after a variable", "GET", "/v1/products/1337/devices/dev1/"),
			noEndpoint("root", "GET", "/"),
			noEndpoint("rest wildcard, empty", "GET", "/v1/products/1337/events/"),
			{name: "upper-case slug is another product", raw: rq("GET", "/v1/products/MY-PRODUCT-V1/devices", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "product ID with a leading zero", raw: rq("GET", "/v1/products/01337/devices", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "product ID with a sign", raw: rq("GET", "/v1/products/+1337/devices", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "constrained device in another case", raw: rq("GET", "/v1/products/1337/devices/DEV1", bearerLine(constrained.Token)), status: 403, code: "resource_constraint"},
			{name: "constrained device with a trailing dot", raw: rq("GET", "/v1/products/1337/devices/dev1.", bearerLine(constrained.Token)), status: 403, code: "resource_constraint"},
			{name: "constrained device with an escaped space", raw: rq("GET", "/v1/products/1337/devices/dev1%20", bearerLine(constrained.Token)), status: 403, code: "resource_constraint"},
			{name: "constrained device, canonical", raw: rq("GET", "/v1/products/1337/devices/dev1", bearerLine(constrained.Token)), status: 200, fwd: allow("GET", "/v1/products/1337/devices/dev1", as("adv-constrained", "acme", ""))},

			// Request-target forms other than origin form.
			{name: "absolute form", raw: rq("GET", "http://{gw}/v1/products/1337/devices?x=1", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices?x=1", asOrg)},
			{name: "absolute form with dot segments", raw: rq("GET", "http://{gw}/v1/products/9001/../1337/devices", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "absolute form with an encoded slash", raw: rq("GET", "http://{gw}/v1/products/1337/devices/a%2fb", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "absolute form naming another host", raw: rq("GET", "http://evil.example/v1/products/1337/devices", orgAuth), status: 200, code: beforeGateway},
			{name: "absolute form without a path", raw: rq("GET", "http://{gw}", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "asterisk form", raw: rq("GET", "*", orgAuth), status: 400, code: "ambiguous_path"},
			// net/http answers OPTIONS * itself, with an empty 200.
			{name: "OPTIONS asterisk", raw: rq("OPTIONS", "*", orgAuth), status: 200, code: beforeGateway},
			{name: "authority form", raw: rq("GET", "{gw}", orgAuth), status: 400, code: beforeGateway},
			{name: "relative path", raw: rq("GET", "v1/products/1337/devices", orgAuth), status: 400, code: beforeGateway},

			// Fragments are never sent, and a "#" in a request-target is
			// no fragment. Like every raw byte outside RFC 3986's pchar
			// set but "[" and "]", net/http escapes it before any handler
			// runs (URL.EscapedPath), so the gateway checks and matches
			// the escaped spelling ("%23"), and the upstream receives
			// exactly that: what was matched, though not the bytes the
			// client sent. "[" and "]" reach the gateway raw, and are
			// refused.
			{name: "fragment, which net/http would re-escape", raw: rq("GET", "/v1/products/1337/devices/dev1#frag", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "fragment on a literal, escaped by net/http", raw: rq("GET", "/v1/products/1337/devices#frag", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "fragment hiding dot segments", raw: rq("GET", "/v1/products/1337/devices/dev1#/../../../9001/devices", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "fragment hiding an encoded slash", raw: rq("GET", "/v1/products/1337/devices/dev1#%2f..%2f9001", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "fragment on a constrained device", raw: rq("GET", "/v1/products/1337/devices/dev1#x", bearerLine(constrained.Token)), status: 400, code: "ambiguous_path"},
			{name: "fragment in the query, kept", raw: rq("GET", "/v1/products/1337/devices?x=1#frag", orgAuth), status: 200, fwd: allow("GET", "/v1/products/1337/devices?x=1#frag", asOrg)},
			{name: "raw brace, which net/http would re-escape", raw: rq("GET", "/v1/products/1337/devices/{dev1}", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "raw quote, which net/http would re-escape", raw: rq("GET", "/v1/products/1337/devices/\"dev1\"", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "raw pipe, which net/http would re-escape", raw: rq("GET", "/v1/products/1337/devices/dev1|x", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "raw UTF-8, which net/http would re-escape", raw: rq("GET", "/v1/products/1337/devices/caf\xc3\xa9", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "raw overlong dot, escaped by net/http", raw: rq("GET", "/v1/products/1337/devices/\xc0\xae\xc0\xae", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "raw fullwidth solidus, escaped by net/http", raw: rq("GET", "/v1/products/1337/devices/..\xef\xbc\x8f9001", orgAuth), status: 400, code: "ambiguous_path"},
			{name: "raw bracket", raw: rq("GET", "/v1/products/1337/devices/[dev1]", orgAuth), status: 400, code: "ambiguous_path"},
			// An escaped "?" or "#" ends the path for any hop that decodes
			// it and parses it again: /devices/0a1b2c%3F/x would reach
			// /devices/0a1b2c there, an endpoint with another scope.
			refusedPath("escaped question mark", "/v1/products/1337/devices/0a1b2c%3F/x"),
			refusedPath("escaped question mark, lower case", "/v1/products/1337/devices/0a1b2c%3f/x"),
			refusedPath("escaped number sign", "/v1/products/1337/devices/0a1b2c%23/x"),
			refusedPath("fullwidth question mark", "/v1/products/1337/devices/0a1b2c%EF%BC%9F/x"),
			refusedPath("fullwidth number sign", "/v1/products/1337/devices/0a1b2c%EF%BC%83/x"),
			refusedPath("small question mark", "/v1/products/1337/devices/0a1b2c%EF%B9%96/x"),
			refusedPath("small number sign", "/v1/products/1337/devices/0a1b2c%EF%B9%9F/x"),
		}},
		{"header smuggling", []advRow{
			{name: "Authorization twice, both valid", raw: rq("GET", "/v1/products/1337/devices", auth, auth), status: 401, code: "malformed_credentials"},
			{name: "Authorization twice, ours and another scheme", raw: rq("GET", "/v1/products/1337/devices", auth, authz("Basic dXNlcjpwYXNz")), status: 401, code: "malformed_credentials"},
			{name: "Authorization twice in two cases", raw: rq("GET", "/v1/products/1337/devices", auth, "authorization: Bearer "+globex.Token), status: 401, code: "malformed_credentials"},
			{name: "Authorization twice, another scheme first", raw: rq("GET", "/v1/products/1337/devices", authz("Digest x"), auth), status: 401, code: "malformed_credentials"},
			{name: "two bearer tokens in one field", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer "+tok+", Bearer "+globex.Token)), status: 401, code: "malformed_credentials"},
			{name: "lower-case authorization", raw: rq("GET", "/v1/products/1337/devices", "authorization: Bearer "+tok), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "upper-case AUTHORIZATION and scheme", raw: rq("GET", "/v1/products/1337/devices", "AUTHORIZATION: BEARER "+tok), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "Authorization with underscore is no credential", raw: rq("GET", "/v1/products/1337/devices", "Author_ization: Bearer "+tok), status: 401, code: "missing_credentials"},
			// A credential anywhere but Authorization is refused before
			// anything else, so it is never forwarded or logged.
			{name: "token in Proxy-Authorization", raw: rq("GET", "/v1/products/1337/devices", "Proxy-Authorization: Bearer "+tok), status: 400, code: "misplaced_credentials"},
			{name: "token in a cookie", raw: rq("GET", "/v1/products/1337/devices", "Cookie: Authorization=Bearer%20"+tok), status: 400, code: "misplaced_credentials"},
			{name: "token in the query", raw: rq("GET", "/v1/products/1337/devices?access_token="+tok), status: 400, code: "misplaced_credentials"},
			{name: "token in the query of an allowed request", raw: rq("GET", "/v1/products/1337/devices?access_token="+tok, auth), status: 400, code: "misplaced_credentials"},
			{name: "token in the query, percent-encoded", raw: rq("GET", "/v1/products/1337/devices?t=%61piu%5Fat%5F"+tok[len(policy.TokenPrefix):], orgAuth), status: 400, code: "misplaced_credentials"},
			{name: "token in the query, encoded twice", raw: rq("GET", "/v1/products/1337/devices?t=apiu%255Fat%255F"+tok[len(policy.TokenPrefix):], orgAuth), status: 400, code: "misplaced_credentials"},
			{name: "token in the query, upper case", raw: rq("GET", "/v1/products/1337/devices?t="+strings.ToUpper(tok), orgAuth), status: 400, code: "misplaced_credentials"},
			{name: "Secret in the query", raw: rq("GET", "/v1/products/1337/devices?secret="+newSecret, orgAuth), status: 400, code: "misplaced_credentials"},
			{name: "Key in the query name", raw: rq("GET", "/v1/products/1337/devices?"+keyB.Value+"=1", orgAuth), status: 400, code: "misplaced_credentials"},
			{name: "token in another header", raw: rq("GET", "/v1/products/1337/devices", orgAuth, "X-Api-Key: "+tok), status: 400, code: "misplaced_credentials"},
			{name: "Basic credential in another header", raw: rq("GET", "/v1/products/1337/devices", orgAuth, "X-Forwarded-Authorization: "+basicValue(keysID+":"+keyB.Value+":"+newSecret)), status: 400, code: "misplaced_credentials"},
			{name: "token in the path", raw: rq("GET", "/v1/products/1337/devices/"+tok, orgAuth), status: 400, code: "misplaced_credentials"},
			{name: "token declared as a trailer, sent up front", raw: rq("GET", "/v1/products/1337/devices", orgAuth, "Trailer: X-Token", "X-Token: "+tok), status: 400, code: "misplaced_credentials"},
			{name: "token sent as a trailer is dropped", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + orgAuth + "\r\nTrailer: X-Token\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunk("{}") + "0\r\nX-Token: " + tok + "\r\n\r\n", status: 200, fwd: allow("POST", "/v1/products/1337/events", asOrg)},
			{name: "Authorization only as a trailer", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\nTrailer: Authorization\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n" + auth + "\r\n\r\n", status: 401, code: "missing_credentials"},
			{name: "X_Api_User", raw: rq("GET", "/v1/products/1337/devices", auth, "X_Api_User: spoof-1"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "X-Api_User-Org", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api_User-Org: spoof-2"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "x_api_user_product", raw: rq("GET", "/v1/products/1337/devices", orgAuth, "x_api_user_product: spoof-3"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asOrg)},
			{name: "X_Acting_User", raw: rq("GET", "/v1/products/1337/devices", auth, "X_Acting_User: spoof-4"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "X_Proxied_User is not a proxied user", raw: rq("GET", "/v1/products/1337/devices", auth, "X_Proxied_User: spoof-5"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "identity headers in every case, repeated", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User: spoof-6", "x-api-user: spoof-7", "X-API-USER-ORG: spoof-8", "X-Api-User-Product: spoof-9", "x-acting-user: spoof-10"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "identity headers for a user that has no product", raw: rq("GET", "/v1/products/1337/devices", orgAuth, "X-Api-User-Product: spoof-11"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asOrg)},
			{name: "identity headers named in Connection", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User: spoof-12", "Connection: X-Api-User, X-Acting-User, X-Api-User-Org, x_api_user_product, X-Proxied-User, Authorization"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "proxied user named in Connection", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Proxied-User: alice", "Connection: X-Proxied-User"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", map[string]string{"x-api-user": prodID, "x-api-user-org": "acme", "x-api-user-product": "1337", "x-proxied-user": "alice", "x-acting-user": "alice"})},
			{name: "proxied user twice in two spellings", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Proxied-User: alice", "x-proxied-user: alice"), status: 403, code: "invalid_proxied_user"},
			{name: "proxied user not listed", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Proxied-User: mallory"), status: 403, code: "proxied_user_not_allowed"},
			{name: "every spoofed header and trailer at once", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nConnection: close\r\n" + spoofHeaders + spoofTrailers, status: 200, fwd: allow("POST", "/v1/products/1337/events", asProd)},
			{name: "undeclared identity trailers", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Api-User: spoof-13\r\nX-Acting-User: spoof-14\r\n\r\n", status: 200, fwd: allow("POST", "/v1/products/1337/events", asProd)},

			// Framing. Go's server implements RFC 9112 strictly: one
			// Transfer-Encoding, "chunked" only, which then overrides and
			// removes Content-Length; anything else is refused.
			{name: "CL.TE: a second request hidden after the chunked body", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/products/9001/devices HTTP/1.1\r\nHost: {gw}\r\n" + auth + "\r\nConnection: close\r\n\r\n", status: 200, fwd: allow("POST", "/v1/products/1337/events", asProd), then: []string{"tenant_mismatch"}},
			{name: "TE.CL: a second request inside the chunked body", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunk("GET /v1/products/9001/devices HTTP/1.1\r\nHost: y\r\n\r\n") + "0\r\n\r\n", status: 200, fwd: allow("POST", "/v1/products/1337/events", asProd)},
			{name: "two Transfer-Encoding fields", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 501, code: beforeGateway},
			{name: "Transfer-Encoding chunked, chunked", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", status: 501, code: beforeGateway},
			{name: "Transfer-Encoding gzip, chunked", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", status: 501, code: beforeGateway},
			{name: "Transfer-Encoding xchunked", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", status: 501, code: beforeGateway},
			{name: "Transfer-Encoding with a space before the colon", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", status: 400, code: beforeGateway},
			{name: "Transfer-Encoding folded onto a second line", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", status: 200, fwd: allow("POST", "/v1/products/1337/events", asProd)},
			{name: "two different Content-Lengths", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", status: 400, code: beforeGateway},
			{name: "Content-Length list", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nContent-Length: 5, 5\r\n\r\nhello", status: 400, code: beforeGateway},
			{name: "Content-Length with a sign", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nContent-Length: +5\r\n\r\nhello", status: 400, code: beforeGateway},
			{name: "HTTP/1.0 ignores Transfer-Encoding", raw: "POST /v1/products/1337/events HTTP/1.0\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", status: 200, fwd: allow("POST", "/v1/products/1337/events", asProd)},
			// Headers that IIS, Symfony and other backends read as the
			// real URL would route the request to another path than the
			// one matched: refused as an ambiguous path, in any spelling.
			{name: "X-Original-URL to another tenant", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Original-URL: /v1/products/9001/devices"), status: 400, code: "ambiguous_path"},
			{name: "X-Rewrite-URL to another tenant", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Rewrite-URL: /v1/products/9001/devices"), status: 400, code: "ambiguous_path"},
			{name: "x-original-url lower case, same path", raw: rq("GET", "/v1/products/1337/devices", auth, "x-original-url: /v1/products/1337/devices"), status: 400, code: "ambiguous_path"},
			{name: "X-ORIGINAL-URL before authentication", raw: rq("GET", "/v1/products/1337/devices", "X-ORIGINAL-URL: /admin"), status: 400, code: "ambiguous_path"},
			// A protocol upgrade would turn the connection into a tunnel
			// to the backend once it answers 101 (h2c smuggling): every
			// request inside would go undecided.
			{name: "Upgrade: h2c", raw: rq("GET", "/v1/products/1337/devices", auth, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"), status: 400, code: "upgrade_not_allowed"},
			{name: "Upgrade: h2c without HTTP2-Settings", raw: rq("GET", "/v1/products/1337/devices", auth, "Connection: Upgrade", "Upgrade: h2c"), status: 400, code: "upgrade_not_allowed"},
			{name: "Upgrade without Connection", raw: rq("GET", "/v1/products/1337/devices", auth, "upgrade: h2c"), status: 400, code: "upgrade_not_allowed"},
			{name: "WebSocket upgrade", raw: rq("GET", "/v1/products/1337/devices", auth, "Connection: keep-alive, Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), status: 400, code: "upgrade_not_allowed"},
			{name: "Connection: upgrade alone", raw: rq("GET", "/v1/products/1337/devices", auth, "Connection: UPGRADE"), status: 400, code: "upgrade_not_allowed"},
			{name: "HTTP2-Settings alone", raw: rq("GET", "/v1/products/1337/devices", auth, "HTTP2-Settings: AAMAAABkAAQAAP__"), status: 400, code: "upgrade_not_allowed"},
			{name: "Upgrade before authentication", raw: rq("GET", "/v1/products/1337/devices", "Connection: Upgrade", "Upgrade: h2c"), status: 400, code: "upgrade_not_allowed"},
			{name: "X-Original-URL declared as a trailer", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTrailer: X-Original-URL\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Original-URL: /admin\r\n\r\n", status: 400, code: "ambiguous_path"},
			{name: "two Host fields", raw: rq("GET", "/v1/products/1337/devices", auth, "Host: evil.example"), status: 400, code: beforeGateway},

			// Line folding: net/http replaces an obs-fold with a space
			// (RFC 9112 section 5.2 allows that or a 400), so a folded
			// field is one field, decided and forwarded as one.
			{name: "Authorization folded onto a second line", raw: rq("GET", "/v1/products/1337/devices", "Authorization: Bearer", " "+tok), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "identity header folded onto a second line", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User: spoof-15", " spoof-16"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "method override folded into another header", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Note: a", " X-HTTP-Method-Override: DELETE"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "method override folded onto a second line", raw: rq("GET", "/v1/products/1337/devices", auth, "X-HTTP-Method-Override:", " DELETE"), status: 400, code: "method_override"},
			{name: "header line starting with a space", raw: "GET /v1/products/1337/devices HTTP/1.1\r\n X-Api-User: spoof-17\r\nHost: x\r\n" + auth + "\r\nConnection: close\r\n\r\n", status: 400, code: beforeGateway},
			{name: "space before the colon", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User : spoof-18"), status: 400, code: beforeGateway},
			{name: "header line without a colon", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User spoof-19"), status: 400, code: beforeGateway},
			{name: "bare CR inside a value", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Note: a\rX-Api-User: spoof-20"), status: 400, code: beforeGateway},
			{name: "NUL inside a value", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User: spoof-21\x00admin"), status: 400, code: beforeGateway},
			// Caddy reads at most 16 KiB of header by default.
			{name: "8 KiB identity header", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User: spoof-"+strings.Repeat("a", 8<<10)), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "8 KiB proxied user", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Proxied-User: alice"+strings.Repeat("a", 8<<10)), status: 403, code: "invalid_proxied_user"},
			{name: "8 KiB unrelated header", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Filler: "+strings.Repeat("b", 8<<10)), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "64 KiB identity header", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Api-User: spoof-"+strings.Repeat("c", 64<<10)), status: 431, code: beforeGateway},
			{name: "1 MiB header", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Filler: "+strings.Repeat("d", 1<<20)), status: 431, code: beforeGateway},
		}},
		{"method override", []advRow{
			{name: "X-HTTP-Method-Override", raw: rq("GET", "/v1/products/1337/devices", auth, "X-HTTP-Method-Override: DELETE"), status: 400, code: "method_override"},
			{name: "X-Http-Method", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Http-Method: PUT"), status: 400, code: "method_override"},
			{name: "X-Method-Override", raw: rq("GET", "/v1/products/1337/devices", auth, "X-Method-Override: DELETE"), status: 400, code: "method_override"},
			{name: "lower-case name", raw: rq("GET", "/v1/products/1337/devices", auth, "x-http-method-override: DELETE"), status: 400, code: "method_override"},
			{name: "upper-case name", raw: rq("GET", "/v1/products/1337/devices", auth, "X-METHOD-OVERRIDE: DELETE"), status: 400, code: "method_override"},
			{name: "empty value", raw: rq("GET", "/v1/products/1337/devices", auth, "X-HTTP-Method-Override:"), status: 400, code: "method_override"},
			{name: "same method as sent", raw: rq("GET", "/v1/products/1337/devices", auth, "X-HTTP-Method-Override: GET"), status: 400, code: "method_override"},
			{name: "POST turned into GET", raw: rq("POST", "/v1/products/1337/devices", auth, "X-HTTP-Method-Override: GET"), status: 400, code: "method_override"},
			{name: "before authentication", raw: rq("GET", "/v1/products/1337/devices", "X-HTTP-Method-Override: DELETE"), status: 400, code: "method_override"},
			{name: "after the path check", raw: rq("GET", "/v1/products/1337/devices/..", auth, "X-HTTP-Method-Override: DELETE"), status: 400, code: "ambiguous_path"},
			{name: "declared as a trailer", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTrailer: X-HTTP-Method-Override\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-HTTP-Method-Override: DELETE\r\n\r\n", status: 400, code: "method_override"},
			{name: "sent as an undeclared trailer", raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-HTTP-Method-Override: DELETE\r\n\r\n", status: 200, fwd: allow("POST", "/v1/products/1337/events", asProd)},
			{name: "X_HTTP_Method_Override never reaches the upstream", raw: rq("GET", "/v1/products/1337/devices", auth, "X_HTTP_Method_Override: DELETE", "x-http_method: DELETE"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			// Laravel and Symfony read a _method query parameter as the
			// method, in the spellings PHP folds into that name.
			{name: "_method query parameter", raw: rq("POST", "/v1/products/1337/events?_method=DELETE", auth), status: 400, code: "method_override"},
			{name: "_method after another parameter", raw: rq("POST", "/v1/products/1337/events?x=1&_method=DELETE", auth), status: 400, code: "method_override"},
			{name: "_METHOD upper case", raw: rq("POST", "/v1/products/1337/events?_METHOD=DELETE", auth), status: 400, code: "method_override"},
			{name: "%5Fmethod encoded", raw: rq("POST", "/v1/products/1337/events?%5Fmethod=DELETE", auth), status: 400, code: "method_override"},
			{name: ".method, which PHP reads as _method", raw: rq("POST", "/v1/products/1337/events?.method=DELETE", auth), status: 400, code: "method_override"},
			{name: "_method[] array form", raw: rq("POST", "/v1/products/1337/events?_method[]=DELETE", auth), status: 400, code: "method_override"},
			{name: "_method as a value is no override", raw: rq("GET", "/v1/products/1337/devices?sort=_method", auth), status: 200, fwd: allow("GET", "/v1/products/1337/devices?sort=_method", asProd)},
			{name: "lower-case get", raw: rq("get", "/v1/products/1337/devices", auth), status: 403, code: "no_endpoint"},
			{name: "mixed-case Get", raw: rq("Get", "/v1/products/1337/devices", auth), status: 403, code: "no_endpoint"},
			{name: "HEAD is not GET", raw: rq("HEAD", "/v1/products/1337/devices", auth), status: 403, code: "no_endpoint"},
			{name: "OPTIONS", raw: rq("OPTIONS", "/v1/products/1337/devices", auth), status: 403, code: "no_endpoint"},
			{name: "TRACE", raw: rq("TRACE", "/v1/products/1337/devices", auth), status: 403, code: "no_endpoint"},
			{name: "TRACE without credentials", raw: rq("TRACE", "/v1/products/1337/devices"), status: 401, code: "missing_credentials"},
			{name: "PATCH on a PUT endpoint", raw: rq("PATCH", "/v1/products/1337/devices/dev1", auth), status: 403, code: "no_endpoint"},
			{name: "DELETE", raw: rq("DELETE", "/v1/products/1337/devices/dev1", auth), status: 403, code: "no_endpoint"},
			{name: "unknown method", raw: rq("PURGE", "/v1/products/1337/devices", auth), status: 403, code: "no_endpoint"},
			{name: "CONNECT with a path, a tunnel", raw: rq("CONNECT", "/v1/products/1337/devices", auth), status: 400, code: "upgrade_not_allowed"},
			{name: "CONNECT with an authority", raw: rq("CONNECT", "{gw}", auth), status: 400, code: "ambiguous_path"},
			{name: "method with a bad character", raw: rq("G@T", "/v1/products/1337/devices", auth), status: 400, code: beforeGateway},
			{name: "two spaces after the method", raw: rq("GET ", "/v1/products/1337/devices", auth), status: 400, code: beforeGateway},
		}},
		{"credentials", []advRow{
			{name: "none", raw: rq("GET", "/v1/products/1337/devices"), status: 401, code: "missing_credentials"},
			{name: "empty Authorization", raw: rq("GET", "/v1/products/1337/devices", "Authorization:"), status: 401, code: "missing_credentials"},
			{name: "Bearer alone", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer")), status: 401, code: "missing_credentials"},
			{name: "empty Bearer", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer ")), status: 401, code: "missing_credentials"},
			{name: "Bearer twice", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer Bearer "+tok)), status: 401, code: "malformed_credentials"},
			{name: "token without a scheme", raw: rq("GET", "/v1/products/1337/devices", authz(tok)), status: 401, code: "malformed_credentials"},
			{name: "tab after the scheme", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer\t"+tok)), status: 401, code: "malformed_credentials"},
			{name: "other scheme", raw: rq("GET", "/v1/products/1337/devices", authz("Digest username=\"adv-prod\"")), status: 401, code: "missing_credentials"},
			{name: "extra spaces after the scheme", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer   "+tok)), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "blanks around the field value", raw: rq("GET", "/v1/products/1337/devices", "Authorization: \t Bearer "+tok+" \t"), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			// The gateway looks at no more than policy.MaxAuthorizationLen
			// bytes; Caddy refuses a header block over 16 KiB before that.
			{name: "token one byte over the bound", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer "+tok+strings.Repeat("a", policy.MaxAuthorizationLen-len("Bearer ")-len(tok)+1))), status: 401, code: "malformed_credentials"},
			{name: "8 KiB token", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer "+policy.TokenPrefix+strings.Repeat("a", 8<<10))), status: 401, code: "malformed_credentials"},
			{name: "8 KiB of anything", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer "+strings.Repeat("A", 8<<10))), status: 401, code: "malformed_credentials"},
			{name: "8 KiB Basic", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyB.Value+":"+newSecret+strings.Repeat("k", 6<<10)))), status: 401, code: "malformed_credentials"},
			{name: "64 KiB token", raw: rq("GET", "/v1/products/1337/devices", authz("Bearer "+policy.TokenPrefix+strings.Repeat("a", 64<<10))), status: 431, code: beforeGateway},
			{name: "64 KiB Basic", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(strings.Repeat("k", 48<<10)))), status: 431, code: beforeGateway},
			{name: "a Secret as a bearer token", raw: rq("GET", "/v1/products/1337/devices", bearerLine(policy.SecretPrefix+hex48)), status: 401, code: "malformed_credentials"},
			{name: "a Key as a bearer token", raw: rq("GET", "/v1/products/1337/devices", bearerLine(keyB.Value)), status: 401, code: "malformed_credentials"},
			{name: "upper-case prefix", raw: rq("GET", "/v1/products/1337/devices", bearerLine(strings.ToUpper(policy.TokenPrefix)+hex48)), status: 401, code: "malformed_credentials"},
			{name: "one hex digit short", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok[:len(tok)-1])), status: 401, code: "malformed_credentials"},
			{name: "one hex digit long", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok+"0")), status: 401, code: "malformed_credentials"},
			{name: "upper-case hex", raw: rq("GET", "/v1/products/1337/devices", bearerLine(policy.TokenPrefix+strings.ToUpper(tok[len(policy.TokenPrefix):]))), status: 401, code: "malformed_credentials"},
			{name: "non-hex character", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok[:len(tok)-1]+"g")), status: 401, code: "malformed_credentials"},
			{name: "valid token, trailing garbage", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok+"x")), status: 401, code: "malformed_credentials"},
			{name: "valid token, trailing word", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok+" x")), status: 401, code: "malformed_credentials"},
			{name: "valid token, trailing comma", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok+",")), status: 401, code: "malformed_credentials"},
			{name: "valid token, NUL inside", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok[:20]+"\x00"+tok[20:])), status: 400, code: beforeGateway},
			{name: "valid token, NUL after", raw: rq("GET", "/v1/products/1337/devices", bearerLine(tok+"\x00")), status: 400, code: beforeGateway},
			{name: "unknown token", raw: rq("GET", "/v1/products/1337/devices", bearerLine(fresh)), status: 401, code: "invalid_credentials"},
			{name: "Basic without a colon", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID))), status: 401, code: "missing_credentials"},
			{name: "Basic user and password", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":password"))), status: 401, code: "missing_credentials"},
			{name: "Basic, invalid base64", raw: rq("GET", "/v1/products/1337/devices", authz("Basic !!!!")), status: 401, code: "malformed_credentials"},
			{name: "Basic, base64 without padding", raw: rq("GET", "/v1/products/1337/devices", authz("Basic "+base64.RawStdEncoding.EncodeToString([]byte(keysID+":"+keyB.Value+":"+newSecret)))), status: 401, code: "malformed_credentials"},
			{name: "Basic, base64 with a space", raw: rq("GET", "/v1/products/1337/devices", authz("Basic "+base64.StdEncoding.EncodeToString([]byte(keysID+":"+keyB.Value+":"))+" "+base64.StdEncoding.EncodeToString([]byte(newSecret)))), status: 401, code: "malformed_credentials"},
			{name: "Basic, key without secret", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyB.Value))), status: 401, code: "malformed_credentials"},
			{name: "Basic, secret and key swapped", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+newSecret+":"+keyB.Value))), status: 401, code: "malformed_credentials"},
			{name: "Basic, a fourth field", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyB.Value+":"+newSecret+":x"))), status: 401, code: "malformed_credentials"},
			{name: "Basic, trailing garbage", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyB.Value+":"+newSecret+"0"))), status: 401, code: "malformed_credentials"},
			{name: "Basic, NUL in the user ID", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+"\x00:"+keyB.Value+":"+newSecret))), status: 401, code: "malformed_credentials"},
			{name: "Basic, empty user ID", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(":"+keyB.Value+":"+newSecret))), status: 401, code: "malformed_credentials"},
			{name: "Basic, another user's ID", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(orgID+":"+keyB.Value+":"+newSecret))), status: 401, code: "invalid_credentials"},
			{name: "Basic, unknown user ID", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue("nobody:"+keyB.Value+":"+newSecret))), status: 401, code: "invalid_credentials"},
			{name: "Basic, another user's key", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+org.Key+":"+newSecret))), status: 401, code: "invalid_credentials"},
			{name: "Basic, another user's secret", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyB.Value+":"+org.Secret))), status: 401, code: "invalid_credentials"},
			{name: "Basic, valid", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyB.Value+":"+newSecret))), status: 200, fwd: allow("GET", "/v1/products/1337/devices", as(keysID, "acme", ""))},
			{name: "basic in lower case, valid", raw: rq("GET", "/v1/products/1337/devices", authz("basic "+base64.StdEncoding.EncodeToString([]byte(keysID+":"+keyB.Value+":"+newSecret)))), status: 200, fwd: allow("GET", "/v1/products/1337/devices", as(keysID, "acme", ""))},
		}},
		{"tenancy and lifecycle", []advRow{
			{name: "product user, own product by ID", raw: rq("GET", "/v1/products/1337/devices", auth), status: 200, fwd: allow("GET", "/v1/products/1337/devices", asProd)},
			{name: "product user, own product by slug", raw: rq("GET", "/v1/products/my-product-v1/devices", auth), status: 200, fwd: allow("GET", "/v1/products/my-product-v1/devices", asProd)},
			{name: "product user, sibling product by ID", raw: rq("GET", "/v1/products/4242/devices", auth), status: 403, code: "tenant_mismatch"},
			{name: "product user, sibling product by slug", raw: rq("GET", "/v1/products/other-product/devices", auth), status: 403, code: "tenant_mismatch"},
			{name: "product user, other org's product by ID", raw: rq("GET", "/v1/products/9001/devices", auth), status: 403, code: "tenant_mismatch"},
			{name: "product user, other org's product by slug", raw: rq("GET", "/v1/products/globex-tracker/devices", auth), status: 403, code: "tenant_mismatch"},
			{name: "product user, its own org's route", raw: rq("GET", "/v1/orgs/acme/events", auth), status: 403, code: "tenant_mismatch"},
			{name: "sibling product user, this product by ID", raw: rq("GET", "/v1/products/1337/devices", bearerLine(otherProd.Token)), status: 403, code: "tenant_mismatch"},
			{name: "sibling product user, this product by slug", raw: rq("GET", "/v1/products/my-product-v1/devices", bearerLine(otherProd.Token)), status: 403, code: "tenant_mismatch"},
			{name: "sibling product user, own product", raw: rq("GET", "/v1/products/other-product/devices", bearerLine(otherProd.Token)), status: 200, fwd: allow("GET", "/v1/products/other-product/devices", as("adv-other-prod", "acme", "4242"))},
			{name: "org user, org route", raw: rq("GET", "/v1/orgs/acme/events", orgAuth), status: 200, fwd: allow("GET", "/v1/orgs/acme/events", asOrg)},
			{name: "org user, other org's route", raw: rq("GET", "/v1/orgs/globex/events", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "org user, org ID in upper case", raw: rq("GET", "/v1/orgs/ACME/events", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "org user, unknown org", raw: rq("GET", "/v1/orgs/initech/events", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "org user, other org's product by ID", raw: rq("GET", "/v1/products/9001/devices", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "org user, other org's product by slug", raw: rq("GET", "/v1/products/globex-tracker/devices", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "org user, unknown product", raw: rq("GET", "/v1/products/777/devices", orgAuth), status: 403, code: "tenant_mismatch"},
			{name: "other org's user, this product by ID", raw: rq("GET", "/v1/products/1337/devices", bearerLine(globex.Token)), status: 403, code: "tenant_mismatch"},
			{name: "other org's user, this product by slug", raw: rq("GET", "/v1/products/my-product-v1/devices", bearerLine(globex.Token)), status: 403, code: "tenant_mismatch"},
			{name: "other org's user, this org's route", raw: rq("GET", "/v1/orgs/acme/events", bearerLine(globex.Token)), status: 403, code: "tenant_mismatch"},
			{name: "other org's user, own product", raw: rq("GET", "/v1/products/globex-tracker/devices", bearerLine(globex.Token)), status: 200, fwd: allow("GET", "/v1/products/globex-tracker/devices", as("adv-globex", "globex", ""))},
			{name: "other org's product user, this product", raw: rq("GET", "/v1/products/1337/devices", bearerLine(globexProd.Token)), status: 403, code: "tenant_mismatch"},
			{name: "missing scope", raw: rq("GET", "/v1/products/1337/devices/dev1", bearerLine(listOnly.Token)), status: 403, code: "insufficient_scope"},
			{name: "constrained user, other device", raw: rq("GET", "/v1/products/1337/devices/dev2", bearerLine(constrained.Token)), status: 403, code: "resource_constraint"},
			{name: "retired", raw: rq("GET", "/v1/products/1337/devices", bearerLine(retired.Token)), status: 401, code: "user_retired"},
			{name: "retired, with key and secret", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(retiredID+":"+retired.Key+":"+retired.Secret))), status: 401, code: "user_retired"},
			{name: "retired after use, token kept", raw: rq("GET", "/v1/products/1337/devices", bearerLine(retiredLater.Token)), status: 401, code: "user_retired"},
			{name: "expired", raw: rq("GET", "/v1/products/1337/devices", bearerLine(expired.Token)), status: 401, code: "user_expired"},
			{name: "idle longer than its idle timeout", raw: rq("GET", "/v1/products/1337/devices", bearerLine(idle.Token)), status: 401, code: "user_idle_expired"},
			{name: "idle, with key and secret", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(idleID+":"+idle.Key+":"+idle.Secret))), status: 401, code: "user_idle_expired"},
			{name: "deleted user's token", raw: rq("GET", "/v1/products/1337/devices", bearerLine(deleted.Token)), status: 401, code: "invalid_credentials"},
			{name: "deleted user's key and secret", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(deletedID+":"+deleted.Key+":"+deleted.Secret))), status: 401, code: "invalid_credentials"},
			{name: "rotated: the old token", raw: rq("GET", "/v1/products/1337/devices", bearerLine(rotatedOld.Token)), status: 401, code: "invalid_credentials"},
			{name: "rotated: the new token", raw: rq("GET", "/v1/products/1337/devices", bearerLine(rotatedNew)), status: 200, fwd: allow("GET", "/v1/products/1337/devices", as(rotatedID, "acme", ""))},
			{name: "privileges changed: the old token", raw: rq("GET", "/v1/products/1337/devices/dev1", bearerLine(regrantedOld.Token)), status: 401, code: "invalid_credentials"},
			{name: "privileges changed: the new token", raw: rq("GET", "/v1/products/1337/devices/dev1", bearerLine(regrantedNew)), status: 200, fwd: allow("GET", "/v1/products/1337/devices/dev1", as(regrantedID, "acme", ""))},
			{name: "deleted key", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyA+":"+newSecret))), status: 401, code: "invalid_credentials"},
			{name: "deleted key with the old secret", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyA+":"+oldSecret))), status: 401, code: "invalid_credentials"},
			{name: "current key with the old secret", raw: rq("GET", "/v1/products/1337/devices", authz(basicValue(keysID+":"+keyB.Value+":"+oldSecret))), status: 401, code: "invalid_credentials"},
		}},
	}

	allowed := 0
	for _, cat := range catalogue {
		n := 0
		t.Run(cat.category, func(t *testing.T) {
			for _, row := range cat.rows {
				if row.fwd != nil {
					n++
				}
				t.Run(row.name, func(t *testing.T) { runAdvRow(t, g, up, row) })
			}
		})
		allowed += n
		t.Logf("%s: %d rows, %d allowed", cat.category, len(cat.rows), n)
	}
	time.Sleep(50 * time.Millisecond) // anything late would show up here
	if n := up.count() - warmed; n != allowed {
		t.Errorf("the upstream received %d requests in all; %d rows were allowed", n, allowed)
	}
}

// runAdvRow sends one row and checks the response and what the upstream
// received.
func runAdvRow(t *testing.T, g *testGateway, up *advUpstream, row advRow) {
	t.Helper()
	if (row.fwd == nil) == (row.code == "") {
		t.Fatalf("bad row: an allowed row has a forward and no code, a refused one a code and no forward")
	}
	resps := advSend(t, g, row.raw)
	hits := up.take()
	r := resps[0]
	var eb errorBody
	jsonErr := json.Unmarshal(r.body, &eb)
	if r.status != row.status {
		t.Errorf("status %d, want %d (body %.200q)", r.status, row.status, r.body)
	}
	code := row.code
	if strings.HasPrefix(row.raw, "HEAD ") {
		// A response to HEAD has no body: the status and the JSON
		// content type are all there is to check.
		if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Errorf("Content-Type %q, want JSON", ct)
		}
		code = ""
	}
	switch code {
	case "":
	case beforeGateway:
		if jsonErr == nil && eb.Error != "" {
			t.Errorf("answered by the gateway with %q; want an answer before the gateway runs", eb.Error)
		}
	default:
		if jsonErr != nil || eb.Error != row.code || eb.OK || eb.Description == "" {
			t.Errorf("error body %.200q, want code %q", r.body, row.code)
		}
		if row.status == http.StatusUnauthorized && len(r.header.Values("Www-Authenticate")) == 0 {
			t.Error("401 without WWW-Authenticate")
		}
	}
	var then []string
	for _, x := range resps[1:] {
		var eb errorBody
		_ = json.Unmarshal(x.body, &eb)
		then = append(then, eb.Error)
	}
	if !slices.Equal(then, row.then) {
		t.Errorf("further responses %q on the connection, want %q", then, row.then)
	}
	if row.fwd == nil {
		for _, h := range hits {
			t.Errorf("refused request reached the upstream (%v):\n%s", h.err, h.Raw)
		}
		return
	}
	if len(hits) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(hits))
	}
	if string(r.body) != "upstream ok" {
		t.Errorf("the client got %.200q, not the upstream's answer", r.body)
	}
	h := hits[0]
	if h.err != nil {
		t.Fatalf("upstream got bytes that are not one request (%v):\n%s", h.err, h.Raw)
	}
	if h.method != row.fwd.method || h.target != row.fwd.target {
		t.Errorf("upstream got %s %q, want exactly %s %q", h.method, h.target, row.fwd.method, row.fwd.target)
	}
	checkForwarded(t, h.rawRecorded, row.fwd.ident)
	if policy.CarriesCredential(string(h.Raw)) {
		t.Errorf("upstream got an API-user credential:\n%s", h.Raw)
	}
	for _, l := range headerLines(t, h.Raw) {
		if n := normHeader(l[0]); n == "x-http-method-override" || n == "x-http-method" || n == "x-method-override" {
			t.Errorf("upstream got a method override: %s: %s", l[0], l[1])
		}
	}
}

// chunk is s as one chunk of a chunked body.
func chunk(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }
