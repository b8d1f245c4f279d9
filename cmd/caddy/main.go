// Command caddy is Caddy with the caddy-linktrack modules built in. It is
// Caddy's own main plus one import; xcaddy.json describes the same build.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-linktrack/caddy-linktrack"
)

func main() {
	caddycmd.Main()
}
