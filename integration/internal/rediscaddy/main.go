// Command rediscaddy is the Caddy of cmd/caddy plus the test-only Redis
// storage module, caddy.storage.linktrack_test_redis. The integration
// tests build it to run clusters on Redis; it is never shipped.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-linktrack/caddy-linktrack"
	_ "github.com/caddy-linktrack/caddy-linktrack/integration/internal/redisstorage"
)

func main() {
	caddycmd.Main()
}
