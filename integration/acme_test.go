package integration

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// TestACMEHTTP01WhileProxyingPort80 gets a real certificate from Pebble
// through the HTTP-01 challenge on the very port where linktrack proxies
// plain-HTTP clicks, then proxies a click over HTTPS with it.
func TestACMEHTTP01WhileProxyingPort80(t *testing.T) {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response {
		return redirectResponse()
	})

	httpPort, httpsPort, adminPort := freePort(t), freePort(t), freePort(t)
	acme := startPebble(t, httpPort, httpsPort)

	caddy := startCaddy(t, "caddyfile", fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	storage file_system %s
	servers {
		protocols h1 h2
	}
	cert_issuer acme {
		dir %s
		trusted_roots %s
		disable_tlsalpn_challenge
	}
}

%s, http://%s {
	linktrack {
		upstream https://localhost:%d
		tls_trust_pool file %s
	}
}
`, adminPort, httpPort, httpsPort, filepath.Join(dir, "storage"), acme.directory, acme.minicaRoot,
		trackingDomain, trackingDomain, origin.Port(), caFile))

	caddy.waitLogFor(t, 90*time.Second, "certificate obtained successfully", func(e map[string]any) bool {
		return e["identifier"] == trackingDomain
	})
	caddy.waitLog(t, "trying to solve challenge", func(e map[string]any) bool {
		return e["challenge_type"] == "http-01" && e["identifier"] == trackingDomain
	})
	if n := origin.Count(); n != 0 {
		t.Errorf("origin received %d requests during issuance; challenges must be answered by Caddy", n)
	}

	// HTTPS with the issued certificate, verified against Pebble's root.
	// certmagic logs the certificate obtained just before it caches it;
	// until then a handshake gets an internal error alert.
	clientTLS := &tls.Config{RootCAs: acme.issuingRoots(t), ServerName: trackingDomain}
	var c *standin.RawClient
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err = standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", httpsPort), clientTLS)
		if err == nil || !strings.Contains(err.Error(), "internal error") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("TLS with the ACME certificate: %v", err)
	}
	defer c.Close()
	res, err := c.Do(standin.RawRequest{Method: "GET", Target: "/ls/click?upn=x%2Fy", Host: trackingDomain}, 30*time.Second)
	if err != nil || res.Status != 302 {
		t.Fatalf("HTTPS click: %v %v", err, res)
	}
	rec, err := origin.Next(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Target != "/ls/click?upn=x%2Fy" || !slices.Equal(rec.Values("Host"), []string{trackingDomain}) {
		t.Errorf("origin got %q Host %q", rec.RequestLine, rec.Values("Host"))
	}

	// and port 80 still proxies old links
	plain, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", httpPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	res, err = plain.Do(standin.RawRequest{Method: "GET", Target: "/ls/click?upn=old", Host: trackingDomain}, 30*time.Second)
	if err != nil || res.Status != 302 {
		t.Fatalf("HTTP click: %v %v", err, res)
	}
}
