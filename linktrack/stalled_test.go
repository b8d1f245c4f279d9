package linktrack

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestDNSGateGivesUp: a tenant awaiting DNS is checked last at
// give_up_after since its first check, not at its doubled delay, then
// stalls: no next check, never admitted nor queued again, reported once;
// revived, it is checked as a new tenant.
func TestDNSGateGivesUp(t *testing.T) {
	targets, _ := parseDNSTargets([]string{"edge.platform.test"})
	g := newDNSGate(targets, dnsResolver{}, 10*time.Minute, zap.NewNop(), func(string) {})
	defer g.close()
	g.stalls = newStallTracker(25 * time.Minute)
	var stalled []string
	g.stalled = func(name string, st stalledState) { stalled = append(stalled, name+": "+st.Why) }
	awaiting := 0
	g.awaiting = func(string, error) { awaiting++ }

	start := time.Now()
	seen := func(at time.Duration) dnsReadiness {
		return dnsReadiness{RecordsSeen: []string{"A 203.0.113.9"}, RecordsExpected: targets.expected, CheckedAt: start.Add(at)}
	}
	// checks at 0 and 10m; the next would be 20m later, at 30m: it comes
	// at 25m, when the tenant is given up
	if r := g.record("link.a.test", seen(0), false, ""); r.NextCheck == nil || !r.NextCheck.Equal(start.Add(10*time.Minute)) {
		t.Fatalf("first check: next %v", r.NextCheck)
	}
	if r := g.record("link.a.test", seen(10*time.Minute), false, ""); r.NextCheck == nil || !r.NextCheck.Equal(start.Add(25*time.Minute)) {
		t.Fatalf("second check: next %v, want at give_up_after", r.NextCheck)
	}
	if len(stalled) != 0 || awaiting != 1 {
		t.Fatalf("before give_up_after: stalled %q, awaiting reported %d times", stalled, awaiting)
	}
	for range 2 {
		if r := g.record("link.a.test", seen(25*time.Minute), false, ""); r.NextCheck != nil {
			t.Errorf("a stalled tenant has a next check: %v", r.NextCheck)
		}
	}
	if len(stalled) != 1 || !strings.Contains(stalled[0], "records seen: A 203.0.113.9; expected: CNAME edge.platform.test") {
		t.Errorf("stalled reported %q, want once with the records", stalled)
	}
	if g.checks.waits["link.a.test"].timer != nil {
		t.Error("a stalled tenant kept its timer")
	}
	if g.admit("link.a.test", true) || len(g.checks.queue) != 0 {
		t.Errorf("a stalled tenant was admitted or queued: %q", g.checks.queue)
	}

	// revived, its time starts over and its next check is queued
	if !g.stalls.revive("link.a.test", start.Add(30*time.Minute)) {
		t.Fatal("revive found no stalled tenant")
	}
	g.revive("link.a.test", true)
	if len(g.checks.queue) != 1 {
		t.Errorf("a revived tenant was not queued: %q", g.checks.queue)
	}
	if r := g.record("link.a.test", seen(31*time.Minute), false, "check_now"); r.NextCheck == nil || awaiting != 2 {
		t.Errorf("a revived tenant's check: next %v, awaiting reported %d times", r.NextCheck, awaiting)
	}
	if _, ok := g.stalls.isStalled("link.a.test"); ok {
		t.Error("a revived tenant stalled at its first check")
	}
}

// TestStallTrackerOrders: failures stall a tenant only after
// give_up_after since its first; a certificate, or a removal, forgets
// it; a reload keeps what the running config knows of kept tenants.
func TestStallTrackerOrders(t *testing.T) {
	s := newStallTracker(time.Hour)
	start := time.Now()
	if _, stalled, _ := s.giveUp("a.test", start, "x"); stalled {
		t.Fatal("stalled at the first failure")
	}
	if _, stalled, _ := s.giveUp("a.test", start.Add(59*time.Minute), "x"); stalled {
		t.Fatal("stalled before give_up_after")
	}
	st, stalled, newly := s.giveUp("a.test", start.Add(time.Hour), "orders kept failing: boom")
	if !stalled || !newly || !st.TryingSince.Equal(start) || st.Why != "orders kept failing: boom" {
		t.Fatalf("at give_up_after: %+v %v %v", st, stalled, newly)
	}
	if _, _, newly := s.giveUp("a.test", start.Add(2*time.Hour), "y"); newly {
		t.Error("stalled twice")
	}
	s.tried("b.test", start)
	next := newStallTracker(time.Hour)
	next.inherit(s, func(name string) bool { return name == "a.test" })
	if _, ok := next.isStalled("a.test"); !ok {
		t.Error("a reload revived a stalled tenant")
	}
	if _, ok := next.trying["b.test"]; ok {
		t.Error("a reload kept a removed tenant")
	}
	s.obtained("a.test")
	if _, ok := s.isStalled("a.test"); ok || len(s.trying) != 1 {
		t.Errorf("a tenant with a certificate is still tracked: %v %v", s.stalled, s.trying)
	}
	var none *stallTracker
	if _, stalled, _ := none.giveUp("a.test", start.Add(time.Hour*1000), "x"); stalled {
		t.Error("no tracker stalled a tenant")
	}
}

// TestCheckRuns: one check now call per tenant at a time, and
// maxChecksAtOnce in all.
func TestCheckRuns(t *testing.T) {
	r := newCheckRuns()
	if err := r.start("a.test"); err != nil {
		t.Fatal(err)
	}
	if err := r.start("a.test"); !errors.Is(err, errCheckRunning) {
		t.Errorf("a second check of a tenant: %v, want errCheckRunning", err)
	}
	for i := 1; i < maxChecksAtOnce; i++ {
		if err := r.start(string(rune('b'+i)) + ".test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.start("z.test"); !errors.Is(err, errTooManyChecks) {
		t.Errorf("check %d at once: %v, want errTooManyChecks", maxChecksAtOnce+1, err)
	}
	r.end("a.test")
	if err := r.start("a.test"); err != nil {
		t.Errorf("a check after the last ended: %v", err)
	}
}
