package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// dnsRecord calls the mock DNS server's management API.
func dnsRecord(t testing.TB, management, endpoint, body string) {
	t.Helper()
	res, err := controlClient.Post(management+endpoint, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("%s %s: %d", endpoint, body, res.StatusCode)
	}
}

type checkOutput struct {
	Domain, Origin string
	OK             bool
	Checks         []struct{ Check, Status, Detail, Fix, Next string }
}

func (o checkOutput) status(name string) (string, string) {
	for _, c := range o.Checks {
		if c.Check == name {
			return c.Status, c.Detail + " | " + c.Fix
		}
	}
	return "", ""
}

// TestCheckCommand runs `caddy linktrack check` against a running
// linktrack with a stand-in origin and a mock DNS server.
func TestCheckCommand(t *testing.T) {
	dnsAddr, management := startMockDNS(t)
	dnsRecord(t, management, "/set-cname", `{"Host": "link.example.test.", "Target": "edge.platform.test."}`)
	dnsRecord(t, management, "/add-caa", `{"Host": "example.test.", "Policies": [{"Tag": "issue", "Value": "letsencrypt.org"}]}`)

	// the parent domain, with HSTS on its subdomains, served by the same Caddy
	dir := t.TempDir()
	ca, _ := newTestCA(t, dir)
	parent, err := ca.Issue("example.test")
	if err != nil {
		t.Fatal(err)
	}
	parentCert, parentKey, err := parent.WriteFiles(dir, "parent")
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{extraSites: fmt.Sprintf(`
https://example.test {
	tls %s %s
	header Strict-Transport-Security "max-age=31536000; includeSubDomains"
	respond "parent" 200
}`, parentCert, parentKey)})
	// the parent's certificate comes from another CA than the rig's
	caFile := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(caFile, append(append([]byte{}, ca.CertPEM...), r.ca.CertPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	r.respond(*respondWith(200, []standin.Field{{Name: "Content-Type", Value: "application/json"}}, []byte("{}")))

	run := func() (checkOutput, int, string) {
		cmd := caddyCmd(t, "linktrack", "check", "link.example.test", "--provider", "customerio", "--region", "us",
			"--dns-server", dnsAddr, "--http-port", strconv.Itoa(r.httpPort), "--https-port", strconv.Itoa(r.httpsPort),
			"--ca-file", caFile, "--json")
		out, err := cmd.Output()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		var o checkOutput
		if err := json.Unmarshal(out, &o); err != nil {
			t.Fatalf("output %s: %v", out, err)
		}
		return o, code, string(out)
	}

	o, code, raw := run()
	if code != 0 || !o.OK {
		t.Errorf("exit code %d, ok %v; want 0, true\n%s", code, o.OK, raw)
	}
	// the test CA's certificates live a day: the renewal warning shows
	if status, detail := o.status("tls"); status != "warn" || !strings.Contains(detail, "for link.example.test") || !strings.Contains(detail, "renewal") {
		t.Errorf("tls: %s %q, want a warning about a certificate expiring within 14 days", status, detail)
	}
	for check, want := range map[string]string{
		"dns":      "link.example.test → CNAME edge.platform.test → A 127.0.0.1",
		"caa":      "example.test allows letsencrypt.org",
		"http":     "answered 200",
		"https":    "answered 200",
		"provider": "customerio GET /health",
		"hsts":     "includeSubDomains",
	} {
		status, detail := o.status(check)
		if status != "pass" || !strings.Contains(detail, want) {
			t.Errorf("%s: %s %q, want pass containing %q", check, status, detail, want)
		}
	}

	// DNS points elsewhere: --resolve tests this server anyway, and the
	// DNS check warns
	dnsRecord(t, management, "/add-a", `{"Host": "edge.platform.test.", "Addresses": ["192.0.2.10"]}`)
	resolved, _ := caddyCmd(t, "linktrack", "check", "link.example.test", "--provider", "customerio", "--region", "us",
		"--dns-server", dnsAddr, "--http-port", strconv.Itoa(r.httpPort), "--https-port", strconv.Itoa(r.httpsPort),
		"--ca-file", caFile, "--resolve", "127.0.0.1", "--json").Output()
	var ro checkOutput
	if err := json.Unmarshal(resolved, &ro); err != nil {
		t.Fatalf("--resolve output %s: %v", resolved, err)
	}
	if status, detail := ro.status("dns"); status != "warn" || !strings.Contains(detail, "A 192.0.2.10 (not 127.0.0.1, the server tested)") {
		t.Errorf("--resolve dns: %s %q", status, detail)
	}
	if status, detail := ro.status("provider"); status != "pass" {
		t.Errorf("--resolve provider: %s %q; the server at 127.0.0.1 should have been tested", status, detail)
	}
	dnsRecord(t, management, "/clear-a", `{"Host": "edge.platform.test."}`)

	// a CAA record that excludes Let's Encrypt, and a wrong answer to
	// the provider's check: both fail, with a fix, and the exit code is 1
	dnsRecord(t, management, "/clear-caa", `{"Host": "example.test."}`)
	dnsRecord(t, management, "/add-caa", `{"Host": "example.test.", "Policies": [{"Tag": "issue", "Value": "digicert.com"}]}`)
	r.respond(*respondWith(404, nil, []byte("Invalid link security token")))
	o, code, raw = run()
	if code != 1 || o.OK {
		t.Errorf("exit code %d, ok %v; want 1, false\n%s", code, o.OK, raw)
	}
	text, _ := caddyCmd(t, "linktrack", "check", "link.example.test", "--provider", "customerio", "--region", "us",
		"--dns-server", dnsAddr, "--http-port", strconv.Itoa(r.httpPort), "--https-port", strconv.Itoa(r.httpsPort),
		"--ca-file", caFile).CombinedOutput()
	for _, want := range []string{"FAIL  caa", `fix: add a CAA record`, "PASS  dns", "2 of 7 checks failed"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
	for check, want := range map[string]string{
		"caa":      `add a CAA record: example.test. CAA 0 issue "letsencrypt.org"`,
		"provider": "got 404",
	} {
		status, detail := o.status(check)
		if status != "fail" || !strings.Contains(detail, want) {
			t.Errorf("%s: %s %q, want fail containing %q", check, status, detail, want)
		}
	}
}
