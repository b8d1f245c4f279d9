package integration

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// tenantRig is Caddy serving a tenant registry with on-demand TLS from
// Pebble, in front of one stand-in origin defined as a named origin.
type tenantRig struct {
	origin      *standin.Origin
	acme        *acmeCA
	caddy       *caddyProcess
	httpPort    int
	httpsPort   int
	adminPort   int
	tenantsFile string
}

// writeTenantsFile writes a tenants file whose tenants all use the
// named origin esp.
func writeTenantsFile(t testing.TB, path string, domains ...string) {
	t.Helper()
	var content struct {
		Tenants []map[string]string `json:"tenants"`
	}
	content.Tenants = []map[string]string{}
	for _, d := range domains {
		content.Tenants = append(content.Tenants, map[string]string{"domain": d, "origin": "esp"})
	}
	raw, _ := json.MarshalIndent(content, "", "\t")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newTenantRig(t testing.TB, inline string, fileDomains ...string) *tenantRig {
	t.Helper()
	return newTenantRigValidity(t, 90*24*time.Hour, inline, fileDomains...)
}

// newTenantRigValidity is newTenantRig with certificates valid for the
// given time.
func newTenantRigValidity(t testing.TB, validity time.Duration, inline string, fileDomains ...string) *tenantRig {
	t.Helper()
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	r := &tenantRig{tenantsFile: filepath.Join(dir, "tenants.json")}
	r.origin = startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	writeTenantsFile(t, r.tenantsFile, fileDomains...)
	r.httpPort, r.httpsPort, r.adminPort = freePort(t), freePort(t), freePort(t)
	r.acme = startPebbleValidity(t, r.httpPort, r.httpsPort, validity)
	r.caddy = startCaddy(t, "caddyfile", multiTenantConfig(multiTenantPorts{r.adminPort, r.httpPort, r.httpsPort},
		filepath.Join(dir, "storage"), r.acme, r.origin.Port(), caFile,
		inline+"\n\t\ttenants_file "+r.tenantsFile+"\n\t\tfile_check_interval 100ms"))
	return r
}

// multiTenantPorts are a Caddy's admin, HTTP and HTTPS ports.
type multiTenantPorts struct{ admin, http, https int }

// multiTenantConfig is the multi-tenant Caddyfile of the README: on-demand
// TLS from the test's Pebble, gated by the registry, whose named origin
// esp is the stand-in, on a server that leaves the idle timeouts to
// linktrack; app holds more lines of the linktrack option.
// storage is a file_system directory, or a whole storage option such as
// a backend's ("storage linktrack_test_redis {...}").
func multiTenantConfig(ports multiTenantPorts, storage string, acme *acmeCA, originPort int, caFile, app string) string {
	if !strings.HasPrefix(storage, "storage ") {
		storage = "storage file_system " + storage
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	%s
	acme_ca %s
	acme_ca_root %s
	# an account email: without one, certmagic's concurrent first orders
	# can register the contact mailto:default, which Pebble refuses
	email ops@linktrack.test
	on_demand_tls {
		permission linktrack
	}
	servers {
		protocols h1 h2
		timeouts {
			read_body_idle -1s
			write_idle -1s
		}
	}
	linktrack {
		origin esp https://localhost:%d {
			tls_trust_pool file %s
		}
		%s
	}
}

https:// {
	tls {
		on_demand
	}
	linktrack
}

http:// {
	linktrack
}
`, ports.admin, ports.http, ports.https, storage, acme.directory, acme.minicaRoot, originPort, caFile, app)
}

// get sends GET / for host over HTTPS with SNI sni, verifying the
// certificate against roots, or over plain HTTP when roots is nil.
func (r *tenantRig) get(sni, host string, roots *x509.CertPool) (*standin.RawResponse, error) {
	var c *standin.RawClient
	var err error
	if roots == nil {
		c, err = standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", r.httpPort), nil)
	} else {
		c, err = standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", r.httpsPort), &tls.Config{RootCAs: roots, ServerName: sni})
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(standin.RawRequest{Method: "GET", Target: "/ls/click?upn=" + host, Host: host}, 3*time.Minute)
}

// TestOnDemandTenants: with pre-issuance off, every tenant gets a
// certificate at its first HTTPS request and reaches its origin with its
// own Host; unknown names get no ACME order and no origin dial.
func TestOnDemandTenants(t *testing.T) {
	var domains []string
	for i := 1; i <= 12; i++ {
		domains = append(domains, fmt.Sprintf("click%d.brand%d.test", i, i%7))
	}
	r := newTenantRig(t, "pre_issuance off\n\t\ttenant click.brand-a.test esp\n\t\ttenant *.wild.brand-b.test esp", domains...)
	roots := r.acme.issuingRoots(t)
	all := append(slices.Clone(domains), "click.brand-a.test", "x1.wild.brand-b.test")

	// first HTTPS click of 14 tenants, a few at a time
	var wg sync.WaitGroup
	errs := make(chan error, len(all))
	work := make(chan string)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				res, err := r.get(d, d, roots)
				if err != nil {
					errs <- fmt.Errorf("%s: %v", d, err)
				} else if res.Status != 302 {
					errs <- fmt.Errorf("%s: status %d", d, res.Status)
				}
			}
		}()
	}
	for _, d := range all {
		work <- d
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var hosts []string
	for range all {
		rec, err := r.origin.Next(10 * time.Second)
		if err != nil {
			t.Fatalf("origin: %v", err)
		}
		if !strings.HasSuffix(rec.Target, "="+rec.Values("Host")[0]) {
			t.Errorf("origin got %q with Host %q", rec.Target, rec.Values("Host"))
		}
		hosts = append(hosts, rec.Values("Host")[0])
	}
	slices.Sort(hosts)
	want := slices.Clone(all)
	slices.Sort(want)
	if !slices.Equal(hosts, want) {
		t.Errorf("origin saw hosts %v, want %v", hosts, want)
	}
	r.acme.settle(t)
	ordersAfterTenants := r.acme.orders()
	if ordersAfterTenants != len(all) {
		t.Errorf("pebble received %d orders for %d tenants", ordersAfterTenants, len(all))
	}

	// 200 handshakes for unknown names: no certificate, no order, no dial
	originBefore := r.origin.Count()
	for i := range 200 {
		name := fmt.Sprintf("r%d-%d.random.test", i, time.Now().UnixNano()%100000)
		if i%4 == 0 {
			name = fmt.Sprintf("deep.x%d.wild.brand-b.test", i) // two labels below a wildcard
		}
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.httpsPort), &tls.Config{RootCAs: roots, ServerName: name})
		if err == nil {
			conn.Close()
			t.Fatalf("handshake for unknown name %s succeeded", name)
		}
	}
	// each handshake failed after its permission check: the denials
	// counted are the marker that the checks ran, and an order would
	// have been placed during the handshake
	metrics := r.metrics(t)
	for _, want := range []struct {
		decision string
		count    int
	}{{"allowed", len(all)}, {"denied", 200}} {
		metric := fmt.Sprintf("caddy_linktrack_certificate_decisions_total{decision=%q}", want.decision)
		if n := metricValue(metrics, metric); n != float64(want.count) {
			t.Errorf("%s is %v, want %d:\n%s", metric, n, want.count, grepLines(metrics, "decisions"))
		}
	}
	r.acme.settle(t)
	if n := r.acme.orders(); n != ordersAfterTenants {
		t.Errorf("unknown names caused %d ACME orders", n-ordersAfterTenants)
	}
	if n := r.origin.Count() - originBefore; n != 0 {
		t.Errorf("unknown names caused %d origin requests", n)
	}

	// an unknown Host is answered locally; SNI and Host must agree
	for _, tc := range []struct{ sni, host string }{
		{"", "unknown.brand.test"},                   // plain HTTP
		{"click1.brand1.test", "click2.brand2.test"}, // another tenant's certificate
		{"click1.brand1.test", "unknown.brand.test"},
	} {
		var res *standin.RawResponse
		var err error
		if tc.sni == "" {
			res, err = r.get("", tc.host, nil)
		} else {
			res, err = r.get(tc.sni, tc.host, roots)
		}
		if err != nil {
			t.Fatalf("SNI %q Host %q: %v", tc.sni, tc.host, err)
		}
		if res.Status != http.StatusMisdirectedRequest {
			t.Errorf("SNI %q Host %q: status %d, want 421", tc.sni, tc.host, res.Status)
		}
	}
	if n := r.origin.Count() - originBefore; n != 0 {
		t.Errorf("misdirected requests reached the origin %d times", n)
	}
	metrics = r.metrics(t)
	expiry := metricValue(metrics, "caddy_linktrack_certificate_expiry_seconds")
	if expiry < 24*3600 {
		t.Errorf("certificate expiry metric %v, want the days left of Pebble's 90-day certificates:\n%s", expiry, grepLines(metrics, "expiry"))
	}
	for _, want := range []string{
		`caddy_linktrack_rejected_requests_total{reason="unknown_host"} 2`,
		`caddy_linktrack_rejected_requests_total{reason="sni_mismatch"} 1`,
		`caddy_linktrack_requests_total{provider="origin:esp",region="",status_class="3xx"} 14`,
		`caddy_linktrack_origin_duration_seconds_count{provider="origin:esp",region=""} 14`,
		`caddy_linktrack_tenants 14`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "caddy_linktrack"))
		}
	}
}

// TestTenantsFileReload: a valid edit of the tenants file is served
// without a reload; an invalid edit keeps the registry in use, is
// logged with the path and the entry, and is counted.
func TestTenantsFileReload(t *testing.T) {
	r := newTenantRig(t, "", "old.brand.test")
	if res, err := r.get("", "old.brand.test", nil); err != nil || res.Status != 302 {
		t.Fatalf("old tenant: %v %v", err, res)
	}

	writeTenantsFile(t, r.tenantsFile, "new.brand.test")
	r.caddy.waitLog(t, "tenant registry loaded", func(e map[string]any) bool {
		return e["cause"] == "tenants_file" && e["tenants"] == float64(1)
	})
	if res, err := r.get("", "new.brand.test", nil); err != nil || res.Status != 302 {
		t.Errorf("new tenant: %v %v", err, res)
	}
	if res, err := r.get("", "old.brand.test", nil); err != nil || res.Status != 421 {
		t.Errorf("removed tenant: %v %v; want 421", err, res)
	}

	// a broken entry: the registry in use stays
	if err := os.WriteFile(r.tenantsFile, []byte(`{"tenants": [{"domain": "ok.brand.test", "origin": "esp"}, {"domain": "203.0.113.9", "origin": "esp"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := r.caddy.waitLog(t, "tenants file rejected; keeping the registry in use", nil)
	if e["path"] != r.tenantsFile || !strings.Contains(fmt.Sprint(e["error"]), "entry 2: domain: '203.0.113.9' is an IP address") {
		t.Errorf("rejection log %v does not name the path and the entry", e)
	}
	if res, err := r.get("", "new.brand.test", nil); err != nil || res.Status != 302 {
		t.Errorf("tenant of the good registry after a bad edit: %v %v", err, res)
	}
	if res, err := r.get("", "ok.brand.test", nil); err != nil || res.Status != 421 {
		t.Errorf("tenant of the rejected file: %v %v; want 421", err, res)
	}
	// a deleted file: the registry in use stays too
	if err := os.Remove(r.tenantsFile); err != nil {
		t.Fatal(err)
	}
	r.caddy.waitLog(t, "tenants file rejected; keeping the registry in use", func(e map[string]any) bool {
		return strings.Contains(fmt.Sprint(e["error"]), "no such file")
	})
	if res, err := r.get("", "new.brand.test", nil); err != nil || res.Status != 302 {
		t.Errorf("tenant of the good registry after the file was deleted: %v %v", err, res)
	}
	// the absence is reported once, not every check: a valid file again
	// is the next thing the log says about it
	writeTenantsFile(t, r.tenantsFile, "back.brand.test")
	r.caddy.waitLog(t, "tenant registry loaded", func(e map[string]any) bool {
		return e["cause"] == "tenants_file" && e["tenants"] == float64(1) && len(r.caddy.logEntriesNamed("tenants file rejected; keeping the registry in use")) == 2
	})
	metrics := r.metrics(t)
	if !strings.Contains(metrics, `caddy_linktrack_registry_reloads_total{result="error",source="tenants_file"} 2`) {
		t.Errorf("rejection not counted; metrics:\n%s", grepLines(metrics, "linktrack"))
	}
}

func (r *tenantRig) metrics(t testing.TB) string {
	t.Helper()
	return scrapeMetrics(t, r.adminPort)
}

// scrapeMetrics returns the text of Caddy's admin metrics endpoint.
func scrapeMetrics(t testing.TB, adminPort int) string {
	t.Helper()
	res, err := controlClient.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return string(body)
}

// metricValue returns the value of an unlabelled metric, or -1.
func metricValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func grepLines(text, substr string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestTenantAppLinks: a tenant's own app-link files are served locally;
// other tenants' same paths go to the origin.
func TestTenantAppLinks(t *testing.T) {
	assetlinks := filepath.Join(t.TempDir(), "assetlinks.json")
	content := `[{"relation":["delegate_permission/common.handle_all_urls"]}]`
	if err := os.WriteFile(assetlinks, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newTenantRig(t, "tenant app.brand-a.test esp {\n\t\t\tassetlinks "+assetlinks+"\n\t\t}", "other.brand-b.test")
	c, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", r.httpPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := r.origin.Count()
	local, err := c.Do(standin.RawRequest{Method: "GET", Target: "/.well-known/assetlinks.json", Host: "app.brand-a.test"}, 30*time.Second)
	if err != nil || local.Status != 200 || string(local.Body) != content || local.Values("Content-Type")[0] != "application/json" {
		t.Errorf("tenant's own file: %v %+v", err, local)
	}
	if n := r.origin.Count() - before; n != 0 {
		t.Errorf("the tenant's own file reached the origin")
	}
	other, err := c.Do(standin.RawRequest{Method: "GET", Target: "/.well-known/assetlinks.json", Host: "other.brand-b.test"}, 30*time.Second)
	if err != nil || other.Status != 302 {
		t.Errorf("another tenant's path: %v %+v; want the origin's 302", err, other)
	}
}
