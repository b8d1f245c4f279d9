package linktrack

import (
	"context"
	"errors"
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
