package caddymodule

import (
	"net/http"
	"strings"
)

// The headers the gateway sets for the upstream. A client must never be
// able to set them itself, in any spelling a backend might fold into one of
// these: any letter case, '_' for '-', repeated, or named in Connection so
// that a proxy drops the real one.
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

// headerRules is the compiled set of header names the gateway guards,
// normalised (lowercase, '_' as '-').
type headerRules struct {
	identity       []string // stripped from every request
	proxiedUser    string   // normalised name of the proxied-user header
	proxiedCanon   string   // canonical name, to set upstream
	methodOverride []string
}

func newHeaderRules(proxiedUserHeader string) *headerRules {
	if proxiedUserHeader == "" {
		proxiedUserHeader = DefaultProxiedUserHeader
	}
	r := &headerRules{
		proxiedUser:  normHeader(proxiedUserHeader),
		proxiedCanon: http.CanonicalHeaderKey(proxiedUserHeader),
	}
	for _, h := range []string{"Authorization", HeaderAPIUser, HeaderAPIUserOrg, HeaderAPIUserProduct, HeaderActingUser, DefaultProxiedUserHeader, proxiedUserHeader} {
		r.identity = append(r.identity, normHeader(h))
	}
	for _, h := range methodOverrideHeaders {
		r.methodOverride = append(r.methodOverride, normHeader(h))
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
	proxiedUser    string
	proxiedCount   int // values across every spelling; more than one is ambiguous
}

// scan reads the method-override and proxied-user headers in one pass.
func (hr *headerRules) scan(h http.Header) requestHeaders {
	var out requestHeaders
	for name, values := range h {
		if c := name[0]; c != 'X' && c != 'x' {
			continue
		}
		if matchesAny(name, hr.methodOverride) {
			out.methodOverride = true
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

// strip removes the client's Authorization and every client-sent copy of
// the identity headers, and drops identity header names from Connection,
// so no proxy after us removes the values the gateway sets.
func (hr *headerRules) strip(h http.Header) {
	for name := range h {
		if matchesAny(name, hr.identity) {
			delete(h, name)
		}
	}
	conn, ok := h["Connection"]
	if !ok {
		return
	}
	var kept []string
	changed := false
	for _, v := range conn {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			if matchesAny(tok, hr.identity) {
				changed = true
				continue
			}
			kept = append(kept, tok)
		}
	}
	if !changed {
		return
	}
	if len(kept) == 0 {
		delete(h, "Connection")
		return
	}
	h["Connection"] = []string{strings.Join(kept, ", ")}
}
