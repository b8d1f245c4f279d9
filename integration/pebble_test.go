package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Pebble, Let's Encrypt's test CA, and its mock DNS server are tool
// dependencies in go.mod; the tests build them from the module cache.
const (
	pebblePkg       = "github.com/letsencrypt/pebble/v2/cmd/pebble"
	challtestsrvPkg = "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"
)

// pebbleBlockedDomain is refused by Pebble, so that obtaining its
// certificate fails.
const pebbleBlockedDomain = "blocked.brand-x.test"

var (
	pebbleBuild     sync.Once
	pebbleBins      string
	pebbleModuleDir string
	pebbleBuildErr  error
)

// buildPebble builds Pebble and pebble-challtestsrv once per test run.
func buildPebble(t testing.TB) (dir, moduleDir string) {
	t.Helper()
	pebbleBuild.Do(func() {
		pebbleBins, pebbleBuildErr = os.MkdirTemp("", "linktrack-pebble-")
		if pebbleBuildErr != nil {
			return
		}
		for _, pkg := range []string{pebblePkg, challtestsrvPkg} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(pebbleBins, filepath.Base(pkg)), pkg)
			cmd.Dir = ".."
			if out, err := cmd.CombinedOutput(); err != nil {
				pebbleBuildErr = fmt.Errorf("building %s: %v\n%s", pkg, err, out)
				return
			}
		}
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
		if err != nil {
			pebbleBuildErr = fmt.Errorf("locating pebble's module: %v", err)
			return
		}
		pebbleModuleDir = strings.TrimSpace(string(out))
	})
	if pebbleBuildErr != nil {
		t.Fatal(pebbleBuildErr)
	}
	return pebbleBins, pebbleModuleDir
}

// acmeCA is a running Pebble with its DNS server, on loopback only.
type acmeCA struct {
	directory   string // ACME directory URL
	management  string // management base URL
	minicaRoot  string // file of the root that signed Pebble's own HTTPS certificate
	minicaPool  *x509.CertPool
	dnsAddr     string
	dnsControl  string // management base URL of the mock DNS server
	command     []string
	process     *exec.Cmd
	mu          sync.Mutex
	pebbleLines []string
	changed     chan struct{} // closed and replaced on every new line
}

// startPebble starts a mock DNS server answering every name with
// 127.0.0.1, and Pebble validating challenges against the given ports
// with fresh state.
func startPebble(t testing.TB, httpPort, tlsPort int) *acmeCA {
	t.Helper()
	return startPebbleValidity(t, httpPort, tlsPort, 90*24*time.Hour)
}

// startPebbleValidity is startPebble issuing certificates valid for
// the given time.
func startPebbleValidity(t testing.TB, httpPort, tlsPort int, validity time.Duration) *acmeCA {
	t.Helper()
	bins, moduleDir := buildPebble(t)
	dir := t.TempDir()

	dnsAddr, dnsControl := startMockDNS(t)

	acmePort, mgmtPort := freePort(t), freePort(t)
	config := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":             filepath.Join(moduleDir, "test", "certs", "localhost", "cert.pem"),
		"privateKey":              filepath.Join(moduleDir, "test", "certs", "localhost", "key.pem"),
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"domainBlocklist":         []string{pebbleBlockedDomain},
		"profiles":                map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(validity.Seconds())}},
	}}
	raw, _ := json.Marshal(config)
	configFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(configFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	ca := &acmeCA{
		directory:  fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		management: fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
		minicaRoot: filepath.Join(moduleDir, "test", "certs", "pebble.minica.pem"),
		dnsAddr:    dnsAddr,
		dnsControl: dnsControl,
		changed:    make(chan struct{}),
	}
	rootPEM, err := os.ReadFile(ca.minicaRoot)
	if err != nil {
		t.Fatal(err)
	}
	ca.minicaPool = x509.NewCertPool()
	ca.minicaPool.AppendCertsFromPEM(rootPEM)

	ca.command = []string{filepath.Join(bins, "pebble"), "-config", configFile, "-dnsserver", dnsAddr}
	ca.launch(t)
	return ca
}

// launch starts Pebble and waits until it serves its directory.
func (ca *acmeCA) launch(t testing.TB) {
	t.Helper()
	pebble := exec.Command(ca.command[0], ca.command[1:]...)
	pebble.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	startProcess(t, pebble, func(line string) {
		ca.mu.Lock()
		ca.pebbleLines = append(ca.pebbleLines, line)
		close(ca.changed)
		ca.changed = make(chan struct{})
		ca.mu.Unlock()
	})
	ca.process = pebble
	ca.waitReady(t)
}

// stop kills Pebble, as in a CA outage; launch starts it again on the
// same addresses, with fresh state and new roots.
func (ca *acmeCA) stop() {
	_ = ca.process.Process.Kill()
	_ = ca.process.Wait()
}

// startMockDNS starts pebble-challtestsrv as a DNS server on loopback
// that answers every A query with 127.0.0.1 and no AAAA, and returns its
// address and the base URL of its management API (CNAME, CAA records).
func startMockDNS(t testing.TB) (addr, management string) {
	t.Helper()
	bins, _ := buildPebble(t)
	addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	management = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dns := exec.Command(filepath.Join(bins, "pebble-challtestsrv"),
		"-dnsserver", addr, "-management", management,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	startProcess(t, dns, nil)
	waitForDNS(t, addr)
	return addr, "http://" + management
}

// startProcess starts cmd, feeds its output lines to onLine and stops
// it when the test ends.
func startProcess(t testing.TB, cmd *exec.Cmd, onLine func(string)) {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if onLine != nil {
				onLine(sc.Text())
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = pw.Close()
		<-done
	})
}

// waitForDNS waits until the mock DNS server answers.
func waitForDNS(t testing.TB, addr string) {
	t.Helper()
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		addrs, err := resolver.LookupHost(ctx, "probe.example.test")
		cancel()
		if err == nil && len(addrs) > 0 && addrs[0] == "127.0.0.1" {
			return
		}
		time.Sleep(25 * time.Millisecond) // pause between readiness probes
	}
	t.Fatalf("mock DNS server at %s never answered", addr)
}

// waitReady waits until Pebble serves its ACME directory.
func (ca *acmeCA) waitReady(t testing.TB) {
	t.Helper()
	client := ca.client()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		res, err := client.Get(ca.directory)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(25 * time.Millisecond) // pause between readiness probes
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	t.Fatalf("pebble never served its directory:\n%s", strings.Join(ca.pebbleLines, "\n"))
}

// orders counts the ACME orders Pebble has received.
func (ca *acmeCA) orders() int {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	n := 0
	for _, line := range ca.pebbleLines {
		if strings.Contains(line, "Added order") {
			n++
		}
	}
	return n
}

// settle returns once Pebble's log has been read up to now, the positive
// marker before counting what did not happen: it sends Pebble a request
// no ACME client makes, a POST to new-nonce, and waits for its line.
// Pebble logs an order before it answers it, so after settle, orders
// counts every order placed before the call.
func (ca *acmeCA) settle(t testing.TB) {
	t.Helper()
	const mark = "POST /nonce-plz -> calling handler()"
	marks := func() (int, <-chan struct{}) {
		ca.mu.Lock()
		defer ca.mu.Unlock()
		n := 0
		for _, line := range ca.pebbleLines {
			if strings.Contains(line, mark) {
				n++
			}
		}
		return n, ca.changed
	}
	before, _ := marks()
	res, err := ca.client().Post(strings.TrimSuffix(ca.directory, "/dir")+"/nonce-plz", "application/jose+json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	expired := time.After(10 * time.Second)
	for {
		n, changed := marks()
		if n > before {
			return
		}
		select {
		case <-changed:
		case <-expired:
			t.Fatalf("pebble did not log %q within 10s", mark)
		}
	}
}

// setServfail makes the mock DNS server answer SERVFAIL for name, so
// that its challenges fail, or answer it again.
func (ca *acmeCA) setServfail(t testing.TB, name string, on bool) {
	t.Helper()
	path := "/clear-servfail"
	if on {
		path = "/set-servfail"
	}
	dnsRecord(t, ca.dnsControl, path, fmt.Sprintf(`{"host": %q}`, name+"."))
}

func (ca *acmeCA) client() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.minicaPool}}}
}

// issuingRoots returns the roots that issued the leaf certificates of
// this run of Pebble.
func (ca *acmeCA) issuingRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	res, err := ca.client().Get(ca.management + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	pemBytes, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("pebble served no root PEM: %q", pemBytes)
	}
	return pool
}
