package caddymodule

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// This file keeps other sites from changing anything through a browser
// that can reach the management API (a console open on loopback, a
// basic_auth session the browser remembers). A browser marks every request
// with where it comes from: Sec-Fetch-Site (every current browser) and
// Origin (on every cross-origin request, and every POST, PUT and DELETE).
// A change whose marks show another origin is refused with 403 before any
// route sees it, so a form on another site, a cross-origin fetch and a
// page of the gateway itself (same site, another port) cannot write.
// Scripts and curl send neither header and keep working. The responses
// carry no CORS headers, so no other origin can read anything either.

// safeMethod reports whether a method only reads.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// crossSiteWrite returns why r, a change, must be refused as coming from
// another origin, or "" when it may proceed.
func crossSiteWrite(r *http.Request) string {
	if safeMethod(r.Method) {
		return ""
	}
	switch site := r.Header.Values("Sec-Fetch-Site"); {
	case len(site) > 1:
		return "Sec-Fetch-Site is sent more than once"
	case len(site) == 1 && site[0] != "same-origin" && site[0] != "none":
		return "Sec-Fetch-Site is " + site[0] + ", not same-origin"
	}
	origins := r.Header.Values("Origin")
	switch {
	case len(origins) == 0:
		return ""
	case len(origins) > 1:
		return "Origin is sent more than once"
	}
	o, err := url.Parse(origins[0])
	if err != nil || o.Host == "" || (o.Scheme != "http" && o.Scheme != "https") || o.Path != "" || o.RawQuery != "" || o.User != nil {
		return "Origin " + origins[0] + " is not this server's origin"
	}
	// The host and port must be the ones the request was sent to. The
	// scheme is not compared: behind a proxy that terminates TLS, the
	// browser's https origin reaches this handler over http.
	if !sameHost(o.Host, o.Scheme, r.Host) {
		return "Origin " + origins[0] + " is not this server's origin"
	}
	return ""
}

// sameHost compares an origin's host[:port] with a Host header, taking a
// missing port as the scheme's default.
func sameHost(originHost, scheme, host string) bool {
	def := "80"
	if scheme == "https" {
		def = "443"
	}
	norm := func(h string) string {
		h = strings.ToLower(h)
		if _, _, err := net.SplitHostPort(h); err != nil {
			return net.JoinHostPort(strings.Trim(h, "[]"), def)
		}
		return h
	}
	return host != "" && norm(originHost) == norm(host)
}

// pageSecurityHeaders are sent with every response of the management
// handler, API and console alike: scripts only from this origin, and no
// inline script or style, so text a user typed can never run; no framing;
// nothing leaks in a Referer; no MIME sniffing.
var pageSecurityHeaders = map[string]string{
	"Content-Security-Policy":      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":              "DENY",
	"X-Content-Type-Options":       "nosniff",
	"Referrer-Policy":              "no-referrer",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}
