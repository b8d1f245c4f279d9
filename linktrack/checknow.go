package linktrack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

const (
	// checkNowTimeout bounds a whole check now call.
	checkNowTimeout = 30 * time.Second
	// checkNowStepTimeout bounds each network step of its checks.
	checkNowStepTimeout = 5 * time.Second
	// maxChecksAtOnce is how many check now calls run at once; one more
	// is refused, as is a second call for a tenant whose check runs.
	maxChecksAtOnce = 4
)

var (
	errCheckRunning  = errors.New("a check of this tenant is already running")
	errTooManyChecks = fmt.Errorf("%d checks are already running", maxChecksAtOnce)
)

// checkRuns holds the check now calls running: one per tenant at a
// time, and maxChecksAtOnce in all.
type checkRuns struct {
	mu      sync.Mutex
	running map[string]bool
}

func newCheckRuns() *checkRuns {
	return &checkRuns{running: make(map[string]bool)}
}

// start claims a check of name; end releases it.
func (r *checkRuns) start(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.running[name]:
		return errCheckRunning
	case len(r.running) >= maxChecksAtOnce:
		return errTooManyChecks
	}
	r.running[name] = true
	return nil
}

func (r *checkRuns) end(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, name)
}

// checkAnswer is the answer of a check now call.
type checkAnswer struct {
	Domain string `json:"domain"`
	// The ownership check, with ownership_txt.
	Ownership *ownershipState `json:"ownership,omitempty"`
	// The DNS readiness check, with dns_targets.
	DNS *dnsReadiness `json:"dns,omitempty"`
	// Every check, in order: dns_targets (with dns_targets), then those
	// of `caddy linktrack check`.
	Checks []checkResult `json:"checks"`
	// No check failed.
	OK bool `json:"ok"`
	// The tenant was stalled, and this call revived it.
	Revived bool `json:"revived,omitempty"`
	// The certificate state after the checks.
	Certificate *certificateState `json:"certificate"`
}

// checkNow checks a tenant at once and updates its state: a stalled
// tenant is revived; with dns_targets, its DNS readiness check is
// recorded as a scheduled check would be, so that a ready tenant's order
// is woken at once; then the checks of `caddy linktrack check` run
// against the address its DNS gives, through dns_resolvers, and this
// server's HTTP and HTTPS ports; those that need a TLS handshake with
// the domain are not run while no certificate for it is known, so that
// a check never orders one. The whole call takes at most
// checkNowTimeout.
func (a *App) checkNow(ctx context.Context, rt registeredTenant) checkAnswer {
	ctx, cancel := context.WithTimeout(ctx, checkNowTimeout)
	defer cancel()
	domain := rt.Domain
	answer := checkAnswer{Domain: domain, Revived: a.revive(domain, "check_now")}
	// ownership first: a pending tenant's DNS readiness waits for it
	answer.Ownership = a.checkOwnershipNow(ctx, domain)
	if a.dns != nil {
		r := a.dns.checkNow(ctx, domain, a.certs.known(domain))
		answer.DNS = &r
		answer.Checks = append(answer.Checks, readinessResult(domain, r))
	}
	c, err := a.domainCheck(rt.Tenant)
	if err == nil && !a.certs.known(domain) {
		// the handshake would be a click's: an order outside the order
		// limits, or one the permission module refuses
		c.noCertificate = "this server holds no certificate for " + domain + " yet; a handshake would order one outside the order limits"
	}
	if err != nil {
		answer.Checks = append(answer.Checks, checkResult{Check: "setup", Status: checkFail, Detail: err.Error()})
	} else {
		answer.Checks = append(answer.Checks, c.run(ctx)...)
	}
	answer.OK = failures(answer.Checks) == 0
	answer.Certificate = a.view(ctx, rt).Certificate
	return answer
}

// readinessResult is a DNS readiness check as one of the checks.
func readinessResult(domain string, r dnsReadiness) checkResult {
	res := checkResult{Check: "dns_targets", Status: checkPass, Detail: domain + " reaches this edge: " + strings.Join(r.RecordsSeen, ", ")}
	if !r.Ready {
		res.Status, res.Detail = checkFail, domain+" does not reach this edge: "+r.summary()
		res.Fix = "ask the domain's owner for one of these records: " + domain + " " + strings.Join(r.RecordsExpected, ", or "+domain+" ")
	}
	return res
}

// domainCheck returns the checks of `caddy linktrack check` for tenant
// t, asking dns_resolvers (or the system's) and connecting to this
// server's HTTP and HTTPS ports.
func (a *App) domainCheck(t Tenant) (*domainCheck, error) {
	resolver := dnsResolver{servers: a.DNSResolvers}
	if len(resolver.servers) == 0 {
		servers, err := systemResolvers()
		if err != nil {
			return nil, fmt.Errorf("no system DNS resolver; set dns_resolvers: %v", err)
		}
		resolver.servers = servers
	}
	httpPort, httpsPort := caddyhttp.DefaultHTTPPort, caddyhttp.DefaultHTTPSPort
	if mod, err := a.ctx.AppIfConfigured("http"); err == nil {
		if app := mod.(*caddyhttp.App); app.HTTPPort != 0 {
			httpPort = app.HTTPPort
		}
		if app := mod.(*caddyhttp.App); app.HTTPSPort != 0 {
			httpsPort = app.HTTPSPort
		}
	}
	c := newDomainCheck(t.Domain, resolver, httpPort, httpsPort, checkNowStepTimeout)
	switch {
	case t.Provider != "":
		return c, c.forProvider(t.Provider, t.Region)
	case a.Origins[t.Origin] != nil:
		return c, c.forOrigin(t.Origin, a.Origins[t.Origin].Upstream)
	}
	return c, nil
}
