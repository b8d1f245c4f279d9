package linktrack

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	linktrack [<provider> [<region>]] {
//		provider      <provider> [<region>]
//		region        <region>
//		upstream      <url>
//		max_body_size <size>
//		client_idle_timeout <duration>|off
//		http_redirect
//		apple_app_site_association <file>
//		assetlinks    <file>
//		liveness_path <path>
//		per_tenant_metrics
//		scanners {
//			user_agents <substrings...>
//			ranges_file <file>
//			ignore_head
//		}
//
//		# any subdirective of reverse_proxy's `transport http`, e.g.:
//		tls_server_name <name>
//		tls_trust_pool  file <pem_files...>
//		dial_timeout    <duration>
//		response_header_timeout <duration>
//		keepalive_idle_conns_per_host <count>
//	}
//
// Transport subdirectives are parsed by Caddy's own http transport, so
// they take exactly the arguments they take under reverse_proxy. Without
// a provider or an upstream, the handler serves the tenant registry of
// the linktrack app (the global `linktrack` option).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name

	args := d.RemainingArgs()
	switch len(args) {
	case 0:
	case 1:
		h.Provider = args[0]
	case 2:
		h.Provider, h.Region = args[0], args[1]
	default:
		return d.ArgErr()
	}

	var transportTokens []caddyfile.Token
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "provider":
			if h.Provider != "" {
				return d.Err("provider already specified")
			}
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			h.Provider = args[0]
			if len(args) == 2 {
				h.Region = args[1]
			}

		case "region":
			if h.Region != "" {
				return d.Err("region already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Region = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}

		case "upstream":
			if h.Upstream != "" {
				return d.Err("upstream already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			if _, err := ParseUpstream(d.Val()); err != nil {
				return d.WrapErr(err)
			}
			h.Upstream = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}

		case "max_body_size":
			if !d.NextArg() {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(d.Val())
			if err != nil {
				return d.Errf("invalid max_body_size '%s': %v", d.Val(), err)
			}
			if size == 0 || size > 1<<62 {
				return d.Errf("invalid max_body_size '%s': must be positive", d.Val())
			}
			h.MaxBodySize = int64(size)
			if d.NextArg() {
				return d.ArgErr()
			}

		case "client_idle_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.ClientIdleTimeout = -1
			} else {
				timeout, err := caddy.ParseDuration(d.Val())
				if err != nil {
					return d.Errf("invalid client_idle_timeout '%s': %v", d.Val(), err)
				}
				if timeout <= 0 {
					return d.Errf("invalid client_idle_timeout '%s': must be positive, or off", d.Val())
				}
				h.ClientIdleTimeout = caddy.Duration(timeout)
			}
			if d.NextArg() {
				return d.ArgErr()
			}

		case "http_redirect":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.HTTPRedirect = true

		case "apple_app_site_association", "assetlinks":
			if err := parseAppLink(d, &h.AppLinks); err != nil {
				return err
			}

		case "per_tenant_metrics":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.PerTenantMetrics = true

		case "liveness_path":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.LivenessPath = d.Val()
			if !strings.HasPrefix(h.LivenessPath, "/") {
				return d.Errf("liveness_path '%s' must begin with '/'", h.LivenessPath)
			}
			if d.NextArg() {
				return d.ArgErr()
			}

		case "scanners":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Scanners = new(Scanners)
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "user_agents":
					h.Scanners.UserAgents = append(h.Scanners.UserAgents, d.RemainingArgs()...)
					if len(h.Scanners.UserAgents) == 0 {
						return d.ArgErr()
					}
				case "ranges_file":
					if !d.NextArg() {
						return d.ArgErr()
					}
					h.Scanners.RangesFile = d.Val()
				case "ignore_head":
					h.Scanners.IgnoreHEAD = true
				default:
					return d.Errf("unrecognized scanners subdirective '%s'", d.Val())
				}
			}

		default:
			transportTokens = append(transportTokens, d.NextSegment()...)
		}
	}

	if h.Provider != "" && h.Upstream != "" {
		return d.Err("provider and upstream are mutually exclusive")
	}
	if h.Provider != "" {
		if _, _, err := LookupOrigin(h.Provider, h.Region); err != nil {
			return d.WrapErr(err)
		}
	}

	if len(transportTokens) > 0 {
		h.Transport = new(reverseproxy.HTTPTransport)
		if err := h.Transport.UnmarshalCaddyfile(transportDispenser(transportTokens)); err != nil {
			return err
		}
	}
	return nil
}

// parseAppLink parses an apple_app_site_association or assetlinks
// subdirective into *links, allocating it on first use.
func parseAppLink(d *caddyfile.Dispenser, links **AppLinks) error {
	field := d.Val()
	if !d.NextArg() {
		return d.ArgErr()
	}
	if *links == nil {
		*links = new(AppLinks)
	}
	if field == "assetlinks" {
		(*links).AssetLinks = d.Val()
	} else {
		(*links).AppleAppSiteAssociation = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// transportDispenser wraps transport subdirective tokens in an
// `http { ... }` block, as reverse_proxy's transport parser expects.
// The wrapper tokens carry the position of the subdirectives, so errors
// name the right file and line.
func transportDispenser(tokens []caddyfile.Token) *caddyfile.Dispenser {
	first, last := tokens[0], tokens[len(tokens)-1]
	wrapped := make([]caddyfile.Token, 0, len(tokens)+3)
	wrapped = append(wrapped,
		caddyfile.Token{File: first.File, Line: first.Line - 1, Text: "http"},
		caddyfile.Token{File: first.File, Line: first.Line - 1, Text: "{"},
	)
	wrapped = append(wrapped, tokens...)
	wrapped = append(wrapped, caddyfile.Token{File: last.File, Line: last.Line + 1, Text: "}"})
	return caddyfile.NewDispenser(wrapped)
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
