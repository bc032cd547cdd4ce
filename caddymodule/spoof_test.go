package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// identityNames are the normalised names of every header the gateway sets
// or guards; a backend may fold any spelling of them into these.
var identityNames = []string{"authorization", "x-api-user", "x-api-user-org", "x-api-user-product", "x-acting-user", "x-proxied-user"}

// checkForwarded asserts that the raw bytes an upstream received carry the
// identity header lines in want exactly (normalised name → value, once
// each, in the header, never in a trailer) and no other identity line, and
// that no byte of any spoofed value got through.
func checkForwarded(t *testing.T, rec rawRecorded, want map[string]string) {
	t.Helper()
	if i := bytes.Index(bytes.ToLower(rec.Raw), []byte("spoof")); i >= 0 {
		t.Errorf("a spoofed value reached the upstream: ...%q...", rec.Raw[max(0, i-60):min(len(rec.Raw), i+40)])
	}
	seen := map[string][]string{}
	for _, l := range headerLines(t, rec.Raw) {
		n := normHeader(l[0])
		for _, id := range identityNames {
			if n == id {
				seen[n] = append(seen[n], l[1])
			}
		}
	}
	for _, n := range identityNames {
		w, wanted := want[n]
		switch got := seen[n]; {
		case !wanted && len(got) > 0:
			t.Errorf("upstream got %s %q; it must not get one", n, got)
		case wanted && (len(got) != 1 || got[0] != w):
			t.Errorf("upstream got %s %q, want exactly [%q]", n, got, w)
		}
	}
	for name := range rec.Trailer {
		for _, id := range identityNames {
			if normHeader(name) == id {
				t.Errorf("upstream got trailer %s %q", name, rec.Trailer[name])
			}
		}
	}
}

// spoofHeaders are identity headers a client may send, in every spelling
// that reaches a handler or that a backend may fold together, each with a
// value that contains "spoof". Some of them name other identity headers in
// Connection, so that a proxy would drop the ones the gateway sets.
const spoofHeaders = "X-Api-User: spoof-1\r\n" +
	"x-api-user: spoof-2\r\n" +
	"X_Api_User: spoof-3\r\n" +
	"X-API-USER-ORG: spoof-4\r\n" +
	"X-Api-User_Product: spoof-5\r\n" +
	"x-api-user-product: spoof-5b\r\n" +
	"X-Acting-User: spoof-6\r\n" +
	"x_acting_user: spoof-7\r\n" +
	"X-Proxied_User: spoof-8\r\n" +
	"Connection: keep-alive, X-Api-User, x_acting_user, X-Api-User-Org, X-Api-User-Product\r\n"

// spoofTrailers declare identity trailers, and send more than they
// declare, after a chunked body; X-Checksum is an honest trailer that must
// still get through.
const spoofTrailers = "Trailer: X-Api-User, X-Acting-User, X-Checksum, X-Proxied-User, Authorization\r\n" +
	"Transfer-Encoding: chunked\r\n" +
	"\r\n" +
	"5\r\nhello\r\n0\r\n" +
	"X-Api-User: spoof-t1\r\n" +
	"X-Acting-User: spoof-t2\r\n" +
	"X-Checksum: ok\r\n" +
	"X-Api-User-Org: spoof-t3\r\n" +
	"X-Proxied-User: spoof-t4\r\n" +
	"Authorization: Bearer spoof-t5\r\n" +
	"X-Api-User-Product: spoof-t6\r\n" +
	"\r\n"

// TestSpoofedIdentityHeadersNeverReachTheUpstream sends identity headers
// and trailers by hand, in every form a backend could read as one of the
// gateway's, with an allowed API-user request and with a passed-through
// one, and reads the bytes the upstream got.
func TestSpoofedIdentityHeadersNeverReachTheUpstream(t *testing.T) {
	up := newRawUpstream(t)
	g := startGateway(t, gatewayOptions{upstream: up.addr(), gatewayBlock: "pass_through"})
	up.take(1) // the harness's readiness probe, passed through
	id, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list", "events:send")})
	apiUser := map[string]string{"x-api-user": id, "x-api-user-org": "acme", "x-api-user-product": "1337", "x-acting-user": id}

	tests := []struct {
		name        string
		raw         string
		want        map[string]string
		wantTrailer bool
	}{
		{
			name: "API user, headers",
			raw:  "GET /v1/products/1337/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + iss.Token + "\r\n" + spoofHeaders + "\r\n",
			want: apiUser,
		},
		{
			name:        "API user, headers and trailers",
			raw:         "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + iss.Token + "\r\n" + spoofHeaders + spoofTrailers,
			want:        apiUser,
			wantTrailer: true,
		},
		{
			name: "API user, trailers it never declared",
			raw: "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + iss.Token + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5\r\nhello\r\n0\r\nX-Api-User: spoof-u1\r\nX-Acting-User: spoof-u2\r\n\r\n",
			want: apiUser,
		},
		{
			name: "passed through, headers",
			raw:  "GET /anything HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer backend-own-token\r\n" + spoofHeaders + "\r\n",
			want: map[string]string{"authorization": "Bearer backend-own-token"},
		},
		{
			name:        "passed through, headers and trailers",
			raw:         "POST /anything HTTP/1.1\r\nHost: x\r\n" + spoofHeaders + spoofTrailers,
			want:        map[string]string{},
			wantTrailer: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if status := g.rawRequest(tt.raw); status != http.StatusOK {
				t.Fatalf("status %d", status)
			}
			got := up.take(1)
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(got))
			}
			checkForwarded(t, got[0], tt.want)
			if tt.wantTrailer && got[0].Trailer.Get("X-Checksum") != "ok" {
				t.Errorf("the honest trailer X-Checksum did not get through: trailers %v in\n%s", got[0].Trailer, got[0].Raw)
			}
		})
	}
}

// TestSpoofedIdentityHeadersOverHTTP2 does the same over h2c: HTTP/2 has
// lower-case names only and carries trailers in a final HEADERS frame.
func TestSpoofedIdentityHeadersOverHTTP2(t *testing.T) {
	up := newRawUpstream(t)
	g := startGateway(t, gatewayOptions{
		upstream:    up.addr(),
		globalExtra: "\tservers {\n\t\tprotocols h1 h2c\n\t}",
	})
	id, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("events:send")})

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	req, err := http.NewRequest("POST", g.url+"/v1/products/1337/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{
		"Authorization":      {"Bearer " + iss.Token},
		"X-Api-User":         {"spoof-1", "spoof-2"},
		"X_api_user":         {"spoof-3"},
		"X-Api-User-Org":     {"spoof-4"},
		"X-Api-User-Product": {"spoof-5"},
		"X-Acting-User":      {"spoof-6"},
		"X-Proxied-User":     {},
		"Te":                 {"trailers"},
	}
	req.Trailer = http.Header{"X-Api-User": nil, "X-Acting-User": nil, "X-Checksum": nil}
	req.Body = &trailerBody{Reader: strings.NewReader("hello"), req: req, values: map[string]string{
		"X-Api-User": "spoof-t1", "X-Acting-User": "spoof-t2", "X-Checksum": "ok",
	}}
	req.ContentLength = -1
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("the client spoke %s, not HTTP/2", resp.Proto)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := up.take(1)
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(got))
	}
	checkForwarded(t, got[0], map[string]string{"x-api-user": id, "x-api-user-org": "acme", "x-api-user-product": "1337", "x-acting-user": id})
	if got[0].Trailer.Get("X-Checksum") != "ok" {
		t.Errorf("the honest trailer X-Checksum did not get through: %v", got[0].Trailer)
	}
}

// trailerBody sets the request's trailer values when the body ends, the
// way a streaming client computes a checksum.
type trailerBody struct {
	io.Reader
	req    *http.Request
	values map[string]string
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		for k, v := range b.values {
			b.req.Trailer.Set(k, v)
		}
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

// TestDeclaredMethodOverrideTrailerIsRefused: a method override announced
// as a trailer is refused like one sent up front, before authentication.
func TestDeclaredMethodOverrideTrailerIsRefused(t *testing.T) {
	up := newRawUpstream(t)
	g := startGateway(t, gatewayOptions{upstream: up.addr()})
	_, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("events:send")})
	raw := "POST /v1/products/1337/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + iss.Token + "\r\n" +
		"Trailer: X-HTTP-Method-Override\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-HTTP-Method-Override: DELETE\r\n\r\n"
	if status := g.rawRequest(raw); status != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", status)
	}
	if got := up.take(0); len(got) != 0 {
		t.Fatalf("refused request reached the upstream:\n%s", got[0].Raw)
	}
}
