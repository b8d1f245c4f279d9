package linktrack

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"strings"
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
	if version != 3 || !reflect.DeepEqual(tenants, want) {
		t.Errorf("loaded version %d, %+v; want 3, %+v", version, tenants, want)
	}
}

// TestStartupRefusesConflictingStoredTenants: a stored tenant whose
// domain an inline tenant holds, or that is invalid, fails start-up
// with an error naming it and its place in storage, even when it is
// decoded in a later batch than the first.
func TestStartupRefusesConflictingStoredTenants(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		bad     tenantstore.Record
		inline  []Tenant
		wantErr string
	}{
		{
			name:    "registered twice",
			bad:     tenantstore.Record{Domain: "z.test", Value: []byte(`{"domain":"z.test","provider":"sendgrid"}`)},
			inline:  []Tenant{{Domain: "z.test", Provider: "sendgrid"}},
			wantErr: "domain 'z.test' is registered twice: in config and in storage, entry 10001",
		},
		{
			name:    "invalid",
			bad:     tenantstore.Record{Domain: "z.test", Value: []byte(`{"domain":"z.test","provider":"nosuchprovider"}`)},
			wantErr: "tenants in storage: storage, entry 10001: domain 'z.test': provider:",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &App{Tenants: tc.inline, storage: &certmagic.FileStorage{Path: t.TempDir()}, routes: newRouteTable(func(origin *url.URL, _, _ string) (*originProxy, error) {
				return &originProxy{url: origin}, nil
			})}
			a.store = newTenantStore(a)
			c := tenantstore.Change{Put: []tenantstore.Record{tc.bad}}
			for i := range 10000 {
				r, err := tenantRecord(Tenant{Domain: fmt.Sprintf("t%05d.test", i), Provider: "sendgrid"})
				if err != nil {
					t.Fatal(err)
				}
				c.Put = append(c.Put, r)
			}
			if _, err := a.store.Apply(ctx, c); err != nil {
				t.Fatal(err)
			}
			_, _, err := a.buildWithStored(ctx, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("start-up: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
