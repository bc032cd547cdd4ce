// Command caddy is Caddy with its standard modules plus the API users
// plugin: the binary `xcaddy build --with` this module would produce.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/apiusers/caddy-api-users/caddymodule"
)

func main() {
	caddycmd.Main()
}
