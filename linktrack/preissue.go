package linktrack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"
)

// DefaultPreIssuanceWorkers is how many tenants' certificates are
// obtained at once in the background. certmagic places at most 10
// orders per 10s per ACME account anyway.
const DefaultPreIssuanceWorkers = 4

// preIssueTimeout bounds one background handshake: certmagic gives an
// on-demand order 180s.
const preIssueTimeout = 190 * time.Second

// DefaultRenewalCheckInterval is how often every tenant is checked for
// a missing or renewable certificate, besides the check that follows
// each registry change.
const DefaultRenewalCheckInterval = time.Minute

// recheckAfter is how long a tenant whose certificate was just handed
// back by a handshake is left alone: certmagic renews it in the
// background if it is due, and a renewal is reported by an event.
const recheckAfter = time.Hour

// preIssuer gets each tenant's certificate before its first click, and
// renews dormant tenants' certificates before they expire. It completes
// a TLS handshake with the tenant's name as SNI, in process, against the
// TLS configuration of this config's HTTPS server: certmagic then loads,
// obtains or renews the certificate exactly as it would for a click,
// with the configured issuers, storage, permission, limits and events.
// Unlike a click, the handshake's context is ended as soon as an order
// fails, so that certmagic's retry delay does not hold the name, and
// clicks during the cooldown are refused at once instead of waiting on
// it. A certificate cache full of tenants evicts some, and a dormant
// tenant's certificate is not in it to be renewed: this handshake
// covers those too.
type preIssuer struct {
	app     *App
	logger  *zap.Logger
	server  *tls.Config // the HTTPS server's, found at run
	workers int
	orders  *orderLimiter

	jobs chan string
	kick chan struct{} // a registry change: sweep now

	mu       sync.Mutex
	busy     map[string]context.CancelFunc // names queued or in flight
	retry    map[string]retryAfter         // handshakes that failed with no order
	rechecks map[string]bool               // names to sweep at the next change, such as a cooldown's end
	limited  map[string]time.Time          // names held back by the order limits, until when at the earliest

	off atomic.Bool // no HTTPS server to obtain through
}

func newPreIssuer(a *App) *preIssuer {
	return &preIssuer{
		app:     a,
		logger:  a.logger.Named("pre_issuance"),
		workers: a.PreIssuanceWorkers,
		orders: newOrderLimiter(a.OrderLimit, time.Duration(a.OrderLimitWindow),
			a.RegisteredDomainLimit, time.Duration(a.RegisteredDomainLimitWindow)),
		jobs:    make(chan string),
		kick:    make(chan struct{}, 1),
		busy:    make(map[string]context.CancelFunc),
		retry:   make(map[string]retryAfter),
		limited: make(map[string]time.Time),
	}
}

// run sweeps the registry at every change and every renewal check
// interval until stop is closed.
func (p *preIssuer) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(p.app.ctx)
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()

	policies, err := httpsPolicies(p.app.ctx)
	if err != nil {
		p.off.Store(true)
		p.logger.Warn("pre-issuance is off", zap.Error(err))
		return
	}
	p.server = policies.TLSConfig(p.app.ctx)
	p.logger.Info("obtaining tenants' certificates in the background", zap.Int("workers", p.workers))

	var workers sync.WaitGroup
	for range p.workers {
		workers.Go(func() {
			for name := range p.jobs {
				p.obtain(ctx, name)
			}
		})
	}
	defer func() {
		close(p.jobs)
		workers.Wait()
	}()

	ticker := time.NewTicker(time.Duration(p.app.RenewalCheckInterval))
	defer ticker.Stop()
	var swept *snapshot // a registry change sweeps what changed since
	for {
		var ok bool
		if swept, ok = p.sweep(stop, swept); !ok {
			return
		}
		select {
		case <-stop:
			return
		case <-ticker.C:
			swept = nil
		case <-p.kick:
		}
	}
}

// changed asks for a sweep of what changed, soon, without blocking.
func (p *preIssuer) changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// recheck asks for name to be swept soon, without blocking.
func (p *preIssuer) recheck(name string) {
	p.mu.Lock()
	if p.rechecks == nil {
		p.rechecks = make(map[string]bool)
	}
	p.rechecks[name] = true
	p.mu.Unlock()
	p.changed()
}

// sweep queues every tenant whose certificate is missing or due for
// renewal and that is neither cooling down nor already queued; with a
// registry swept before, only the tenants added or changed since. It
// returns the registry swept, and false when stop closed meanwhile.
func (p *preIssuer) sweep(stop <-chan struct{}, since *snapshot) (*snapshot, bool) {
	s := p.app.snapshot()
	if s == nil {
		return since, true
	}
	// changed is true for a tenant added or changed in the registry
	each := func(fn func(name string, changed bool) bool) {
		s.exact.each(func(name string, _ entry) bool { return fn(name, false) })
	}
	if since != nil {
		p.mu.Lock()
		rechecks := p.rechecks
		p.rechecks = nil
		p.mu.Unlock()
		each = func(fn func(string, bool) bool) {
			for name := range rechecks {
				if _, ok := s.exact.get(name); ok && !fn(name, false) {
					return
				}
			}
			s.exact.eachChanged(since.exact, func(name string, _ entry) bool { return fn(name, true) })
		}
	}
	now := time.Now()
	more := true
	each(func(name string, changed bool) bool {
		if !p.app.certs.due(name, now) {
			return true
		}
		if p.app.ownership != nil {
			if e, ok := s.exact.get(name); ok && p.app.ownershipPending(s, name, e) {
				return true // its ownership check wakes it
			}
		}
		known := p.app.certs.known(name)
		if _, stalled := p.app.stalls.isStalled(name); stalled && !known {
			return true // given up: no check, no order, until revived
		}
		if gate := p.app.dns; gate != nil {
			if known {
				gate.report(name) // a renewal is not held back
			} else if !gate.admit(name, changed) {
				return true // awaiting DNS: its check wakes it
			}
		}
		if !known && !p.orders.ready(name) {
			until := p.orders.readyAt(name, now)
			p.rateLimited(name, until)
			p.logger.Debug("first order held back by the order limits", zap.String("domain", name), zap.Time("rate_limited_until", until))
			return true // over the order limits: a later sweep
		}
		if !p.claim(name) {
			return true
		}
		select {
		case p.jobs <- name:
		case <-stop:
			p.release(name)
			more = false
		}
		return more
	})
	return s, more
}

// rateLimited records that name's first order is held back by the
// order limits until about until; a zero until clears it.
func (p *preIssuer) rateLimited(name string, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until.IsZero() {
		delete(p.limited, name)
	} else {
		p.limited[name] = until
	}
}

// rateLimitedUntil returns when the order limits let name's first order
// be placed at the earliest, if they hold it back.
func (p *preIssuer) rateLimitedUntil(name string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	until, ok := p.limited[name]
	return until, ok
}

// forget drops what is known of a removed tenant.
func (p *preIssuer) forget(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.limited, name)
}

// retryAfter delays the next background handshake of a name whose last
// one failed without a failed order, which would start no cooldown: no
// TLS policy for the name, say.
type retryAfter struct {
	next  time.Time
	delay time.Duration
}

// claim marks name as queued; it reports false if it already is, or if
// its last handshake failed too recently.
func (p *preIssuer) claim(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.busy[name]; ok {
		return false
	}
	if r, ok := p.retry[name]; ok && time.Now().Before(r.next) {
		return false
	}
	p.busy[name] = func() {}
	return true
}

func (p *preIssuer) release(name string) {
	p.mu.Lock()
	delete(p.busy, name)
	p.mu.Unlock()
}

// failed ends the background handshake for name, if there is one: its
// order failed, and certmagic would hold the handshake through its own
// retry delay. The cooldown decides when the name is tried again.
func (p *preIssuer) failed(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cancel, ok := p.busy[name]; ok {
		cancel()
	}
}

// obtain completes a handshake for name and records the certificate it
// was handed.
func (p *preIssuer) obtain(ctx context.Context, name string) {
	defer p.release(name)
	if s := p.app.snapshot(); s == nil || !s.has(name) {
		return // removed while queued
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	p.busy[name] = cancel
	p.mu.Unlock()
	if !p.app.certs.known(name) {
		if _, stalled := p.app.stalls.isStalled(name); stalled {
			return // stalled while queued
		}
		if err := p.orders.wait(ctx, name, func(until time.Time) { p.rateLimited(name, until) }); err != nil {
			if errors.Is(err, errRegisteredDomainLimit) {
				p.rateLimited(name, p.orders.readyAt(name, time.Now()))
				p.logger.Debug("registered domain limit reached; waiting for the next check", zap.String("domain", name))
			}
			return
		}
		p.rateLimited(name, time.Time{})
	}
	// the handshake's time starts once the order may be placed
	ctx, stop := context.WithTimeout(ctx, preIssueTimeout)
	defer stop()
	start := time.Now()
	leaf, err := p.handshake(ctx, name)
	if err != nil {
		if ctx.Err() == nil {
			p.handshakeFailed(name, err)
		}
		return
	}
	p.mu.Lock()
	delete(p.retry, name)
	p.mu.Unlock()
	if err := leaf.VerifyHostname(name); err != nil {
		p.logger.Warn("background handshake got a certificate for another name",
			zap.String("domain", name), zap.Strings("names", leaf.DNSNames))
		return
	}
	p.app.certs.handedBack(name, leaf.NotBefore, leaf.NotAfter)
	p.logger.Debug("certificate ready", zap.String("domain", name),
		zap.Time("not_after", leaf.NotAfter), zap.Duration("duration", time.Since(start)))
}

// handshakeFailed delays name's next background handshake, from one
// renewal check interval up to an hour, and warns at its first failure.
func (p *preIssuer) handshakeFailed(name string, err error) {
	p.mu.Lock()
	r, again := p.retry[name]
	r.delay = min(max(2*r.delay, time.Duration(p.app.RenewalCheckInterval)), time.Hour)
	r.next = time.Now().Add(r.delay)
	p.retry[name] = r
	p.mu.Unlock()
	log := p.logger.Warn
	if again {
		log = p.logger.Debug
	}
	log("background handshake failed", zap.String("domain", name), zap.Error(err), zap.Time("next_try", r.next))
}

// handshake runs both ends of a TLS handshake for name over an
// in-memory pipe, and returns the certificate the server end chose.
func (p *preIssuer) handshake(ctx context.Context, name string) (*x509.Certificate, error) {
	clientEnd, serverEnd := net.Pipe()
	defer clientEnd.Close()
	defer serverEnd.Close()
	server := tls.Server(serverEnd, p.server)
	serverDone := make(chan error, 1)
	go func() { serverDone <- server.HandshakeContext(ctx) }()
	// the certificate is this server's own, checked against the name by
	// the caller; its chain is the issuer's business
	client := tls.Client(clientEnd, &tls.Config{ServerName: name, InsecureSkipVerify: true}) //nolint:gosec
	err := client.HandshakeContext(ctx)
	var leaf *x509.Certificate
	if err == nil {
		leaf = client.ConnectionState().PeerCertificates[0]
	}
	// the server end may still be writing (a ticket, an alert) or, when
	// ctx ended, waiting on certmagic: closing both ends lets it return,
	// and it is not waited for once ctx ends
	clientEnd.Close()
	serverEnd.Close()
	select {
	case <-serverDone:
	case <-ctx.Done():
	}
	return leaf, err
}

// httpsPolicies returns the TLS connection policies of this config's
// first HTTPS server.
func httpsPolicies(ctx caddy.Context) (caddytls.ConnectionPolicies, error) {
	mod, err := ctx.AppIfConfigured("http")
	if err != nil {
		return nil, fmt.Errorf("no http app: %v", err)
	}
	app := mod.(*caddyhttp.App)
	names := make([]string, 0, len(app.Servers))
	for name := range app.Servers {
		names = append(names, name)
	}
	slices.Sort(names) // the same server at every run
	for _, name := range names {
		if policies := app.Servers[name].TLSConnPolicies; len(policies) > 0 {
			return policies, nil
		}
	}
	return nil, errors.New("no HTTPS server in the http app")
}
