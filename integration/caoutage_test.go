package integration

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// TestCAOutage: while the ACME CA is down, issued certificates keep
// serving and a new tenant's handshake is refused at once instead of
// waiting on the CA; once the CA is back, the new tenant gets its
// certificate with no click.
func TestCAOutage(t *testing.T) {
	t.Parallel() // mostly waits on the cooldown
	const issued, added = "up.shop.test", "new.shop.test"
	r := newTenantRig(t, "issuance_cooldown 20s", issued)
	r.caddy.waitLogFor(t, time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == issued })
	roots := r.acme.issuingRoots(t)

	r.acme.stop()
	if res, err := r.get(issued, issued, roots); err != nil || res.Status != 302 {
		t.Fatalf("click on a tenant with a certificate while the CA is down: %v %v", err, res)
	}

	if status, body := adminRequest(t, r.adminPort, "PUT", "/linktrack/tenants/"+added, `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT %s: %d %s", added, status, body)
	}
	r.caddy.waitLogFor(t, time.Minute, "tenant certificate failed", func(e map[string]any) bool { return e["domain"] == added })
	if c := r.certificate(t, added); c.Status != "pending" || !strings.Contains(c.Error, "connection refused") {
		t.Errorf("certificate of %s while the CA is down: %+v, want pending with the CA's error", added, c)
	}
	// refused with a TLS alert, not held until the client gives up: Go's
	// TLS server sends internal_error when Caddy has no certificate to
	// hand it
	dialer := &net.Dialer{Timeout: 30 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", fmt.Sprintf("127.0.0.1:%d", r.httpsPort), &tls.Config{RootCAs: roots, ServerName: added})
	if err == nil {
		conn.Close()
		t.Fatal("a new tenant got a certificate while the CA is down")
	}
	if alert := receivedAlert(err); alert != "tls: internal error" {
		t.Errorf("a new tenant's handshake while the CA is down ended with %v; want the TLS alert internal_error", err)
	}

	r.acme.launch(t)
	r.caddy.waitLogFor(t, 3*time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == added })
	newRoots := r.acme.issuingRoots(t)
	if res, err := r.get(added, added, newRoots); err != nil || res.Status != 302 {
		t.Errorf("click on %s once the CA is back: %v %v", added, err, res)
	}
	if res, err := r.get(issued, issued, roots); err != nil || res.Status != 302 {
		t.Errorf("click on %s once the CA is back: %v %v", issued, err, res)
	}
}

// receivedAlert returns the TLS alert that ended a failed handshake, as
// "tls: internal error", or "" if something else ended it.
func receivedAlert(err error) string {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" {
		return opErr.Err.Error()
	}
	return ""
}

// TestSecondIssuer: with two issuers named, as in the README's
// multi-tenant config, a first CA that is down does not stop issuance.
func TestSecondIssuer(t *testing.T) {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	config := multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, "tenant two.shop.test esp")
	issuers := fmt.Sprintf(`cert_issuer acme {
		dir https://127.0.0.1:%d/dir
	}
	cert_issuer acme {
		dir %s
		trusted_roots %s
	}`, freePort(t), acme.directory, acme.minicaRoot)
	before := fmt.Sprintf("acme_ca %s\n\tacme_ca_root %s", acme.directory, acme.minicaRoot)
	if !strings.Contains(config, before) {
		t.Fatalf("config lacks %q", before)
	}
	p := startCaddy(t, "caddyfile", strings.Replace(config, before, issuers, 1))
	p.waitLogFor(t, time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == "two.shop.test" })
	acme.settle(t)
	if n := acme.orders(); n != 1 {
		t.Errorf("the second CA received %d orders, want 1", n)
	}
}
