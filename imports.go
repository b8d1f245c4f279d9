// Package caddylinktrack registers every caddy-linktrack module and
// Caddyfile directive. Build Caddy with it through xcaddy:
//
//	xcaddy build --with github.com/caddy-linktrack/caddy-linktrack
package caddylinktrack

import (
	_ "github.com/caddy-linktrack/caddy-linktrack/caddyfile"
	_ "github.com/caddy-linktrack/caddy-linktrack/linktrack"
)
