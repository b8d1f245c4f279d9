package linktrack

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func TestIssuanceCooldown(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "sendgrid"}}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	c := testCertStates(t, s)
	event := func(name, identifier string) caddy.Event {
		e, err := caddy.NewEvent(caddy.Context{Context: context.Background()}, name, map[string]any{"identifier": identifier, "error": "dns not ready"})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	if err := c.Handle(context.Background(), event("cert_obtaining", "a.example.com")); err != nil {
		t.Fatalf("first order refused: %v", err)
	}
	_ = c.Handle(context.Background(), event("cert_failed", "a.example.com"))
	_ = c.Handle(context.Background(), event("cert_failed", "stranger.example.com"))
	if _, cooling := c.inCooldown("a.example.com"); !cooling {
		t.Fatal("no cooldown after a failure")
	}
	if len(c.failures) != 1 {
		t.Errorf("failures of unregistered names are recorded: %v", c.failures)
	}
	err = c.Handle(context.Background(), event("cert_obtaining", "a.example.com"))
	var noRetry certmagic.ErrNoRetry
	if !errors.Is(err, caddy.ErrEventAborted) || !errors.As(err, &noRetry) {
		t.Errorf("order during cooldown: %v; want an error that aborts the event and stops certmagic's retries", err)
	}
	_ = c.Handle(context.Background(), event("cert_failed", "a.example.com"))
	if d := c.failures["a.example.com"].delay; d != 2*time.Minute {
		t.Errorf("second failure: delay %v, want it doubled to 2m", d)
	}
	for range 10 {
		_ = c.Handle(context.Background(), event("cert_failed", "a.example.com"))
	}
	if d := c.failures["a.example.com"].delay; d != maxCooldown {
		t.Errorf("delay %v, want it capped at %v", d, maxCooldown)
	}
	_ = c.Handle(context.Background(), event("cert_obtained", "a.example.com"))
	if _, cooling := c.inCooldown("a.example.com"); cooling {
		t.Error("a certificate obtained did not end the cooldown")
	}
}

func testCertStates(t *testing.T, s *snapshot) *certStates {
	t.Helper()
	metrics, err := newAppMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	app := &App{registry: new(atomic.Pointer[snapshot]), logger: zap.NewNop(), metrics: metrics}
	app.registry.Store(s)
	return &certStates{app: app, logger: zap.NewNop(), failures: make(map[string]certFailure), issued: make(map[string]issuedCert), cooldown: time.Minute}
}

func TestCertificateDue(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "sendgrid"}}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	c := testCertStates(t, s)
	now := time.Now()
	if !c.due("a.example.com", now) {
		t.Error("a tenant with no certificate is not due")
	}

	// a 90-day certificate issued 10 days ago: renewal opens 30 days
	// before it expires
	c.record("a.example.com", now.Add(-10*24*time.Hour), now.Add(80*24*time.Hour), time.Time{})
	if c.due("a.example.com", now) {
		t.Error("a fresh certificate is due")
	}
	if !c.due("a.example.com", now.Add(51*24*time.Hour)) {
		t.Error("a certificate in its renewal window is not due")
	}
	c.forget("a.example.com")
	c.handedBack("a.example.com", now.Add(-70*24*time.Hour), now.Add(20*24*time.Hour))
	if c.due("a.example.com", now) {
		t.Error("a certificate just handed back by a handshake is due again at once")
	}
	if !c.due("a.example.com", now.Add(2*recheckAfter)) {
		t.Error("a certificate in its renewal window is not due after the recheck delay")
	}

	// a failed renewal cools down, but a valid certificate keeps loading
	c.failures["a.example.com"] = certFailure{next: now.Add(time.Hour), delay: time.Hour}
	if c.due("a.example.com", now.Add(time.Minute)) {
		t.Error("a name cooling down is due")
	}
	if _, refused := c.refuses("a.example.com"); refused {
		t.Error("a name with an unexpired certificate is refused during its renewal's cooldown")
	}
	c.forget("a.example.com")
	if _, refused := c.refuses("a.example.com"); !refused {
		t.Error("a name with no certificate is not refused during its cooldown, or removing it ended the cooldown")
	}
	// a failed renewal never refuses: a valid certificate may be in
	// storage, unknown to this node
	c.failures["a.example.com"] = certFailure{renewal: true, next: now.Add(time.Hour), delay: time.Hour}
	if _, refused := c.refuses("a.example.com"); refused {
		t.Error("a name whose renewal failed is refused")
	}
}

// storeTestCert writes a self-signed certificate for name, valid between
// notBefore and notAfter, where the issuer with issuerKey would store it.
func storeTestCert(t *testing.T, storage certmagic.Storage, issuerKey, name string, notBefore, notAfter time.Time) time.Time {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(notAfter.Unix()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	raw := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := storage.Store(context.Background(), certmagic.StorageKeys.SiteCert(issuerKey, name), raw); err != nil {
		t.Fatal(err)
	}
	return notAfter.UTC().Truncate(time.Second)
}

// TestCertificateState checks every state the admin API shows for a
// tenant's certificate, read from certmagic's storage layout.
func TestCertificateState(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "none.example.com", Provider: "sendgrid"},
		{Domain: "expired.example.com", Provider: "sendgrid"},
		{Domain: "renewed.example.com", Provider: "sendgrid"},
		{Domain: "failed.example.com", Provider: "sendgrid"},
		{Domain: "*.wild.example.com", Provider: "sendgrid"},
	}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	c := testCertStates(t, s)
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	c.app.storage = storage
	ctx := context.Background()
	now := time.Now()

	expiredAt := storeTestCert(t, storage, "acme-a", "expired.example.com", now.Add(-48*time.Hour), now.Add(-time.Hour))
	// an expired certificate from one issuer and a valid one from
	// another: the newest counts
	storeTestCert(t, storage, "acme-a", "renewed.example.com", now.Add(-48*time.Hour), now.Add(-time.Hour))
	renewedUntil := storeTestCert(t, storage, "acme-b", "renewed.example.com", now.Add(-time.Hour), now.Add(90*24*time.Hour))
	failedAt := now.Add(-time.Minute)
	c.failures["failed.example.com"] = certFailure{err: "dns not ready", at: failedAt, delay: 5 * time.Minute, next: failedAt.Add(5 * time.Minute)}

	check := func(domain, status string, notAfter time.Time) certificateState {
		t.Helper()
		got := c.state(ctx, domain)
		if got.Status != status {
			t.Errorf("%s: status %q, want %q (%+v)", domain, got.Status, status, got)
		}
		switch {
		case notAfter.IsZero() && got.NotAfter != nil:
			t.Errorf("%s: not_after %v, want none", domain, got.NotAfter)
		case !notAfter.IsZero() && (got.NotAfter == nil || !got.NotAfter.Equal(notAfter)):
			t.Errorf("%s: not_after %v, want %v", domain, got.NotAfter, notAfter)
		}
		return got
	}

	// pre-issuance off: no certificate and no failure is "none"
	check("none.example.com", "none", time.Time{})
	check("expired.example.com", "expired", expiredAt)
	check("renewed.example.com", "valid", renewedUntil)
	check("*.wild.example.com", "per_name", time.Time{})
	failed := check("failed.example.com", "pending", time.Time{})
	if failed.Error != "dns not ready" || failed.FailedAt == nil || !failed.FailedAt.Equal(failedAt) ||
		failed.NextTry == nil || !failed.NextTry.Equal(failedAt.Add(5*time.Minute)) {
		t.Errorf("failed.example.com: %+v, want the error, failed_at and next_try", failed)
	}

	// pre-issuance on: a tenant with nothing yet is pending, an expired
	// certificate is still expired
	c.app.pre = &preIssuer{}
	check("none.example.com", "pending", time.Time{})
	check("expired.example.com", "expired", expiredAt)
	// pre-issuance on, but no HTTPS server to obtain through: none
	c.app.pre.off.Store(true)
	check("none.example.com", "none", time.Time{})
}
