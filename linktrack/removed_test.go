package linktrack

import (
	"context"
	"errors"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestRemovedTenantsRefused(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "*.covered.example.com", Provider: "sendgrid"},
	}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	r := &removedTenants{names: make(map[string]struct{}), current: func() *snapshot { return s }}
	handshake := func(serverName string) error {
		// certmagic's event data holds a struct of an unexported type
		// with the client hello's fields
		hello := struct {
			CipherSuites []uint16
			ServerName   string
		}{ServerName: serverName}
		e, err := caddy.NewEvent(caddy.Context{Context: context.Background()}, "tls_get_certificate", map[string]any{"client_hello": hello})
		if err != nil {
			t.Fatal(err)
		}
		return r.Handle(context.Background(), e)
	}

	if err := handshake("gone.example.com"); err != nil {
		t.Fatalf("refused with nothing removed: %v", err)
	}
	r.removed("gone.example.com")
	r.removed("*.wild.example.com")
	r.removed("a.covered.example.com") // an exact tenant removed; its wildcard remains
	for _, name := range []string{"gone.example.com", "GONE.example.com.", "a.wild.example.com"} {
		if err := handshake(name); !errors.Is(err, caddy.ErrEventAborted) {
			t.Errorf("handshake for removed %q: %v, want it aborted", name, err)
		}
	}
	for _, name := range []string{"kept.example.com", "a.b.wild.example.com", "", "203.0.113.1", "a.covered.example.com"} {
		if err := handshake(name); err != nil {
			t.Errorf("handshake for %q: %v, want it let through", name, err)
		}
	}
	r.added("gone.example.com")
	if err := handshake("gone.example.com"); err != nil {
		t.Errorf("a tenant added back is still refused: %v", err)
	}
}
