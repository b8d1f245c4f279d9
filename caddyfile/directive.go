// Package caddyfile registers caddy-linktrack's Caddyfile directive.
package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-linktrack/caddy-linktrack/linktrack"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("linktrack", parseLinktrack)
	httpcaddyfile.RegisterDirectiveOrder("linktrack", httpcaddyfile.Before, "reverse_proxy")
}

// parseLinktrack sets up the linktrack handler from Caddyfile tokens;
// see linktrack.Handler.UnmarshalCaddyfile for the syntax.
func parseLinktrack(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(linktrack.Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}
