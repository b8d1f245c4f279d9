package integration

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// certificateView is a tenant's certificate state in the admin API.
type certificateView struct {
	Status   string    `json:"status"`
	NotAfter time.Time `json:"not_after"`
	Error    string    `json:"error"`
	FailedAt time.Time `json:"failed_at"`
	NextTry  time.Time `json:"next_try"`
}

// certificate returns the tenant's certificate state from the admin API.
func (r *tenantRig) certificate(t testing.TB, domain string) certificateView {
	t.Helper()
	status, body := adminRequest(t, r.adminPort, "GET", "/linktrack/tenants/"+domain, "")
	var view struct {
		Certificate certificateView `json:"certificate"`
	}
	if err := json.Unmarshal([]byte(body), &view); status != 200 || err != nil {
		t.Fatalf("GET %s: %d %s", domain, status, body)
	}
	return view.Certificate
}

// countLog counts the entries with the message msg whose field equals
// value.
func countLog(p *caddyProcess, msg, field, value string) int {
	n := 0
	for _, e := range p.logEntriesNamed(msg) {
		if e[field] == value {
			n++
		}
	}
	return n
}

// TestPreIssuance: tenants' certificates are obtained in the background
// as soon as they are added, so that no first click waits for an order;
// a tenant whose challenge fails cools down, clicks during its cooldown
// order nothing, and it becomes valid once its challenge can pass.
func TestPreIssuance(t *testing.T) {
	t.Parallel() // mostly waits on cooldowns and certmagic's order limiter
	var domains []string
	for i := 1; i <= 50; i++ {
		domains = append(domains, fmt.Sprintf("link%d.shop%d.test", i, i%9))
	}
	r := newTenantRig(t, "issuance_cooldown 20s", domains...)

	// 50 tenants of the tenants file are issued with no client traffic
	r.caddy.waitLogCount(t, 3*time.Minute, "tenant certificate obtained", len(domains), nil)
	r.acme.settle(t)
	// an order that failed (rare with Pebble) is placed again when its
	// cooldown ends
	failedFirst := len(r.caddy.logEntriesNamed("tenant certificate failed"))
	if n := r.acme.orders(); n < len(domains) || (failedFirst == 0 && n != len(domains)) {
		t.Errorf("pebble received %d orders for %d tenants, with %d failures", n, len(domains), failedFirst)
	}
	if n := r.origin.Count(); n != 0 {
		t.Errorf("origin got %d requests with no client traffic", n)
	}
	if c := r.certificate(t, domains[0]); c.Status != "valid" || c.NotAfter.Before(time.Now().Add(24*time.Hour)) {
		t.Errorf("certificate of %s: %+v, want valid for days", domains[0], c)
	}

	// then their first clicks, 10 at a time: no handshake orders or waits
	// for an order
	roots := r.acme.issuingRoots(t)
	r.acme.settle(t)
	r.caddy.settle(t, r.adminPort)
	orders, onDemand := r.acme.orders(), len(r.caddy.logEntriesNamed("obtaining new certificate"))
	for batch := 0; batch < len(domains); batch += 10 {
		var wg sync.WaitGroup
		for _, d := range domains[batch : batch+10] {
			wg.Go(func() {
				res, err := r.get(d, d, roots)
				if err != nil {
					t.Errorf("first click on %s: %v", d, err)
				} else if res.Status != 302 {
					t.Errorf("first click on %s: status %d", d, res.Status)
				}
			})
		}
		wg.Wait()
	}
	// a handshake that obtained on demand would have ordered and logged
	// before it completed
	r.acme.settle(t)
	r.caddy.settle(t, r.adminPort)
	if n := r.acme.orders() - orders; n != 0 {
		t.Errorf("first clicks caused %d orders", n)
	}
	if n := len(r.caddy.logEntriesNamed("obtaining new certificate")) - onDemand; n != 0 {
		t.Errorf("%d handshakes obtained a certificate on demand", n)
	}
	if n := r.origin.Count(); n != len(domains) {
		t.Errorf("origin got %d requests for %d clicks", n, len(domains))
	}

	// a tenant added through the admin API: pending, then valid without
	// any click
	const added = "late.shop.test"
	status, body := adminRequest(t, r.adminPort, "PUT", "/linktrack/tenants/"+added, `{"origin": "esp"}`)
	if status != 201 || !strings.Contains(body, `"certificate":{"status":"pending"}`) {
		t.Fatalf("PUT %s: %d %s; want 201 with a pending certificate", added, status, body)
	}
	r.caddy.waitLogFor(t, time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == added })
	if c := r.certificate(t, added); c.Status != "valid" || c.NotAfter.IsZero() {
		t.Errorf("certificate of %s: %+v, want valid with an expiry", added, c)
	}

	// a tenant whose DNS does not answer yet: pending with the error and
	// the next try, and 20 clicks during its cooldown order nothing
	const unready = "unready.shop.test"
	r.acme.setServfail(t, unready, true)
	if status, body := adminRequest(t, r.adminPort, "PUT", "/linktrack/tenants/"+unready, `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT %s: %d %s", unready, status, body)
	}
	r.caddy.waitLogFor(t, time.Minute, "tenant certificate failed", func(e map[string]any) bool { return e["domain"] == unready })
	c := r.certificate(t, unready)
	if c.Status != "pending" || c.Error == "" || c.NextTry.Sub(c.FailedAt) != 20*time.Second {
		t.Errorf("certificate of %s after a failed issuance: %+v, want pending with the error and a try 20s later", unready, c)
	}
	r.acme.settle(t)
	orders = r.acme.orders()
	for range 20 {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp",
			fmt.Sprintf("127.0.0.1:%d", r.httpsPort), &tls.Config{RootCAs: roots, ServerName: unready})
		if err == nil {
			conn.Close()
			t.Fatal("a tenant in cooldown got a certificate")
		}
	}
	r.acme.settle(t)
	r.caddy.settle(t, r.adminPort)
	if n := r.acme.orders() - orders; n != 0 {
		t.Errorf("20 clicks during the cooldown caused %d orders", n)
	}
	if n := countLog(r.caddy, "obtaining certificate", "identifier", unready); n != 1 {
		t.Errorf("%d issuance attempts for %s, want 1:\n%s", n, unready, grepLines(r.caddy.logText(), unready))
	}

	// tried again when the cooldown ends, and still failing: the delay
	// doubles
	r.caddy.waitLogCount(t, time.Minute, "tenant certificate failed", 2, func(e map[string]any) bool { return e["domain"] == unready })
	if c := r.certificate(t, unready); c.Status != "pending" || c.NextTry.Sub(c.FailedAt) != 40*time.Second {
		t.Errorf("certificate of %s after a second failure: %+v, want pending with a try 40s later", unready, c)
	}

	// once its DNS answers, the next try gets it a certificate, with no
	// click
	r.acme.setServfail(t, unready, false)
	r.caddy.waitLogFor(t, 2*time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == unready })
	if n := countLog(r.caddy, "obtaining certificate", "identifier", unready); n != 3 {
		t.Errorf("%d issuance attempts for %s, want 3: one per cooldown", n, unready)
	}
	if c := r.certificate(t, unready); c.Status != "valid" {
		t.Errorf("certificate of %s once its DNS answers: %+v, want valid", unready, c)
	}
	if res, err := r.get(unready, unready, roots); err != nil || res.Status != 302 {
		t.Errorf("click on %s: %v %v", unready, err, res)
	}

	metrics := r.metrics(t)
	for _, want := range []string{
		fmt.Sprintf(`caddy_linktrack_certificate_events_total{event="obtained"} %d`, len(domains)+2),
		fmt.Sprintf(`caddy_linktrack_certificate_events_total{event="failed"} %d`, failedFirst+2),
		`caddy_linktrack_tenant_changes_total{change="added"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "caddy_linktrack"))
		}
	}
}

// TestDormantRenewal: a tenant with no clicks gets its certificate
// renewed in the background before it expires; a removed tenant's
// certificate is neither renewed nor served.
func TestDormantRenewal(t *testing.T) {
	t.Parallel() // mostly waits for certificates to age
	const kept, dropped = "kept.shop.test", "dropped.shop.test"
	// certificates valid for a minute are due for renewal after 40s
	r := newTenantRigValidity(t, time.Minute, "renewal_check_interval 2s", kept, dropped)
	for _, d := range []string{kept, dropped} {
		r.caddy.waitLogFor(t, time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == d })
	}
	first := r.certificate(t, kept)
	roots := r.acme.issuingRoots(t)
	// no handshake for dropped before its removal: at a certificate's
	// first handshake certmagic fetches its ARI, and Pebble's window for
	// a one-minute certificate (its whole lifetime) is within certmagic's
	// 10-minute renewal check, so it would start a renewal at once, in
	// the background, racing the removal
	if c := r.certificate(t, dropped); c.Status != "valid" {
		t.Fatalf("certificate of %s before its removal: %+v", dropped, c)
	}

	writeTenantsFile(t, r.tenantsFile, kept)
	removedAt := r.caddy.waitLog(t, "tenant removed", func(e map[string]any) bool { return e["domain"] == dropped })["ts"].(float64)
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.httpsPort), &tls.Config{RootCAs: roots, ServerName: dropped})
	if err == nil {
		conn.Close()
		t.Error("a removed tenant's certificate was served")
	}

	// both certificates fell due together: a sweep that still held the
	// removed tenant would have started its renewal by now
	r.caddy.waitLogFor(t, 2*time.Minute, "tenant certificate renewed", func(e map[string]any) bool { return e["domain"] == kept })
	r.caddy.settle(t, r.adminPort)
	if c := r.certificate(t, kept); c.Status != "valid" || !c.NotAfter.After(first.NotAfter) {
		t.Errorf("certificate of %s after its renewal: %+v, first %+v", kept, c, first)
	}
	if n := countLog(r.caddy, "tenant certificate renewed", "domain", dropped); n != 0 {
		t.Errorf("a removed tenant's certificate was renewed %d times", n)
	}
	for _, msg := range []string{"obtaining certificate", "renewing certificate"} {
		for _, e := range r.caddy.logEntriesNamed(msg) {
			if e["identifier"] == dropped && e["ts"].(float64) > removedAt {
				t.Errorf("%s for %s after its removal", msg, dropped)
			}
		}
	}
	if n := r.origin.Count(); n != 0 {
		t.Errorf("origin got %d requests; no click was made", n)
	}
}

// TestTenantEvents: tenants added and removed, and their certificates,
// are Caddy events that an events handler can subscribe to.
func TestTenantEvents(t *testing.T) {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	config := multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, "")
	// the events app logs every event it emits at debug level
	p := startCaddy(t, "caddyfile", strings.Replace(config, "\tskip_install_trust", "\tdebug\n\tskip_install_trust", 1))

	const domain = "evented.shop.test"
	if status, body := adminRequest(t, ports.admin, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT: %d %s", status, body)
	}
	event := func(name, origin, field string) {
		t.Helper()
		p.waitLogFor(t, time.Minute, "event", func(e map[string]any) bool {
			data, _ := e["data"].(map[string]any)
			return e["name"] == name && e["origin"] == origin && data != nil && data[field] == domain
		})
	}
	event("tenant_added", "linktrack", "domain")
	event("cert_obtaining", "tls", "identifier")
	event("cert_obtained", "tls", "identifier")
	if status, body := adminRequest(t, ports.admin, "DELETE", "/linktrack/tenants/"+domain, ""); status != 204 {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	event("tenant_removed", "linktrack", "domain")
	added := p.waitLog(t, "event", func(e map[string]any) bool { return e["name"] == "tenant_added" })
	if data := added["data"].(map[string]any); data["origin"] != "esp" || data["source"] != "storage" || data["cause"] != "admin_api" {
		t.Errorf("tenant_added data: %v", data)
	}
}

// TestReloadKeepsCertificateState: a config reload keeps a failing
// tenant's cooldown, and a tenant the reload removes is refused at the
// handshake although certmagic still caches its certificate.
func TestReloadKeepsCertificateState(t *testing.T) {
	t.Parallel() // mostly waits on Caddy and Pebble
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	const kept, dropped, unready = "a.reload.test", "b.reload.test", "c.reload.test"
	acme.setServfail(t, unready, true)
	config := func(tenants ...string) string {
		app := "issuance_cooldown 10m"
		for _, d := range tenants {
			app += "\n\t\ttenant " + d + " esp"
		}
		return multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, app)
	}
	p := startCaddy(t, "caddyfile", config(kept, dropped, unready))
	for _, d := range []string{kept, dropped} {
		p.waitLogFor(t, time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == d })
	}
	p.waitLogFor(t, time.Minute, "tenant certificate failed", func(e map[string]any) bool { return e["domain"] == unready })
	certificate := func(domain string) certificateView {
		t.Helper()
		status, body := adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+domain, "")
		var view struct {
			Certificate certificateView `json:"certificate"`
		}
		if err := json.Unmarshal([]byte(body), &view); status != 200 || err != nil {
			t.Fatalf("GET %s: %d %s", domain, status, body)
		}
		return view.Certificate
	}
	before := certificate(unready)
	roots := acme.issuingRoots(t)
	handshake := func(domain string) error {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports.https), &tls.Config{RootCAs: roots, ServerName: domain})
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := handshake(dropped); err != nil {
		t.Fatalf("handshake for %s before the reload: %v", dropped, err)
	}

	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/load", ports.admin), strings.NewReader(config(kept, unready)))
	req.Header.Set("Content-Type", "text/caddyfile")
	res, err := controlClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("reload: status %d", res.StatusCode)
	}
	p.waitLog(t, "tenant removed", func(e map[string]any) bool { return e["domain"] == dropped })

	// Caddy does not promise that the connections made once /load returns
	// reach the new config: its HTTP app's Stop returns when the old
	// servers' shutdowns have started, not when they have closed their
	// SO_REUSEPORT sockets, and until then the kernel spreads connections
	// over the old and new sockets. The old config's TLS app serves the
	// certificate certmagic still caches, its canceled events app invoking
	// no handler. So wait for the new config to refuse the removed tenant:
	// a TLS alert from the server, not a connection the old socket's
	// closing reset.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := handshake(dropped)
		var alert *net.OpError
		if errors.As(err, &alert) && alert.Op == "remote error" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, removed by the reload, not refused by the new config within 10s (last handshake: %v)", dropped, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := handshake(kept); err != nil {
		t.Errorf("handshake for %s after the reload: %v", kept, err)
	}
	if after := certificate(unready); after.Status != "pending" || !after.NextTry.Equal(before.NextTry) {
		t.Errorf("certificate of %s after the reload: %+v; before it: %+v", unready, after, before)
	}
	if err := handshake(unready); err == nil {
		t.Errorf("%s got a certificate during its cooldown", unready)
	}
	p.settle(t, ports.admin)
	if n := countLog(p, "obtaining certificate", "identifier", unready); n != 1 {
		t.Errorf("%d issuance attempts for %s, want 1: the reload forgot its cooldown", n, unready)
	}
}
