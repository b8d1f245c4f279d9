package linktrack

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the webhook from Caddyfile tokens, as the
// handler of an `on` line of the global `events` option. Syntax:
//
//	linktrack_webhook [<url...>] {
//		url <url...>
//		secret <secret>
//		queue_size <count>
//		max_age <duration>
//		retry_delay <duration>
//		timeout <duration>
//	}
//
// For example:
//
//	events {
//		on tenant_state linktrack_webhook https://hooks.platform.example/linktrack {
//			secret {env.LINKTRACK_WEBHOOK_SECRET}
//		}
//	}
func (w *Webhook) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the handler name
	w.URLs = append(w.URLs, d.RemainingArgs()...)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "url":
			urls := d.RemainingArgs()
			if len(urls) == 0 {
				return d.ArgErr()
			}
			w.URLs = append(w.URLs, urls...)
		case "secret":
			if w.Secret != "" {
				return d.Err("secret already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			w.Secret = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "queue_size":
			if w.QueueSize != 0 {
				return d.Err("queue_size already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("queue_size: '%s' is not a positive integer", d.Val())
			}
			w.QueueSize = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "max_age", "retry_delay", "timeout":
			name := d.Val()
			field := map[string]*caddy.Duration{"max_age": &w.MaxAge, "retry_delay": &w.RetryDelay, "timeout": &w.Timeout}[name]
			if *field != 0 {
				return d.Errf("%s already specified", name)
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("%s: '%s' is not a positive duration", name, d.Val())
			}
			*field = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective '%s'", d.Val())
		}
	}
	if len(w.URLs) == 0 {
		return d.Err("at least one URL is required")
	}
	if w.Secret == "" {
		return d.Err("secret is required")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Webhook)(nil)
