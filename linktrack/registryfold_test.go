package linktrack

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
)

// TestRebaseKeepsChangesMadeDuringAFold: a fold of one registry is
// swapped in under the registry changed since, with those changes kept
// in the new overlay and nothing else; a fold of a registry the one in
// use does not derive from is dropped.
func TestRebaseKeepsChangesMadeDuringAFold(t *testing.T) {
	var tenants []Tenant
	for i := range 1000 {
		tenants = append(tenants, Tenant{Domain: fmt.Sprintf("t%04d.example.com", i), Provider: "sendgrid"})
	}
	resolve := testRoutes("esp")
	s0, err := buildSnapshot([]tenantSource{{name: "config"}, {name: storageSource, tenants: tenants}}, resolve)
	if err != nil {
		t.Fatal(err)
	}
	var put []Tenant
	for i := range 300 {
		put = append(put, Tenant{Domain: fmt.Sprintf("new%04d.example.com", i), Origin: "esp"})
	}
	s1, err := s0.withChanges(storageSource, put, []string{"t0001.example.com"}, resolve, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s1.exact.foldDue() {
		t.Fatalf("301 changes over a base of 1000 are not due for a fold")
	}
	// changes made while s1 is folded
	s2, err := s1.withChanges(storageSource, []Tenant{{Domain: "later.example.com", Origin: "esp"}},
		[]string{"new0001.example.com", "t0002.example.com"}, resolve, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &App{registry: new(atomic.Pointer[snapshot]), reloadMu: new(sync.Mutex), logger: zap.NewNop()}
	a.registry.Store(s2)

	next := a.rebase(s1, s1.exact.folded(), s1.wildcards.folded())
	if next == nil || a.snapshot() != next {
		t.Fatal("the fold was not swapped in")
	}
	if next.exact.base == s2.exact.base || next.exact.changes() != 3 {
		t.Errorf("after the fold: same base %v, %d changes in the overlay; want a new base and the 3 changes made during the fold",
			next.exact.base == s2.exact.base, next.exact.changes())
	}
	if next.len() != s2.len() {
		t.Errorf("%d tenants after the fold, want %d", next.len(), s2.len())
	}
	s2.each(func(domain string, e entry) bool {
		if got, ok := next.exact.get(domain); !ok || got != e {
			t.Errorf("%s after the fold: %v %v, want %v", domain, got, ok, e)
		}
		return true
	})
	for _, d := range []string{"t0001.example.com", "t0002.example.com", "new0001.example.com"} {
		if _, ok := next.exact.get(d); ok {
			t.Errorf("%s, removed, is back after the fold", d)
		}
	}
	changed := 0
	next.exact.eachChanged(s2.exact, func(string, entry) bool { changed++; return true })
	s2.exact.eachChanged(next.exact, func(string, entry) bool { changed++; return true })
	if changed != 0 {
		t.Errorf("the fold changed %d tenants", changed)
	}

	// a fold of a registry the one in use does not derive from
	if again := a.rebase(s1, s1.exact.folded(), s1.wildcards.folded()); again != nil || a.snapshot() != next {
		t.Error("a stale fold was swapped in")
	}
}
