package integration

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

var certCache = flag.Bool("certcache", false, "run the certificate cache measurement: 1,000 and 100,000 tenants issued in the background")

// cacheCapacity is certmagic's certificate cache capacity, Caddy's
// default, set explicitly.
const cacheCapacity = 10000

// TestCertificateCache issues every tenant's certificate in the
// background from Caddy's internal CA, for 1,000 and then 100,000
// tenants, and reports Caddy's RSS and the handshake time of
// certificates that the bounded cache evicted and loads again from
// storage. Not run in CI:
//
//	go test ./integration -run TestCertificateCache -certcache -v -timeout 60m
func TestCertificateCache(t *testing.T) {
	if !*certCache {
		t.Skip("measurement; run with -certcache")
	}
	var rows []string
	for _, n := range []int{1000, 100000} {
		rows = append(rows, measureCertificateCache(t, n))
	}
	t.Logf("%-8s %12s %12s %14s %14s %14s", "tenants", "issued in", "RSS MiB", "load p50", "load p90", "cached p50")
	for _, row := range rows {
		t.Log(row)
	}
}

func measureCertificateCache(t *testing.T, tenants int) string {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	domains := make([]string, tenants)
	for i := range domains {
		domains[i] = fmt.Sprintf("t%06d.scale.test", i)
	}
	tenantsFile := filepath.Join(dir, "tenants.json")
	writeTenantsFile(t, tenantsFile, domains...)
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	storage file_system %s
	log {
		exclude tls http pki events linktrack.certificates linktrack.pre_issuance
	}
	on_demand_tls {
		permission linktrack
	}
	linktrack {
		origin esp https://localhost:%d {
			tls_trust_pool file %s
		}
		tenants_file %s
		order_limit 1000000 1h
		registered_domain_limit 1000000 1h
	}
}

https:// {
	tls {
		on_demand
		issuer internal
	}
	linktrack
}
`, ports.admin, ports.http, ports.https, filepath.Join(dir, "storage"), origin.Port(), caFile, tenantsFile)
	start := time.Now()
	p := startCaddyCacheCapacity(t, caddyfile, cacheCapacity)
	deadline := time.Now().Add(40 * time.Minute)
	for metricValue(scrapeMetrics(t, ports.admin), `caddy_linktrack_certificate_events_total{event="obtained"}`) < float64(tenants) {
		if time.Now().After(deadline) {
			t.Fatalf("%d tenants: not all issued in 40 minutes", tenants)
		}
		time.Sleep(time.Second) // pause between progress probes
	}
	issuedIn := time.Since(start)
	rss := rssKiB(t, p.cmd.Process.Pid)

	// the first 200 tenants were issued first: with more tenants than
	// the cache holds, most have been evicted and load from storage
	handshake := func(domain string) time.Duration {
		began := time.Now()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp",
			fmt.Sprintf("127.0.0.1:%d", ports.https), &tls.Config{ServerName: domain, InsecureSkipVerify: true})
		took := time.Since(began)
		if err != nil {
			t.Fatalf("handshake for %s: %v", domain, err)
		}
		defer conn.Close()
		if err := conn.ConnectionState().PeerCertificates[0].VerifyHostname(domain); err != nil {
			t.Fatalf("handshake for %s: %v", domain, err)
		}
		return took
	}
	sample := domains[:200]
	var loaded, cached []time.Duration
	for _, d := range sample {
		loaded = append(loaded, handshake(d))
	}
	for _, d := range sample {
		cached = append(cached, handshake(d))
	}
	slices.Sort(loaded)
	slices.Sort(cached)
	if rss > 1<<20 {
		t.Errorf("%d tenants: RSS %d MiB, want under 1 GiB", tenants, rss>>10)
	}
	if n := len(p.logEntriesNamed("tenant certificate failed")); n != 0 {
		t.Errorf("%d tenants: %d issuances failed", tenants, n)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	row := fmt.Sprintf("%-8d %12s %12d %14s %14s %14s", tenants, issuedIn.Round(time.Second), rss>>10,
		ms(loaded[len(loaded)/2]), ms(loaded[len(loaded)*9/10]), ms(cached[len(cached)/2]))
	t.Log(strings.TrimSpace(row))
	p.stop()
	return row
}

// startCaddyCacheCapacity runs a Caddyfile with the certificate cache
// capacity set, which the Caddyfile has no option for: it adapts the
// Caddyfile to JSON and sets apps.tls.cache.capacity there.
func startCaddyCacheCapacity(t *testing.T, caddyfile string, capacity int) *caddyProcess {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	adapted, err := caddyCmd(t, "adapt", "--config", path).Output()
	if err != nil {
		t.Fatalf("caddy adapt: %v", err)
	}
	var config map[string]any
	if err := json.Unmarshal(adapted, &config); err != nil {
		t.Fatal(err)
	}
	config["apps"].(map[string]any)["tls"].(map[string]any)["cache"] = map[string]any{"capacity": capacity}
	raw, _ := json.Marshal(config)
	return startCaddy(t, "json", string(raw))
}
