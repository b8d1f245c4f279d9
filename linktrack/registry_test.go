package linktrack

import (
	"fmt"
	"strings"
	"testing"
)

// fakeRoutes resolves providers through the catalog and named origins
// from a fixed set, without building any origin proxy.
func fakeRoutes(origins ...string) routeResolver {
	routes := make(map[string]*route)
	return func(t Tenant) (*route, error) {
		var key string
		switch {
		case t.Provider != "" && t.Origin != "":
			return nil, fmt.Errorf("provider and origin are mutually exclusive")
		case t.Origin != "":
			found := false
			for _, o := range origins {
				found = found || o == t.Origin
			}
			if !found {
				return nil, fmt.Errorf("origin: no origin named '%s'", t.Origin)
			}
			key = "origin " + t.Origin
		case t.Provider != "":
			_, region, err := LookupOrigin(t.Provider, t.Region)
			if err != nil {
				return nil, fmt.Errorf("provider: %v", err)
			}
			key = t.Provider + " " + region
		default:
			return nil, fmt.Errorf("provider or origin is required")
		}
		if r, ok := routes[key]; ok {
			return r, nil
		}
		r := &route{provider: t.Provider, region: t.Region, origin: t.Origin}
		routes[key] = r
		return r, nil
	}
}

func TestSnapshotLookup(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{
		{name: "config", tenants: []Tenant{
			{Domain: "Click.Brand-A.com", Provider: "customerio", Region: "eu"},
			{Domain: "*.clicks.example.com", Origin: "esp"},
		}},
		{name: "tenants_file t.json", tenants: []Tenant{
			{Domain: "klick.bücher.example", Provider: "sendgrid"},
			{Domain: "vip.clicks.example.com", Provider: "ses", Region: "eu-west-1"},
		}},
	}, fakeRoutes("esp"))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"click.brand-a.com":           "customerio",
		"klick.xn--bcher-kva.example": "sendgrid",
		"a.clicks.example.com":        "origin esp",
		"vip.clicks.example.com":      "ses", // exact beats wildcard
		"clicks.example.com":          "",    // a wildcard does not match its parent
		"b.a.clicks.example.com":      "",    // nor two labels down
		"unknown.example.com":         "",
		"brand-a.com":                 "",
		"":                            "",
		"click.brand-a.com.evil.test": "",
		"xclick.brand-a.com":          "",
	} {
		e, ok := s.lookup(host)
		got := ""
		if ok {
			got = e.route.provider
			if e.route.origin != "" {
				got = "origin " + e.route.origin
			}
		}
		if got != want {
			t.Errorf("lookup(%q) = %q, want %q", host, got, want)
		}
	}
	if s.len() != 4 {
		t.Errorf("len = %d, want 4", s.len())
	}
	list := s.tenants()
	if len(list) != 4 || list[0].Domain != "*.clicks.example.com" || list[0].Source != "config" || list[2].Source != "tenants_file t.json" {
		t.Errorf("tenants() = %+v", list)
	}
}

func TestBuildSnapshotErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sources []tenantSource
		wantErr string
	}{
		{
			name: "duplicate across sources names both",
			sources: []tenantSource{
				{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "sendgrid"}}},
				{name: "tenants_file t.json", tenants: []Tenant{{Domain: "x.example.com", Provider: "sendgrid"}, {Domain: "A.Example.com.", Provider: "sendgrid"}}},
			},
			wantErr: "domain 'a.example.com' is registered twice: in config, entry 1 and in tenants_file t.json, entry 2",
		},
		{
			name:    "IDNA duplicate",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "bücher.example", Provider: "sendgrid"}, {Domain: "xn--bcher-kva.example", Provider: "sendgrid"}}}},
			wantErr: "registered twice",
		},
		{
			name:    "IP address",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "192.0.2.1", Provider: "sendgrid"}}}},
			wantErr: "config, entry 1: domain: '192.0.2.1' is an IP address",
		},
		{
			name:    "unknown region names the field",
			sources: []tenantSource{{name: "tenants_file t.json", tenants: []Tenant{{Domain: "a.example.com", Provider: "customerio", Region: "ap"}}}},
			wantErr: "tenants_file t.json, entry 1: domain 'a.example.com': provider: unknown region 'ap'",
		},
		{
			name:    "unknown origin",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Origin: "nope"}}}},
			wantErr: "origin: no origin named 'nope'",
		},
		{
			name:    "missing app-link file",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "sendgrid", AppLinks: &AppLinks{AssetLinks: "/nonexistent/assetlinks.json"}}}}},
			wantErr: "app_links.assetlinks: reading file",
		},
	} {
		_, err := buildSnapshot(tc.sources, fakeRoutes("esp"))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

// BenchmarkSnapshotLookup measures a lookup in a registry of 100,000
// tenants: `go test ./linktrack -run - -bench SnapshotLookup`.
func BenchmarkSnapshotLookup(b *testing.B) {
	const n = 100_000
	tenants := make([]Tenant, n)
	for i := range tenants {
		tenants[i] = Tenant{Domain: fmt.Sprintf("click%d.brand%d.example.com", i, i%977), Provider: "sendgrid"}
	}
	s, err := buildSnapshot([]tenantSource{{name: "bench", tenants: tenants}}, fakeRoutes())
	if err != nil {
		b.Fatal(err)
	}
	hosts := []string{"click4242.brand332.example.com", "click99999.brand344.example.com", "nope.example.com"}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.lookup(hosts[i%len(hosts)])
	}
}
