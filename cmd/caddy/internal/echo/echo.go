// Package echo is the demo upstream of Caddyfile.example, the directive
// `api_users_echo`: a handler that answers every request with what it
// received, so a newcomer sees exactly what a backend behind the gateway
// gets. It belongs to the example binary (cmd/caddy), not to the plugin: a
// handler that echoes the Authorization header back has no place in a
// production build, so `xcaddy build --with` the plugin does not register
// it.
package echo

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apiusers/caddy-api-users/caddymodule"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("api_users_echo", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("api_users_echo", httpcaddyfile.Before, "respond")
}

// parseCaddyfile sets up the handler from the directive `api_users_echo`,
// which takes no arguments.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next()
	if h.NextArg() || h.NextBlock(0) {
		return nil, h.Err("api_users_echo takes no arguments")
	}
	return Handler{}, nil
}

// Handler is `api_users_echo`: it answers every request with one JSON
// object that shows exactly what a backend behind the gateway receives:
// the method, the path as received (not decoded), the query, and the
// identity headers.
type Handler struct{}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_users_echo",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Headers are the headers the echo upstream reports, keyed by these names,
// empty when absent.
var Headers = []string{
	"Authorization",
	caddymodule.HeaderAPIUser,
	caddymodule.HeaderAPIUserOrg,
	caddymodule.HeaderAPIUserProduct,
	caddymodule.DefaultProxiedUserHeader,
	caddymodule.HeaderActingUser,
	"X-Http-Method-Override",
}

// Response is what the echo upstream answers.
type Response struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
}

// ServeHTTP answers with what the request carried.
func (Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	path, query, _ := strings.Cut(r.RequestURI, "?")
	resp := Response{Method: r.Method, Path: path, Query: query, Headers: map[string]string{}}
	for _, name := range Headers {
		resp.Headers[name] = strings.Join(r.Header.Values(name), ", ")
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(resp)
}

// Interface guard.
var _ caddyhttp.MiddlewareHandler = Handler{}
