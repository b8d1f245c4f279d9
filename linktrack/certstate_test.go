package linktrack

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

func TestIssuanceCooldown(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "sendgrid"}}}}, fakeRoutes())
	if err != nil {
		t.Fatal(err)
	}
	app := &App{registry: new(atomic.Pointer[snapshot])}
	app.registry.Store(s)
	c := &certStates{app: app, failures: make(map[string]certFailure), notAfter: make(map[string]time.Time), cooldown: time.Minute}
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
