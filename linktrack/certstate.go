package linktrack

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// certificateState is a tenant's certificate as the admin API shows it.
type certificateState struct {
	// none (pre-issuance is off and no click came yet), pending_ownership
	// (ownership_txt is set and the tenant's TXT record is not found yet:
	// no order is placed), awaiting_dns
	// (dns_targets is set and the domain does not resolve to this edge
	// yet: no order is placed), pending (to be obtained in the
	// background; after a failed issuance, with the error and the time of
	// the next try), stalled (given up after give_up_after: no more
	// checks or orders until revived), valid or expired; per_name for a
	// wildcard tenant, whose names each get their own certificate.
	Status   string     `json:"status"`
	NotAfter *time.Time `json:"not_after,omitempty"`
	Error    string     `json:"error,omitempty"`
	FailedAt *time.Time `json:"failed_at,omitempty"`
	NextTry  *time.Time `json:"next_try,omitempty"`
	// While awaiting_dns: the last DNS readiness check, with the records
	// seen, the records expected and the next check; absent until the
	// first check ends.
	DNS *dnsReadiness `json:"dns,omitempty"`
	// While pending: the order limits (order_limit,
	// registered_domain_limit) hold the first order back until then at
	// the earliest.
	RateLimitedUntil *time.Time `json:"rate_limited_until,omitempty"`
	// While stalled: since when, since when it was tried, and why.
	Stalled *stalledState `json:"stalled,omitempty"`
}

// certStates remembers the last failure to obtain a certificate for each
// tenant, from the certificate events Caddy emits.
type certStates struct {
	app      *App
	logger   *zap.Logger
	mu       sync.Mutex
	failures map[string]certFailure
	issued   map[string]issuedCert // tenants' certificates seen, by name
	expiring map[string]time.Time  // the expiry of each certificate reported expiring, by name
	cooldown time.Duration         // after a first failure; it doubles up to maxCooldown
	scanned  atomic.Bool           // the certificates in storage at start are known
}

// issuedCert is what is known of a tenant's newest certificate.
type issuedCert struct {
	notBefore, notAfter time.Time
	recheck             time.Time // no background handshake before then
}

// renewAt is when certmagic's default renewal window opens: a third of
// the certificate's lifetime before it expires.
func (ic issuedCert) renewAt() time.Time {
	return ic.notAfter.Add(-ic.notAfter.Sub(ic.notBefore) / 3)
}

// maxCooldown caps the delay between orders for a name that keeps failing.
const maxCooldown = time.Hour

// certFailure is a name's last failed issuance, and when the next order
// may be placed.
type certFailure struct {
	renewal bool // of a certificate that may still be valid
	err     string
	at      time.Time
	delay   time.Duration
	next    time.Time
}

// watchCertificates subscribes to Caddy's certificate events. Event
// handlers run in the emitter's goroutine, so they only record.
func watchCertificates(events *caddyevents.App, a *App) (*certStates, error) {
	c := &certStates{
		app:      a,
		logger:   a.logger.Named("certificates"),
		failures: make(map[string]certFailure),
		issued:   make(map[string]issuedCert),
		expiring: make(map[string]time.Time),
		cooldown: time.Duration(a.IssuanceCooldown),
	}
	for _, name := range []string{"cert_failed", "cert_obtained", "cert_obtaining"} {
		if err := events.On(name, c); err != nil {
			return nil, fmt.Errorf("subscribing to %s: %v", name, err)
		}
	}
	return c, nil
}

// Handle records a failure, or clears it when a certificate arrives.
// Only tenants are recorded, so the maps stay bounded. It runs inside
// certmagic's issuance, so it never waits on I/O.
func (c *certStates) Handle(_ context.Context, e caddy.Event) error {
	name, _ := e.Data["identifier"].(string)
	if name == "" {
		return nil
	}
	renewal, _ := e.Data["renewal"].(bool)
	switch e.Name() {
	case "cert_obtaining":
		// certmagic retries a failed order for minutes, and asks the
		// permission module only before the first try: end the retries
		// of a name in cooldown here
		if next, cooling := c.inCooldown(name); cooling {
			return fmt.Errorf("%w: %w", caddy.ErrEventAborted, certmagic.ErrNoRetry{
				Err: fmt.Errorf("'%s' is in cooldown after a failed issuance until %s", name, next.Format(time.RFC3339)),
			})
		}
		if _, stalled := c.app.stalls.isStalled(name); stalled && !renewal {
			return fmt.Errorf("%w: %w", caddy.ErrEventAborted, certmagic.ErrNoRetry{
				Err: fmt.Errorf("'%s' is stalled: no order until it is revived", name),
			})
		}
	case "cert_obtained":
		if !c.isTenant(name) {
			return nil
		}
		c.mu.Lock()
		delete(c.failures, name)
		c.mu.Unlock()
		c.app.stalls.obtained(name)
		event := "obtained"
		if renewal {
			event = "renewed"
		}
		c.app.metrics.certEvents.WithLabelValues(event).Inc()
		certPath, _ := e.Data["certificate_path"].(string)
		go c.recordObtained(name, certPath, event)
	case "cert_failed":
		if !c.isTenant(name) {
			return nil
		}
		c.mu.Lock()
		delay := c.cooldown
		if prior, ok := c.failures[name]; ok {
			delay = min(2*prior.delay, max(maxCooldown, c.cooldown))
		}
		f := certFailure{renewal: renewal, err: fmt.Sprint(e.Data["error"]), at: e.Timestamp(), delay: delay, next: e.Timestamp().Add(delay)}
		c.failures[name] = f
		c.mu.Unlock()
		if !renewal && c.app.dns != nil {
			c.app.dns.unready(name) // checked again before the next order
		}
		// a first order that keeps failing is given up
		var stalled *stalledState
		newlyStalled := false
		if !renewal && !c.known(name) {
			if st, ok, newly := c.app.stalls.giveUp(name, f.at, "orders kept failing: "+f.err); ok {
				stalled, newlyStalled = &st, newly
			}
		}
		c.app.metrics.certEvents.WithLabelValues("failed").Inc()
		c.logger.Warn("tenant certificate failed",
			zap.String("domain", name),
			zap.Bool("renewal", renewal),
			zap.String("error", f.err),
			zap.Duration("cooldown", f.delay),
			zap.Time("next_try", f.next),
			zap.Bool("stalled", stalled != nil))
		c.app.tenantStateChanged(name, stateFailed, errors.New(f.err))
		if c.app.pre != nil {
			c.app.pre.failed(name)
			if stalled == nil {
				time.AfterFunc(time.Until(f.next), func() { c.app.pre.recheck(name) }) // try again when the cooldown ends
			}
		}
		if newlyStalled {
			c.app.stall(name, *stalled)
		}
	}
	return nil
}

// isTenant reports whether name is covered by the registry in use.
func (c *certStates) isTenant(name string) bool {
	s := c.app.snapshot()
	if s == nil {
		return false
	}
	_, ok := s.lookup(name)
	return ok
}

// recordObtained reads a tenant's new certificate from storage, logs it
// and reports the tenant's state: valid, or renewed.
func (c *certStates) recordObtained(name, certPath, event string) {
	fields := []zap.Field{zap.String("domain", name), zap.String("event", event)}
	st := tenantState{domain: name, state: stateValid}
	if event == "renewed" {
		st.state = stateRenewed
	}
	if certPath != "" {
		if cert, err := c.loadCert(c.app.ctx, certPath); err == nil {
			c.record(name, cert.NotBefore, cert.NotAfter, time.Time{})
			fields = append(fields, zap.Time("not_after", cert.NotAfter))
			st.notAfter = cert.NotAfter
		}
	}
	c.logger.Info("tenant certificate "+event, fields...)
	c.app.emitTenantState(st)
}

// record keeps the newest certificate seen for name.
func (c *certStates) record(name string, notBefore, notAfter, recheck time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prior, ok := c.issued[name]; ok && prior.notAfter.After(notAfter) {
		notBefore, notAfter = prior.notBefore, prior.notAfter
	}
	c.issued[name] = issuedCert{notBefore: notBefore, notAfter: notAfter, recheck: recheck}
}

// handedBack records the certificate a background handshake was served
// for name. If it is due for renewal, certmagic renews it in the
// background, and reports it with an event: the name is left alone for a
// while.
func (c *certStates) handedBack(name string, notBefore, notAfter time.Time) {
	var recheck time.Time
	if now := time.Now(); now.After((issuedCert{notBefore: notBefore, notAfter: notAfter}).renewAt()) {
		recheck = now.Add(recheckAfter)
	}
	c.record(name, notBefore, notAfter, recheck)
	c.app.stalls.obtained(name) // one from another node sharing the storage, say
}

// due reports whether a background handshake should get name a
// certificate: it has none, or its certificate is in its renewal window,
// and it is not cooling down after a failure.
func (c *certStates) due(name string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.failures[name]; ok && now.Before(f.next) {
		return false
	}
	ic, ok := c.issued[name]
	return !ok || (now.After(ic.renewAt()) && now.After(ic.recheck))
}

// known reports whether a certificate for name was seen.
func (c *certStates) known(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.issued[name]
	return ok
}

// forget drops what is known of a removed tenant's certificate. A
// failure is kept, so that removing and adding a tenant back does not
// end its cooldown.
func (c *certStates) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.issued, name)
	delete(c.expiring, name)
}

// expiringWithin is how close to its expiry a tenant's certificate is
// reported expiring, when it lives long enough: certmagic would have
// been renewing it for weeks.
const expiringWithin = 7 * 24 * time.Hour

// expiringAt is when the certificate is reported expiring: 7 days before
// it expires, or halfway through its renewal window if that is later, so
// that a short-lived certificate (6 days, say) is reported only when its
// renewal is late, not at every issuance.
func (ic issuedCert) expiringAt() time.Time {
	return ic.notAfter.Add(-min(expiringWithin, ic.notAfter.Sub(ic.notBefore)/6))
}

// reportExpiring reports, once per certificate, the tenants whose
// certificate is now expiring (see expiringAt), as state expiring with
// the certificate's expiry. The app's sweep calls it every
// renewal_check_interval; a certificate renewed meanwhile is newer and
// not reported.
func (c *certStates) reportExpiring() {
	if c.app.events == nil || !c.app.events.ShouldEmit(tenantStateEvent) {
		return
	}
	c.reportExpiringAt(time.Now())
}

// reportExpiringAt is reportExpiring at the time now.
func (c *certStates) reportExpiringAt(now time.Time) {
	type expiring struct {
		name     string
		notAfter time.Time
	}
	var found []expiring
	c.mu.Lock()
	if c.expiring == nil {
		c.expiring = make(map[string]time.Time)
	}
	for name, ic := range c.issued {
		if now.Before(ic.expiringAt()) || c.expiring[name].Equal(ic.notAfter) {
			continue
		}
		c.expiring[name] = ic.notAfter
		found = append(found, expiring{name, ic.notAfter})
	}
	c.mu.Unlock()
	s := c.app.snapshot()
	for _, e := range found {
		if s == nil {
			return
		}
		if _, ok := s.lookup(e.name); ok {
			c.app.emitTenantState(tenantState{domain: e.name, state: stateExpiring, notAfter: e.notAfter})
		}
	}
}

// loadCert reads and parses a certificate from storage.
func (c *certStates) loadCert(ctx context.Context, key string) (*x509.Certificate, error) {
	raw, err := c.app.storage.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM", key)
	}
	return x509.ParseCertificate(block.Bytes)
}

// scanStorage records the expiry of every tenant certificate already in
// storage, so that the expiry metric covers certificates obtained before
// this config loaded. It stops early when the app stops.
func (c *certStates) scanStorage(ctx context.Context, stop <-chan struct{}) {
	defer c.scanned.Store(true)
	issuers, err := c.app.storage.List(ctx, "certificates", false)
	if err != nil {
		return
	}
	// a distributed storage answers each load in a round trip: load
	// several at once
	keys := make(chan [2]string)
	var loaders sync.WaitGroup
	for range scanLoaders {
		loaders.Go(func() {
			for k := range keys {
				if cert, err := c.loadCert(ctx, certmagic.StorageKeys.SiteCert(k[0], k[1])); err == nil {
					c.record(k[1], cert.NotBefore, cert.NotAfter, time.Time{})
				}
			}
		})
	}
	defer loaders.Wait()
	defer close(keys)
	for _, issuer := range issuers {
		sites, err := c.app.storage.List(ctx, issuer, false)
		if err != nil {
			continue
		}
		for _, site := range sites {
			name := path.Base(site)
			if _, ok := c.app.snapshot().lookup(name); !ok {
				continue
			}
			select {
			case keys <- [2]string{path.Base(issuer), name}:
			case <-stop:
				return
			}
		}
	}
}

// scanLoaders is how many certificates the start-up scan loads at once.
const scanLoaders = 8

// endCooldown forgets name's last failure: a revived tenant's order
// may be placed at once.
func (c *certStates) endCooldown(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.failures, name)
}

// inCooldown reports whether no order may be placed for name yet, and
// until when.
func (c *certStates) inCooldown(name string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.failures[name]
	return f.next, ok && time.Now().Before(f.next)
}

// refuses reports whether no certificate may be obtained or loaded for
// name yet, and until when: it is cooling down after a failed issuance
// and has no unexpired certificate, which must keep loading from storage
// while its renewal cools down.
func (c *certStates) refuses(name string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.failures[name]
	if !ok || f.renewal || !time.Now().Before(f.next) {
		return time.Time{}, false
	}
	if ic, ok := c.issued[name]; ok && time.Now().Before(ic.notAfter) {
		return time.Time{}, false
	}
	return f.next, true
}

// soonestExpiry returns the earliest expiry among the certificates of
// domains still registered.
func (c *certStates) soonestExpiry() (time.Time, bool) {
	s := c.app.snapshot()
	if s == nil {
		return time.Time{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var soonest time.Time
	for name, ic := range c.issued {
		if _, ok := s.lookup(name); !ok {
			continue // a removed tenant's certificate is not renewed on purpose
		}
		if soonest.IsZero() || ic.notAfter.Before(soonest) {
			soonest = ic.notAfter
		}
	}
	return soonest, !soonest.IsZero()
}

// Describe implements prometheus.Collector.
func (c *certStates) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

// Collect implements prometheus.Collector: the time left until the
// soonest expiry, or nothing while no tenant has a certificate.
func (c *certStates) Collect(ch chan<- prometheus.Metric) {
	if soonest, ok := c.soonestExpiry(); ok {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, time.Until(soonest).Seconds())
	}
}

var expiryDesc = prometheus.NewDesc("caddy_linktrack_certificate_expiry_seconds",
	"Seconds until the soonest expiry among the tenants' certificates.", nil, nil)

// state returns a domain's certificate state: the newest certificate
// for it in storage, else its last failure, else none.
func (c *certStates) state(ctx context.Context, domain string) certificateState {
	if _, wild := strings.CutPrefix(domain, "*."); wild {
		return certificateState{Status: "per_name"}
	}
	var newest *x509.Certificate
	issuers, _ := c.app.storage.List(ctx, "certificates", false)
	for _, dir := range issuers {
		raw, err := c.app.storage.Load(ctx, certmagic.StorageKeys.SiteCert(path.Base(dir), domain))
		if err != nil {
			continue
		}
		block, _ := pem.Decode(raw)
		if block == nil {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err == nil && (newest == nil || cert.NotAfter.After(newest.NotAfter)) {
			newest = cert
		}
	}
	if newest != nil {
		status := "valid"
		if time.Now().After(newest.NotAfter) {
			status = "expired"
		}
		return certificateState{Status: status, NotAfter: &newest.NotAfter}
	}
	c.mu.Lock()
	failure, failed := c.failures[domain]
	c.mu.Unlock()
	var st certificateState
	if stalled, ok := c.app.stalls.isStalled(domain); ok {
		st = certificateState{Status: "stalled", Stalled: &stalled}
		if failed {
			st.Error, st.FailedAt = failure.err, &failure.at
		}
		if gate := c.app.dns; gate != nil {
			st.DNS, _ = gate.status(domain)
		}
		return st
	}
	if failed {
		st = certificateState{Status: "pending", Error: failure.err, FailedAt: &failure.at, NextTry: &failure.next}
		if time.Now().Before(failure.next) {
			return st // cooling down; its DNS is checked again after
		}
	}
	if gate := c.app.dns; gate != nil {
		if last, ready := gate.status(domain); !ready {
			st.Status, st.DNS = "awaiting_dns", last
			return st
		}
	}
	if c.app.pre != nil && !c.app.pre.off.Load() {
		st.Status = "pending" // queued, in flight, or at the next sweep
		if until, ok := c.app.pre.rateLimitedUntil(domain); ok {
			st.RateLimitedUntil = &until
		}
		return st
	}
	if !failed {
		st.Status = "none"
	}
	return st
}

// status returns a domain's certificate status from what this node
// knows in memory, without reading storage: valid or expired for a
// certificate seen, stalled when given up, pending after a failure or
// while pre-issuance is on, awaiting_dns while dns_targets holds the
// first order back, none otherwise, per_name for a wildcard. A listing of every
// tenant uses it; state reads storage for one tenant.
func (c *certStates) status(domain string, now time.Time) string {
	if strings.HasPrefix(domain, "*.") {
		return "per_name"
	}
	c.mu.Lock()
	ic, issued := c.issued[domain]
	f, failed := c.failures[domain]
	c.mu.Unlock()
	switch {
	case issued && now.After(ic.notAfter):
		return "expired"
	case issued:
		return "valid"
	case c.isStalled(domain):
		return "stalled"
	case failed && now.Before(f.next):
		return "pending"
	case c.app.ownershipPendingNow(domain):
		return statePendingOwnership
	case c.app.dns != nil && !c.app.dns.isReady(domain):
		return "awaiting_dns"
	case failed || (c.app.pre != nil && !c.app.pre.off.Load()):
		return "pending"
	default:
		return "none"
	}
}

// isStalled reports whether name is stalled.
func (c *certStates) isStalled(name string) bool {
	_, stalled := c.app.stalls.isStalled(name)
	return stalled
}

// Interface guards
var (
	_ caddyevents.Handler  = (*certStates)(nil)
	_ prometheus.Collector = (*certStates)(nil)
)
