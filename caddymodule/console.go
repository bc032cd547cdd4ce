package caddymodule

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

// This file serves the web console: plain HTML, CSS and JavaScript modules
// embedded in the binary, at the root of wherever api_users_admin is
// mounted, so whatever guards the management API guards the console too.
// The page calls the management API alone, from the same origin, and needs
// nothing from the network. It renders every text a user typed with
// textContent, never as HTML, and the Content-Security-Policy every
// response carries (see crosssite.go) allows no inline script at all.

//go:embed console
var consoleFiles embed.FS

// consoleFS is the console directory itself.
var consoleFS = func() fs.FS {
	sub, err := fs.Sub(consoleFiles, "console")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}()

// serveConsole answers GET / with the page and GET /console/<file> with
// its scripts, styles and images. Nothing is listed, and an unknown file
// is the management API's JSON 404.
func (h *Admin) serveConsole(w http.ResponseWriter, r *http.Request) {
	name := "index.html"
	if r.URL.Path != "/" {
		name = strings.TrimPrefix(r.URL.Path, "/console/")
	}
	data, err := fs.ReadFile(consoleFS, name)
	if err != nil || name == "" || strings.Contains(name, "/") {
		h.noRoute(w, r)
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	_, _ = w.Write(data)
}
