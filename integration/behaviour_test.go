package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

func doRaw(t *testing.T, c *standin.RawClient, req standin.RawRequest) *standin.RawResponse {
	t.Helper()
	if req.Host == "" {
		req.Host = trackingDomain
	}
	res, err := c.Do(req, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func nextReceived(t *testing.T, r *rig) *standin.Received {
	t.Helper()
	rec, err := r.origin.Next(10 * time.Second)
	if err != nil {
		t.Fatalf("origin received nothing: %v", err)
	}
	return rec
}

// TestPlainHTTPIsProxied checks that old http:// links are proxied like
// https:// ones, with X-Forwarded-Proto telling the origin which.
func TestPlainHTTPIsProxied(t *testing.T) {
	r := newRig(t, rigOptions{})
	res := doRaw(t, r.plainClient(t), standin.RawRequest{Method: "GET", Target: "/ls/click?upn=old%2Flink"})
	if res.Status != 302 {
		t.Fatalf("status %d, want the origin's 302", res.Status)
	}
	rec := nextReceived(t, r)
	if rec.Target != "/ls/click?upn=old%2Flink" || !slices.Equal(rec.Values("Host"), []string{trackingDomain}) {
		t.Errorf("origin got %q with Host %q", rec.RequestLine, rec.Values("Host"))
	}
	if got := rec.Values("X-Forwarded-Proto"); !slices.Equal(got, []string{"http"}) {
		t.Errorf("X-Forwarded-Proto %q, want http", got)
	}
	if !rec.TLS || rec.SNI != "localhost" {
		t.Errorf("origin hop: TLS %v SNI %q; want TLS to localhost", rec.TLS, rec.SNI)
	}
}

// TestHTTPRedirect checks the option that redirects plain HTTP instead.
func TestHTTPRedirect(t *testing.T) {
	r := newRig(t, rigOptions{linktrack: "http_redirect"})
	res := doRaw(t, r.plainClient(t), standin.RawRequest{Method: "GET", Target: "/ls/click?upn=a|b%2Fc"})
	want := fmt.Sprintf("https://%s:%d/ls/click?upn=a|b%%2Fc", trackingDomain, r.httpsPort)
	if res.Status != 308 || !slices.Equal(res.Values("Location"), []string{want}) {
		t.Errorf("got %d Location %q; want 308 to %q", res.Status, res.Values("Location"), want)
	}
	if n := r.origin.Count(); n != 0 {
		t.Errorf("origin received %d requests", n)
	}
	// HTTPS is still proxied
	if res := doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/ls/click"}); res.Status != 302 {
		t.Errorf("HTTPS status %d, want the origin's 302", res.Status)
	}
}

// TestAppLinkFiles checks that app-link files are served locally while
// every other path reaches the origin.
func TestAppLinkFiles(t *testing.T) {
	dir := t.TempDir()
	aasa := []byte(`{"applinks":{"details":[{"appID":"ABCDE12345.com.example.shop","paths":["/uni/*"]}]}}`)
	assetlinks := []byte(`[{"relation":["delegate_permission/common.handle_all_urls"]}]`)
	aasaFile, assetFile := filepath.Join(dir, "aasa"), filepath.Join(dir, "assetlinks.json")
	if err := os.WriteFile(aasaFile, aasa, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(assetFile, assetlinks, 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{linktrack: "apple_app_site_association " + aasaFile + "\n\t\tassetlinks " + assetFile})
	c := r.rawClient(t)
	for _, tc := range []struct {
		method, target string
		status         int
		body           []byte
	}{
		{"GET", "/apple-app-site-association", 200, aasa},
		{"GET", "/.well-known/apple-app-site-association", 200, aasa},
		{"GET", "/.well-known/assetlinks.json?x=1", 200, assetlinks},
		{"HEAD", "/.well-known/assetlinks.json", 200, nil},
		{"POST", "/.well-known/assetlinks.json", 405, nil},
	} {
		res := doRaw(t, c, standin.RawRequest{Method: tc.method, Target: tc.target})
		if res.Status != tc.status || string(res.Body) != string(tc.body) {
			t.Errorf("%s %s: %d %q; want %d %q", tc.method, tc.target, res.Status, res.Body, tc.status, tc.body)
		}
		if tc.status == 200 && !slices.Equal(res.Values("Content-Type"), []string{"application/json"}) {
			t.Errorf("%s %s: Content-Type %q", tc.method, tc.target, res.Values("Content-Type"))
		}
	}
	if n := r.origin.Count(); n != 0 {
		t.Errorf("origin received %d requests for local files", n)
	}
	if res := doRaw(t, c, standin.RawRequest{Method: "GET", Target: "/.well-known/security.txt"}); res.Status != 302 {
		t.Errorf("other well-known path: status %d, want the origin's 302", res.Status)
	}
	if rec := nextReceived(t, r); rec.Target != "/.well-known/security.txt" {
		t.Errorf("origin got %q", rec.RequestLine)
	}
}

// TestTrustedProxy checks that X-Forwarded-For from a trusted proxy is
// kept and extended, per the server's trusted_proxies.
func TestTrustedProxy(t *testing.T) {
	r := newRig(t, rigOptions{servers: "trusted_proxies static 127.0.0.1/32"})
	doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/ls/click", Headers: []standin.Field{
		{Name: "X-Forwarded-For", Value: "203.0.113.7"},
		{Name: "X-Forwarded-Proto", Value: "http"},
	}})
	rec := nextReceived(t, r)
	if got := rec.Values("X-Forwarded-For"); !slices.Equal(got, []string{"203.0.113.7, 127.0.0.1"}) {
		t.Errorf("X-Forwarded-For %q, want the proxy's value plus the peer", got)
	}
	if got := rec.Values("X-Forwarded-Proto"); !slices.Equal(got, []string{"http"}) {
		t.Errorf("X-Forwarded-Proto %q, want the trusted proxy's http", got)
	}
}

// TestUnderscoreAndDotHeaders documents linktrack's choice: it follows
// the server's filter. Caddy drops header names holding '_' or '.'
// before any handler runs; a site that needs one lists it in the
// server's expected_underscore_headers or expected_dot_headers.
func TestUnderscoreAndDotHeaders(t *testing.T) {
	headers := []standin.Field{{Name: "X_Campaign", Value: "bf"}, {Name: "X.Segment", Value: "vip"}, {Name: "X-Plain", Value: "1"}}

	t.Run("dropped by default", func(t *testing.T) {
		r := newRig(t, rigOptions{})
		doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/", Headers: headers})
		rec := nextReceived(t, r)
		if len(rec.Values("X_Campaign")) != 0 || len(rec.Values("X.Segment")) != 0 || len(rec.Values("X-Plain")) != 1 {
			t.Errorf("origin headers %v", rec.Headers)
		}
	})
	t.Run("kept when the server expects them", func(t *testing.T) {
		r := newRig(t, rigOptions{servers: "expected_underscore_headers X_Campaign\n\t\texpected_dot_headers X.Segment"})
		doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/", Headers: headers})
		rec := nextReceived(t, r)
		if !slices.Equal(rec.Values("X_Campaign"), []string{"bf"}) || !slices.Equal(rec.Values("X.Segment"), []string{"vip"}) {
			t.Errorf("origin headers %v", rec.Headers)
		}
	})
}

// TestTLSServerName checks that tls_server_name sets SNI and the name
// verified, while Host stays the tracking domain.
func TestTLSServerName(t *testing.T) {
	r := newRig(t, rigOptions{originNames: []string{"track.esp.example"}, upstream: "https://127.0.0.1:{port}", linktrack: "tls_server_name track.esp.example"})
	if res := doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/ls/click"}); res.Status != 302 {
		t.Fatalf("status %d, want the origin's 302", res.Status)
	}
	rec := nextReceived(t, r)
	if rec.SNI != "track.esp.example" || !slices.Equal(rec.Values("Host"), []string{trackingDomain}) {
		t.Errorf("origin SNI %q Host %q; want SNI track.esp.example, Host %s", rec.SNI, rec.Values("Host"), trackingDomain)
	}
}

// TestPlainHTTPOrigin checks an origin that speaks plain HTTP only, as
// Mailgun's legacy tracking origin does.
func TestPlainHTTPOrigin(t *testing.T) {
	r := newRig(t, rigOptions{plainOrigin: true})
	res := doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/c/AbC?x=%2F"})
	if res.Status != 302 {
		t.Fatalf("status %d, want the origin's 302", res.Status)
	}
	rec := nextReceived(t, r)
	if rec.TLS || rec.Target != "/c/AbC?x=%2F" || !slices.Equal(rec.Values("Host"), []string{trackingDomain}) {
		t.Errorf("origin got TLS %v, %q, Host %q", rec.TLS, rec.RequestLine, rec.Values("Host"))
	}
	if got := rec.Values("X-Forwarded-Proto"); !slices.Equal(got, []string{"https"}) {
		t.Errorf("X-Forwarded-Proto %q, want https", got)
	}
}

// TestHostIsCanonical checks that the Host sent to the origin is the
// tracking domain in canonical form, whatever spelling the client used.
// Caddy's host matcher does not match a trailing dot, so those spellings
// go through a catch-all site, as in a platform's setup.
func TestHostIsCanonical(t *testing.T) {
	r := newRig(t, rigOptions{extraSites: "http:// {\n\timport linktrack\n}"})
	for _, tc := range []struct {
		host  string
		plain bool
	}{
		{host: "LINK.Example.TEST"},
		{host: fmt.Sprintf("link.example.test:%d", r.httpsPort)},
		{host: "link.example.test.", plain: true},
		{host: fmt.Sprintf("Link.Example.Test.:%d", r.httpPort), plain: true},
	} {
		c := r.rawClient(t)
		if tc.plain {
			c = r.plainClient(t)
		}
		res := doRaw(t, c, standin.RawRequest{Method: "GET", Target: "/ls/click", Host: tc.host})
		if res.Status != 302 {
			t.Errorf("Host %q: status %d, want the origin's 302", tc.host, res.Status)
			continue
		}
		rec := nextReceived(t, r)
		if got := rec.Values("Host"); !slices.Equal(got, []string{trackingDomain}) {
			t.Errorf("client Host %q reached the origin as %q", tc.host, got)
		}
		if got := rec.Values("X-Forwarded-Host"); !slices.Equal(got, []string{trackingDomain}) {
			t.Errorf("client Host %q: X-Forwarded-Host %q", tc.host, got)
		}
	}
}

// TestRequestBodyIsStreamed checks that the origin starts receiving a
// request while the client is still sending its body: the client holds
// back the second half of the body until the origin has the request's
// head, which a proxy that buffers whole bodies could never deliver.
func TestRequestBodyIsStreamed(t *testing.T) {
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	heads := make(chan *standin.Received, 1)
	leaf, err := ca.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	origin, err := standin.Start(standin.Config{
		Certificate: &leaf.TLS,
		OnHead:      func(r *standin.Received) { heads <- r },
		Respond:     func(*standin.Received) standin.Response { return redirectResponse() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { origin.Close() })
	r := newRig(t, rigOptions{upstream: fmt.Sprintf("https://localhost:%d", origin.Port()), linktrack: "tls_trust_pool file " + caFile})

	first, second := bytes.Repeat([]byte("a"), 300_000), bytes.Repeat([]byte("b"), 300_000)
	c := r.rawClient(t)
	head := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", trackingDomain, len(first)+len(second))
	if err := c.WriteRaw(append([]byte(head), first...)); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-heads:
		if h.Target != "/upload" {
			t.Errorf("origin got head %q", h.RequestLine)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the origin got nothing while half the body was still unsent: the body was buffered")
	}
	if err := c.WriteRaw(second); err != nil {
		t.Fatal(err)
	}
	res, err := c.ReadResponse("POST", 30*time.Second)
	if err != nil || res.Status != 302 {
		t.Fatalf("response: %v %v", err, res)
	}
	rec, err := origin.Next(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rec.BodySHA256 != sha(append(first, second...)) {
		t.Errorf("origin body of %d bytes differs from the client's", rec.BodyLen)
	}
}

// TestRequestVariables checks that {http.vars.linktrack.*} reach Caddy's
// access log.
func TestRequestVariables(t *testing.T) {
	r := newRig(t, rigOptions{site: `log
	log_append tenant {http.vars.linktrack.tenant}
	log_append provider {http.vars.linktrack.provider}
	log_append region {http.vars.linktrack.region}
	log_append origin {http.vars.linktrack.origin}`})
	doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/ls/click", Host: "Link.Example.TEST"})
	e := r.caddy.waitLog(t, "handled request", nil)
	want := map[string]any{
		"tenant":   trackingDomain,
		"provider": "upstream",
		"region":   "",
		"origin":   fmt.Sprintf("https://localhost:%d", r.origin.Port()),
	}
	for field, value := range want {
		if e[field] != value {
			t.Errorf("access log %s = %v, want %v (entry %v)", field, e[field], value, e)
		}
	}
}

// TestLivenessPath checks that the liveness path is answered locally.
func TestLivenessPath(t *testing.T) {
	r := newRig(t, rigOptions{linktrack: "liveness_path /_lb/live"})
	c := r.rawClient(t)
	for _, method := range []string{"GET", "HEAD"} {
		res := doRaw(t, c, standin.RawRequest{Method: method, Target: "/_lb/live"})
		if res.Status != 200 || (method == "GET" && string(res.Body) != "OK\n") {
			t.Errorf("%s liveness: %d %q", method, res.Status, res.Body)
		}
	}
	if res := doRaw(t, c, standin.RawRequest{Method: "GET", Target: "/health"}); res.Status != 302 {
		t.Errorf("the origin's /health: status %d, want the origin's answer", res.Status)
	}
	if n := r.origin.Count(); n != 1 {
		t.Errorf("origin received %d requests, want only the /health one", n)
	}
}

// TestScannerAnnotation checks that likely scanner requests are marked
// in a placeholder and a metric, and forwarded exactly like others.
func TestScannerAnnotation(t *testing.T) {
	r := newRig(t, rigOptions{
		linktrack: "scanners {\n\t\t\tuser_agents Mimecast Proofpoint\n\t\t}",
		site:      "log\n\tlog_append scanner {http.vars.linktrack.scanner}",
	})
	c := r.rawClient(t)
	ua := "Mozilla/5.0 (compatible; Mimecast URL Protect)"
	doRaw(t, c, standin.RawRequest{Method: "GET", Target: "/ls/click?upn=s", Headers: []standin.Field{{Name: "User-Agent", Value: ua}}})
	rec := nextReceived(t, r)
	if !slices.Equal(rec.Values("User-Agent"), []string{ua}) || rec.Target != "/ls/click?upn=s" {
		t.Errorf("marked request reached the origin as %q with User-Agent %q", rec.RequestLine, rec.Values("User-Agent"))
	}
	r.caddy.waitLog(t, "handled request", func(e map[string]any) bool { return e["scanner"] == "user_agent" })
	doRaw(t, c, standin.RawRequest{Method: "HEAD", Target: "/ls/click?upn=s"})
	if rec := nextReceived(t, r); rec.Method != "HEAD" {
		t.Errorf("HEAD reached the origin as %q", rec.RequestLine)
	}
	metrics := scrapeMetrics(t, r.adminPort)
	for _, want := range []string{
		`caddy_linktrack_scanner_requests_total{signal="user_agent"} 1`,
		`caddy_linktrack_scanner_requests_total{signal="head"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "scanner"))
		}
	}
}

// TestPerTenantMetrics checks the opt-in per-tenant request counter,
// and that no tenant label exists without it.
func TestPerTenantMetrics(t *testing.T) {
	for _, optIn := range []bool{true, false} {
		opts := rigOptions{}
		if optIn {
			opts.linktrack = "per_tenant_metrics"
		}
		r := newRig(t, opts)
		doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/ls/click"})
		metrics := scrapeMetrics(t, r.adminPort)
		want := `caddy_linktrack_tenant_requests_total{status_class="3xx",tenant="link.example.test"} 1`
		if got := strings.Contains(metrics, want); got != optIn {
			t.Errorf("per_tenant_metrics %v: series present %v:\n%s", optIn, got, grepLines(metrics, "caddy_linktrack"))
		}
		if !optIn && strings.Contains(metrics, "tenant=") {
			t.Errorf("a tenant label exists without the opt-in:\n%s", grepLines(metrics, "tenant="))
		}
	}
}
