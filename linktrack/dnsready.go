package linktrack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DefaultDNSCheckInterval is the first delay before a tenant awaiting
// DNS is checked again; the delay doubles at each check, up to
// maxCheckDelay.
const DefaultDNSCheckInterval = time.Minute

const (
	dnsCheckWorkers = 8               // DNS readiness checks run at once
	dnsCheckTimeout = 5 * time.Second // per question and server
)

// dnsReadiness is what a DNS readiness check of a tenant's domain saw:
// ready when the domain resolves to this edge (dns_targets).
type dnsReadiness struct {
	Ready bool `json:"ready"`
	// The domain's records as resolved: "CNAME <target>", then "A
	// <address>" and "AAAA <address>" of the chain's end.
	RecordsSeen []string `json:"records_seen"`
	// Any one of these makes the domain ready: a CNAME to one of the
	// target names, or A/AAAA records among the target addresses only.
	RecordsExpected []string   `json:"records_expected"`
	Error           string     `json:"error,omitempty"`
	CheckedAt       time.Time  `json:"checked_at"`
	NextCheck       *time.Time `json:"next_check,omitempty"`
}

// dnsTargets is this edge as DNS names it: CNAME targets and
// addresses.
type dnsTargets struct {
	names    []string
	addrs    []netip.Addr
	expected []string
}

// parseDNSTargets parses dns_targets: host names (made canonical) and
// IPv4 or IPv6 addresses.
func parseDNSTargets(targets []string) (dnsTargets, error) {
	var t dnsTargets
	for _, target := range targets {
		if addr, err := netip.ParseAddr(strings.Trim(target, "[]")); err == nil {
			addr = addr.Unmap()
			t.addrs = append(t.addrs, addr)
			if addr.Is4() {
				t.expected = append(t.expected, "A "+addr.String())
			} else {
				t.expected = append(t.expected, "AAAA "+addr.String())
			}
			continue
		}
		name, err := CanonicalDomain(strings.TrimSuffix(target, "."))
		if err != nil || strings.HasPrefix(name, "*.") {
			return t, fmt.Errorf("'%s' is neither an IP address nor a host name", target)
		}
		t.names = append(t.names, name)
		t.expected = append(t.expected, "CNAME "+name)
	}
	return t, nil
}

// reaches reports whether a domain resolves to this edge: its CNAME
// chain reaches one of the target names, or it has addresses and every
// one of them is a target address. A domain with one address elsewhere
// is not ready: the CA, and some clicks, would reach that one.
func (t dnsTargets) reaches(cnames, addrs []string) bool {
	for _, cname := range cnames {
		if slices.Contains(t.names, cname) {
			return true
		}
	}
	if len(addrs) == 0 || len(t.addrs) == 0 {
		return false
	}
	for _, a := range addrs {
		addr, err := netip.ParseAddr(a)
		if err != nil || !slices.Contains(t.addrs, addr.Unmap()) {
			return false
		}
	}
	return true
}

// dnsGate holds back a tenant's first order until its domain resolves
// to this edge, checked with DNS queries only, without the CA. A tenant
// checked and not ready is checked again after the first delay, then
// after twice as long each time, up to an hour; a registry change of
// the tenant, or a check now call, checks it at once. Renewals are not
// held back; a renewal whose domain no longer reaches the edge is
// logged.
type dnsGate struct {
	targets  dnsTargets
	resolver dnsResolver
	logger   *zap.Logger
	ready    func(name string) // wakes a ready tenant's order
	// gives up on a tenant that stays not ready; nil never does
	stalls *stallTracker
	// report a tenant that starts awaiting DNS, and one that stalls;
	// either may be nil
	awaiting func(name string, cause error)
	stalled  func(name string, st stalledState)

	checks *checkQueue[dnsReadiness] // each tenant's readiness as last checked
}

func newDNSGate(targets dnsTargets, resolver dnsResolver, first time.Duration, logger *zap.Logger, ready func(string)) *dnsGate {
	return &dnsGate{
		targets:  targets,
		resolver: resolver,
		logger:   logger,
		ready:    ready,
		checks:   newCheckQueue[dnsReadiness](first),
	}
}

// admit reports whether name's first order may be placed: its last
// check found it ready. Otherwise it queues a check of a tenant never
// checked, or changed in the registry (changed), and reports false; the
// check wakes the order when it finds the tenant ready.
func (g *dnsGate) admit(name string, changed bool) bool {
	admitted := false
	g.checks.lookup(name, func(w *checkWait[dnsReadiness]) {
		if w != nil && w.last != nil && w.last.Ready {
			admitted = true
			return
		}
		if _, stalled := g.stalls.isStalled(name); stalled {
			return // no more checks until it is revived
		}
		if w == nil || changed {
			g.checks.enqueueLocked(name)
		}
	})
	return admitted
}

// report queues a check of a tenant whose certificate is being renewed:
// a renewal is not held back, but a domain that no longer reaches the
// edge is logged.
func (g *dnsGate) report(name string) {
	g.checks.enqueue(name)
}

// run checks queued tenants, dnsCheckWorkers at once, until stop is
// closed; then it stops every timer.
func (g *dnsGate) run(ctx context.Context, stop <-chan struct{}, known func(string) bool) {
	g.checks.run(ctx, stop, dnsCheckWorkers, func(ctx context.Context, name string) {
		g.record(name, g.check(ctx, name), known(name), "")
	})
}

// check resolves name and tells whether it reaches the edge.
func (g *dnsGate) check(ctx context.Context, name string) dnsReadiness {
	r := dnsReadiness{RecordsSeen: []string{}, RecordsExpected: g.targets.expected, CheckedAt: time.Now()}
	cnames, err := g.resolver.cnameChain(ctx, name)
	end := name
	for _, cname := range cnames {
		r.RecordsSeen = append(r.RecordsSeen, "CNAME "+cname)
		end = cname
	}
	var addrs []string
	if err == nil {
		addrs, err = g.resolver.addresses(ctx, end)
	}
	for _, addr := range addrs {
		if strings.Contains(addr, ":") {
			r.RecordsSeen = append(r.RecordsSeen, "AAAA "+addr)
		} else {
			r.RecordsSeen = append(r.RecordsSeen, "A "+addr)
		}
	}
	// a question that failed may hide records elsewhere, and fails the
	// CA's validation as well
	r.Ready = err == nil && g.targets.reaches(cnames, addrs)
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// checkNow checks name at once, records the result as a scheduled check
// would, with the delay back at its first value, and returns it.
func (g *dnsGate) checkNow(ctx context.Context, name string, known bool) dnsReadiness {
	r := g.check(ctx, name)
	g.checks.lookup(name, func(w *checkWait[dnsReadiness]) {
		if w != nil {
			w.delay = 0
		}
	})
	return g.record(name, r, known, "check_now")
}

// record keeps the result of a check of name. A ready tenant's order is
// woken; a tenant still awaiting DNS is checked again after its delay,
// which doubles each time, unless it has awaited DNS for give_up_after:
// then it stalls, and is checked no more. A tenant with a certificate
// (known) is only reported. It returns r with its next check.
func (g *dnsGate) record(name string, r dnsReadiness, known bool, cause string) dnsReadiness {
	var stalled *stalledState
	newlyStalled := false
	if !r.Ready && !known {
		if st, ok, now := g.stalls.giveUp(name, r.CheckedAt, "dns never reached this edge: "+r.summary()); ok {
			stalled, newlyStalled = &st, now
		}
	}
	first := false
	if !g.checks.finish(name, func(w *checkWait[dnsReadiness]) {
		first = w.last == nil || w.last.Ready != r.Ready
		switch {
		case stalled != nil:
			w.delay = 0
		case !r.Ready && !known:
			wait := g.checks.backoffLocked(w)
			if _, giveUpAt := g.stalls.tried(name, r.CheckedAt); !giveUpAt.IsZero() {
				// the check that gives up comes on time
				wait = max(min(wait, giveUpAt.Sub(r.CheckedAt)), 0)
			}
			next := r.CheckedAt.Add(wait)
			r.NextCheck = &next
			g.checks.scheduleLocked(name, w, next, time.Until(next))
		default:
			w.delay = 0
		}
		w.last = &r
	}) {
		return r
	}

	fields := []zap.Field{zap.String("domain", name), zap.Bool("ready", r.Ready),
		zap.Strings("records_seen", r.RecordsSeen), zap.Strings("records_expected", r.RecordsExpected)}
	if r.Error != "" {
		fields = append(fields, zap.String("error", r.Error))
	}
	if r.NextCheck != nil {
		fields = append(fields, zap.Time("next_check", *r.NextCheck))
	}
	if cause != "" {
		fields = append(fields, zap.String("cause", cause))
	}
	// one line per check at debug level; a change of readiness at info
	g.logger.Debug("tenant dns checked", fields...)
	switch {
	case known && !r.Ready && first:
		g.logger.Warn("tenant dns does not reach this edge; its certificate is renewed anyway", fields...)
	case known:
	case r.Ready:
		g.logger.Info("tenant dns ready", fields...)
		g.ready(name)
	case stalled != nil:
		if newlyStalled && g.stalled != nil {
			g.stalled(name, *stalled)
		}
	case first:
		g.logger.Info("tenant awaiting dns", fields...)
		if g.awaiting != nil {
			g.awaiting(name, errors.New(r.summary()))
		}
	}
	return r
}

// summary says in one line what a check that found a domain not ready
// saw, and what it expected.
func (r dnsReadiness) summary() string {
	seen := "no records"
	if len(r.RecordsSeen) > 0 {
		seen = strings.Join(r.RecordsSeen, ", ")
	}
	s := fmt.Sprintf("records seen: %s; expected: %s", seen, strings.Join(r.RecordsExpected, " or "))
	if r.Error != "" {
		s += "; " + r.Error
	}
	return s
}

// revive forgets the last check of a tenant that stalled, so that its
// next check is reported as a first one and its delays start over, and
// queues that check unless the caller runs it (check false). Until that
// check ends, admit neither admits nor queues it.
func (g *dnsGate) revive(name string, check bool) {
	g.checks.restart(name, check)
}

// status returns what is known of name's readiness: its last check,
// if one ended, and whether it is ready.
func (g *dnsGate) status(name string) (*dnsReadiness, bool) {
	r := g.checks.last(name)
	if r == nil {
		return nil, false
	}
	return r, r.Ready
}

// isReady reports whether name's last check found it ready.
func (g *dnsGate) isReady(name string) bool {
	_, ready := g.status(name)
	return ready
}

// unready forgets that name was ready, after its first order failed:
// its DNS is checked again before the next order, when its cooldown
// ends.
func (g *dnsGate) unready(name string) {
	g.checks.lookup(name, func(w *checkWait[dnsReadiness]) {
		if w != nil && w.last != nil && w.last.Ready {
			g.checks.forgetLocked(name)
		}
	})
}

// forget drops a removed tenant.
func (g *dnsGate) forget(name string) {
	g.checks.forget(name)
}

// inherit takes over the checks of the gate of the config this one
// replaces, for the tenants keep reports, if both ask for the same
// targets: a reload neither checks every awaiting tenant at once nor
// starts its delays over.
func (g *dnsGate) inherit(prev *dnsGate, keep func(string) bool) {
	if !slices.Equal(g.targets.expected, prev.targets.expected) {
		return
	}
	g.checks.inherit(prev.checks, keep)
}

// close stops every timer; nothing is queued after it.
func (g *dnsGate) close() {
	g.checks.close()
}

// newAppDNSGate sets up the gate of dns_targets, or returns nil when
// dns_targets is not set; it checks dns_resolvers either way.
func newAppDNSGate(a *App) (*dnsGate, error) {
	servers := a.DNSResolvers
	for _, s := range servers {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			return nil, fmt.Errorf("dns_resolvers: '%s' must be host:port", s)
		}
	}
	if len(a.DNSTargets) == 0 {
		return nil, nil // dns_resolvers serve check now calls alone
	}
	targets, err := parseDNSTargets(a.DNSTargets)
	if err != nil {
		return nil, fmt.Errorf("dns_targets: %v", err)
	}
	if len(servers) == 0 {
		if servers, err = systemResolvers(); err != nil {
			return nil, fmt.Errorf("dns_targets: no system DNS resolver; set dns_resolvers: %v", err)
		}
	}
	g := newDNSGate(targets, dnsResolver{servers: servers, timeout: dnsCheckTimeout},
		time.Duration(a.DNSCheckInterval), a.logger.Named("dns"), func(name string) {
			if a.pre != nil {
				a.pre.recheck(name)
			}
		})
	g.stalls = a.stalls
	g.awaiting = func(name string, cause error) { a.tenantStateChanged(name, stateAwaitingDNS, cause) }
	g.stalled = a.stall
	return g, nil
}
