package linktrack

import (
	"fmt"
	"net"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// UnmarshalCaddyfile sets up the app from the global `linktrack` option.
// Syntax:
//
//	linktrack {
//		origin <name> <url> {
//			# any subdirective of reverse_proxy's `transport http`
//		}
//		tenant <domain> <provider-or-origin> [<region>] {
//			apple_app_site_association <file>
//			assetlinks <file>
//			ownership_verified
//		}
//		tenants_file <path>
//		file_check_interval <duration>
//		storage_refresh_interval <duration>
//		issuance_cooldown <duration>
//		pre_issuance on|off
//		pre_issuance_workers <count>
//		order_limit <count> <window>
//		registered_domain_limit <count> <window>
//		renewal_check_interval <duration>
//		change_limit <count> <window>
//		dns_targets <name-or-address...>
//		dns_resolvers <host:port...>
//		dns_check_interval <duration>
//		give_up_after <duration>
//		ownership_txt
//	}
//
// A tenant's second argument names an origin defined by `origin` if
// there is one by that name, else a provider of the catalog.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	type pendingTenant struct {
		Tenant
		name string
		at   caddyfile.Token
	}
	var pending []pendingTenant

	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "origin":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			name, upstream := args[0], args[1]
			if !originName.MatchString(name) {
				return d.Errf("origin name '%s' must be lowercase letters, digits, '-' and '_'", name)
			}
			if _, isProvider := LookupProvider(name); isProvider {
				return d.Errf("origin name '%s' is a provider's name; choose another", name)
			}
			if _, dup := a.Origins[name]; dup {
				return d.Errf("origin '%s' already defined", name)
			}
			if _, err := ParseUpstream(upstream); err != nil {
				return d.WrapErr(err)
			}
			origin := &NamedOrigin{Upstream: upstream}
			var tokens []caddyfile.Token
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				tokens = append(tokens, d.NextSegment()...)
			}
			if len(tokens) > 0 {
				origin.Transport = new(reverseproxy.HTTPTransport)
				if err := origin.Transport.UnmarshalCaddyfile(transportDispenser(tokens)); err != nil {
					return err
				}
			}
			if a.Origins == nil {
				a.Origins = make(map[string]*NamedOrigin)
			}
			a.Origins[name] = origin

		case "tenant":
			at := d.Token()
			args := d.RemainingArgs()
			if len(args) < 2 || len(args) > 3 {
				return d.ArgErr()
			}
			domain, err := CanonicalDomain(args[0])
			if err != nil {
				return d.WrapErr(err)
			}
			t := pendingTenant{Tenant: Tenant{Domain: domain}, name: args[1], at: at}
			if len(args) == 3 {
				t.Region = args[2]
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch field := d.Val(); field {
				case "apple_app_site_association", "assetlinks":
					if err := parseAppLink(d, &t.AppLinks); err != nil {
						return err
					}
				case "ownership_verified":
					if t.OwnershipVerified {
						return d.Err("ownership_verified already specified")
					}
					if d.NextArg() {
						return d.ArgErr()
					}
					t.OwnershipVerified = true
				default:
					return d.Errf("unrecognized tenant subdirective '%s'", field)
				}
			}
			pending = append(pending, t)

		case "tenants_file":
			if a.TenantsFile != "" {
				return d.Err("tenants_file already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.TenantsFile = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}

		case "dns_targets", "dns_resolvers":
			field := d.Val()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if field == "dns_targets" {
				if _, err := parseDNSTargets(args); err != nil {
					return d.Errf("invalid dns_targets: %v", err)
				}
				a.DNSTargets = append(a.DNSTargets, args...)
				break
			}
			for _, arg := range args {
				if _, port, err := net.SplitHostPort(arg); err != nil || port == "" {
					return d.Errf("invalid dns_resolvers '%s': must be host:port", arg)
				}
			}
			a.DNSResolvers = append(a.DNSResolvers, args...)

		case "file_check_interval", "storage_refresh_interval", "issuance_cooldown", "renewal_check_interval", "dns_check_interval", "give_up_after":
			field := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			interval, err := caddy.ParseDuration(d.Val())
			if err != nil || interval <= 0 {
				return d.Errf("invalid %s '%s': must be a positive duration", field, d.Val())
			}
			switch field {
			case "file_check_interval":
				a.FileCheckInterval = caddy.Duration(interval)
			case "storage_refresh_interval":
				a.StorageRefreshInterval = caddy.Duration(interval)
			case "renewal_check_interval":
				a.RenewalCheckInterval = caddy.Duration(interval)
			case "dns_check_interval":
				a.DNSCheckInterval = caddy.Duration(interval)
			case "give_up_after":
				a.GiveUpAfter = caddy.Duration(interval)
			default:
				a.IssuanceCooldown = caddy.Duration(interval)
			}
			if d.NextArg() {
				return d.ArgErr()
			}

		case "pre_issuance":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch d.Val() {
			case "on":
				a.DisablePreIssuance = false
			case "off":
				a.DisablePreIssuance = true
			default:
				return d.Errf("invalid pre_issuance '%s': must be on or off", d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}

		case "order_limit", "registered_domain_limit", "change_limit":
			field := d.Val()
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return d.Errf("invalid %s count '%s': must be a positive integer", field, args[0])
			}
			window, err := caddy.ParseDuration(args[1])
			if err != nil || window <= 0 {
				return d.Errf("invalid %s window '%s': must be a positive duration", field, args[1])
			}
			switch field {
			case "order_limit":
				a.OrderLimit, a.OrderLimitWindow = n, caddy.Duration(window)
			case "registered_domain_limit":
				a.RegisteredDomainLimit, a.RegisteredDomainLimitWindow = n, caddy.Duration(window)
			default:
				a.ChangeLimit, a.ChangeLimitWindow = n, caddy.Duration(window)
			}

		case "ownership_txt":
			if a.OwnershipTXT {
				return d.Err("ownership_txt already specified")
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			a.OwnershipTXT = true

		case "pre_issuance_workers":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("invalid pre_issuance_workers '%s': must be a positive integer", d.Val())
			}
			a.PreIssuanceWorkers = n
			if d.NextArg() {
				return d.ArgErr()
			}

		default:
			return d.Errf("unrecognized subdirective '%s'", d.Val())
		}
	}

	// origins may be defined after the tenants that use them
	seen := make(map[string]caddyfile.Token)
	for _, t := range pending {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s, at %s:%d", fmt.Sprintf(format, args...), t.at.File, t.at.Line)
		}
		if prior, dup := seen[t.Domain]; dup {
			return fail("tenant '%s' already defined at %s:%d", t.Domain, prior.File, prior.Line)
		}
		seen[t.Domain] = t.at
		if _, isOrigin := a.Origins[t.name]; isOrigin {
			if t.Region != "" {
				return fail("tenant '%s': origin '%s' takes no region", t.Domain, t.name)
			}
			t.Origin = t.name
		} else {
			if _, _, err := LookupOrigin(t.name, t.Region); err != nil {
				return fail("tenant '%s': %v (or define an origin named '%s')", t.Domain, err, t.name)
			}
			t.Provider = t.name
		}
		a.Tenants = append(a.Tenants, t.Tenant)
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)
