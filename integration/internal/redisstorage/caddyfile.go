package redisstorage

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the storage from Caddyfile tokens. Syntax:
//
//	storage linktrack_test_redis {
//		address <host:port>
//		db <number>
//		key_prefix <prefix>
//		timeout <duration>
//		lock_ttl <duration>
//		lock_refresh <duration>
//		lock_poll <duration>
//	}
func (s *Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		value := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch name {
		case "address":
			s.Address = value
		case "key_prefix":
			s.KeyPrefix = value
		case "db":
			n, err := strconv.Atoi(value)
			if err != nil {
				return d.Errf("db: %v", err)
			}
			s.DB = n
		case "timeout", "lock_ttl", "lock_refresh", "lock_poll":
			dur, err := caddy.ParseDuration(value)
			if err != nil || dur <= 0 {
				return d.Errf("%s: '%s' is not a positive duration", name, value)
			}
			*map[string]*caddy.Duration{
				"timeout": &s.Timeout, "lock_ttl": &s.LockTTL,
				"lock_refresh": &s.LockRefresh, "lock_poll": &s.LockPoll,
			}[name] = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized subdirective '%s'", name)
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Storage)(nil)
