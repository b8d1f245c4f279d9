package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// trackingDomain is the branded domain the tests' Caddy serves.
const trackingDomain = "link.example.test"

// rig is one Caddy running linktrack in front of one stand-in origin,
// over TLS on both sides, with a CA of the test's own.
type rig struct {
	ca        *standin.CA
	caFile    string
	origin    *standin.Origin
	caddy     *caddyProcess
	httpPort  int
	httpsPort int
	adminPort int

	mu       sync.Mutex
	response standin.Response
}

// rigOptions shape a rig.
type rigOptions struct {
	// Lines added inside the linktrack block.
	linktrack string
	// Lines added to the global servers block.
	servers string
	// Lines added to the site, before linktrack.
	site string
	// Upstream overrides the origin URL; "" points at the stand-in by
	// the name localhost. "{port}" stands for the stand-in's port.
	upstream string
	// Provider, e.g. "customerio eu", replaces the upstream.
	provider string
	// Extra site blocks appended to the Caddyfile.
	extraSites string
	// originTLS, when false, runs the stand-in over plain HTTP.
	plainOrigin bool
	// originNames overrides the names in the origin's certificate.
	originNames []string
	// originCA, when set, signs the origin's certificate instead of
	// the rig's CA.
	originCA *standin.CA
	// originExpired gives the origin a certificate that has expired.
	originExpired bool
	// h3 also serves HTTP/3 on the HTTPS port (UDP), as Caddy does by
	// default; without it the rig serves HTTP/1.1 and HTTP/2 only.
	h3 bool
}

// newRig starts a stand-in origin and a Caddy proxying to it.
func newRig(t testing.TB, opts rigOptions) *rig {
	t.Helper()
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	r := &rig{ca: ca, caFile: caFile}
	r.response = redirectResponse()

	var signer *standin.CA
	if !opts.plainOrigin {
		signer = ca
		if opts.originCA != nil {
			signer = opts.originCA
		}
	}
	names := opts.originNames
	if names == nil {
		names = []string{"localhost"}
	}
	respond := func(*standin.Received) standin.Response {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.response
	}
	if opts.originExpired {
		leaf, err := ca.IssueExpired(names...)
		if err != nil {
			t.Fatal(err)
		}
		if r.origin, err = standin.Start(standin.Config{Certificate: &leaf.TLS, Respond: respond}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.origin.Close() })
	} else {
		r.origin = startOrigin(t, signer, names, respond)
	}

	site, err := ca.Issue(trackingDomain)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := site.WriteFiles(dir, "site")
	if err != nil {
		t.Fatal(err)
	}

	upstream := strings.ReplaceAll(opts.upstream, "{port}", strconv.Itoa(r.origin.Port()))
	if upstream == "" {
		scheme := "https"
		if opts.plainOrigin {
			scheme = "http"
		}
		upstream = fmt.Sprintf("%s://localhost:%d", scheme, r.origin.Port())
	}
	origin := "upstream " + upstream
	if strings.HasPrefix(upstream, "https") && !strings.Contains(opts.linktrack, "tls_trust_pool") {
		origin += "\n\t\ttls_trust_pool file " + caFile
	}
	if opts.provider != "" {
		origin = "provider " + opts.provider
	}

	protocols := "h1 h2"
	if opts.h3 {
		protocols = "h1 h2 h3"
	}
	r.httpPort, r.httpsPort, r.adminPort = freePort(t), freePort(t), freePort(t)
	config := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	storage file_system %s
	servers {
		protocols %s
		%s
	}
}

(linktrack) {
	%s
	linktrack {
		%s
		%s
	}
}

https://%s {
	tls %s %s
	import linktrack
}

http://%s {
	import linktrack
}
%s
`, r.adminPort, r.httpPort, r.httpsPort, filepath.Join(dir, "storage"), protocols, opts.servers,
		opts.site, origin, opts.linktrack, trackingDomain, certFile, keyFile, trackingDomain, opts.extraSites)
	r.caddy = startCaddy(t, "caddyfile", config)
	return r
}

// newTestCA makes a CA and writes its certificate to dir.
func newTestCA(t testing.TB, dir string) (*standin.CA, string) {
	t.Helper()
	ca, err := standin.NewCA("linktrack test CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return ca, caFile
}

// startOrigin starts a stand-in origin that answers with respond, over
// TLS with a certificate for names signed by signer, or over plain HTTP
// if signer is nil. It stops when the test ends.
func startOrigin(t testing.TB, signer *standin.CA, names []string, respond func(*standin.Received) standin.Response) *standin.Origin {
	t.Helper()
	cfg := standin.Config{Respond: respond}
	if signer != nil {
		leaf, err := signer.Issue(names...)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificate = &leaf.TLS
	}
	origin, err := standin.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { origin.Close() })
	return origin
}

// respond sets the origin's answer to the next requests.
func (r *rig) respond(res standin.Response) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.response = res
}

// clientTLS returns the client side TLS config for the tracking domain.
func (r *rig) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: r.ca.Pool, ServerName: trackingDomain}
}

// rawClient opens an HTTP/1.1 connection to Caddy's HTTPS port.
func (r *rig) rawClient(t testing.TB) *standin.RawClient {
	t.Helper()
	c, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", r.httpsPort), r.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// plainClient opens an HTTP/1.1 connection to Caddy's HTTP port.
func (r *rig) plainClient(t testing.TB) *standin.RawClient {
	t.Helper()
	c, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", r.httpPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// h2Client returns an HTTP/2-only client that dials Caddy whatever the
// URL's host, and adds nothing to requests on its own.
func (r *rig) h2Client() *http.Client {
	addr := fmt.Sprintf("127.0.0.1:%d", r.httpsPort)
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:    r.clientTLS(),
			Protocols:          protocols,
			DisableCompression: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

// redirectResponse is a click's usual answer: a redirect carrying the
// shopper's UTM parameters.
func redirectResponse() standin.Response {
	return standin.Response{
		Status: http.StatusFound,
		Headers: []standin.Field{
			{Name: "Date", Value: "Sun, 22 Nov 2026 10:00:00 GMT"},
			{Name: "Location", Value: "https://shop.example.com/p/42?utm_source=email&utm_medium=click&utm_campaign=black%20friday"},
			{Name: "Cache-Control", Value: "no-store"},
			{Name: "Content-Type", Value: "text/html; charset=utf-8"},
		},
		Body: []byte("<a href=\"https://shop.example.com/p/42\">Found</a>.\n"),
	}
}
