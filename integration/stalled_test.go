package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// stalledView is a tenant's certificate state while stalled.
type stalledView struct {
	Status  string   `json:"status"`
	DNS     *dnsView `json:"dns"`
	Stalled *struct {
		Since       time.Time `json:"since"`
		TryingSince time.Time `json:"trying_since"`
		Why         string    `json:"why"`
	} `json:"stalled"`
}

// checkNowAnswer is the answer of POST /linktrack/tenants/<domain>/check.
type checkNowAnswer struct {
	Domain  string
	DNS     *dnsView
	Checks  []struct{ Check, Status, Detail, Fix string }
	OK      bool
	Revived bool
	// the certificate state after the checks
	Certificate stalledView
}

func (a checkNowAnswer) check(name string) (status, detail string) {
	for _, c := range a.Checks {
		if c.Check == name {
			return c.Status, c.Detail + " | " + c.Fix
		}
	}
	return "", ""
}

// TestStalledTenantRevived: with give_up_after 3s, two tenants whose DNS
// points elsewhere stall after 3s of checks: stalled in the API with
// since, trying_since and why (the records seen), no next check, their
// handshakes refused, and 0 orders. Once one's DNS reaches the edge it
// stays stalled, until a check now call revives it: the call answers
// with every check and the records seen, and the tenant is valid after
// exactly 1 order, with no click; a second call then passes tls, http
// and https through this Caddy. The other tenant stays stalled until a
// PUT of it revives it, and stalls again 3s later.
func TestStalledTenantRevived(t *testing.T) {
	t.Parallel() // mostly waits on DNS checks and Pebble
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	revived, kept := "link.stall-a.test", "link.stall-b.test"
	tenantsFile := filepath.Join(dir, "tenants.json")
	writeTenantsFile(t, tenantsFile, revived)
	// the mock DNS answers every name with 127.0.0.1, which is not the
	// edge's address: both tenants await DNS, then stall
	app := fmt.Sprintf(`dns_targets edge.platform.test 192.0.2.10
		dns_resolvers %s
		dns_check_interval 1s
		give_up_after 3s
		tenants_file %s`, acme.dnsAddr, tenantsFile)
	config := multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, app)
	// the check now call's tls check verifies the certificates of this
	// run of Pebble as a system root
	rootsFile := filepath.Join(dir, "pebble-roots.pem")
	res, err := acme.client().Get(acme.management + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	rootsPEM, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if err := os.WriteFile(rootsFile, rootsPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCaddyEnv(t, caddyBin, "caddyfile", strings.Replace(config, "\tskip_install_trust", "\tdebug\n\tskip_install_trust", 1),
		"SSL_CERT_FILE="+rootsFile)
	of := func(domain string) func(map[string]any) bool {
		return func(e map[string]any) bool { return e["domain"] == domain }
	}
	if status, body := adminRequest(t, ports.admin, "PUT", "/linktrack/tenants/"+kept, `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT %s: %d %s", kept, status, body)
	} else {
		t.Logf("PUT of a tenant: %s", body)
	}
	state := func(domain string) stalledView {
		t.Helper()
		status, body := adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+domain, "")
		var view struct {
			Certificate stalledView `json:"certificate"`
		}
		if err := json.Unmarshal([]byte(body), &view); status != 200 || err != nil {
			t.Fatalf("GET %s: %d %s", domain, status, body)
		}
		return view.Certificate
	}

	// both stall, 3s after their first check, having seen A 127.0.0.1
	for _, d := range []string{revived, kept} {
		stalled := p.waitLogFor(t, time.Minute, "tenant stalled", of(d))
		first := p.waitLog(t, "tenant dns checked", of(d))
		c := state(d)
		_, body := adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+d, "")
		t.Logf("a stalled tenant: %s", body)
		if c.Status != "stalled" || c.Stalled == nil || c.DNS == nil || c.DNS.NextCheck != nil ||
			!slices.Equal(c.DNS.RecordsSeen, []string{"A 127.0.0.1"}) ||
			!strings.Contains(c.Stalled.Why, "records seen: A 127.0.0.1; expected: CNAME edge.platform.test or A 192.0.2.10") ||
			c.Stalled.Since.Sub(c.Stalled.TryingSince) < 3*time.Second {
			t.Errorf("%s: %+v %+v %+v, want stalled 3s after its first check, having seen A 127.0.0.1, with no next check", d, c, c.Stalled, c.DNS)
		}
		if at, since := unixTime(first["ts"].(float64)), c.Stalled.TryingSince; at.Sub(since).Abs() > time.Second {
			t.Errorf("%s: trying since %s, first checked at %s", d, since, at)
		}
		if stalled["why"] != c.Stalled.Why {
			t.Errorf("%s: logged why %v, API why %q", d, stalled["why"], c.Stalled.Why)
		}
	}
	// a click on a stalled tenant is refused by the permission module
	roots := acme.issuingRoots(t)
	if conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", ports.https), &tls.Config{RootCAs: roots, ServerName: kept}); err == nil {
		conn.Close()
		t.Errorf("a stalled tenant got a certificate at a click")
	}
	status, body := adminRequest(t, ports.admin, "GET", "/linktrack/tenants?status=stalled", "")
	var page struct {
		Counts map[string]int
	}
	if err := json.Unmarshal([]byte(body), &page); status != 200 || err != nil || page.Counts["stalled"] != 2 {
		t.Errorf("listing of stalled tenants: %d %s", status, body)
	}

	// its DNS reaches the edge: it stays stalled, with no check to see it
	dnsRecord(t, acme.dnsControl, "/set-cname", fmt.Sprintf(`{"Host": "%s.", "Target": "edge.platform.test."}`, revived))
	if c := state(revived); c.Status != "stalled" {
		t.Errorf("%s: %+v, want still stalled", revived, c)
	}
	acme.settle(t)
	p.settle(t, ports.admin)
	if n := acme.orders(); n != 0 {
		t.Errorf("pebble received %d orders for stalled tenants", n)
	}
	if e := p.waitLog(t, "tenant stalled", of(kept)); len(p.logEntriesNamed("tenant stalled")) != 2 {
		t.Errorf("%d tenant stalled lines, want 2: %v", len(p.logEntriesNamed("tenant stalled")), e)
	}

	// a check now call revives it, with every check and the records seen
	status, body = adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+revived+"/check", "")
	var answer checkNowAnswer
	if err := json.Unmarshal([]byte(body), &answer); status != 200 || err != nil {
		t.Fatalf("POST check %s: %d %s", revived, status, body)
	}
	t.Logf("check now of a stalled tenant whose DNS was fixed: %s", body)
	if answer.Domain != revived || !answer.Revived || answer.DNS == nil || !answer.DNS.Ready ||
		!slices.Equal(answer.DNS.RecordsSeen, []string{"CNAME edge.platform.test", "A 127.0.0.1"}) {
		t.Errorf("POST check %s: %s, want revived, ready, having seen the CNAME", revived, body)
	}
	for name, want := range map[string]string{
		"dns_targets": "pass", "dns": "pass", "caa": "pass",
	} {
		if status, detail := answer.check(name); status != want {
			t.Errorf("check %s: %s %s, want %s", name, status, detail, want)
		}
	}
	if _, detail := answer.check("dns"); !strings.Contains(detail, revived+" → CNAME edge.platform.test → A 127.0.0.1") {
		t.Errorf("check dns: %s, want the chain seen", detail)
	}
	for _, name := range []string{"tls", "http", "https", "provider", "hsts"} {
		if status, _ := answer.check(name); status == "" {
			t.Errorf("check now ran no %s check: %s", name, body)
		}
	}
	// no handshake with a tenant with no certificate: it would order one
	if status, detail := answer.check("tls"); status != "warn" || !strings.Contains(detail, "not run: this server holds no certificate") {
		t.Errorf("check tls with no certificate: %s %s, want not run", status, detail)
	}
	p.waitLogFor(t, time.Minute, "tenant certificate obtained", of(revived))
	if e := p.waitLog(t, "tenant revived", of(revived)); e["cause"] != "check_now" {
		t.Errorf("%s revived by %v, want check_now", revived, e["cause"])
	}
	acme.settle(t)
	if n := acme.orders(); n != 1 {
		t.Errorf("pebble received %d orders, want exactly 1, for %s", n, revived)
	}
	if c := state(revived); c.Status != "valid" {
		t.Errorf("%s after check now: %+v, want valid", revived, c)
	}
	// checked again, it is served: tls, http and https pass through this
	// Caddy; the named origin has no provider check, and the parent
	// domain no HTTPS
	status, body = adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+revived+"/check", "")
	answer = checkNowAnswer{}
	if err := json.Unmarshal([]byte(body), &answer); status != 200 || err != nil || answer.Revived || !answer.OK || answer.Certificate.Status != "valid" {
		t.Fatalf("POST check %s once valid: %d %s", revived, status, body)
	}
	t.Logf("check now of a valid tenant: %s", body)
	for name, want := range map[string]string{
		"dns_targets": "pass", "dns": "pass", "caa": "pass", "tls": "pass", "http": "pass", "https": "pass", "provider": "warn", "hsts": "warn",
	} {
		if status, detail := answer.check(name); status != want {
			t.Errorf("check %s once valid: %s %s, want %s", name, status, detail, want)
		}
	}

	// the other is still stalled; a PUT of it revives it, and its time
	// starts over: it stalls again after 3s more of checks
	if c := state(kept); c.Status != "stalled" {
		t.Errorf("%s after a check now of another tenant: %+v, want still stalled", kept, c)
	}
	if status, body := adminRequest(t, ports.admin, "PUT", "/linktrack/tenants/"+kept, `{"origin": "esp"}`); status != 200 {
		t.Fatalf("PUT %s again: %d %s", kept, status, body)
	}
	if e := p.waitLog(t, "tenant revived", of(kept)); e["cause"] != "put" {
		t.Errorf("%s revived by %v, want put", kept, e["cause"])
	}
	revivedAt := p.waitLog(t, "tenant revived", of(kept))
	again := p.waitLogCount(t, time.Minute, "tenant stalled", 2, of(kept))[1]
	if d := unixTime(again["ts"].(float64)).Sub(unixTime(revivedAt["ts"].(float64))); d < 3*time.Second {
		t.Errorf("%s stalled again %s after its revival, want 3s", kept, d)
	}
	// a check now call tells what to ask its owner for
	status, body = adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+kept+"/check", "")
	answer = checkNowAnswer{}
	if err := json.Unmarshal([]byte(body), &answer); status != 200 || err != nil || !answer.Revived ||
		answer.Certificate.Status != "awaiting_dns" || answer.OK {
		t.Fatalf("POST check %s: %d %s, want revived and awaiting_dns", kept, status, body)
	}
	t.Logf("check now of a stalled tenant whose DNS points elsewhere: %s", body)
	if status, detail := answer.check("dns_targets"); status != "fail" ||
		!strings.Contains(detail, "ask the domain's owner for one of these records: "+kept+" CNAME edge.platform.test, or "+kept+" A 192.0.2.10") {
		t.Errorf("check dns_targets of %s: %s %s", kept, status, detail)
	}
	acme.settle(t)
	if n := acme.orders(); n != 1 {
		t.Errorf("pebble received %d orders, want 1", n)
	}
}

// TestStalledAfterFailedOrders: without dns_targets, a tenant whose
// orders keep failing (its validation answers SERVFAIL) stalls at its
// first failure past give_up_after, shows why, and places no more order,
// in the background or at a click; once its DNS answers, a check now
// call revives it and it is valid after exactly one more order.
func TestStalledAfterFailedOrders(t *testing.T) {
	t.Parallel() // mostly waits on cooldowns and Pebble
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	domain := "link.failing.test"
	acme.setServfail(t, domain, true)
	tenantsFile := filepath.Join(dir, "tenants.json")
	writeTenantsFile(t, tenantsFile, domain)
	app := fmt.Sprintf(`issuance_cooldown 1s
		give_up_after 3s
		dns_resolvers %s
		tenants_file %s`, acme.dnsAddr, tenantsFile)
	p := startCaddy(t, "caddyfile", multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, app))
	of := func(e map[string]any) bool { return e["domain"] == domain }

	type failedView struct {
		Certificate struct {
			stalledView
			Error string `json:"error"`
		} `json:"certificate"`
	}
	// its first failure: pending, with the error and the next try
	p.waitLogFor(t, time.Minute, "tenant certificate failed", of)
	status, body := adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+domain, "")
	var view failedView
	if err := json.Unmarshal([]byte(body), &view); status != 200 || err != nil || view.Certificate.Status != "pending" || view.Certificate.Error == "" {
		t.Errorf("GET %s after its first failed order: %d %s, want pending with the error", domain, status, body)
	}
	t.Logf("a tenant whose first order failed: %s", body)

	stalled := p.waitLogFor(t, time.Minute, "tenant stalled", of)
	failed := p.logEntriesNamed("tenant certificate failed")
	status, body = adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+domain, "")
	view = failedView{}
	if err := json.Unmarshal([]byte(body), &view); status != 200 || err != nil {
		t.Fatalf("GET %s: %d %s", domain, status, body)
	}
	c := view.Certificate
	t.Logf("a tenant whose orders keep failing: %s", body)
	if c.Status != "stalled" || c.Stalled == nil || !strings.HasPrefix(c.Stalled.Why, "orders kept failing: ") || c.Error == "" ||
		c.Stalled.Since.Sub(c.Stalled.TryingSince) < 3*time.Second || stalled["why"] != c.Stalled.Why || len(failed) < 2 {
		t.Errorf("%s after %d failed orders: %s, want stalled 3s after its first failure, with why", domain, len(failed), body)
	}
	// no order after the stall, not even at a click once the last
	// failure's cooldown is over
	acme.settle(t)
	orders := acme.orders()
	<-time.After(time.Until(logFieldTime(t, failed[len(failed)-1]["next_try"]))) // the cooldown's end, not a readiness wait
	if conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", ports.https), &tls.Config{RootCAs: acme.issuingRoots(t), ServerName: domain}); err == nil {
		conn.Close()
		t.Errorf("a stalled tenant got a certificate at a click")
	}
	acme.settle(t)
	p.settle(t, ports.admin)
	if n := acme.orders(); n != orders {
		t.Errorf("pebble received %d orders after the stall, want none", n-orders)
	}
	if n := len(p.logEntriesNamed("tenant certificate failed")); n != len(failed) {
		t.Errorf("%d failed orders after the stall", n-len(failed))
	}

	// its DNS answers again: a check now call revives it, one order
	acme.setServfail(t, domain, false)
	status, body = adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+domain+"/check", "")
	var answer checkNowAnswer
	if err := json.Unmarshal([]byte(body), &answer); status != 200 || err != nil || !answer.Revived || answer.DNS != nil {
		t.Fatalf("POST check %s: %d %s, want revived, with no dns_targets", domain, status, body)
	}
	if s, detail := answer.check("dns"); s != "pass" || !strings.Contains(detail, domain+" → A 127.0.0.1") {
		t.Errorf("check dns: %s %s", s, detail)
	}
	p.waitLogFor(t, time.Minute, "tenant certificate obtained", of)
	acme.settle(t)
	if n := acme.orders(); n != orders+1 {
		t.Errorf("pebble received %d orders after the revival, want exactly 1", n-orders)
	}
}

// logFieldTime reads a time field of a log entry: seconds since the epoch,
// or RFC 3339.
func logFieldTime(t *testing.T, v any) time.Time {
	t.Helper()
	switch v := v.(type) {
	case float64:
		return unixTime(v)
	case string:
		at, err := time.Parse(time.RFC3339Nano, v)
		if err == nil {
			return at
		}
	}
	t.Fatalf("log time %v", v)
	return time.Time{}
}
