package linktrack

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	caddy.RegisterModule(Permission{})
}

// Permission allows on-demand certificates for exactly the domains of
// the linktrack app's tenant registry, wildcard matches included, but
// not for a tenant pending ownership verification (ownership_txt); a
// disabled tenant's certificate is allowed, so that it stays renewed. It
// answers in-process from the registry in memory, with no network I/O,
// so a random or unknown name never causes an ACME order, and it keeps
// answering when any control plane is down. It refuses IP addresses and
// an empty server name.
type Permission struct {
	app       *App
	decisions *prometheus.CounterVec
}

// CaddyModule returns the Caddy module information.
func (Permission) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.permission.linktrack",
		New: func() caddy.Module { return new(Permission) },
	}
}

// Provision connects the module to the linktrack app.
func (p *Permission) Provision(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured("linktrack")
	if err != nil {
		return fmt.Errorf("permission linktrack checks the tenant registry of the linktrack app: %v", err)
	}
	p.app = app.(*App)
	p.decisions, err = register(ctx.GetMetricsRegistry(), prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "certificate_decisions_total",
		Help:      "On-demand certificate permission decisions (allowed or denied).",
	}, []string{"decision"}))
	return err
}

// CertificateAllowed reports whether a certificate may be obtained or
// loaded for name: nil if a tenant covers it, else an error wrapping
// caddytls.ErrPermissionDenied.
func (p *Permission) CertificateAllowed(_ context.Context, name string) error {
	err := p.check(name)
	decision := "allowed"
	if err != nil {
		decision = "denied"
	}
	p.decisions.WithLabelValues(decision).Inc()
	return err
}

func (p *Permission) check(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty server name", caddytls.ErrPermissionDenied)
	case isIP(name):
		return fmt.Errorf("%w: '%s' is an IP address", caddytls.ErrPermissionDenied, name)
	}
	host, ok := CanonicalHost(name)
	if !ok {
		return fmt.Errorf("%w: '%s' is not a valid server name", caddytls.ErrPermissionDenied, name)
	}
	s := p.app.snapshot()
	if s == nil {
		return fmt.Errorf("%w: no tenant registry", caddytls.ErrPermissionDenied)
	}
	key, e, ok := s.match(host)
	if !ok {
		return fmt.Errorf("%w: '%s' is not a tenant", caddytls.ErrPermissionDenied, name)
	}
	// a disabled tenant's certificate is still obtained and renewed;
	// one pending ownership gets none until its TXT record is found
	if p.app.refusal(key, e) == refusedPendingOwnership {
		return fmt.Errorf("%w: '%s' is pending ownership verification: no TXT record %s with its token yet",
			caddytls.ErrPermissionDenied, name, ownershipRecord(host))
	}
	if p.app.certs == nil {
		return nil
	}
	if until, cooling := p.app.certs.refuses(host); cooling {
		return fmt.Errorf("%w: '%s' is in cooldown after a failed issuance until %s", caddytls.ErrPermissionDenied, name, until.Format(time.RFC3339))
	}
	if st, stalled := p.app.stalls.isStalled(host); stalled && !p.app.certs.known(host) {
		return fmt.Errorf("%w: '%s' is stalled since %s: %s", caddytls.ErrPermissionDenied, name, st.Since.Format(time.RFC3339), st.Why)
	}
	// a first order waits for the domain's DNS to reach this edge; a
	// certificate known, or in storage before the scan of it ends, is
	// loaded and renewed; names under a wildcard are not checked
	if gate := p.app.dns; gate != nil && s.has(host) && p.app.certs.scanned.Load() &&
		!p.app.certs.known(host) && !gate.admit(host, false) {
		return fmt.Errorf("%w: '%s' is awaiting DNS: it does not resolve to this edge yet", caddytls.ErrPermissionDenied, name)
	}
	return nil
}

func isIP(host string) bool {
	_, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil
}

// UnmarshalCaddyfile sets up the module from Caddyfile tokens. Syntax:
//
//	permission linktrack
func (p *Permission) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume module name
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("permission linktrack takes no arguments; it reads the linktrack app's tenants")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Permission)(nil)
	_ caddytls.OnDemandPermission = (*Permission)(nil)
	_ caddyfile.Unmarshaler       = (*Permission)(nil)
)
