package linktrack

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
)

// certificateState is a tenant's certificate as the admin API shows it.
type certificateState struct {
	// none, valid, expired; pending after a failed issuance, with the
	// error and the time of the next try; per_name for a wildcard
	// tenant, whose names each get their own certificate.
	Status   string     `json:"status"`
	NotAfter *time.Time `json:"not_after,omitempty"`
	Error    string     `json:"error,omitempty"`
	FailedAt *time.Time `json:"failed_at,omitempty"`
	NextTry  *time.Time `json:"next_try,omitempty"`
}

// certStates remembers the last failure to obtain a certificate for each
// tenant, from the certificate events Caddy emits.
type certStates struct {
	app      *App
	mu       sync.Mutex
	failures map[string]certFailure
	notAfter map[string]time.Time // tenants' certificates seen, by name
	cooldown time.Duration        // after a first failure; it doubles up to maxCooldown
}

// maxCooldown caps the delay between orders for a name that keeps failing.
const maxCooldown = time.Hour

// certFailure is a name's last failed issuance, and when the next order
// may be placed.
type certFailure struct {
	err   string
	at    time.Time
	delay time.Duration
	next  time.Time
}

// watchCertificates subscribes to Caddy's certificate events. Event
// handlers run in the emitter's goroutine, so they only record.
func watchCertificates(ctx caddy.Context, a *App) (*certStates, error) {
	c := &certStates{app: a, failures: make(map[string]certFailure), notAfter: make(map[string]time.Time), cooldown: time.Duration(a.IssuanceCooldown)}
	mod, err := ctx.App("events")
	if err != nil {
		return nil, fmt.Errorf("loading events app: %v", err)
	}
	events := mod.(*caddyevents.App)
	for _, name := range []string{"cert_failed", "cert_obtained", "cert_obtaining"} {
		if err := events.On(name, c); err != nil {
			return nil, fmt.Errorf("subscribing to %s: %v", name, err)
		}
	}
	return c, nil
}

// Handle records a failure, or clears it when a certificate arrives.
// Only tenants are recorded, so the map stays bounded.
func (c *certStates) Handle(_ context.Context, e caddy.Event) error {
	name, _ := e.Data["identifier"].(string)
	if name == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e.Name() {
	case "cert_obtaining":
		// certmagic retries a failed order for minutes, and asks the
		// permission module only before the first try: end the retries
		// of a name in cooldown here
		if f, ok := c.failures[name]; ok && time.Now().Before(f.next) {
			return fmt.Errorf("%w: %w", caddy.ErrEventAborted, certmagic.ErrNoRetry{
				Err: fmt.Errorf("'%s' is in cooldown after a failed issuance until %s", name, f.next.Format(time.RFC3339)),
			})
		}
	case "cert_obtained":
		delete(c.failures, name)
		if path, ok := e.Data["certificate_path"].(string); ok {
			if cert, err := c.loadCert(context.Background(), path); err == nil {
				c.notAfter[name] = cert.NotAfter
			}
		}
	case "cert_failed":
		if s := c.app.snapshot(); s != nil {
			if _, ok := s.lookup(name); ok {
				delay := c.cooldown
				if prior, ok := c.failures[name]; ok {
					delay = min(2*prior.delay, maxCooldown)
				}
				c.failures[name] = certFailure{err: fmt.Sprint(e.Data["error"]), at: e.Timestamp(), delay: delay, next: e.Timestamp().Add(delay)}
			}
		}
	}
	return nil
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
	issuers, err := c.app.storage.List(ctx, "certificates", false)
	if err != nil {
		return
	}
	for _, issuer := range issuers {
		sites, err := c.app.storage.List(ctx, issuer, false)
		if err != nil {
			continue
		}
		for _, site := range sites {
			select {
			case <-stop:
				return
			default:
			}
			name := path.Base(site)
			if _, ok := c.app.snapshot().lookup(name); !ok {
				continue
			}
			cert, err := c.loadCert(ctx, certmagic.StorageKeys.SiteCert(path.Base(issuer), name))
			if err != nil {
				continue
			}
			c.mu.Lock()
			if cert.NotAfter.After(c.notAfter[name]) {
				c.notAfter[name] = cert.NotAfter
			}
			c.mu.Unlock()
		}
	}
}

// inCooldown reports whether no order may be placed for name yet, and
// until when.
func (c *certStates) inCooldown(name string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.failures[name]
	return f.next, ok && time.Now().Before(f.next)
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
	for name, notAfter := range c.notAfter {
		if _, ok := s.lookup(name); !ok {
			continue // a removed tenant's certificate is not renewed on purpose
		}
		if soonest.IsZero() || notAfter.Before(soonest) {
			soonest = notAfter
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
	if failed {
		return certificateState{Status: "pending", Error: failure.err, FailedAt: &failure.at, NextTry: &failure.next}
	}
	return certificateState{Status: "none"}
}

// Interface guards
var (
	_ caddyevents.Handler  = (*certStates)(nil)
	_ prometheus.Collector = (*certStates)(nil)
)
