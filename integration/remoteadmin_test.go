package integration

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// storeNodeCaddyfile is the Caddyfile of a node serving the tenant
// registry over plain HTTP, on storage, with debug logs, in which the
// events app logs every event.
func storeNodeCaddyfile(adminPort, httpPort, httpsPort int, storage string, originPort int, caFile string) string {
	return fmt.Sprintf(`{
	debug
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	storage file_system %s
	servers {
		protocols h1
	}
	linktrack {
		origin esp https://localhost:%d {
			tls_trust_pool file %s
		}
		tenant click.config.test esp
		pre_issuance off
		storage_refresh_interval 200ms
	}
}

http:// {
	linktrack
}
`, adminPort, httpPort, httpsPort, storage, originPort, caFile)
}

// readmeRemoteAdmin returns the README's JSON block of the remote admin
// endpoint.
func readmeRemoteAdmin(t *testing.T) map[string]any {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(readme, -1) {
		if !strings.Contains(string(block[1]), `"access_control"`) {
			continue
		}
		var doc map[string]any
		if err := json.Unmarshal(block[1], &doc); err != nil {
			t.Fatalf("the README's remote admin block: %v", err)
		}
		return doc
	}
	t.Fatal("the README has no JSON block with access_control")
	return nil
}

// mergeJSON merges src into dst, objects deeply, as jq's * does.
func mergeJSON(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				mergeJSON(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// remoteRequest sends a request to the remote admin endpoint at addr
// with client, and returns the status and body.
func remoteRequest(client *http.Client, addr, method, path, body string) (int, string, error) {
	req, err := http.NewRequest(method, "https://"+addr+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, string(out), err
}

// mtlsClient returns a client of the remote admin endpoint that trusts
// roots and presents cert, if not nil. Caddy names the listed
// certificates themselves as the acceptable CAs, so Go, which offers
// tls.Config.Certificates only to a server that accepts their issuer,
// would send none: GetClientCertificate always offers cert.
func mtlsClient(roots *x509.CertPool, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true},
	}
}

// TestRemoteAdminMutualTLS runs the README's remote admin block, merged
// into an adapted Caddyfile with the test's addresses and a control
// plane's client certificate: over mutual TLS, that certificate adds,
// lists and removes tenants, each change logged and emitted with its
// subject; it gets 403 everywhere else; a connection with no client
// certificate, or with one not listed, is refused at the handshake.
func TestRemoteAdminMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	storage := filepath.Join(dir, "storage")

	platformCA, err := standin.NewCA("platform control plane CA")
	if err != nil {
		t.Fatal(err)
	}
	subject := pkix.Name{CommonName: "control-plane", Organization: []string{"Platform Example"}}
	controlPlane, err := platformCA.IssueClient(subject)
	if err != nil {
		t.Fatal(err)
	}
	unlisted, err := platformCA.IssueClient(pkix.Name{CommonName: "another-service", Organization: []string{"Platform Example"}})
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := standin.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := otherCA.IssueClient(subject) // the same subject, another CA
	if err != nil {
		t.Fatal(err)
	}

	// the Caddyfile's config, adapted, with the README's block merged in
	adminPort, remotePort := freePort(t), freePort(t)
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(storeNodeCaddyfile(adminPort, freePort(t), freePort(t), storage, origin.Port(), caFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	adapted, err := caddyCmd(t, "adapt", "--config", caddyfile, "--adapter", "caddyfile").Output()
	if err != nil {
		t.Fatalf("caddy adapt: %v", err)
	}
	var config map[string]any
	if err := json.Unmarshal(adapted, &config); err != nil {
		t.Fatal(err)
	}
	block := readmeRemoteAdmin(t)
	admin := block["admin"].(map[string]any)
	remote := admin["remote"].(map[string]any)
	access := remote["access_control"].([]any)
	if len(access) != 1 {
		t.Fatalf("the README's block has %d access controls, want 1", len(access))
	}
	perms, _ := json.Marshal(access[0].(map[string]any)["permissions"])
	if string(perms) != `[{"methods":["GET","PUT","POST","DELETE"],"paths":["/linktrack/"]}]` {
		t.Errorf("the README's permissions: %s", perms)
	}
	admin["listen"] = fmt.Sprintf("127.0.0.1:%d", adminPort)
	remote["listen"] = fmt.Sprintf("127.0.0.1:%d", remotePort)
	admin["identity"].(map[string]any)["identifiers"] = []string{"localhost"}
	access[0].(map[string]any)["public_keys"] = []string{controlPlane.CertBase64()}
	mergeJSON(config, block)
	merged, _ := json.Marshal(config)
	p := startCaddy(t, "json", string(merged))
	p.waitLog(t, "secure admin remote control endpoint started", nil)

	// the endpoint's certificate is issued by Caddy's local CA, whose
	// root is in storage
	rootPEM, err := os.ReadFile(filepath.Join(storage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	addr := fmt.Sprintf("127.0.0.1:%d", remotePort)
	client := mtlsClient(roots, &controlPlane.TLS)

	// the identity certificate is obtained in the background
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, body, err := remoteRequest(client, addr, "GET", "/linktrack/tenants", "")
		if err == nil && status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote admin not answering after 60s: %d %s %v\n%s", status, body, err, p.logText())
		}
		time.Sleep(200 * time.Millisecond)
	}

	stored := func() []string {
		t.Helper()
		status, body, err := remoteRequest(client, addr, "GET", "/linktrack/tenants?source=storage", "")
		var page listPage
		if err != nil || status != 200 || json.Unmarshal([]byte(body), &page) != nil {
			t.Fatalf("GET /linktrack/tenants: %d %s %v", status, body, err)
		}
		var domains []string
		for _, tn := range page.Tenants {
			domains = append(domains, tn.Domain)
		}
		return domains
	}
	for _, step := range []struct {
		method, path, body string
		status             int
	}{
		{"PUT", "/linktrack/tenants/remote.brand.test", `{"origin": "esp"}`, 201},
		{"GET", "/linktrack/tenants/remote.brand.test", "", 200},
		{"POST", "/linktrack/tenants", bulkBody([]string{"bulk-1.brand.test", "bulk-2.brand.test"}), 200},
	} {
		if status, body, err := remoteRequest(client, addr, step.method, step.path, step.body); err != nil || status != step.status {
			t.Fatalf("%s %s over mutual TLS: %d %s %v; want %d", step.method, step.path, status, body, err, step.status)
		}
	}
	if got := stored(); !slices.Equal(got, []string{"bulk-1.brand.test", "bulk-2.brand.test", "remote.brand.test"}) {
		t.Errorf("stored tenants listed over mutual TLS: %q", got)
	}
	if status, body, err := remoteRequest(client, addr, "DELETE", "/linktrack/tenants/remote.brand.test", ""); err != nil || status != 204 {
		t.Fatalf("DELETE over mutual TLS: %d %s %v", status, body, err)
	}
	if got := stored(); !slices.Equal(got, []string{"bulk-1.brand.test", "bulk-2.brand.test"}) {
		t.Errorf("stored tenants after DELETE: %q", got)
	}

	// each change logged and emitted with the certificate's subject
	const identity = "CN=control-plane,O=Platform Example"
	for _, want := range []struct {
		operation string
		status    float64
		domains   []string
	}{
		{"put", 201, []string{"remote.brand.test"}},
		{"bulk", 200, []string{"bulk-1.brand.test", "bulk-2.brand.test"}},
		{"delete", 204, []string{"remote.brand.test"}},
	} {
		match := func(fields map[string]any) bool {
			return fields["operation"] == want.operation && fields["status"] == want.status &&
				fields["client"] == identity && fields["client_auth"] == "client_certificate" &&
				fmt.Sprint(fields["domains"]) == fmt.Sprint(want.domains)
		}
		e := p.waitLog(t, "tenant change", match)
		if e["logger"] != "admin.api.linktrack" || !strings.HasPrefix(e["remote_addr"].(string), "127.0.0.1:") {
			t.Errorf("tenant change line: %v", e)
		}
		p.waitLog(t, "event", func(e map[string]any) bool {
			data, _ := e["data"].(map[string]any)
			return e["name"] == "tenant_change" && e["origin"] == "linktrack" && data != nil && match(data)
		})
	}
	if e := p.waitLog(t, "tenant change", func(e map[string]any) bool { return e["operation"] == "bulk" }); e["put"] != 2.0 || e["remove"] != 0.0 || e["created"] != 2.0 {
		t.Errorf("bulk change line: %v", e)
	}

	// everything else is forbidden to the same certificate
	for _, req := range []struct{ method, path string }{
		{"POST", "/load"},
		{"GET", "/config/"},
		{"DELETE", "/config/"},
		{"POST", "/config/admin"},
		{"POST", "/stop"},
		{"GET", "/debug/pprof/"},
		{"GET", "/id/x"},
		{"PATCH", "/linktrack/tenants/bulk-1.brand.test"},
	} {
		status, body, err := remoteRequest(client, addr, req.method, req.path, `{}`)
		if err != nil || status != 403 {
			t.Errorf("%s %s over mutual TLS: %d %s %v; want 403", req.method, req.path, status, body, err)
		}
	}
	if got := stored(); len(got) != 2 {
		t.Errorf("stored tenants after the forbidden requests: %q", got)
	}
	if status, body := adminRequest(t, adminPort, "GET", "/config/apps/linktrack", ""); status != 200 || !strings.Contains(body, "click.config.test") {
		t.Errorf("the config after the forbidden requests: %d %s", status, body)
	}

	// the local endpoint logs the remote address as the client
	if status, body := adminRequest(t, adminPort, "DELETE", "/linktrack/tenants/bulk-2.brand.test", ""); status != 204 {
		t.Fatalf("DELETE on the local endpoint: %d %s", status, body)
	}
	p.waitLog(t, "tenant change", func(e map[string]any) bool {
		client, _ := e["client"].(string)
		return e["operation"] == "delete" && e["client_auth"] == "none" && strings.HasPrefix(client, "127.0.0.1:") && client == e["remote_addr"]
	})

	// refused at the handshake: no HTTP request is ever read
	before := len(p.logEntriesNamed("tenant change"))
	for _, tc := range []struct {
		name  string
		cert  *tls.Certificate
		alert string
	}{
		{"no client certificate", nil, "certificate required"},
		{"a certificate of another CA", &impostor.TLS, "unknown certificate authority"},
		{"a certificate of the same CA, not listed", &unlisted.TLS, "unknown certificate authority"},
	} {
		status, _, err := remoteRequest(mtlsClient(roots, tc.cert), addr, "PUT", "/linktrack/tenants/refused.brand.test", `{"origin": "esp"}`)
		if err == nil || !strings.Contains(err.Error(), "remote error: tls: "+tc.alert) {
			t.Errorf("%s: status %d, error %v; want the TLS alert %q", tc.name, status, err, tc.alert)
		}
	}
	if got := stored(); !slices.Equal(got, []string{"bulk-1.brand.test"}) {
		t.Errorf("stored tenants after the refused connections: %q", got)
	}
	if after := len(p.logEntriesNamed("tenant change")); after != before {
		t.Errorf("%d tenant changes logged from refused connections", after-before)
	}
	for _, e := range p.logEntriesNamed("received request") {
		if e["uri"] == "/linktrack/tenants/refused.brand.test" {
			t.Errorf("a refused connection's request reached HTTP: %v", e)
		}
	}
}

// storageFiles returns the size and modification time of every file
// under dir.
func storageFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files[path] = fmt.Sprintf("%d %s", info.Size(), info.ModTime())
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return files
}

// rawAdminRequest sends a request to the admin endpoint on port with
// the content type given, none if empty.
func rawAdminRequest(t *testing.T, port int, method, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := controlClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// TestAdminAPIBadInput: each kind of bad input to a change gets its
// status with the fault named, is logged as a refused tenant change,
// and changes neither the registry nor storage.
func TestAdminAPIBadInput(t *testing.T) {
	rig := newStoreRig(t)
	n := &storeNode{storage: rig.storage}
	n.httpPort, n.httpsPort, n.adminPort = freePort(t), freePort(t), freePort(t)
	n.caddy = startCaddy(t, "caddyfile", storeNodeCaddyfile(n.adminPort, n.httpPort, n.httpsPort, rig.storage, rig.origin.Port(), rig.caFile))
	if status, body := n.admin(t, "PUT", "/linktrack/tenants/kept.brand.test", `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT: %d %s", status, body)
	}
	n.waitTenants(t, 2)
	listed := n.listAll(t, "")
	files := storageFiles(t, filepath.Join(rig.storage, "linktrack"))
	if len(files) == 0 {
		t.Fatal("nothing in storage after a PUT")
	}

	const ctJSON = "application/json"
	long := strings.Repeat("a", 64)
	tooLong := strings.Repeat("abcdefghi.", 25) + "comx"
	changes := 1 // the PUT above
	for _, tc := range []struct {
		name, method, path, contentType, body string
		status                                int
		want                                  string
	}{
		{"body over the limit", "PUT", "/linktrack/tenants/new.brand.test", ctJSON,
			`{"origin": "esp", "region": "` + strings.Repeat("x", 1<<20) + `"}`, 413, "the body exceeds the limit of 1048576 bytes"},
		{"form content type", "PUT", "/linktrack/tenants/new.brand.test", "application/x-www-form-urlencoded", `{"origin": "esp"}`, 415, "send application/json"},
		{"text content type", "PUT", "/linktrack/tenants/new.brand.test", "text/plain", `{"origin": "esp"}`, 415, "send application/json"},
		{"bulk text content type", "POST", "/linktrack/tenants", "text/plain", bulkBody([]string{"new.brand.test"}), 415, "send application/json"},
		{"unknown field", "PUT", "/linktrack/tenants/new.brand.test", ctJSON, `{"origin": "esp", "colour": "red"}`, 400, `unknown field \"colour\"`},
		{"bulk unknown field", "POST", "/linktrack/tenants", ctJSON, `{"tenants": [], "colour": "red"}`, 400, `unknown field \"colour\"`},
		{"bulk entry unknown field", "POST", "/linktrack/tenants", ctJSON, `{"tenants": [{"domain": "new.brand.test", "origin": "esp", "colour": "red"}]}`, 400, `unknown field \"colour\"`},
		{"empty body", "PUT", "/linktrack/tenants/new.brand.test", ctJSON, ``, 400, "the body is empty"},
		{"not JSON", "PUT", "/linktrack/tenants/new.brand.test", "", `origin=esp`, 400, "invalid character"},
		{"data after the object", "PUT", "/linktrack/tenants/new.brand.test", ctJSON, `{"origin": "esp"} {"origin": "esp"}`, 400, "data after the JSON value"},
		{"IPv4 address", "PUT", "/linktrack/tenants/203.0.113.7", ctJSON, `{"origin": "esp"}`, 400, "'203.0.113.7' is an IP address"},
		{"IPv6 address", "PUT", "/linktrack/tenants/[2001:db8::1]", ctJSON, `{"origin": "esp"}`, 400, "is an IP address"},
		{"no punycode form", "PUT", "/linktrack/tenants/a%E2%80%8D.brand.test", ctJSON, `{"origin": "esp"}`, 400, "no punycode form"},
		{"label over 63 bytes", "PUT", "/linktrack/tenants/" + long + ".brand.test", ctJSON, `{"origin": "esp"}`, 400, "has a label of 64 bytes"},
		{"name over 253 bytes", "PUT", "/linktrack/tenants/" + tooLong, ctJSON, `{"origin": "esp"}`, 400, "is 254 bytes long; a domain name has at most 253"},
		{"public suffix", "PUT", "/linktrack/tenants/co.uk", ctJSON, `{"origin": "esp"}`, 400, "'co.uk' is a public suffix"},
		{"wildcard over a public suffix", "PUT", "/linktrack/tenants/*.co.uk", ctJSON, `{"origin": "esp"}`, 400, "every name under the public suffix 'co.uk'"},
		{"delete a public suffix", "DELETE", "/linktrack/tenants/github.io", "", ``, 400, "'github.io' is a public suffix"},
		{"delete an IP address", "DELETE", "/linktrack/tenants/203.0.113.7", "", ``, 400, "is an IP address"},
		{"bulk entries", "POST", "/linktrack/tenants", ctJSON, bulkBody([]string{"new.brand.test", "co.uk", long + ".brand.test", "203.0.113.7", "a\u200d.brand.test", tooLong}, "github.io"),
			400, `"6 faulty entries; nothing was changed"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := rawAdminRequest(t, n.adminPort, tc.method, tc.path, tc.contentType, tc.body)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("%s %s: %d %s; want %d with %q", tc.method, tc.path, status, body, tc.status, tc.want)
			}
			changes++
			logged := n.caddy.waitLogCount(t, 10*time.Second, "tenant change", changes, nil)
			if e := logged[changes-1]; e["status"] != float64(tc.status) || e["error"] == nil || e["client_auth"] != "none" {
				t.Errorf("tenant change line: %v", e)
			}
		})
	}
	if got := n.listAll(t, ""); !slices.Equal(got, listed) {
		t.Errorf("tenants after the bad input: %q, before %q", got, listed)
	}
	if now := storageFiles(t, filepath.Join(rig.storage, "linktrack")); !maps.Equal(now, files) {
		t.Errorf("storage changed:\nbefore %v\nafter  %v", files, now)
	}
	for _, e := range n.caddy.logEntriesNamed("tenant change") {
		if e["status"] != 201.0 && e["created"] != nil {
			t.Errorf("a refused change logged as created: %v", e)
		}
	}
	// the bulk faults name each entry
	status, body := n.admin(t, "POST", "/linktrack/tenants", bulkBody([]string{"co.uk", long + ".brand.test"}, "*.co.uk"))
	for _, want := range []string{"'co.uk' is a public suffix", "has a label of 64 bytes", "every name under the public suffix"} {
		if status != 400 || !strings.Contains(body, want) {
			t.Errorf("bulk faults: %d %s; want %q", status, body, want)
		}
	}
}

// TestAdminAPIChangeLimit: past change_limit, a change gets 429 with
// Retry-After and changes nothing; reading the tenants is not limited.
func TestAdminAPIChangeLimit(t *testing.T) {
	rig := newStoreRig(t)
	n := &storeNode{storage: rig.storage}
	n.httpPort, n.httpsPort, n.adminPort = freePort(t), freePort(t), freePort(t)
	config := storeNodeCaddyfile(n.adminPort, n.httpPort, n.httpsPort, rig.storage, rig.origin.Port(), rig.caFile)
	n.caddy = startCaddy(t, "caddyfile", strings.Replace(config, "\t\tpre_issuance off\n", "\t\tpre_issuance off\n\t\tchange_limit 3 1m\n", 1))

	for _, step := range []struct{ method, path, body string }{
		{"PUT", "/linktrack/tenants/a.brand.test", `{"origin": "esp"}`},
		{"PUT", "/linktrack/tenants/b.brand.test", `{"origin": "esp"}`},
		{"DELETE", "/linktrack/tenants/a.brand.test", ``},
	} {
		if status, body := n.admin(t, step.method, step.path, step.body); status >= 300 {
			t.Fatalf("%s %s within the limit: %d %s", step.method, step.path, status, body)
		}
	}
	for _, step := range []struct{ method, path, body string }{
		{"PUT", "/linktrack/tenants/c.brand.test", `{"origin": "esp"}`},
		{"DELETE", "/linktrack/tenants/b.brand.test", ``},
		{"POST", "/linktrack/tenants", bulkBody([]string{"d.brand.test"})},
	} {
		req, err := http.NewRequest(step.method, fmt.Sprintf("http://127.0.0.1:%d%s", n.adminPort, step.path), strings.NewReader(step.body))
		if err != nil {
			t.Fatal(err)
		}
		res, err := controlClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		retry, _ := strconv.Atoi(res.Header.Get("Retry-After"))
		if res.StatusCode != 429 || retry < 1 || retry > 20 || !strings.Contains(string(body), "change_limit") {
			t.Errorf("%s %s past the limit: %d, Retry-After %q, %s", step.method, step.path, res.StatusCode, res.Header.Get("Retry-After"), body)
		}
	}
	if got := n.listAll(t, "source=storage"); !slices.Equal(got, []string{"b.brand.test"}) {
		t.Errorf("stored tenants: %q", got)
	}
	n.caddy.waitLog(t, "tenant changes refused over change_limit", func(e map[string]any) bool {
		return e["level"] == "warn" && e["refused"].(float64) >= 1 && e["change_limit"] == 3.0
	})
	if changes := n.caddy.logEntriesNamed("tenant change"); len(changes) != 3 {
		t.Errorf("%d tenant change lines, want 3 (none for a refused change)", len(changes))
	}
}
