// Command caddy is Caddy with its standard modules plus the API users
// plugin: the binary `xcaddy build --with` this module would produce, plus
// the demo upstream of Caddyfile.example (`api_users_echo`), which only
// this example binary registers.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/apiusers/caddy-api-users/caddymodule"
	_ "github.com/apiusers/caddy-api-users/cmd/caddy/internal/echo"
)

func main() {
	caddycmd.Main()
}
