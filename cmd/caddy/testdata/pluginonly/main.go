// Command pluginonly is what a build with the plugin and nothing else of
// this repository registers: it imports only the caddymodule package, as
// `xcaddy build --with github.com/apiusers/caddy-api-users` does, and
// prints the ID of every Caddy module the build holds, one a line. The
// tests of cmd/caddy run it to prove the demo upstream is not part of the
// plugin.
package main

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	_ "github.com/apiusers/caddy-api-users/caddymodule"
)

func main() {
	for _, id := range caddy.Modules() {
		fmt.Println(id)
	}
}
