package linktrack

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// stateRecorder records the tenant_state events it handles.
type stateRecorder struct {
	mu     sync.Mutex
	events []map[string]any
}

func (r *stateRecorder) Handle(_ context.Context, e caddy.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e.Data)
	return nil
}

// take returns the events recorded since the last take.
func (r *stateRecorder) take() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	events := r.events
	r.events = nil
	return events
}

// testStateEvents gives c's app a started events app whose tenant_state
// events the returned recorder gets.
func testStateEvents(t *testing.T, a *App) *stateRecorder {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	events := new(caddyevents.App)
	if err := events.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	r := new(stateRecorder)
	if err := events.On(tenantStateEvent, r); err != nil {
		t.Fatal(err)
	}
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	a.events, a.ctx = events, ctx
	return r
}

// TestTenantStateEvents: registry changes, certificates obtained,
// renewed and failed each emit a tenant_state event with the tenant's
// domain, state, error and route.
func TestTenantStateEvents(t *testing.T) {
	before, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "gone.example.com", Provider: "customerio", Region: "eu", Metadata: json.RawMessage(`{"plan":"pro"}`)},
	}}}, testRoutes("esp"))
	if err != nil {
		t.Fatal(err)
	}
	after, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "new.example.com", Origin: "esp"},
		{Domain: "*.wild.example.com", Provider: "sendgrid"},
	}}}, testRoutes("esp"))
	if err != nil {
		t.Fatal(err)
	}
	c := testCertStates(t, after)
	a := c.app
	a.certs = c
	rec := testStateEvents(t, a)

	a.reportChanges(before, after, "config")
	got := map[string]map[string]any{}
	for _, e := range rec.take() {
		got[e["domain"].(string)+" "+e["state"].(string)] = e
	}
	if len(got) != 3 {
		t.Fatalf("events %v, want new.example.com and *.wild.example.com added, gone.example.com removed", got)
	}
	if e := got["gone.example.com removed"]; e == nil || e["provider"] != "customerio" || e["region"] != "eu" || e["time"] == nil {
		t.Errorf("removed: %v, want the removed tenant's provider and region, and the time", e)
	} else if md, _ := e["metadata"].(json.RawMessage); string(md) != `{"plan":"pro"}` {
		t.Errorf("removed: metadata %s, want the removed tenant's", md)
	}
	if e := got["new.example.com added"]; e == nil || e["origin"] != "esp" || e["error"] != nil {
		t.Errorf("added: %v, want the tenant's origin and no error", e)
	}

	a.tenantStateChanged("a.wild.example.com", stateFailed, errors.New("dns not ready"))
	events := rec.take()
	if len(events) != 1 || events[0]["state"] != "failed" || events[0]["error"] != "dns not ready" || events[0]["provider"] != "sendgrid" {
		t.Errorf("failed: %v, want the error and the wildcard tenant's provider", events)
	}

	// certmagic's events, as certStates receives them
	event := func(name string, data map[string]any) caddy.Event {
		e, err := caddy.NewEvent(caddy.Context{Context: context.Background()}, name, data)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	_ = c.Handle(context.Background(), event("cert_failed", map[string]any{"identifier": "new.example.com", "error": "timeout during connect"}))
	_ = c.Handle(context.Background(), event("cert_failed", map[string]any{"identifier": "stranger.example.com", "error": "x"}))
	if events := rec.take(); len(events) != 1 || events[0]["state"] != "failed" || events[0]["error"] != "timeout during connect" {
		t.Errorf("cert_failed: %v, want one failed state for the tenant only", events)
	}
	c.recordObtained("new.example.com", "", "obtained")
	c.recordObtained("new.example.com", "", "renewed")
	if events := rec.take(); len(events) != 2 || events[0]["state"] != "valid" || events[1]["state"] != "renewed" {
		t.Errorf("obtained, then renewed: %v, want valid then renewed", events)
	}
}

// TestReportExpiring: a tenant's certificate within 7 days of its expiry
// is reported once; a short-lived one only halfway through its renewal
// window; a renewed one not at all.
func TestReportExpiring(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "soon.example.com", Provider: "sendgrid"},
		{Domain: "later.example.com", Provider: "sendgrid"},
		{Domain: "short.example.com", Provider: "sendgrid"},
		{Domain: "renewed.example.com", Provider: "sendgrid"},
	}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	c := testCertStates(t, s)
	rec := testStateEvents(t, c.app)
	now := time.Now()
	day := 24 * time.Hour
	c.record("soon.example.com", now.Add(-87*day), now.Add(3*day), time.Time{})
	c.record("later.example.com", now.Add(-70*day), now.Add(20*day), time.Time{})
	c.record("short.example.com", now.Add(-3*day), now.Add(3*day), time.Time{}) // 6 days: reported 1 day before
	c.record("renewed.example.com", now.Add(-88*day), now.Add(2*day), time.Time{})
	c.record("renewed.example.com", now.Add(-time.Hour), now.Add(90*day), time.Time{})
	c.record("removed.example.com", now.Add(-89*day), now.Add(day), time.Time{}) // not in the registry

	c.reportExpiringAt(now)
	c.reportExpiringAt(now.Add(time.Minute))
	events := rec.take()
	if len(events) != 1 || events[0]["domain"] != "soon.example.com" || events[0]["state"] != "expiring" {
		t.Fatalf("expiring: %v, want soon.example.com once", events)
	}
	if notAfter, _ := events[0]["not_after"].(time.Time); !notAfter.Equal(now.Add(3 * day)) {
		t.Errorf("not_after %v, want the certificate's", events[0]["not_after"])
	}

	c.reportExpiringAt(now.Add(2*day + time.Hour))
	if events := rec.take(); len(events) != 1 || events[0]["domain"] != "short.example.com" {
		t.Errorf("a day before the short-lived certificate expires: %v, want short.example.com", events)
	}

	// its renewal failed until a new certificate came, itself expiring
	c.record("soon.example.com", now.Add(-85*day), now.Add(5*day), time.Time{})
	c.reportExpiringAt(now.Add(time.Hour))
	if events := rec.take(); len(events) != 1 || events[0]["domain"] != "soon.example.com" {
		t.Errorf("a new certificate, expiring too: %v, want it reported", events)
	}
}
