package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/apiusers/caddy-api-users/policy"
)

// The headers the gateway sets for the upstream. A client must never be
// able to set them itself, in any spelling a backend might fold into one of
// these: any letter case, '_' for '-' (Caddy already drops request header
// fields whose names hold '_' before any handler runs, but the gateway does
// not rely on it), repeated, named in Connection so that a proxy drops the
// real one, or sent as a trailer after the body.
const (
	HeaderAPIUser        = "X-Api-User"
	HeaderAPIUserOrg     = "X-Api-User-Org"
	HeaderAPIUserProduct = "X-Api-User-Product"
	HeaderActingUser     = "X-Acting-User"

	DefaultProxiedUserHeader = "X-Proxied-User"
)

// methodOverrideHeaders let a client ask a backend to treat a request as
// another method than the one the gateway matched; they are refused.
var methodOverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// pathOverrideHeaders let a client ask a backend (IIS URL Rewrite,
// Symfony, Zend and others read them) to route a request to another path
// than the one the gateway matched; they are refused as an ambiguous path.
var pathOverrideHeaders = []string{"X-Original-Url", "X-Rewrite-Url"}

// reservedHeaders may not serve as the proxied-user header: the identity
// headers the gateway sets, credentials, method overrides, and the headers
// that HTTP itself or proxies give a meaning to. Taking one of them would
// let a client's value be read as a proxied user, or let the proxied user
// overwrite an identity the gateway set.
var reservedHeaders = append([]string{
	"Authorization", "Proxy-Authorization", "Cookie",
	HeaderAPIUser, HeaderAPIUserOrg, HeaderAPIUserProduct, HeaderActingUser,
	"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Host", "Content-Length", "Content-Type", "Expect",
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Via",
}, append(methodOverrideHeaders, pathOverrideHeaders...)...)

// maxHeaderNameLen bounds the name of the proxied-user header.
const maxHeaderNameLen = 64

// checkProxiedUserHeader validates the name of the proxied-user header; ""
// stands for the default, X-Proxied-User.
func checkProxiedUserHeader(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > maxHeaderNameLen || !validHeaderName(name) {
		return fmt.Errorf("proxied_user_header %q is not a valid header name: use up to %d letters, digits and '-', such as X-Proxied-User", name, maxHeaderNameLen)
	}
	for _, r := range reservedHeaders {
		if sameHeader(name, normHeader(r)) {
			return fmt.Errorf("proxied_user_header %q is a header the gateway, HTTP or proxies already give a meaning to: choose another, such as X-Proxied-User or X-On-Behalf-Of", name)
		}
	}
	return nil
}

// validHeaderName reports whether s is a header name of letters, digits
// and '-', starting with a letter or digit.
func validHeaderName(s string) bool {
	if s == "" || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// headerRules is the compiled set of header names the gateway guards,
// normalised (lowercase, '_' as '-').
type headerRules struct {
	identity       []string  // stripped from every forwarded request
	proxiedUser    string    // normalised name of the proxied-user header
	proxiedFirst   byte      // its first byte, for scan's quick filter
	proxiedCanon   string    // canonical name, to set upstream
	identityFirst  [256]bool // the first bytes of identity, lowercase
	methodOverride []string
	pathOverride   []string
}

func newHeaderRules(proxiedUserHeader string) *headerRules {
	if proxiedUserHeader == "" {
		proxiedUserHeader = DefaultProxiedUserHeader
	}
	r := &headerRules{
		proxiedUser:  normHeader(proxiedUserHeader),
		proxiedCanon: http.CanonicalHeaderKey(proxiedUserHeader),
	}
	r.proxiedFirst = r.proxiedUser[0]
	for _, h := range []string{"Authorization", HeaderAPIUser, HeaderAPIUserOrg, HeaderAPIUserProduct, HeaderActingUser, DefaultProxiedUserHeader, proxiedUserHeader} {
		n := normHeader(h)
		r.identity = append(r.identity, n)
		r.identityFirst[n[0]] = true
	}
	for _, h := range methodOverrideHeaders {
		r.methodOverride = append(r.methodOverride, normHeader(h))
	}
	for _, h := range pathOverrideHeaders {
		r.pathOverride = append(r.pathOverride, normHeader(h))
	}
	return r
}

func normHeader(h string) string {
	return strings.ReplaceAll(strings.ToLower(h), "_", "-")
}

// sameHeader compares a header name with a normalised one, folding case
// and '_' into '-', without allocating.
func sameHeader(name, norm string) bool {
	if len(name) != len(norm) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != norm[i] {
			return false
		}
	}
	return true
}

func matchesAny(name string, norms []string) bool {
	for _, n := range norms {
		if sameHeader(name, n) {
			return true
		}
	}
	return false
}

// requestHeaders is what the gateway reads from a request's headers in one
// pass.
type requestHeaders struct {
	methodOverride bool
	pathOverride   bool
	proxiedUser    string // the first value
	proxiedCount   int    // values across every spelling; more than one is ambiguous
	credential     bool   // a header other than Authorization carries an API-user credential
	identity       bool   // an identity header other than Authorization is present, in any spelling
}

// scan reads the method-override, path-override and proxied-user headers,
// and looks for API-user credentials outside Authorization, in one pass.
func (hr *headerRules) scan(h http.Header) requestHeaders {
	var out requestHeaders
	for name, values := range h {
		if name == "" {
			continue
		}
		// Authorization is step 2's to decide; anywhere else a credential
		// would be forwarded, or logged, as it is.
		if name != "Authorization" && !out.credential && valuesCarryCredential(values) {
			out.credential = true
		}
		// An identity header's name starts with one of a few letters,
		// either case; most headers are skipped at the cost of a lookup.
		if !out.identity && hr.identityFirst[name[0]|0x20] && name != "Authorization" && matchesAny(name, hr.identity) {
			out.identity = true
		}
		// Every method- and path-override header starts with "x"; most
		// headers do not, and are skipped at the cost of one comparison.
		if c := name[0] | 0x20; c != 'x' && c != hr.proxiedFirst {
			continue
		}
		if matchesAny(name, hr.methodOverride) {
			out.methodOverride = true
		}
		if matchesAny(name, hr.pathOverride) {
			out.pathOverride = true
		}
		if sameHeader(name, hr.proxiedUser) {
			out.proxiedCount += len(values)
			if len(values) > 0 {
				out.proxiedUser = values[0]
			}
		}
	}
	return out
}

// strip removes the client's Authorization (unless keepAuthorization, for
// a request passed through with the backend's own credential) and every
// client-sent copy of the identity headers, in any spelling. It drops
// identity header names from Connection, so no proxy after us removes the
// values the gateway sets, and from Trailer, so none is announced as a
// trailer to come.
func (hr *headerRules) strip(h http.Header, keepAuthorization bool) {
	for name := range h {
		if !matchesAny(name, hr.identity) {
			continue
		}
		if keepAuthorization && name == "Authorization" {
			continue
		}
		delete(h, name)
	}
	hr.dropTokens(h, "Connection")
	hr.dropTokens(h, "Trailer")
}

// stripScanned is strip for the headers that scan read into hdr: when
// scan found no identity header but Authorization (the usual request), it
// deletes Authorization without walking the headers again.
func (hr *headerRules) stripScanned(h http.Header, keepAuthorization bool, hdr *requestHeaders) {
	if hdr.identity {
		hr.strip(h, keepAuthorization)
		return
	}
	if !keepAuthorization {
		delete(h, "Authorization")
	}
	hr.dropTokens(h, "Connection")
	hr.dropTokens(h, "Trailer")
}

// dropTokens removes identity header names from the comma-separated list
// of header names in h[name].
func (hr *headerRules) dropTokens(h http.Header, name string) {
	list, ok := h[name]
	if !ok || !hr.namesIdentity(list) {
		return
	}
	var kept []string
	for _, v := range list {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" || matchesAny(tok, hr.identity) {
				continue
			}
			kept = append(kept, tok)
		}
	}
	if len(kept) == 0 {
		delete(h, name)
		return
	}
	h[name] = []string{strings.Join(kept, ", ")}
}

// namesIdentity reports whether a comma-separated list of header names
// names an identity header. It does not allocate, so the common
// "Connection: keep-alive" costs nothing.
func (hr *headerRules) namesIdentity(list []string) bool {
	for _, v := range list {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if matchesAny(strings.TrimSpace(tok), hr.identity) {
				return true
			}
		}
	}
	return false
}

// requestsUpgrade reports whether r asks to leave HTTP request by request:
// a protocol upgrade (Upgrade, HTTP2-Settings or an "upgrade" token in
// Connection, in any case), or a CONNECT tunnel, HTTP/2's extended CONNECT
// included. Once a backend answers 101 or 200, reverse_proxy relays raw
// bytes both ways, and every request inside (h2c frames, say) would reach
// the backend with whatever method, path and identity headers the client
// chose.
func requestsUpgrade(r *http.Request) bool {
	if r.Method == http.MethodConnect {
		return true
	}
	h := r.Header
	if _, ok := h["Upgrade"]; ok {
		return true
	}
	if _, ok := h["Http2-Settings"]; ok {
		return true
	}
	for _, v := range h["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// declaredOverride reports whether a request's declared trailers name a
// path- or method-override header, and which reason refuses it. Such a
// request is refused like one that sends the header up front: a backend
// that folds trailers into headers would read it.
func (hr *headerRules) declaredOverride(trailer http.Header) policy.Reason {
	for name := range trailer {
		if matchesAny(name, hr.pathOverride) {
			return policy.AmbiguousPath
		}
		if matchesAny(name, hr.methodOverride) {
			return policy.MethodOverride
		}
	}
	return policy.Allowed
}

// guardTrailers keeps identity, method- and path-override fields out of the
// trailers of a request that is forwarded. A client may announce trailers
// (the Trailer header) and send them after a chunked body; Caddy's
// reverse_proxy forwards them, and a backend that folds trailers into
// headers would read a spoofed identity. Net/http collects the fields that
// arrive after the body into the request's existing Trailer map, declared
// or not, as the body reaches EOF; so the declared names are removed now,
// and a body wrapper removes the rest at EOF, before the proxy copies the
// map. A request that declares no trailers has a nil map, and the fields
// it sends after its body never reach a handler, or the upstream.
func (hr *headerRules) guardTrailers(r *http.Request) {
	if r.Trailer == nil {
		return
	}
	hr.stripTrailer(r.Trailer)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &trailerGuard{ReadCloser: r.Body, trailer: r.Trailer, rules: hr}
	}
}

// stripTrailer deletes identity, method- and path-override fields from t,
// and every field that carries an API-user credential: the request was
// decided before its trailers arrived, so the credential can no longer be
// refused, only kept from the backend.
func (hr *headerRules) stripTrailer(t http.Header) {
	for name, values := range t {
		if matchesAny(name, hr.identity) || matchesAny(name, hr.methodOverride) || matchesAny(name, hr.pathOverride) || valuesCarryCredential(values) {
			delete(t, name)
		}
	}
}

func valuesCarryCredential(values []string) bool {
	for _, v := range values {
		if policy.CarriesCredential(v) {
			return true
		}
	}
	return false
}

// trailerGuard strips the request's trailers once its body ends. It reads
// through to the body it wraps, so it adds nothing but that step.
type trailerGuard struct {
	io.ReadCloser
	trailer http.Header
	rules   *headerRules
}

func (b *trailerGuard) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.rules.stripTrailer(b.trailer)
	}
	return n, err
}
