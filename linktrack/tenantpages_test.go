package linktrack

import (
	"fmt"
	"testing"
)

// pagesApp is an App serving a registry of n tenants of sendgrid, plus
// those of sparkpost given, with the certificate states pages read.
func pagesApp(t *testing.T, n int, sparkpost ...string) *App {
	t.Helper()
	tenants := make([]Tenant, 0, n+len(sparkpost))
	for i := range n {
		tenants = append(tenants, Tenant{Domain: fmt.Sprintf("t%07d.example.com", i), Provider: "sendgrid"})
	}
	for _, d := range sparkpost {
		tenants = append(tenants, Tenant{Domain: d, Provider: "sparkpost", Region: "us"})
	}
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: tenants}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	c := testCertStates(t, s)
	c.app.certs, c.app.statusCounts = c, new(statusCounts)
	return c.app
}

// TestPageScanIsBounded: a filter that matches few tenants examines at
// most MaxPageScan tenants a page, and returns a cursor to go on from;
// following the cursors finds every match, once, in order.
func TestPageScanIsBounded(t *testing.T) {
	n := 2*MaxPageScan + 10
	matches := []string{"t0000005.example.net", "t0090000.example.net", "zz.example.com"}
	a := pagesApp(t, n, matches...)

	var found []string
	pages, cursor := 0, ""
	for {
		p := a.page(pageQuery{limit: 2, cursor: cursor, provider: "sparkpost"})
		pages++
		if p.Total != n+len(matches) {
			t.Fatalf("page %d: total %d, want %d", pages, p.Total, n+len(matches))
		}
		for _, lt := range p.Tenants {
			found = append(found, lt.Domain)
		}
		if p.NextCursor == "" {
			break
		}
		if p.NextCursor <= cursor {
			t.Fatalf("page %d: cursor %q does not move past %q", pages, p.NextCursor, cursor)
		}
		cursor = p.NextCursor
		if pages > 10 {
			t.Fatal("more than 10 pages")
		}
	}
	if fmt.Sprint(found) != fmt.Sprint(matches) {
		t.Errorf("found %v, want %v", found, matches)
	}
	// 2*MaxPageScan+13 tenants, at most MaxPageScan examined a page: 3 pages
	if pages != 3 {
		t.Errorf("%d pages, want 3", pages)
	}

	// a full page of an unfiltered listing is not cut short
	p := a.page(pageQuery{limit: MaxPageLimit})
	if len(p.Tenants) != MaxPageLimit || p.NextCursor != p.Tenants[MaxPageLimit-1].Domain {
		t.Errorf("unfiltered page: %d tenants, cursor %q; want %d, cursor at the last", len(p.Tenants), p.NextCursor, MaxPageLimit)
	}
}
