package linktrack

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/prometheus/client_golang/prometheus"
)

// ownershipApp returns an app with ownership_txt on (or off) whose
// registry holds tenants of the config and of storage.
func ownershipApp(t *testing.T, on bool, config, stored []Tenant) *App {
	t.Helper()
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: config}, {name: storageSource, tenants: stored}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	a := &App{registry: new(atomic.Pointer[snapshot])}
	a.registry.Store(s)
	if on {
		a.OwnershipTXT = true
		a.ownership = &ownershipGate{app: a, checks: newCheckQueue[ownershipState](0), verified: make(map[string]string)}
	}
	return a
}

const testToken = "0123456789abcdef0123456789abcdef"

func TestOwnershipRefusals(t *testing.T) {
	no := false
	a := ownershipApp(t, true, []Tenant{
		{Domain: "pending.brand.test", Provider: "sendgrid", OwnershipToken: testToken},
		{Domain: "untokened.brand.test", Provider: "sendgrid"},
		{Domain: "verified.brand.test", Provider: "sendgrid", OwnershipVerified: true},
		{Domain: "*.wild.brand.test", Provider: "sendgrid", OwnershipToken: testToken},
	}, []Tenant{
		{Domain: "old.brand.test", Provider: "sendgrid"},
		{Domain: "new.brand.test", Provider: "sendgrid", OwnershipToken: testToken},
		{Domain: "off.brand.test", Provider: "sendgrid", OwnershipVerified: true, Enabled: &no},
	})
	p := &Permission{app: a, decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "d"}, []string{"decision"})}
	access := &tenantAccess{app: a}
	handshake := func(serverName string, remote net.Addr) error {
		hello := struct {
			ServerName string
			RemoteAddr net.Addr
		}{ServerName: serverName, RemoteAddr: remote}
		e, err := caddy.NewEvent(caddy.Context{Context: context.Background()}, "tls_get_certificate", map[string]any{"client_hello": hello})
		if err != nil {
			t.Fatal(err)
		}
		return access.Handle(context.Background(), e)
	}
	network := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 50000}
	pipe, _ := net.Pipe()
	defer pipe.Close()

	for _, c := range []struct {
		name      string
		refusal   string
		permitted bool
	}{
		{"pending.brand.test", refusedPendingOwnership, false},
		{"untokened.brand.test", refusedPendingOwnership, false}, // the config's words are needed
		{"a.wild.brand.test", refusedPendingOwnership, false},
		{"verified.brand.test", "", true},
		{"old.brand.test", "", true}, // stored before ownership_txt
		{"new.brand.test", refusedPendingOwnership, false},
		{"off.brand.test", refusedDisabled, true}, // renewed, not served
	} {
		key, e, _ := a.snapshot().match(c.name)
		if got := a.refusal(key, e); got != c.refusal {
			t.Errorf("%s: refusal %q, want %q", c.name, got, c.refusal)
		}
		err := p.CertificateAllowed(context.Background(), c.name)
		if c.permitted && err != nil {
			t.Errorf("%s: certificate denied: %v", c.name, err)
		}
		if !c.permitted && (!errors.Is(err, caddytls.ErrPermissionDenied) || !strings.Contains(err.Error(), "pending ownership")) {
			t.Errorf("%s: %v, want a denial for pending ownership", c.name, err)
		}
		err = handshake(c.name, network)
		if (c.refusal == "") != (err == nil) || (err != nil && !errors.Is(err, caddy.ErrEventAborted)) {
			t.Errorf("%s: handshake from the network: %v, want refused: %v", c.name, err, c.refusal != "")
		}
		// pre-issuance's in-process handshake renews a disabled tenant
		err = handshake(c.name, pipe.RemoteAddr())
		if (c.refusal == refusedPendingOwnership) != (err != nil) {
			t.Errorf("%s: in-process handshake: %v", c.name, err)
		}
	}

	a.ownership.verified["new.brand.test"] = testToken
	if err := p.CertificateAllowed(context.Background(), "new.brand.test"); err != nil {
		t.Errorf("verified on this node, still denied: %v", err)
	}
	// removed and added back with another token: pending again
	prev := a.snapshot()
	removed, err := prev.withChanges(storageSource, nil, []string{"new.brand.test"}, testRoutes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.registry.Store(removed)
	a.ownership.changed(prev, removed)
	back, err := removed.withChanges(storageSource, []Tenant{{Domain: "new.brand.test", Provider: "sendgrid", OwnershipToken: strings.Repeat("b", 32)}}, nil, testRoutes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.registry.Store(back)
	a.ownership.changed(removed, back)
	if err := p.CertificateAllowed(context.Background(), "new.brand.test"); err == nil {
		t.Errorf("removed and added back with a new token, allowed without its TXT record")
	}
	if !a.ownership.checks.queued["new.brand.test"] {
		t.Errorf("a tenant added pending was not queued for a check at once")
	}

	off := ownershipApp(t, false, []Tenant{{Domain: "pending.brand.test", Provider: "sendgrid", OwnershipToken: testToken}}, nil)
	key, e, _ := off.snapshot().match("pending.brand.test")
	if got := off.refusal(key, e); got != "" {
		t.Errorf("without ownership_txt a tenant with a token is %q", got)
	}
}

func TestWithOwnership(t *testing.T) {
	a := ownershipApp(t, true, []Tenant{{Domain: "config.brand.test", Provider: "sendgrid", OwnershipVerified: true}}, []Tenant{
		{Domain: "pending.brand.test", Provider: "sendgrid", OwnershipToken: testToken},
		{Domain: "verified.brand.test", Provider: "sendgrid", OwnershipToken: testToken, OwnershipVerified: true},
	})
	s := a.snapshot()
	put, err := a.withOwnership(s, []Tenant{
		{Domain: "NEW.brand.test", Provider: "sendgrid"},
		{Domain: "trusted.brand.test", Provider: "sendgrid", OwnershipVerified: true},
		{Domain: "pending.brand.test", Provider: "iterable"},
		{Domain: "verified.brand.test", Provider: "iterable"},
		{Domain: "echoed.brand.test", Provider: "sendgrid"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !validOwnershipToken(put[0].OwnershipToken) || len(put[0].OwnershipToken) != 32 || put[0].OwnershipVerified {
		t.Errorf("a new tenant: %+v, want a new token of 32 characters", put[0])
	}
	if put[1].OwnershipToken != "" || !put[1].OwnershipVerified {
		t.Errorf("a new tenant marked verified: %+v, want no token", put[1])
	}
	if put[2].OwnershipToken != testToken || put[2].OwnershipVerified {
		t.Errorf("a pending tenant replaced: %+v, want its token kept", put[2])
	}
	if put[3].OwnershipToken != testToken || !put[3].OwnershipVerified {
		t.Errorf("a verified tenant replaced: %+v, want it verified with its token", put[3])
	}
	again, _ := a.withOwnership(s, []Tenant{{Domain: "new.brand.test", Provider: "sendgrid"}})
	if again[0].OwnershipToken == put[0].OwnershipToken {
		t.Errorf("two new tenants got the same token %s", put[0].OwnershipToken)
	}

	// the token linktrack gave may be sent back, no other
	if _, err := a.withOwnership(s, []Tenant{{Domain: "pending.brand.test", Provider: "sendgrid", OwnershipToken: testToken}}); err != nil {
		t.Errorf("the tenant's own token sent back: %v", err)
	}
	for _, tenant := range []Tenant{
		{Domain: "pending.brand.test", Provider: "sendgrid", OwnershipToken: "another-token-0123456789"},
		{Domain: "fresh.brand.test", Provider: "sendgrid", OwnershipToken: testToken},
	} {
		if _, err := a.withOwnership(s, []Tenant{tenant}); err == nil || !strings.Contains(err.Error(), "ownership_token") {
			t.Errorf("%s with a token of its own: %v, want an error naming ownership_token", tenant.Domain, err)
		}
	}

	off := ownershipApp(t, false, nil, nil)
	if put, _ := off.withOwnership(off.snapshot(), []Tenant{{Domain: "new.brand.test", Provider: "sendgrid"}}); put[0].OwnershipToken != "" {
		t.Errorf("without ownership_txt a new tenant got token %s", put[0].OwnershipToken)
	}
}

func TestOwnershipRecord(t *testing.T) {
	for domain, want := range map[string]string{
		"link.brand.test":     "_linktrack-verify.link.brand.test",
		"*.clicks.brand.test": "_linktrack-verify.clicks.brand.test",
	} {
		if got := ownershipRecord(domain); got != want {
			t.Errorf("%s: %s, want %s", domain, got, want)
		}
	}
}

func TestOwnershipCheckSchedule(t *testing.T) {
	a := ownershipApp(t, true, nil, nil)
	g := a.ownership
	g.checks.first = time.Minute
	defer g.close()
	checked := time.Now()
	var delays []time.Duration
	for range 9 {
		st := g.record("link.brand.test", ownershipState{Status: "pending", CheckedAt: &checked}, true)
		delays = append(delays, st.NextCheck.Sub(checked))
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute,
		32 * time.Minute, time.Hour, time.Hour, time.Hour}
	if !slices.Equal(delays, want) {
		t.Errorf("delays between checks: %v, want %v", delays, want)
	}
}
