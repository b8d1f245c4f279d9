package linktrack

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// testRoutes is the app's route resolver with the given named origins.
// Its origin proxies only know their origin's URL: they are never used
// to forward.
func testRoutes(origins ...string) routeResolver {
	routes := newRouteTable(func(origin *url.URL, _, _ string) (*originProxy, error) {
		return &originProxy{url: origin}, nil
	})
	for _, name := range origins {
		routes.addOrigin(name, &originProxy{})
	}
	return routes.resolve
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
	}, testRoutes("esp"))
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
	if len(list) != 4 || list[0].Domain != "*.clicks.example.com" || list[0].Source != "config" || list[2].Source != "tenants_file t.json" || list[2].Region != "global" {
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
			wantErr: "config, entry 1: domain 'a.example.com': origin: no origin named 'nope' in the linktrack app's origins",
		},
		{
			name:    "origin with a region",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Origin: "esp", Region: "eu"}}}},
			wantErr: "config, entry 1: domain 'a.example.com': region: origin 'esp' takes no region",
		},
		{
			name:    "provider and origin",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "sendgrid", Origin: "esp"}}}},
			wantErr: "config, entry 1: domain 'a.example.com': provider and origin are mutually exclusive; set one",
		},
		{
			name:    "neither provider nor origin",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com"}}}},
			wantErr: "config, entry 1: domain 'a.example.com': provider or origin is required",
		},
		{
			name:    "region required",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "customerio"}}}},
			wantErr: "config, entry 1: domain 'a.example.com': provider: ",
		},
		{
			name:    "missing app-link file",
			sources: []tenantSource{{name: "config", tenants: []Tenant{{Domain: "a.example.com", Provider: "sendgrid", AppLinks: &AppLinks{AssetLinks: "/nonexistent/assetlinks.json"}}}}},
			wantErr: "app_links.assetlinks: reading file",
		},
	} {
		_, err := buildSnapshot(tc.sources, testRoutes("esp"))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestRouteTable checks that tenants share routes: one per provider and
// canonical region, whose proxy is made once, and one per named origin.
func TestRouteTable(t *testing.T) {
	var made []string
	routes := newRouteTable(func(origin *url.URL, provider, region string) (*originProxy, error) {
		made = append(made, provider+" "+region+" "+origin.String())
		return &originProxy{url: origin}, nil
	})
	esp := &originProxy{}
	routes.addOrigin("esp", esp)

	bare, err := routes.resolve(Tenant{Provider: "sendgrid"})
	if err != nil {
		t.Fatal(err)
	}
	explicit, err := routes.resolve(Tenant{Provider: "sendgrid", Region: "global"})
	if err != nil {
		t.Fatal(err)
	}
	if bare != explicit || bare.region != "global" || bare.provider != "sendgrid" {
		t.Errorf("sendgrid without a region: route %+v, with its default region: route %+v; want one route, region global", bare, explicit)
	}
	eu, err := routes.resolve(Tenant{Provider: "sendgrid", Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	if eu == bare {
		t.Error("sendgrid eu shares the global route")
	}
	if want := []string{"sendgrid global https://sendgrid.net", "sendgrid eu https://eu.sendgrid.net"}; !slices.Equal(made, want) {
		t.Errorf("proxies made: %q, want %q", made, want)
	}
	named, err := routes.resolve(Tenant{Origin: "esp"})
	if err != nil {
		t.Fatal(err)
	}
	if named.proxy != esp || named.origin != "esp" || named.provider != "" {
		t.Errorf("named origin esp: route %+v, want the origin's own proxy", named)
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
	s, err := buildSnapshot([]tenantSource{{name: "bench", tenants: tenants}}, testRoutes())
	if err != nil {
		b.Fatal(err)
	}
	hosts := []string{"click4242.brand332.example.com", "click99999.brand344.example.com", "nope.example.com"}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.lookup(hosts[i%len(hosts)])
	}
}

// TestCheckChangesAgreesWithWithChanges: the check made before a change
// is stored fails exactly when applying the change would, with the same
// error, and changes nothing.
func TestCheckChangesAgreesWithWithChanges(t *testing.T) {
	resolve := testRoutes("esp")
	s, err := buildSnapshot([]tenantSource{
		{name: "config", tenants: []Tenant{{Domain: "click.config.test", Origin: "esp"}, {Domain: "*.wild.test", Origin: "esp"}}},
		{name: storageSource, tenants: []Tenant{{Domain: "stored.test", Origin: "esp"}}},
	}, resolve)
	if err != nil {
		t.Fatal(err)
	}
	valid := Tenant{Domain: "new.test", Origin: "esp"}
	for _, tc := range []struct {
		name     string
		source   string
		put      []Tenant
		remove   []string
		conflict bool
		fails    bool
	}{
		{name: "valid put and remove", source: storageSource, put: []Tenant{valid, {Domain: "stored.test", Provider: "sendgrid"}}, remove: []string{"stored.test", "unknown.test"}},
		{name: "bad region", source: storageSource, put: []Tenant{{Domain: "a.test", Provider: "customerio", Region: "ap"}}, fails: true},
		{name: "bad second entry", source: storageSource, put: []Tenant{valid, {Domain: "b.test", Origin: "nowhere"}}, fails: true},
		{name: "bad domain", source: storageSource, put: []Tenant{{Domain: "a..test", Origin: "esp"}}, fails: true},
		{name: "put a config tenant", source: storageSource, put: []Tenant{valid, {Domain: "Click.Config.test", Origin: "esp"}}, conflict: true, fails: true},
		{name: "remove a config tenant", source: storageSource, remove: []string{"click.config.test"}, conflict: true, fails: true},
		{name: "remove a config wildcard", source: storageSource, remove: []string{"*.wild.test"}, conflict: true, fails: true},
		{name: "put below a config wildcard", source: storageSource, put: []Tenant{{Domain: "a.wild.test", Origin: "esp"}}},
		{name: "unknown source", source: "nowhere", put: []Tenant{valid}, fails: true},
	} {
		checked := s.checkChanges(tc.source, tc.put, tc.remove, resolve)
		_, applied := s.withChanges(tc.source, tc.put, tc.remove, resolve, nil)
		if (checked != nil) != tc.fails || fmt.Sprint(checked) != fmt.Sprint(applied) {
			t.Errorf("%s: checkChanges: %v; withChanges: %v; want failure %t", tc.name, checked, applied, tc.fails)
		}
		if errors.Is(checked, errConflict) != tc.conflict {
			t.Errorf("%s: %v, want a conflict %t", tc.name, checked, tc.conflict)
		}
	}
	if s.len() != 3 {
		t.Errorf("the registry checked changed: %d tenants", s.len())
	}
}

// TestWithSourceEditsWhatChanged: reloading a source replaces its
// entries (added, changed, removed) and keeps the other sources'; an
// unchanged entry leaves nothing in the overlay, so the new registry
// shares the base and differs by the change only.
func TestWithSourceEditsWhatChanged(t *testing.T) {
	var file []Tenant
	for i := range 1000 {
		file = append(file, Tenant{Domain: fmt.Sprintf("f%04d.example.com", i), Provider: "sendgrid"})
	}
	file = append(file, Tenant{Domain: "*.w.example.com", Provider: "sendgrid"})
	resolve := testRoutes("esp")
	s, err := buildSnapshot([]tenantSource{
		{name: "config", tenants: []Tenant{{Domain: "c.example.com", Origin: "esp"}}},
		{name: "tenants_file t.json", tenants: file},
	}, resolve)
	if err != nil {
		t.Fatal(err)
	}
	reloaded := append([]Tenant{}, file[2:]...)                                   // f0000 and f0001 removed
	reloaded[0] = Tenant{Domain: "f0002.example.com", Origin: "esp"}              // changed
	reloaded = append(reloaded, Tenant{Domain: "new.example.com", Origin: "esp"}) // added
	next, err := s.withSource("tenants_file t.json", reloaded, resolve)
	if err != nil {
		t.Fatal(err)
	}
	if next.exact.base != s.exact.base || next.exact.changes() != 4 || next.wildcards.changes() != 0 {
		t.Errorf("same base %v, %d exact and %d wildcard changes; want the same base and 4 exact changes",
			next.exact.base == s.exact.base, next.exact.changes(), next.wildcards.changes())
	}
	if next.len() != s.len()-1 {
		t.Errorf("%d tenants, want %d", next.len(), s.len()-1)
	}
	for domain, want := range map[string]string{
		"c.example.com": "origin esp", "f0000.example.com": "", "f0001.example.com": "",
		"f0002.example.com": "origin esp", "f0003.example.com": "sendgrid", "new.example.com": "origin esp",
		"a.w.example.com": "sendgrid",
	} {
		got := ""
		if e, ok := next.lookup(domain); ok {
			got = e.route.provider
			if e.route.origin != "" {
				got = "origin " + e.route.origin
			}
		}
		if got != want {
			t.Errorf("%s: %q, want %q", domain, got, want)
		}
	}

	for _, tc := range []struct {
		tenants []Tenant
		wantErr string
	}{
		{[]Tenant{{Domain: "c.example.com", Provider: "sendgrid"}}, "domain 'c.example.com' is registered twice: in config and in tenants_file t.json, entry 1"},
		{[]Tenant{{Domain: "x.example.com", Provider: "sendgrid"}, {Domain: "X.example.com", Provider: "sendgrid"}}, "domain 'x.example.com' is registered twice: in tenants_file t.json, entry 1 and in tenants_file t.json, entry 2"},
	} {
		if _, err := s.withSource("tenants_file t.json", tc.tenants, resolve); err == nil || err.Error() != tc.wantErr {
			t.Errorf("reload: %v, want %q", err, tc.wantErr)
		}
	}
}
