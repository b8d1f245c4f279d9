package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// node is one Caddy of a cluster sharing storage.
type node struct {
	caddy                          *caddyProcess
	httpPort, httpsPort, adminPort int
}

func startNode(t *testing.T, n *node, be *backend, acme *acmeCA, originPort int, caFile string) {
	t.Helper()
	n.caddy = startCaddyOf(t, be.bin, "caddyfile", multiTenantConfig(multiTenantPorts{n.adminPort, n.httpPort, n.httpsPort},
		be.option, acme, originPort, caFile, "storage_refresh_interval 200ms"))
}

// admin sends a request to the node's admin endpoint.
func (n *node) admin(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	return adminRequest(t, n.adminPort, method, path, body)
}

// adminRequest sends a request to the admin endpoint on port.
func adminRequest(t testing.TB, port int, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := controlClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// waitTenants waits until the node has loaded a registry of n tenants
// from storage.
func (n *node) waitTenants(t *testing.T, count int) {
	t.Helper()
	n.caddy.waitLog(t, "tenant registry loaded", func(e map[string]any) bool {
		return e["tenants"] == float64(count) && (e["cause"] == "storage" || e["cause"] == "admin_api")
	})
}

// TestAdminAPIAndCluster: tenants added through one node's admin API
// are served by another node that shares the storage, each domain is
// ordered once, and removed tenants are refused; on file_system and on
// Redis storage.
func TestAdminAPIAndCluster(t *testing.T) { forEachBackend(t, testAdminAPIAndCluster) }

func testAdminAPIAndCluster(t *testing.T, kind string) {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	a, b := &node{}, &node{}
	for _, n := range []*node{a, b} {
		n.httpPort, n.httpsPort, n.adminPort = freePort(t), freePort(t), freePort(t)
	}
	// Pebble validates against node a; node b's challenges are answered
	// by node a through the shared storage.
	acme := startPebble(t, a.httpPort, a.httpsPort)
	be := newBackend(t, kind, dir)
	startNode(t, a, be, acme, origin.Port(), caFile)
	startNode(t, b, be, acme, origin.Port(), caFile)
	roots := acme.issuingRoots(t)

	// bad input: 400 naming the field, nothing stored
	for _, tc := range []struct{ path, body, field string }{
		{"/linktrack/tenants/shop.brand-x.test", `{"provider": "customerio", "region": "ap"}`, "region 'ap'"},
		{"/linktrack/tenants/shop.brand-x.test", `{"origin": "nope"}`, "origin: no origin named 'nope'"},
		{"/linktrack/tenants/shop.brand-x.test", `{"origin": "esp", "colour": "red"}`, `unknown field \"colour\"`},
		{"/linktrack/tenants/shop.brand-x.test", `{"domain": "other.brand-x.test", "origin": "esp"}`, "domain: 'other.brand-x.test' in the body differs"},
		{"/linktrack/tenants/203.0.113.1", `{"origin": "esp"}`, "domain: '203.0.113.1' is an IP address"},
		{"/linktrack/tenants/shop.brand-x.test", `{}`, "provider or origin is required"},
	} {
		status, body := a.admin(t, "PUT", tc.path, tc.body)
		if status != 400 || !strings.Contains(body, tc.field) {
			t.Errorf("PUT %s %s: %d %s; want 400 naming %q", tc.path, tc.body, status, body, tc.field)
		}
	}

	// add on node a
	// its certificate is pending: it is being obtained in the background
	status, body := a.admin(t, "PUT", "/linktrack/tenants/Shop.Brand-X.test", `{"origin": "esp"}`)
	if status != 201 || !strings.Contains(body, `"domain":"shop.brand-x.test"`) || !strings.Contains(body, `"source":"storage"`) ||
		!strings.Contains(body, `"certificate":{"status":"pending"}`) {
		t.Fatalf("PUT: %d %s", status, body)
	}
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/shop.brand-x.test", `{"origin": "esp"}`); status != 200 {
		t.Errorf("PUT again: %d %s; want 200", status, body)
	}

	// node b serves it after its refresh; the certificate is ordered once
	b.waitTenants(t, 1)
	click := func(n *node, domain string) (int, error) {
		c, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", n.httpsPort), &tls.Config{RootCAs: roots, ServerName: domain})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		res, err := c.Do(standin.RawRequest{Method: "GET", Target: "/ls/click", Host: domain}, 60*time.Second)
		if err != nil {
			return 0, err
		}
		return res.Status, nil
	}
	for _, n := range []*node{b, a} {
		if status, err := click(n, "shop.brand-x.test"); err != nil || status != 302 {
			t.Fatalf("click through node on port %d: %v %d", n.httpsPort, err, status)
		}
	}
	acme.settle(t)
	if n := acme.orders(); n != 1 {
		t.Errorf("pebble received %d orders for one domain served by two nodes", n)
	}
	if be.redis != nil {
		// the certificate is in Redis, where node b found it
		c := be.redis.Client()
		keys, err := c.Keys(context.Background(), "caddy/certificates/*/shop.brand-x.test/shop.brand-x.test.crt").Result()
		c.Close()
		if err != nil || len(keys) != 1 {
			t.Errorf("certificate keys in Redis: %q %v, want one", keys, err)
		}
	}
	rec, err := origin.Next(10 * time.Second)
	if err != nil || rec.Values("Host")[0] != "shop.brand-x.test" {
		t.Errorf("origin: %v %v", err, rec)
	}

	// the tenant's view includes its certificate state
	status, body = a.admin(t, "GET", "/linktrack/tenants/shop.brand-x.test", "")
	var view struct {
		Domain, Origin, Source string
		Certificate            struct{ Status, NotAfter string } `json:"certificate"`
	}
	_ = json.Unmarshal([]byte(body), &view)
	if status != 200 || view.Origin != "esp" || view.Certificate.Status != "valid" || !strings.Contains(body, `"not_after"`) {
		t.Errorf("GET tenant: %d %s", status, body)
	}
	status, body = b.admin(t, "GET", "/linktrack/tenants", "")
	if status != 200 || !strings.Contains(body, "shop.brand-x.test") {
		t.Errorf("GET list on node b: %d %s", status, body)
	}

	// a failed issuance shows as the tenant's certificate error
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/"+pebbleBlockedDomain, `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT blocked: %d %s", status, body)
	}
	// certmagic retries in the background; the first failure is enough
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if conn, err := tls.DialWithDialer(dialer, "tcp", fmt.Sprintf("127.0.0.1:%d", a.httpsPort), &tls.Config{RootCAs: roots, ServerName: pebbleBlockedDomain}); err == nil {
		conn.Close()
		t.Errorf("a domain the CA refuses got a certificate")
	}
	a.caddy.waitLog(t, "could not get certificate from issuer", func(e map[string]any) bool {
		return e["identifier"] == pebbleBlockedDomain
	})
	status, body = a.admin(t, "GET", "/linktrack/tenants/"+pebbleBlockedDomain, "")
	if status != 200 || !strings.Contains(body, `"status":"pending"`) || !strings.Contains(body, `"failed_at"`) || !strings.Contains(body, `"next_try"`) {
		t.Errorf("GET tenant after a failed issuance: %d %s", status, body)
	}
	// clicks during the cooldown order nothing (while certmagic still
	// holds the failed order, a click waits on it, so keep them short)
	for range 10 {
		dialer := &net.Dialer{Timeout: time.Second}
		if conn, err := tls.DialWithDialer(dialer, "tcp", fmt.Sprintf("127.0.0.1:%d", a.httpsPort), &tls.Config{RootCAs: roots, ServerName: pebbleBlockedDomain}); err == nil {
			conn.Close()
			t.Fatal("a domain in cooldown got a certificate")
		}
	}
	a.caddy.settle(t, a.adminPort)
	obtaining := 0
	for _, e := range a.caddy.logEntriesNamed("obtaining certificate") {
		if e["identifier"] == pebbleBlockedDomain {
			obtaining++
		}
	}
	if obtaining != 1 {
		t.Errorf("%d issuance attempts for a domain in cooldown, want 1", obtaining)
	}
	if status, body := a.admin(t, "DELETE", "/linktrack/tenants/"+pebbleBlockedDomain, ""); status != 204 {
		t.Fatalf("DELETE blocked: %d %s", status, body)
	}

	// a removed tenant's certificate, obtained in the background, is no
	// longer served by either node
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/gone.brand-x.test", `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT gone: %d %s", status, body)
	}
	a.caddy.waitLogFor(t, time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == "gone.brand-x.test" })
	b.caddy.waitLog(t, "tenant added", func(e map[string]any) bool { return e["domain"] == "gone.brand-x.test" })
	if status, err := click(b, "gone.brand-x.test"); err != nil || status != 302 {
		t.Fatalf("click before removal: %v %d", err, status)
	}
	for _, d := range []string{"shop.brand-x.test", "gone.brand-x.test"} {
		if status, body := a.admin(t, "DELETE", "/linktrack/tenants/"+d, ""); status != 204 {
			t.Fatalf("DELETE %s: %d %s", d, status, body)
		}
	}
	if status, _ := a.admin(t, "DELETE", "/linktrack/tenants/gone.brand-x.test", ""); status != 404 {
		t.Errorf("DELETE of a removed tenant: %d, want 404", status)
	}
	b.waitTenants(t, 0)
	acme.settle(t)
	ordersBefore, originBefore := acme.orders(), origin.Count()
	for _, n := range []*node{a, b} {
		for _, d := range []string{"shop.brand-x.test", "gone.brand-x.test"} {
			if status, err := click(n, d); err == nil {
				t.Errorf("removed tenant %s: its certificate was served through node on port %d (status %d)", d, n.httpsPort, status)
			}
		}
	}
	acme.settle(t)
	if n := acme.orders() - ordersBefore; n != 0 {
		t.Errorf("removed tenants caused %d orders", n)
	}
	if n := origin.Count() - originBefore; n != 0 {
		t.Errorf("removed tenants reached the origin %d times", n)
	}
}
