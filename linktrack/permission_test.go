package linktrack

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPermission(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "click.brand-a.com", Provider: "sendgrid"},
		{Domain: "*.clicks.example.com", Provider: "sendgrid"},
	}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	app := &App{registry: new(atomic.Pointer[snapshot])}
	app.registry.Store(s)
	p := &Permission{app: app, decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "d"}, []string{"decision"})}

	for name, allowed := range map[string]bool{
		"click.brand-a.com":       true,
		"CLICK.brand-a.com.":      true,
		"a.clicks.example.com":    true,
		"clicks.example.com":      false,
		"b.a.clicks.example.com":  false,
		"www.google.com":          false,
		"":                        false,
		"127.0.0.1":               false,
		"::1":                     false,
		"[2001:db8::1]":           false,
		"click.brand-a.com.evil.": false,
	} {
		err := p.CertificateAllowed(context.Background(), name)
		if allowed && err != nil {
			t.Errorf("%q: denied: %v", name, err)
		}
		if !allowed && !errors.Is(err, caddytls.ErrPermissionDenied) {
			t.Errorf("%q: %v, want an error wrapping ErrPermissionDenied", name, err)
		}
	}
	if got := testutil.ToFloat64(p.decisions.WithLabelValues("allowed")); got != 3 {
		t.Errorf("allowed decisions counted: %v, want 3", got)
	}
	if got := testutil.ToFloat64(p.decisions.WithLabelValues("denied")); got != 8 {
		t.Errorf("denied decisions counted: %v, want 8", got)
	}
}
