package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/redisstorage"
	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

var (
	redisStartup        = flag.Bool("redisstartup", false, "run the start-up from Redis measurement: one node starting on 100,000 stored tenants and their certificates in Redis")
	redisStartupTenants = flag.Int("redisstartup-tenants", 100000, "tenants (and certificates) TestRedisStartup stores in Redis before the node starts")
)

// redisStartupWorkers is how many goroutines write the certificates
// into Redis through the storage module at once.
const redisStartupWorkers = 16

// TestRedisStartup measures a node's start-up on a Redis storage that
// already holds -redisstartup-tenants tenants (one change of the tenant
// store, compacted) and a certificate for each of them, with its key and
// metadata, in certmagic's key layout under the Pebble issuer's key, as
// if it had obtained them: every leaf is a distinct certificate signed
// by the test CA, and they all share one private key. Everything is
// written through the test Redis storage module's Go API. The node runs
// with pre-issuance on (the default), so that at start it reads every
// stored certificate of a tenant to learn its expiry before its first
// sweep. It reports, from the start of the Caddy process: the log line
// "tenant registry loaded" with every tenant, the first 302 of an HTTPS
// click on the last tenant, served with its stored certificate (verified
// against the test CA, so not one from Pebble), the end of the startup
// certificate scan (logged as "obtaining tenants' certificates in the
// background", which follows it) and certmagic's storage clean. Figures
// are printed, not asserted; a click not served, a certificate not from
// storage, an ACME order or a failed tenant certificate fails the test.
// Not run in CI:
//
//	go test ./integration -run TestRedisStartup -redisstartup -v -count=1 -timeout 30m
func TestRedisStartup(t *testing.T) {
	if !*redisStartup {
		t.Skip("measurement; run with -redisstartup")
	}
	n := *redisStartupTenants
	if n < 1 {
		t.Fatalf("-redisstartup-tenants %d: want at least 1", n)
	}
	ctx := context.Background()
	dir := t.TempDir()
	be := newBackend(t, "redis", dir)
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	issuerKey := (&certmagic.ACMEIssuer{CA: acme.directory}).IssuerKey()

	// the test's own client of the module, with a timeout long enough
	// for the snapshot of the tenant store
	st := redisstorage.New(&redisstorage.Storage{Address: be.redis.Addr(), Timeout: caddy.Duration(30 * time.Second)})
	defer st.Close()
	domains := make([]string, n)
	for i := range domains {
		domains[i] = storeBenchDomain(i)
	}
	last := domains[n-1]

	began := time.Now()
	snapshotBytes := populateStoreOn(t, st, n)
	tenantsStored := time.Since(began)
	t.Logf("%d tenants stored in Redis in %s, snapshot %.1f MB", n, tenantsStored.Round(time.Millisecond), float64(snapshotBytes)/1e6)

	began = time.Now()
	writeCertificates(t, issuerKey, ca, domains, 90*24*time.Hour, redisStartupWorkers, func(key string, value []byte) error {
		return st.Store(ctx, key, value)
	})
	certsStored := time.Since(began)
	sites, err := st.List(ctx, certmagic.StorageKeys.CertsPrefix(issuerKey), false)
	if err != nil || len(sites) != n {
		t.Fatalf("Redis lists %d certificate directories under %s, want %d (%v)", len(sites), certmagic.StorageKeys.CertsPrefix(issuerKey), n, err)
	}
	t.Logf("%d certificates (chain, key, metadata) stored in Redis in %s", n, certsStored.Round(time.Millisecond))
	redisKeys, redisMemory := redisStats(t, be)
	runtime.GC()

	config := multiTenantConfig(ports, be.option, acme, origin.Port(), caFile, "pre_issuance on")
	start := time.Now()
	p := startCaddyOf(t, be.bin, "caddyfile", config)
	listening := time.Since(start)

	// the first HTTPS click on the last tenant answered 302
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", ports.https)
	var clicked time.Duration
	var lastErr error
	deadline := time.Now().Add(5 * time.Minute)
	for {
		status, leaf, err := redisStartupClick(httpsAddr, last, ca)
		if err == nil && status == 302 {
			clicked = time.Since(start)
			if leaf.Issuer.CommonName != ca.Cert.Subject.CommonName || leaf.NotAfter.Sub(leaf.NotBefore) != 90*24*time.Hour {
				t.Fatalf("%s served a certificate issued by %q for %s, not the stored one", last, leaf.Issuer.CommonName, leaf.NotAfter.Sub(leaf.NotBefore))
			}
			break
		}
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("no 302 for an HTTPS click on %s after 5 minutes: %v", last, lastErr)
		}
		time.Sleep(10 * time.Millisecond) // pause between clicks
	}

	logged := func(msg string, timeout time.Duration, match func(map[string]any) bool) time.Duration {
		t.Helper()
		return logTime(p.waitLogFor(t, timeout, msg, match)).Sub(start)
	}
	loaded := logged("tenant registry loaded", time.Minute, func(e map[string]any) bool {
		return e["tenants"] == float64(n) && e["cause"] == "config"
	})
	serving := logged("serving initial configuration", time.Minute, nil)
	scanned := logged("obtaining tenants' certificates in the background", 10*time.Minute, nil)
	cleaned := time.Duration(-1)
	if at, ok := certScaleLogTime(p, "finished cleaning storage units", 5*time.Minute); ok {
		cleaned = at.Sub(start)
	}
	// the scan read the stored certificates: the expiry metric shows
	// one of them, valid 90 days from an hour ago
	expiry := metricValue(scrapeMetrics(t, ports.admin), "caddy_linktrack_certificate_expiry_seconds")
	if left := 90*24*time.Hour - time.Hour; expiry < (left-time.Hour).Seconds() || expiry > left.Seconds() {
		t.Errorf("after the scan, the soonest expiry is %v s away, want about %v s: the stored certificates", expiry, left.Seconds())
	}
	rss := rssKiB(t, p.cmd.Process.Pid)

	acme.settle(t)
	p.settle(t, ports.admin)
	orders := acme.orders()
	failures := len(p.logEntriesNamed("tenant certificate failed"))
	handshakeFailures := len(p.logEntriesNamed("background handshake failed"))
	if orders != 0 || failures != 0 || handshakeFailures != 0 {
		t.Errorf("every certificate was in Redis, yet Pebble received %d orders, Caddy logged %d tenant certificate failures and %d failed background handshakes", orders, failures, handshakeFailures)
	}

	seconds := func(d time.Duration) string {
		if d < 0 {
			return "not logged in 5 min"
		}
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s tenants and certificates in Redis (redis-server on loopback), pre_issuance on, GOMAXPROCS %d\n", thousands(n), runtime.GOMAXPROCS(0))
	b.WriteString("| measure | goal | figure |\n|---|---|---:|\n")
	for _, row := range [][3]string{
		{"tenant store written by the test (1 change + compaction)", "", fmt.Sprintf("%s, snapshot %.1f MB", seconds(tenantsStored), float64(snapshotBytes)/1e6)},
		{fmt.Sprintf("certificates written by the test (chain, key, metadata; %d writers)", redisStartupWorkers), "", seconds(certsStored)},
		{"Redis: keys / memory used", "", fmt.Sprintf("%s / %s", thousands(redisKeys), redisMemory)},
		{"start: listeners bound (startCaddy returned)", "", seconds(listening)},
		{"start: \"tenant registry loaded\" with every tenant", "≤ 10 s", seconds(loaded)},
		{"start: \"serving initial configuration\"", "", seconds(serving)},
		{"start: first 302 for an HTTPS click on the last tenant, stored certificate", "≤ 10 s", seconds(clicked)},
		{"start: certificate scan done (pre-issuance begins)", "≤ 10 s", seconds(scanned)},
		{"start: certmagic storage clean done", "", seconds(cleaned)},
		{"RSS at the end", "", fmt.Sprintf("%d MiB", rss>>10)},
		{"ACME orders / tenant certificate failures", "0 / 0", fmt.Sprintf("%d / %d", orders, failures)},
	} {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", row[0], row[1], row[2])
	}
	t.Log(b.String())
}

// redisStartupClick sends one HTTPS click for domain to addr, verifying
// the certificate against ca and for domain, and returns the status and
// the leaf served.
func redisStartupClick(addr, domain string, ca *standin.CA) (int, *x509.Certificate, error) {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "tcp", addr)
			},
			TLSClientConfig:   &tls.Config{ServerName: domain, RootCAs: ca.Pool},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	res, err := client.Get("https://" + domain + "/ls/click")
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, res.TLS.PeerCertificates[0], nil
}

// redisStats returns the number of keys in the backend's Redis and the
// memory it uses, as INFO says it.
func redisStats(t *testing.T, be *backend) (int, string) {
	t.Helper()
	c := be.redis.Client()
	defer c.Close()
	ctx := context.Background()
	keys, err := c.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	memory := "?"
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory_human:"); ok {
			memory = v
		}
	}
	return int(keys), memory
}
