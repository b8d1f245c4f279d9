package linktrack

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
	"github.com/caddyserver/certmagic"
)

// TestLoadStoredReadsSnapshotAndJournal: the tenants read at start-up
// are the snapshot's with the journal's changes applied, listed in
// domain order.
func TestLoadStoredReadsSnapshotAndJournal(t *testing.T) {
	ctx := context.Background()
	a := &App{storage: &certmagic.FileStorage{Path: t.TempDir()}, routes: newRouteTable(func(origin *url.URL, _, _ string) (*originProxy, error) {
		return &originProxy{url: origin}, nil
	})}
	a.routes.addOrigin("esp", &originProxy{})
	a.store = newTenantStore(a)
	change := func(put []Tenant, remove ...string) {
		t.Helper()
		c := tenantstore.Change{Remove: remove}
		for _, tn := range put {
			r, err := tenantRecord(tn)
			if err != nil {
				t.Fatal(err)
			}
			c.Put = append(c.Put, r)
		}
		if _, err := a.store.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	change([]Tenant{{Domain: "c.test", Origin: "esp"}, {Domain: "A.test", Provider: "sendgrid"}, {Domain: "b.test", Origin: "esp"}})
	if err := a.store.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	change([]Tenant{{Domain: "d.test", Provider: "customerio", Region: "eu"}}, "b.test")
	change([]Tenant{{Domain: "c.test", Provider: "sendgrid"}})

	s, version, err := a.buildWithStored(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tenants []Tenant
	for _, rt := range s.tenants() {
		tenants = append(tenants, rt.Tenant)
	}
	want := []Tenant{
		{Domain: "a.test", Provider: "sendgrid", Region: "global"},
		{Domain: "c.test", Provider: "sendgrid", Region: "global"},
		{Domain: "d.test", Provider: "customerio", Region: "eu"},
	}
	if version != 3 || !slices.Equal(tenants, want) {
		t.Errorf("loaded version %d, %+v; want 3, %+v", version, tenants, want)
	}
}
