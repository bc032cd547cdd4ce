package caddymodule

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Echo{})
	httpcaddyfile.RegisterHandlerDirective("api_users_echo", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		if h.NextArg() || h.NextBlock(0) {
			return nil, h.Err("api_users_echo takes no arguments")
		}
		return Echo{}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("api_users_echo", httpcaddyfile.Before, "respond")
}

// Echo is `api_users_echo`, the demo upstream of Caddyfile.example: it
// answers every request with one JSON object that shows exactly what a
// backend behind the gateway receives: the method, the path as received
// (not decoded), the query, and the identity headers.
type Echo struct{}

// CaddyModule returns the Caddy module information.
func (Echo) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_users_echo",
		New: func() caddy.Module { return new(Echo) },
	}
}

// EchoHeaders are the headers the echo upstream reports, keyed by these
// names, empty when absent.
var EchoHeaders = []string{
	"Authorization",
	HeaderAPIUser,
	HeaderAPIUserOrg,
	HeaderAPIUserProduct,
	DefaultProxiedUserHeader,
	HeaderActingUser,
	"X-Http-Method-Override",
}

// EchoResponse is what the echo upstream answers.
type EchoResponse struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
}

// ServeHTTP answers with what the request carried.
func (Echo) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	path, query, _ := strings.Cut(r.RequestURI, "?")
	resp := EchoResponse{Method: r.Method, Path: path, Query: query, Headers: map[string]string{}}
	for _, name := range EchoHeaders {
		resp.Headers[name] = strings.Join(r.Header.Values(name), ", ")
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(resp)
}

var _ caddyhttp.MiddlewareHandler = Echo{}
