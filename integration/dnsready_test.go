package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// dnsView is a DNS readiness check in the admin API.
type dnsView struct {
	Ready           bool       `json:"ready"`
	RecordsSeen     []string   `json:"records_seen"`
	RecordsExpected []string   `json:"records_expected"`
	Error           string     `json:"error"`
	CheckedAt       time.Time  `json:"checked_at"`
	NextCheck       *time.Time `json:"next_check"`
}

// readinessView is a tenant's certificate state with dns_targets set.
type readinessView struct {
	Status           string     `json:"status"`
	DNS              *dnsView   `json:"dns"`
	RateLimitedUntil *time.Time `json:"rate_limited_until"`
}

// TestDNSReadiness: with dns_targets, 20 tenants whose DNS points
// elsewhere are awaiting_dns with the records seen, and cause no order
// and no failed validation over several checks, nor at a click; once one
// of them points at the edge, it is valid after exactly one order with
// no click; a check now call wakes another at once; awaiting tenants
// leave the order budget to those, and a third ready tenant shows when
// the budget lets it be ordered.
func TestDNSReadiness(t *testing.T) {
	t.Parallel() // mostly waits on DNS checks and Pebble
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	clicks, countClicks := clickCounter()
	origin := startOrigin(t, ca, []string{"localhost"}, countClicks)
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	var domains []string
	for i := 1; i <= 20; i++ {
		domains = append(domains, fmt.Sprintf("link.brand%d.test", i))
	}
	tenantsFile := filepath.Join(dir, "tenants.json")
	writeTenantsFile(t, tenantsFile, domains...)
	// the mock DNS answers every name with 127.0.0.1: not the edge's
	// address; edge.platform.test is the edge's name, and reaches this
	// Caddy at 127.0.0.1 as well, so that Pebble's validation passes.
	// 2 orders per 3h: awaiting tenants must leave them to ready ones
	app := fmt.Sprintf(`dns_targets edge.platform.test 192.0.2.10
		dns_resolvers %s
		dns_check_interval 1s
		order_limit 2 3h
		tenants_file %s`, acme.dnsAddr, tenantsFile)
	config := multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, app)
	// one debug line per DNS check is the marker of the checks
	p := startCaddy(t, "caddyfile", strings.Replace(config, "\tskip_install_trust", "\tdebug\n\tskip_install_trust", 1))

	state := func(domain string) readinessView {
		t.Helper()
		status, body := adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+domain, "")
		var view struct {
			Certificate readinessView `json:"certificate"`
		}
		if err := json.Unmarshal([]byte(body), &view); status != 200 || err != nil {
			t.Fatalf("GET %s: %d %s", domain, status, body)
		}
		return view.Certificate
	}
	checked := func(domain string) func(map[string]any) bool {
		return func(e map[string]any) bool { return e["domain"] == domain }
	}

	// three checks of every tenant, each logged, and no order
	for _, d := range domains {
		p.waitLogCount(t, time.Minute, "tenant dns checked", 3, checked(d))
	}
	wantExpected := []string{"CNAME edge.platform.test", "A 192.0.2.10"}
	for _, d := range domains {
		c := state(d)
		if c.Status != "awaiting_dns" || c.DNS == nil || c.DNS.Ready ||
			!slices.Equal(c.DNS.RecordsSeen, []string{"A 127.0.0.1"}) || !slices.Equal(c.DNS.RecordsExpected, wantExpected) ||
			c.DNS.NextCheck == nil || !c.DNS.NextCheck.After(c.DNS.CheckedAt) {
			t.Errorf("%s: %+v %+v, want awaiting_dns having seen A 127.0.0.1, expecting %q, with a next check", d, c, c.DNS, wantExpected)
		}
	}
	// a click on an awaiting tenant is refused by the permission module
	roots := acme.issuingRoots(t)
	if conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", ports.https), &tls.Config{RootCAs: roots, ServerName: domains[19]}); err == nil {
		conn.Close()
		t.Errorf("a tenant awaiting DNS got a certificate at a click")
	}
	acme.settle(t)
	p.settle(t, ports.admin)
	if n := acme.orders(); n != 0 {
		t.Errorf("pebble received %d orders for tenants awaiting DNS", n)
	}
	for _, msg := range []string{"obtaining certificate", "tenant certificate failed"} {
		if n := len(p.logEntriesNamed(msg)); n != 0 {
			t.Errorf("%d log entries %q while every tenant awaits DNS", n, msg)
		}
	}
	status, body := adminRequest(t, ports.admin, "GET", "/linktrack/tenants?status=awaiting_dns", "")
	var page struct {
		Tenants []struct{ Domain, Status string }
		Counts  map[string]int
	}
	if err := json.Unmarshal([]byte(body), &page); status != 200 || err != nil || len(page.Tenants) != 20 || page.Counts["awaiting_dns"] != 20 {
		t.Errorf("listing of tenants awaiting DNS: %d %s", status, body)
	}

	// one tenant's DNS reaches the edge: its next check wakes its order
	ready := domains[0]
	dnsRecord(t, acme.dnsControl, "/set-cname", fmt.Sprintf(`{"Host": "%s.", "Target": "edge.platform.test."}`, ready))
	p.waitLogFor(t, 2*time.Minute, "tenant certificate obtained", checked(ready))
	acme.settle(t)
	if n := acme.orders(); n != 1 {
		t.Errorf("pebble received %d orders, want exactly 1, for %s", n, ready)
	}
	if c := state(ready); c.Status != "valid" {
		t.Errorf("%s once its DNS reaches the edge: %+v, want valid", ready, c)
	}
	if e := p.waitLog(t, "tenant dns ready", checked(ready)); e["cause"] != nil {
		t.Errorf("%s was found ready by %v, want a scheduled check", ready, e["cause"])
	}

	// a check now call wakes another at once, long before its next check
	woken := domains[1]
	var before readinessView
	for i := 0; ; i++ {
		before = state(woken)
		if before.DNS != nil && before.DNS.NextCheck != nil && time.Until(*before.DNS.NextCheck) > 5*time.Second {
			break
		}
		if i == 6 {
			t.Fatalf("%s: no next check 5s away after %d checks: %+v", woken, i, before)
		}
		n := len(p.logEntriesNamed("tenant dns checked"))
		p.waitLogCount(t, time.Minute, "tenant dns checked", n+1, checked(woken))
	}
	dnsRecord(t, acme.dnsControl, "/set-cname", fmt.Sprintf(`{"Host": "%s.", "Target": "edge.platform.test."}`, woken))
	status, body = adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+woken+"/check", "")
	var answer struct {
		Domain      string
		DNS         dnsView
		Certificate readinessView
	}
	if err := json.Unmarshal([]byte(body), &answer); status != 200 || err != nil || answer.Domain != woken || !answer.DNS.Ready ||
		!slices.Contains(answer.DNS.RecordsSeen, "CNAME edge.platform.test") || !slices.Equal(answer.DNS.RecordsExpected, wantExpected) ||
		(answer.Certificate.Status != "pending" && answer.Certificate.Status != "valid") {
		t.Fatalf("POST check %s: %d %s", woken, status, body)
	}
	obtained := p.waitLogFor(t, time.Minute, "tenant certificate obtained", checked(woken))
	if at := unixTime(obtained["ts"].(float64)); !at.Before(*before.DNS.NextCheck) {
		t.Errorf("%s obtained at %s, not before its next scheduled check at %s", woken, at, before.DNS.NextCheck)
	}
	if e := p.waitLog(t, "tenant dns ready", checked(woken)); e["cause"] != "check_now" {
		t.Errorf("%s was found ready by %v, want check_now", woken, e["cause"])
	}
	acme.settle(t)
	if n := acme.orders(); n != 2 {
		t.Errorf("pebble received %d orders, want 2", n)
	}

	// the order budget is spent: a third ready tenant shows until when
	limited := domains[2]
	dnsRecord(t, acme.dnsControl, "/set-cname", fmt.Sprintf(`{"Host": "%s.", "Target": "edge.platform.test."}`, limited))
	if status, body := adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+limited+"/check", ""); status != 200 || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("POST check %s: %d %s", limited, status, body)
	}
	p.waitLogFor(t, time.Minute, "first order held back by the order limits", checked(limited))
	_, body = adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+limited, "")
	t.Logf("a tenant held back by the order limits: %s", body)
	if c := state(limited); c.Status != "pending" || c.RateLimitedUntil == nil || time.Until(*c.RateLimitedUntil) < time.Hour {
		t.Errorf("%s with the order budget spent: %+v, want pending with rate_limited_until about 90m away", limited, c)
	}

	// the other 17 never left awaiting_dns, and no click reached the origin
	acme.settle(t)
	p.settle(t, ports.admin)
	if n := acme.orders(); n != 2 {
		t.Errorf("pebble received %d orders, want 2", n)
	}
	if c := state(domains[3]); c.Status != "awaiting_dns" {
		t.Errorf("%s: %+v, want awaiting_dns", domains[3], c)
	}
	if n := clicks.Load(); n != 0 {
		t.Errorf("origin got %d requests with no click", n)
	}
}

// unixTime converts a log entry's ts, in seconds, to a time.
func unixTime(ts float64) time.Time {
	sec := int64(ts)
	return time.Unix(sec, int64((ts-float64(sec))*1e9))
}

// clickCounter returns an origin's answer that redirects and counts the
// requests that reach it, but those of check now calls' http and https
// checks.
func clickCounter() (*atomic.Int64, func(*standin.Received) standin.Response) {
	clicks := new(atomic.Int64)
	return clicks, func(rec *standin.Received) standin.Response {
		if !slices.ContainsFunc(rec.Headers, func(f standin.Field) bool {
			return strings.EqualFold(f.Name, "User-Agent") && f.Value == "caddy-linktrack-check"
		}) {
			clicks.Add(1)
		}
		return redirectResponse()
	}
}
