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
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
	"github.com/caddy-linktrack/caddy-linktrack/linktrack"
)

// detectOutput is the JSON output of `caddy linktrack check` with what
// it detected from the CNAME chain.
type detectOutput struct {
	checkOutput
	Detected *struct {
		Provider, Title, Region, CNAME, Source, Caddyfile string
		SelfIssued                                        string `json:"self_issued"`
		NoProxy                                           bool   `json:"no_proxy"`
		Tenant                                            *struct{ Domain, Provider, Region string }
	}
}

// runCheck runs `caddy linktrack check link.example.test` with args and
// --json, and returns its output and exit code.
func runCheck(t *testing.T, args ...string) (detectOutput, int, string) {
	t.Helper()
	cmd := caddyCmd(t, append([]string{"linktrack", "check", trackingDomain, "--json"}, args...)...)
	out, err := cmd.Output()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var o detectOutput
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatalf("output %s: %v", out, err)
	}
	return o, code, string(out)
}

// TestCheckDetect points link.example.test's CNAME at each provider's
// tracking host in the mock DNS server and checks that `caddy linktrack
// check` names the provider and region, prints a Caddyfile that Caddy
// adapts to that provider, flags providers that issue certificates
// themselves, and guesses nothing from a CNAME it does not know. No
// server listens on the ports checked, so only DNS matters here.
func TestCheckDetect(t *testing.T) {
	dnsAddr, management := startMockDNS(t)
	closed := strconv.Itoa(freePort(t))
	check := func(t *testing.T, args ...string) (detectOutput, string) {
		t.Helper()
		o, _, raw := runCheck(t, append([]string{"--dns-server", dnsAddr, "--http-port", closed, "--https-port", closed, "--timeout", "5s"}, args...)...)
		return o, raw
	}
	setCNAME := func(t *testing.T, host, target string) {
		t.Helper()
		dnsRecord(t, management, "/set-cname", fmt.Sprintf(`{"Host": %q, "Target": %q}`, host+".", target+"."))
	}

	cases := []struct {
		target, provider, region string
		selfIssued               bool // warned: the provider may issue the certificate itself
		noProxy                  bool // no Caddyfile: the provider serves HTTPS itself
	}{
		{target: "e.customeriomail.com", provider: "customerio", region: "us", selfIssued: true},
		{target: "e-eu.customeriomail.com", provider: "customerio", region: "eu", selfIssued: true},
		{target: "sendgrid.net", provider: "sendgrid", region: "global"},
		{target: "eu.sendgrid.net", provider: "sendgrid", region: "eu"},
		{target: "spgo.io", provider: "sparkpost", region: "us"},
		{target: "eu.spgo.io", provider: "sparkpost", region: "eu"},
		{target: "v2.spgo.io", provider: "sparkpost", region: "us", selfIssued: true, noProxy: true},
		{target: "eu.v2.spgo.io", provider: "sparkpost", region: "eu", selfIssued: true, noProxy: true},
		{target: "r.eu-west-1.awstrack.me", provider: "ses", region: "eu-west-1"},
		{target: "r.us-east-1.awstrack.me", provider: "ses", region: "us-east-1"},
		{target: "mailgun.org", provider: "mailgun", region: "us", selfIssued: true},
		{target: "eu.mailgun.org", provider: "mailgun", region: "eu", selfIssued: true},
		{target: "links.iterable.com", provider: "iterable", region: "us"},
		{target: "links.eu.iterable.com", provider: "iterable", region: "eu"},
		{target: "t.mailjet.com", provider: "mailjet", selfIssued: true, noProxy: true},
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			setCNAME(t, trackingDomain, tc.target)
			o, raw := check(t)
			d := o.Detected
			if d == nil || d.Provider != tc.provider || d.Region != tc.region || d.CNAME != tc.target || d.Source == "" {
				t.Fatalf("detected %+v, want %s %s from %s with a source\n%s", d, tc.provider, tc.region, tc.target, raw)
			}
			status, detail := o.status("detect")
			wantStatus := "pass"
			if tc.selfIssued {
				wantStatus = "warn"
				for _, want := range []string{"issues the certificate itself", "no proxy is needed", "a proxy in front of it breaks " + d.Title + "'s own issuance"} {
					if !strings.Contains(detail, want) {
						t.Errorf("detect %q lacks %q", detail, want)
					}
				}
			}
			if status != wantStatus || !strings.Contains(detail, "CNAME "+tc.target+" is "+d.Title) {
				t.Errorf("detect: %s %q, want %s naming %s", status, detail, wantStatus, tc.target)
			}
			if (d.SelfIssued != "") != tc.selfIssued || d.NoProxy != tc.noProxy {
				t.Errorf("self_issued %q, no_proxy %v; want %v, %v", d.SelfIssued, d.NoProxy, tc.selfIssued, tc.noProxy)
			}
			if tc.noProxy {
				if d.Caddyfile != "" || d.Tenant != nil {
					t.Errorf("a Caddyfile or tenant for a provider that serves HTTPS itself: %q %+v", d.Caddyfile, d.Tenant)
				}
				if status, _ := o.status("switch"); status != "" {
					t.Errorf("switch reported (%s) where no proxy is needed", status)
				}
				return
			}
			if d.Tenant == nil || *d.Tenant != (struct{ Domain, Provider, Region string }{trackingDomain, tc.provider, tc.region}) {
				t.Errorf("tenant %+v", d.Tenant)
			}
			// the Caddyfile printed serves the domain with that provider
			file := filepath.Join(t.TempDir(), "Caddyfile")
			if err := os.WriteFile(file, []byte(d.Caddyfile), 0o600); err != nil {
				t.Fatal(err)
			}
			adapted, err := caddyCmd(t, "adapt", "--config", file).Output()
			want := fmt.Sprintf(`"handler":"linktrack","provider":%q,"region":%q`, tc.provider, tc.region)
			if err != nil || !strings.Contains(string(adapted), want) || !strings.Contains(string(adapted), `"host":["`+trackingDomain+`"]`) {
				t.Errorf("caddy adapt of\n%s: %v\n%s\nwant it to contain %s", d.Caddyfile, err, adapted, want)
			}
			// DNS still points at the provider: the next step is testing
			// the server
			if status, detail := o.status("switch"); status != "warn" || !strings.Contains(detail, "step 1 of 4") {
				t.Errorf("switch: %s %q, want a warning at step 1", status, detail)
			}
			if status, detail := o.status("dns"); status != "warn" || !strings.Contains(detail, "own host, not a linktrack server") {
				t.Errorf("dns: %s %q", status, detail)
			}
		})
	}

	// every CNAME target of the catalog is among the cases above
	t.Run("catalog covered", func(t *testing.T) {
		tested := make(map[string]bool)
		for _, tc := range cases {
			tested[tc.target] = true
		}
		for _, p := range linktrack.Providers() {
			for _, target := range p.CNAMETargets {
				if !strings.Contains(target.Host, "<region>") && !tested[target.Host] {
					t.Errorf("%s: CNAME target %s has no detection case", p.Name, target.Host)
				}
			}
		}
	})

	t.Run("passes through", func(t *testing.T) {
		setCNAME(t, trackingDomain, "track.cdn.test")
		setCNAME(t, "track.cdn.test", "r.eu-central-1.awstrack.me")
		defer dnsRecord(t, management, "/clear-cname", `{"Host": "track.cdn.test."}`)
		o, raw := check(t)
		if d := o.Detected; d == nil || d.Provider != "ses" || d.Region != "eu-central-1" || d.CNAME != "r.eu-central-1.awstrack.me" {
			t.Errorf("detected %+v, want ses eu-central-1\n%s", d, raw)
		}
		if _, detail := o.status("dns"); !strings.Contains(detail, "CNAME track.cdn.test → CNAME r.eu-central-1.awstrack.me") {
			t.Errorf("dns: %q", detail)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		setCNAME(t, trackingDomain, "u123.wl.sendgrid.net") // near a provider's host, not one
		o, raw := check(t)
		status, detail := o.status("detect")
		if o.Detected != nil || status != "warn" || !strings.Contains(detail, "ends at u123.wl.sendgrid.net, which is no provider's tracking host") ||
			!strings.Contains(detail, "no provider guessed") || !strings.Contains(detail, "--provider") {
			t.Errorf("detect: %s %q, detected %+v; want a warning that guesses nothing\n%s", status, detail, o.Detected, raw)
		}
		if status, _ := o.status("provider"); status != "warn" {
			t.Errorf("provider: %s, want a warning: no provider to check", status)
		}
		if status, _ := o.status("switch"); status != "" {
			t.Errorf("switch reported (%s) with no provider known", status)
		}
		text, _ := caddyCmd(t, "linktrack", "check", trackingDomain, "--dns-server", dnsAddr,
			"--http-port", closed, "--https-port", closed).CombinedOutput()
		if strings.Contains(string(text), "Caddyfile:") || strings.Contains(string(text), "tenant:") {
			t.Errorf("text output suggests a config for an unknown CNAME:\n%s", text)
		}
		if !strings.Contains(string(text), "WARN  detect    the CNAME chain ends at u123.wl.sendgrid.net") {
			t.Errorf("text output:\n%s", text)
		}
	})

	t.Run("no CNAME", func(t *testing.T) {
		dnsRecord(t, management, "/clear-cname", `{"Host": "link.example.test."}`)
		o, _ := check(t)
		if status, detail := o.status("detect"); status != "warn" || !strings.Contains(detail, "has no CNAME") {
			t.Errorf("detect: %s %q", status, detail)
		}
	})

	t.Run("text", func(t *testing.T) {
		setCNAME(t, trackingDomain, "e-eu.customeriomail.com")
		text, _ := caddyCmd(t, "linktrack", "check", trackingDomain, "--dns-server", dnsAddr,
			"--http-port", closed, "--https-port", closed).CombinedOutput()
		for _, want := range []string{
			"link.example.test (customerio eu → https://track-eu.customer.io, detected)",
			"\tlink.example.test, http://link.example.test {\n\t\tlinktrack customerio eu\n\t}\n",
			`tenant: {"domain":"link.example.test","provider":"customerio","region":"eu"}`,
			"WARN  detect    CNAME e-eu.customeriomail.com is Customer.io, region eu",
			"next: serve link.example.test from linktrack, then test that server before moving the CNAME",
		} {
			if !strings.Contains(string(text), want) {
				t.Errorf("text output lacks %q:\n%s", want, text)
			}
		}
	})

	t.Run("other provider given", func(t *testing.T) {
		setCNAME(t, trackingDomain, "sendgrid.net")
		o, _ := check(t, "--provider", "customerio", "--region", "us")
		if status, detail := o.status("detect"); status != "warn" || !strings.Contains(detail, "is SendGrid") || !strings.Contains(detail, "not customerio us") {
			t.Errorf("detect: %s %q, want a warning that the CNAME is another provider's", status, detail)
		}
		if o.Detected == nil || o.Detected.Caddyfile != "" {
			t.Errorf("detected %+v: a provider was given, so no Caddyfile is suggested", o.Detected)
		}
	})
}

// TestCheckSwitch moves link.example.test from Customer.io's tracking
// host to a running linktrack, checking each step with --resolve: the
// server holds the certificate and proxies before the CNAME moves, and
// the CNAME then reaches it. Clicks over http:// and https:// reach the
// origin through the server before and after the move.
func TestCheckSwitch(t *testing.T) {
	dnsAddr, management := startMockDNS(t)
	r := newRig(t, rigOptions{})
	r.respond(*respondWith(200, []standin.Field{{Name: "Content-Type", Value: "application/json"}}, []byte("{}")))
	ports := []string{"--dns-server", dnsAddr, "--http-port", strconv.Itoa(r.httpPort), "--https-port", strconv.Itoa(r.httpsPort), "--ca-file", r.caFile}

	// before: the domain is a CNAME to Customer.io's tracking host, which
	// is elsewhere; the server is edge.platform.test (127.0.0.1)
	dnsRecord(t, management, "/set-cname", `{"Host": "link.example.test.", "Target": "e.customeriomail.com."}`)
	dnsRecord(t, management, "/add-a", `{"Host": "e.customeriomail.com.", "Addresses": ["192.0.2.10"]}`)

	// clicks checks that the check's requests reached the origin over both schemes, through the server
	clicks := func(t *testing.T) {
		t.Helper()
		schemes := map[string]bool{}
		for range 3 { // the check's GET / over http and https, and GET /health
			req, err := r.origin.Next(10 * time.Second)
			if err != nil {
				t.Fatalf("the origin got %d requests: %v", len(schemes), err)
			}
			if host := req.Values("Host"); len(host) != 1 || host[0] != trackingDomain {
				t.Errorf("%s reached the origin with Host %q", req.RequestLine, host)
			}
			for _, proto := range req.Values("X-Forwarded-Proto") {
				schemes[proto] = true
			}
		}
		if !schemes["http"] || !schemes["https"] {
			t.Errorf("schemes reaching the origin: %v, want http and https", schemes)
		}
	}

	// step 1, not ready: nothing serves HTTPS on the port checked, so the
	// certificate is not there and the CNAME must not move
	closed := strconv.Itoa(freePort(t))
	o, code, raw := runCheck(t, "--dns-server", dnsAddr, "--http-port", strconv.Itoa(r.httpPort), "--https-port", closed,
		"--ca-file", r.caFile, "--resolve", "edge.platform.test")
	if status, detail := o.status("switch"); code != 1 || status != "fail" || !strings.Contains(detail, "holds no valid certificate for link.example.test; do not move the CNAME") ||
		!strings.Contains(detail, "DNS-01") || !strings.Contains(detail, "on demand") || !strings.Contains(detail, "`tls <cert_file> <key_file>`") {
		t.Errorf("exit %d, switch %s %q; want a failure listing the ways to get the certificate first\n%s", code, status, detail, raw)
	}
	r.origin.Reset()

	// step 1, done: the server holds the certificate and reaches the
	// origin; DNS still points at Customer.io
	o, code, raw = runCheck(t, append(ports, "--resolve", "edge.platform.test")...)
	if code != 0 || !o.OK {
		t.Errorf("exit code %d, ok %v; want 0, true\n%s", code, o.OK, raw)
	}
	for check, want := range map[string]string{
		"dns":      "CNAME e.customeriomail.com → A 192.0.2.10 (not edge.platform.test, the server tested)",
		"tls":      "for link.example.test",
		"https":    "answered 200",
		"provider": "customerio GET /health",
	} {
		if status, detail := o.status(check); !strings.Contains(detail, want) || status == "fail" {
			t.Errorf("%s: %s %q, want %q", check, status, detail, want)
		}
	}
	if status, detail := o.statusNext("switch"); status != "pass" ||
		!strings.Contains(detail, "step 1 of 4 done: edge.platform.test holds the certificate for link.example.test, and http:// and https:// clicks through it reach Customer.io") ||
		!strings.Contains(detail, "move the CNAME of link.example.test from e.customeriomail.com to edge.platform.test (step 2), then run this check again with --provider customerio --region us") {
		t.Errorf("switch: %s %q", status, detail)
	}
	if o.Detected == nil || o.Detected.Provider != "customerio" || o.Detected.Region != "us" {
		t.Errorf("detected %+v", o.Detected)
	}
	clicks(t)

	// step 2: the CNAME moves to the server
	dnsRecord(t, management, "/set-cname", `{"Host": "link.example.test.", "Target": "edge.platform.test."}`)
	o, code, raw = runCheck(t, append(ports, "--resolve", "edge.platform.test", "--provider", "customerio", "--region", "us")...)
	if code != 0 || !o.OK {
		t.Errorf("exit code %d, ok %v; want 0, true\n%s", code, o.OK, raw)
	}
	if status, detail := o.statusNext("switch"); status != "pass" ||
		!strings.Contains(detail, "step 2 of 4 done: link.example.test points at edge.platform.test, which serves it over http:// and https://; Customer.io's own check passes through it") ||
		!strings.Contains(detail, "verify the domain in Customer.io (step 3); only when that passes, turn HTTPS links on (step 4)") {
		t.Errorf("switch: %s %q", status, detail)
	}
	if status, detail := o.status("dns"); status != "pass" || !strings.Contains(detail, "link.example.test → CNAME edge.platform.test → A 127.0.0.1") {
		t.Errorf("dns: %s %q", status, detail)
	}
	if status, _ := o.status("detect"); status != "" {
		t.Errorf("detect reported (%s) with the provider given and no provider host in the chain", status)
	}
	clicks(t)

	// a provider host that serves a valid certificate for the domain
	// issues it itself: no proxy is needed
	dnsRecord(t, management, "/set-cname", `{"Host": "link.example.test.", "Target": "e.customeriomail.com."}`)
	dnsRecord(t, management, "/clear-a", `{"Host": "e.customeriomail.com."}`)
	o, _, raw = runCheck(t, ports...)
	if status, detail := o.status("switch"); status != "warn" ||
		!strings.Contains(detail, "Customer.io serves a valid certificate for link.example.test itself: no proxy is needed, and moving the CNAME to one breaks Customer.io's own issuance") {
		t.Errorf("switch: %s %q\n%s", status, detail, raw)
	}
}

// statusNext is status with the next step appended.
func (o checkOutput) statusNext(name string) (string, string) {
	for _, c := range o.Checks {
		if c.Check == name {
			return c.Status, c.Detail + " | " + c.Fix + " | " + c.Next
		}
	}
	return "", ""
}
