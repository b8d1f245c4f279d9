package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

var certScale = flag.Bool("certscale", false, "run the certificate scale measurement: 1,000 and 100,000 tenants whose certificates are already in storage")

// certScaleSample is how many tenants each timed handshake sample holds.
const certScaleSample = 200

// allowedDecisions counts the permission module's allowed decisions.
// certmagic asks it before it loads a certificate from storage, never for
// one in its cache: with every certificate in storage and no order, it
// counts the certificates loaded from storage.
const allowedDecisions = `caddy_linktrack_certificate_decisions_total{decision="allowed"}`

// TestCertificateScale serves 1,000 and then 100,000 tenants whose
// certificates are all in storage already, as a Pebble account would have
// obtained them, with the certificate cache at Caddy's default capacity
// of 10,000, set explicitly. It handshakes with 1,000 and then 30,000
// distinct tenants and reports Caddy's RSS, and the handshake time of
// certificates served from the cache and of those the full cache evicted,
// loaded again from storage. No ACME order is placed. Not run in CI:
//
//	go test ./integration -run TestCertificateScale -certscale -v -count=1 -timeout 30m
func TestCertificateScale(t *testing.T) {
	if !*certScale {
		t.Skip("measurement; run with -certscale")
	}
	var results []*certScaleResult
	for _, phase := range []struct{ tenants, handshakes int }{{1000, 1000}, {100000, 30000}} {
		t.Run(fmt.Sprintf("%d_tenants", phase.tenants), func(t *testing.T) {
			r := &certScaleResult{tenants: phase.tenants, handshakes: phase.handshakes}
			results = append(results, r)
			measureCertificateScale(t, r)
		})
	}
	logCertScaleTable(t, results)
}

// certScaleResult is what one phase measured.
type certScaleResult struct {
	tenants, handshakes int

	generated                    time.Duration // certificates written to storage
	registryLoaded, serving      time.Duration // from the start of Caddy
	scanDone, cleanDone          time.Duration // linktrack's storage scan, certmagic's storage clean
	idleRSS, idleHeap            int           // KiB, after startup
	loadsAtStart                 int           // allowed decisions before any client handshake
	firstLoads                   []time.Duration
	sweep                        time.Duration // the handshakes after the first sample
	loadedRSS, loadedHeap        int           // KiB, after every handshake
	recentCached, recentLoaded   []time.Duration
	firstCached, firstLoaded     []time.Duration
	totalLoads, orders, failures int
}

func measureCertificateScale(t *testing.T, r *certScaleResult) {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	domains := make([]string, r.tenants)
	for i := range domains {
		domains[i] = fmt.Sprintf("t%06d.scale%d.test", i, i%97)
	}
	tenantsFile := filepath.Join(dir, "tenants.json")
	writeTenantsFile(t, tenantsFile, domains...)
	// two tenants added once Caddy runs, whose certificates are in
	// storage too and expire sooner than any other, one after the
	// other: the markers that the first sweep has run
	sentinels := []string{"sentinel-a.scale.test", "sentinel-b.scale.test"}
	sentinelDays := []int{60, 59}

	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	storage := filepath.Join(dir, "storage")
	// the key certmagic stores what the configured ACME issuer obtains
	// under: 127.0.0.1-<port>-dir for Pebble at https://127.0.0.1:<port>/dir
	issuerKey := (&certmagic.ACMEIssuer{CA: acme.directory}).IssuerKey()
	began := time.Now()
	writeStoredCertificates(t, storage, issuerKey, ca, domains, 90*24*time.Hour)
	for i, d := range sentinels {
		writeStoredCertificates(t, storage, issuerKey, ca, []string{d}, time.Duration(sentinelDays[i])*24*time.Hour)
	}
	r.generated = time.Since(began)
	t.Logf("%d certificates written under %s in %s", r.tenants, certmagic.StorageKeys.CertsPrefix(issuerKey), r.generated.Round(time.Millisecond))

	start := time.Now()
	// one worker takes the background handshakes in the order the
	// sweeps queue them
	p := startCaddyCacheCapacity(t, multiTenantConfig(ports, storage, acme, origin.Port(), caFile,
		"tenants_file "+tenantsFile+"\n\t\tpre_issuance_workers 1"), cacheCapacity)
	since := func(msg string) time.Duration {
		at, ok := certScaleLogTime(p, msg, 10*time.Minute)
		if !ok {
			t.Fatalf("caddy never logged %q", msg)
		}
		return at.Sub(start)
	}
	r.serving = since("serving initial configuration")
	r.registryLoaded = since("tenant registry loaded")
	r.scanDone = since("obtaining tenants' certificates in the background") // logged once the scan ends
	r.cleanDone = since("finished cleaning storage units")
	// the first sweep should find nothing to obtain. A sentinel's
	// background handshake loads its certificate from storage, and
	// linktrack then knows its expiry, which the expiry metric shows,
	// being the soonest. The second sentinel, added once the first is
	// known, is queued by a sweep that began after the first sweep had
	// queued all it found; with one worker, it is known once every
	// handshake queued before it is done
	for i, d := range sentinels {
		if status, body := adminRequest(t, ports.admin, "PUT", "/linktrack/tenants/"+d, `{"origin": "esp"}`); status != 201 {
			t.Fatalf("PUT %s: %d %s", d, status, body)
		}
		waitSoonestExpiry(t, ports.admin, time.Duration(sentinelDays[i])*24*time.Hour+12*time.Hour, time.Minute)
	}
	metrics := func() string { return scrapeMetrics(t, ports.admin) }
	loads := func() int { return max(0, int(metricValue(metrics(), allowedDecisions))) }
	heapKiB := func() int { return max(0, int(metricValue(metrics(), "go_memstats_heap_inuse_bytes"))>>10) }
	r.idleRSS, r.idleHeap = rssKiB(t, p.cmd.Process.Pid), heapKiB()
	r.loadsAtStart = loads()

	addr := fmt.Sprintf("127.0.0.1:%d", ports.https)
	// timed times each handshake in turn, and splits them by whether
	// certmagic loaded the certificate from storage for it
	timed := func(sample []string) (cached, loaded []time.Duration) {
		before := loads()
		for _, d := range sample {
			took, err := certScaleHandshake(addr, d, ca.Pool)
			if err != nil {
				t.Fatalf("handshake for %s: %v", d, err)
			}
			after := loads()
			if after > before {
				loaded = append(loaded, took)
			} else {
				cached = append(cached, took)
			}
			before = after
		}
		return cached, loaded
	}

	// the first tenants, one at a time: each is loaded into the cache
	first := domains[:certScaleSample]
	var cachedAtFirst []time.Duration
	cachedAtFirst, r.firstLoads = timed(first)
	if len(cachedAtFirst) != 0 {
		t.Errorf("%d of the first %d handshakes found their certificate cached already", len(cachedAtFirst), len(first))
	}

	// then the others, from a few concurrent clients
	began = time.Now()
	if err := certScaleSweep(addr, domains[certScaleSample:r.handshakes], ca.Pool, 4, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	r.sweep = time.Since(began)
	r.loadedRSS, r.loadedHeap = rssKiB(t, p.cmd.Process.Pid), heapKiB()

	// the most recent tenants, most likely still cached; then the first
	// ones again: a full cache evicts at random, so most of them load
	// from storage again
	r.recentCached, r.recentLoaded = timed(domains[r.handshakes-certScaleSample : r.handshakes])
	r.firstCached, r.firstLoaded = timed(first)

	r.totalLoads = loads()
	acme.settle(t)
	p.settle(t, ports.admin)
	r.orders = acme.orders()
	r.failures = len(p.logEntriesNamed("tenant certificate failed"))
	if r.orders != 0 {
		t.Errorf("pebble received %d orders; every certificate was in storage", r.orders)
	}
	if r.failures != 0 {
		t.Errorf("caddy logged %d tenant certificate failures", r.failures)
	}
	if n := len(p.logEntriesNamed("background handshake failed")); n != 0 {
		t.Errorf("caddy logged %d failed background handshakes", n)
	}
	if r.loadsAtStart != len(sentinels) {
		t.Errorf("%d certificates loaded before any client handshake, want the %d sentinels': the background handshook tenants whose certificates it knew from storage", r.loadsAtStart, len(sentinels))
	}
	if want := r.loadsAtStart + r.handshakes + len(r.recentLoaded) + len(r.firstLoaded); r.totalLoads != want {
		t.Errorf("%d certificates loaded from storage, want one per distinct tenant and one per eviction seen: %d", r.totalLoads, want)
	}
	if r.handshakes <= cacheCapacity {
		// the cache holds every certificate
		if n := len(r.recentLoaded) + len(r.firstLoaded); n != 0 {
			t.Errorf("%d of %d tenants: %d certificates left the cache, whose capacity is %d", r.handshakes, r.tenants, n, cacheCapacity)
		}
	} else {
		// 20,000 loads into a full cache of 10,000, each evicting one
		// certificate at random: a certificate loaded first survives with
		// a probability of (1-1/10,000)^20,000 ≈ 13.5%, so about 173 of the
		// 200 load again; an unbounded cache would load none
		if len(r.firstLoaded) < certScaleSample/2 {
			t.Errorf("only %d of the %d certificates loaded first left a cache of %d after %d loads", len(r.firstLoaded), certScaleSample, cacheCapacity, r.handshakes)
		}
		// at most 200 loads followed each of the most recent: about 2
		// of them evicted
		if len(r.recentLoaded) > certScaleSample/4 {
			t.Errorf("%d of the %d most recent certificates left the cache", len(r.recentLoaded), certScaleSample)
		}
		// one run measured 131 MiB idle (the registry and the expiries
		// the storage scan read) and 215 MiB with a full cache; 1 GiB is
		// four times that. A cache that kept all 30,000 certificates
		// could stay under it too: the eviction check above catches that
		if r.loadedRSS > 1<<20 {
			t.Errorf("%d tenants: RSS %d MiB after %d handshakes, want under 1 GiB", r.tenants, r.loadedRSS>>10, r.handshakes)
		}
	}
}

// waitSoonestExpiry waits until the expiry metric of the Caddy with the
// admin port adminPort shows a certificate that expires within less
// than left.
func waitSoonestExpiry(t *testing.T, adminPort int, left, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := metricValue(scrapeMetrics(t, adminPort), "caddy_linktrack_certificate_expiry_seconds")
		if v >= 0 && v < left.Seconds() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate expiring within %s known after %s: the soonest expiry is %v s away", left, timeout, v)
		}
		time.Sleep(50 * time.Millisecond) // pause between polls of the metric
	}
}

// writeStoredCertificates writes, into the file_system storage at root, a
// certificate for every domain as certmagic stores one that the issuer
// with issuerKey obtained: the chain, the key and the metadata. Every
// leaf has the same ECDSA P-256 key, is signed by ca, and is valid for
// validity from an hour ago: days, so none is in its renewal window.
func writeStoredCertificates(t *testing.T, root, issuerKey string, ca *standin.CA, domains []string, validity time.Duration) {
	t.Helper()
	file := func(key string) string { return filepath.Join(root, filepath.FromSlash(key)) }
	writeCertificates(t, issuerKey, ca, domains, validity, 8, func(key string, value []byte) error {
		if err := os.MkdirAll(filepath.Dir(file(key)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(file(key), value, 0o600)
	})
}

// writeCertificates is writeStoredCertificates through store, which
// writes one storage key, from workers goroutines at once.
func writeCertificates(t *testing.T, issuerKey string, ca *standin.CA, domains []string, validity time.Duration, workers int, store func(key string, value []byte) error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	notBefore := time.Now().Add(-time.Hour)
	serialBase, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 96))
	if err != nil {
		t.Fatal(err)
	}

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(domains) {
					return
				}
				d := domains[i]
				tmpl := &x509.Certificate{
					SerialNumber: new(big.Int).Add(serialBase, big.NewInt(int64(i+1))),
					Subject:      pkix.Name{CommonName: d},
					DNSNames:     []string{d},
					NotBefore:    notBefore,
					NotAfter:     notBefore.Add(validity),
					KeyUsage:     x509.KeyUsageDigitalSignature,
					ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
				if err != nil {
					errs <- err
					return
				}
				// the leaf, then its issuer, as an ACME CA sends the chain
				chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.CertPEM...)
				meta, _ := json.Marshal(map[string]any{"sans": []string{d}})
				for name, content := range map[string][]byte{
					certmagic.StorageKeys.SiteCert(issuerKey, d):       chain,
					certmagic.StorageKeys.SitePrivateKey(issuerKey, d): keyPEM,
					certmagic.StorageKeys.SiteMeta(issuerKey, d):       meta,
				} {
					if err := store(name, content); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// certScaleHandshake completes a TLS handshake with addr for domain,
// verifying the certificate against roots and for the name, and returns
// how long the dial and the handshake took.
func certScaleHandshake(addr, domain string, roots *x509.CertPool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialer := &tls.Dialer{Config: &tls.Config{ServerName: domain, RootCAs: roots}}
	began := time.Now()
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	took := time.Since(began)
	if err != nil {
		return took, err
	}
	defer conn.Close()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	if err := leaf.VerifyHostname(domain); err != nil {
		return took, fmt.Errorf("served %v: %w", leaf.DNSNames, err)
	}
	return took, nil
}

// certScaleSweep handshakes once with each domain, in order, from
// clients concurrent clients, and fails at the first failed handshake or
// when limit passes.
func certScaleSweep(addr string, domains []string, roots *x509.CertPool, clients int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for failed.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(domains) {
					return
				}
				if time.Now().After(deadline) {
					err := fmt.Errorf("%d of %d handshakes done after %s", i, len(domains), limit)
					failed.CompareAndSwap(nil, &err)
					return
				}
				if _, err := certScaleHandshake(addr, domains[i], roots); err != nil {
					err = fmt.Errorf("handshake for %s: %w", domains[i], err)
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return nil
}

// certScaleLogTime waits up to timeout for Caddy to log msg, and returns
// the time of the first such entry.
func certScaleLogTime(p *caddyProcess, msg string, timeout time.Duration) (time.Time, bool) {
	expired := time.After(timeout)
	for {
		entries, changed := p.logEntries(msg)
		if len(entries) > 0 {
			ts, ok := entries[0]["ts"].(float64)
			if !ok {
				return time.Time{}, false
			}
			sec, frac := math.Modf(ts)
			return time.Unix(int64(sec), int64(frac*1e9)), true
		}
		select {
		case <-changed:
		case <-p.done:
			return time.Time{}, false
		case <-expired:
			return time.Time{}, false
		}
	}
}

// logCertScaleTable logs the figures of every phase side by side.
func logCertScaleTable(t *testing.T, results []*certScaleResult) {
	if len(results) == 0 {
		return
	}
	seconds := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	mib := func(kib int) string { return fmt.Sprintf("%d MiB", kib>>10) }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
	stats := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "none"
		}
		s := slices.Clone(ds)
		slices.Sort(s)
		return fmt.Sprintf("%s / %s ms (%d)", ms(s[len(s)/2]), ms(s[len(s)*9/10]), len(s))
	}
	rows := []struct {
		name  string
		value func(*certScaleResult) string
	}{
		{"certificates written to storage", func(r *certScaleResult) string { return seconds(r.generated) }},
		{"Caddy start: registry loaded", func(r *certScaleResult) string { return seconds(r.registryLoaded) }},
		{"Caddy start: serving initial configuration", func(r *certScaleResult) string { return seconds(r.serving) }},
		{"Caddy start: linktrack storage scan done", func(r *certScaleResult) string { return seconds(r.scanDone) }},
		{"Caddy start: certmagic storage clean done", func(r *certScaleResult) string { return seconds(r.cleanDone) }},
		{"RSS / Go heap in use, idle after start", func(r *certScaleResult) string { return mib(r.idleRSS) + " / " + mib(r.idleHeap) }},
		{"distinct tenants handshaken", func(r *certScaleResult) string { return fmt.Sprint(r.handshakes) }},
		{"RSS / Go heap in use, after handshakes", func(r *certScaleResult) string { return mib(r.loadedRSS) + " / " + mib(r.loadedHeap) }},
		{"concurrent handshakes (4 clients)", func(r *certScaleResult) string {
			n := r.handshakes - certScaleSample
			return fmt.Sprintf("%d in %s, %.0f/s", n, seconds(r.sweep), float64(n)/r.sweep.Seconds())
		}},
		{"first 200, loaded into a cache not full: p50 / p90 (n)", func(r *certScaleResult) string { return stats(r.firstLoads) }},
		{"last 200 handshaken, cached", func(r *certScaleResult) string { return stats(r.recentCached) }},
		{"last 200 handshaken, loaded from storage", func(r *certScaleResult) string { return stats(r.recentLoaded) }},
		{"first 200 again, cached", func(r *certScaleResult) string { return stats(r.firstCached) }},
		{"first 200 again, evicted: loaded from storage", func(r *certScaleResult) string { return stats(r.firstLoaded) }},
		{"certificates loaded from storage (permission checks)", func(r *certScaleResult) string { return fmt.Sprint(r.totalLoads) }},
		{"pebble orders / tenant certificate failures", func(r *certScaleResult) string { return fmt.Sprintf("%d / %d", r.orders, r.failures) }},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-56s", fmt.Sprintf("cache capacity %d", cacheCapacity))
	for _, r := range results {
		fmt.Fprintf(&b, " | %26s", fmt.Sprintf("%d tenants", r.tenants))
	}
	for _, row := range rows {
		fmt.Fprintf(&b, "\n%-56s", row.name)
		for _, r := range results {
			fmt.Fprintf(&b, " | %26s", row.value(r))
		}
	}
	t.Log(b.String())
}
