package linktrack

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

func TestDNSTargetsReach(t *testing.T) {
	targets, err := parseDNSTargets([]string{"Edge.Platform.test.", "192.0.2.10", "2001:db8::10"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"CNAME edge.platform.test", "A 192.0.2.10", "AAAA 2001:db8::10"}; !slices.Equal(targets.expected, want) {
		t.Errorf("expected records %q, want %q", targets.expected, want)
	}
	for _, tc := range []struct {
		name          string
		cnames, addrs []string
		ready         bool
	}{
		{"cname to a target", []string{"edge.platform.test"}, []string{"203.0.113.1"}, true},
		{"chain ending at a target", []string{"a.customer.test", "b.cdn.test", "edge.platform.test"}, nil, true},
		{"chain through a target", []string{"edge.platform.test", "lb.platform.test"}, nil, true},
		{"chain elsewhere", []string{"old.provider.test"}, []string{"192.0.2.10"}, true}, // its addresses are the edge's
		{"chain elsewhere, addresses elsewhere", []string{"old.provider.test"}, []string{"203.0.113.1"}, false},
		{"a target's name as a suffix only", []string{"x.edge.platform.test"}, []string{"203.0.113.1"}, false},
		{"A among the targets", nil, []string{"192.0.2.10"}, true},
		{"A and AAAA among the targets", nil, []string{"192.0.2.10", "2001:db8::10"}, true},
		{"AAAA only, a target", nil, []string{"2001:db8::10"}, true},
		{"one A elsewhere", nil, []string{"192.0.2.10", "203.0.113.1"}, false},
		{"one AAAA elsewhere", nil, []string{"192.0.2.10", "2001:db8::99"}, false},
		{"IPv4-mapped target", nil, []string{"::ffff:192.0.2.10"}, true},
		{"no records", nil, nil, false},
	} {
		if got := targets.reaches(tc.cnames, tc.addrs); got != tc.ready {
			t.Errorf("%s: reaches(%q, %q) = %v, want %v", tc.name, tc.cnames, tc.addrs, got, tc.ready)
		}
	}
	names, _ := parseDNSTargets([]string{"edge.platform.test"})
	if names.reaches(nil, []string{"192.0.2.10"}) {
		t.Error("with name targets only, an A record reached the edge")
	}
	for _, bad := range []string{"*.edge.test", "not a name", ""} {
		if _, err := parseDNSTargets([]string{bad}); err == nil {
			t.Errorf("dns_targets '%s' was accepted", bad)
		}
	}
}

// fakeDNS serves records from a map on loopback: "name TYPE" → answers
// as text, SERVFAIL for a value of "SERVFAIL". CNAMEs are answered
// alone, as an authoritative server would for a CNAME question.
func fakeDNS(t *testing.T, records map[string][]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		name := strings.TrimSuffix(q.Name, ".")
		for _, value := range records[name+" "+dns.TypeToString[q.Qtype]] {
			if value == "SERVFAIL" {
				m.Rcode = dns.RcodeServerFailure
				break
			}
			rr, err := dns.NewRR(q.Name + " 60 IN " + dns.TypeToString[q.Qtype] + " " + value)
			if err != nil {
				t.Error(err)
				continue
			}
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestDNSGateCheck(t *testing.T) {
	addr := fakeDNS(t, map[string][]string{
		"link.a.test CNAME":         {"mail.a.test."},
		"mail.a.test CNAME":         {"edge.platform.test."},
		"edge.platform.test A":      {"203.0.113.1"},
		"link.b.test A":             {"192.0.2.10", "203.0.113.7"},
		"link.c.test A":             {"192.0.2.10"},
		"link.c.test AAAA":          {"2001:db8::10"},
		"link.d.test CNAME":         {"SERVFAIL"},
		"link.e.test AAAA":          {"SERVFAIL"},
		"link.e.test A":             {"192.0.2.10"},
		"old.provider.test A":       {"198.51.100.1"},
		"link.f.test CNAME":         {"old.provider.test."},
		"link.unreachable.test TXT": {`"x"`},
	})
	targets, _ := parseDNSTargets([]string{"edge.platform.test", "192.0.2.10", "2001:db8::10"})
	var woken []string
	g := newDNSGate(targets, dnsResolver{servers: []string{addr}, timeout: 2 * time.Second}, 10*time.Minute, zap.NewNop(),
		func(name string) { woken = append(woken, name) })
	defer g.close()
	ctx := context.Background()
	for _, tc := range []struct {
		domain string
		ready  bool
		seen   []string
		err    string
	}{
		{"link.a.test", true, []string{"CNAME mail.a.test", "CNAME edge.platform.test", "A 203.0.113.1"}, ""},
		{"link.b.test", false, []string{"A 192.0.2.10", "A 203.0.113.7"}, ""},
		{"link.c.test", true, []string{"A 192.0.2.10", "AAAA 2001:db8::10"}, ""},
		{"link.d.test", false, []string{}, "CNAME query for link.d.test failed: SERVFAIL"},
		{"link.e.test", false, []string{"A 192.0.2.10"}, "AAAA query for link.e.test failed: SERVFAIL"},
		{"link.f.test", false, []string{"CNAME old.provider.test", "A 198.51.100.1"}, ""},
		{"link.unreachable.test", false, []string{}, ""},
	} {
		r := g.check(ctx, tc.domain)
		if r.Ready != tc.ready || !slices.Equal(r.RecordsSeen, tc.seen) || r.Error != tc.err {
			t.Errorf("%s: ready %v, seen %q, error %q; want %v, %q, %q", tc.domain, r.Ready, r.RecordsSeen, r.Error, tc.ready, tc.seen, tc.err)
		}
		if !slices.Equal(r.RecordsExpected, targets.expected) {
			t.Errorf("%s: expected records %q", tc.domain, r.RecordsExpected)
		}
	}

	// a tenant awaiting DNS is checked again after 10m, 20m, 40m, then
	// every hour; once ready, its order is woken and admitted
	if g.admit("link.b.test", false) {
		t.Fatal("a tenant never checked was admitted")
	}
	if !g.checks.queued["link.b.test"] || len(g.checks.queue) != 1 {
		t.Fatalf("a tenant never checked was not queued: %q", g.checks.queue)
	}
	g.admit("link.b.test", true)
	if len(g.checks.queue) != 1 {
		t.Errorf("a tenant queued twice: %q", g.checks.queue)
	}
	var delays []time.Duration
	for range 5 {
		r := g.record("link.b.test", g.check(ctx, "link.b.test"), false, "")
		if r.NextCheck == nil {
			t.Fatal("a tenant awaiting DNS has no next check")
		}
		delays = append(delays, r.NextCheck.Sub(r.CheckedAt))
	}
	if want := []time.Duration{10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}; !slices.Equal(delays, want) {
		t.Errorf("delays between checks %v, want %v", delays, want)
	}
	if g.admit("link.b.test", false) || g.isReady("link.b.test") {
		t.Error("a tenant awaiting DNS was admitted")
	}
	if r := g.checkNow(ctx, "link.b.test", false); r.NextCheck == nil || r.NextCheck.Sub(r.CheckedAt) != 10*time.Minute {
		t.Errorf("a check now did not start the delays over: %+v", r)
	}
	g.record("link.a.test", g.check(ctx, "link.a.test"), false, "")
	if !g.admit("link.a.test", false) || !slices.Equal(woken, []string{"link.a.test"}) {
		t.Errorf("a ready tenant: admitted %v, woken %q", g.admit("link.a.test", false), woken)
	}
	// after its first order fails, it is checked again before the next
	g.unready("link.a.test")
	if g.admit("link.a.test", false) {
		t.Error("a tenant whose order failed was admitted without a new check")
	}
	// a tenant with a certificate is reported, never held back or
	// scheduled
	if r := g.record("link.f.test", g.check(ctx, "link.f.test"), true, ""); r.NextCheck != nil || len(woken) != 1 {
		t.Errorf("a renewal's check: %+v, woken %q", r, woken)
	}
	g.forget("link.b.test")
	if _, ok := g.checks.waits["link.b.test"]; ok {
		t.Error("a removed tenant was kept")
	}
}

func TestDNSGateInherit(t *testing.T) {
	targets, _ := parseDNSTargets([]string{"edge.platform.test"})
	prev := newDNSGate(targets, dnsResolver{}, time.Hour, zap.NewNop(), func(string) {})
	defer prev.close()
	now := time.Now()
	for _, name := range []string{"kept.test", "removed.test"} {
		prev.record(name, dnsReadiness{RecordsSeen: []string{"A 203.0.113.1"}, RecordsExpected: targets.expected, CheckedAt: now}, false, "")
	}
	prev.record("ready.test", dnsReadiness{Ready: true, CheckedAt: now}, false, "")

	next := newDNSGate(targets, dnsResolver{}, time.Hour, zap.NewNop(), func(string) {})
	defer next.close()
	next.inherit(prev, func(name string) bool { return name != "removed.test" })
	if last, ready := next.status("kept.test"); ready || last == nil || !slices.Equal(last.RecordsSeen, []string{"A 203.0.113.1"}) ||
		next.checks.waits["kept.test"].timer == nil || !next.checks.waits["kept.test"].next.Equal(prev.checks.waits["kept.test"].next) {
		t.Errorf("an awaiting tenant after a reload: %+v %+v", last, next.checks.waits["kept.test"])
	}
	if next.admit("kept.test", false) || len(next.checks.queue) != 0 {
		t.Errorf("an awaiting tenant was checked again at a reload: %q", next.checks.queue)
	}
	if !next.admit("ready.test", false) {
		t.Error("a ready tenant was not admitted after a reload")
	}
	if _, ok := next.checks.waits["removed.test"]; ok {
		t.Error("a tenant the reload removed was kept")
	}

	other, _ := parseDNSTargets([]string{"edge2.platform.test"})
	moved := newDNSGate(other, dnsResolver{}, time.Hour, zap.NewNop(), func(string) {})
	defer moved.close()
	moved.inherit(prev, func(string) bool { return true })
	if len(moved.checks.waits) != 0 {
		t.Error("checks against other targets were kept")
	}
}
