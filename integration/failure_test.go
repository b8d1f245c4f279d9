package integration

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// failureLog waits for linktrack's log line about a failed origin
// request and checks that it names provider, region, origin and cause.
func failureLog(t *testing.T, r *rig, provider, region, origin, cause string) {
	t.Helper()
	e := r.caddy.waitLog(t, "origin request failed", func(e map[string]any) bool {
		return e["cause"] == cause
	})
	if e["level"] != "error" || e["provider"] != provider || e["region"] != region || e["origin"] != origin {
		t.Errorf("log entry %v; want level error, provider %q, region %q, origin %q", e, provider, region, origin)
	}
	for _, field := range []string{"error", "tenant", "duration", "status"} {
		if _, ok := e[field]; !ok {
			t.Errorf("log entry %v lacks %s", e, field)
		}
	}
}

// closedUDPPort returns a loopback UDP port with nothing listening, so
// a resolver pointed at it fails at once, without leaving the machine.
func closedUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// saturatedListener returns the address of a loopback listener whose
// accept queue is full: new connections are never established, so a
// dial to it times out.
func saturatedListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the accept queue of a loopback listener")
	return ""
}

func getStatus(t *testing.T, r *rig, target string) int {
	t.Helper()
	res, err := r.rawClient(t).Do(standin.RawRequest{Method: "GET", Target: target, Host: trackingDomain}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

func TestFailures(t *testing.T) {
	t.Run("refused dial", func(t *testing.T) {
		port := freePort(t)
		origin := fmt.Sprintf("https://localhost:%d", port)
		r := newRig(t, rigOptions{upstream: origin})
		if status := getStatus(t, r, "/ls/click"); status != 502 {
			t.Errorf("status %d, want 502", status)
		}
		failureLog(t, r, "upstream", "", origin, "origin refused the connection")
		metrics := scrapeMetrics(t, r.adminPort)
		for _, want := range []string{
			`caddy_linktrack_origin_errors_total{cause="refused",provider="upstream",region=""} 1`,
			`caddy_linktrack_requests_total{provider="upstream",region="",status_class="5xx"} 1`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "caddy_linktrack"))
			}
		}
	})

	t.Run("timed-out dial", func(t *testing.T) {
		origin := "https://" + saturatedListener(t)
		r := newRig(t, rigOptions{upstream: origin, linktrack: "dial_timeout 500ms"})
		if status := getStatus(t, r, "/ls/click"); status != 502 {
			t.Errorf("status %d, want 502", status)
		}
		failureLog(t, r, "upstream", "", origin, "dial to origin timed out")
	})

	t.Run("no response headers in time", func(t *testing.T) {
		r := newRig(t, rigOptions{linktrack: "response_header_timeout 500ms"})
		r.respond(standin.Response{Hang: true})
		if status := getStatus(t, r, "/ls/click"); status != 504 {
			t.Errorf("status %d, want 504", status)
		}
		failureLog(t, r, "upstream", "", fmt.Sprintf("https://localhost:%d", r.origin.Port()), "origin sent no response headers in time")
	})

	t.Run("origin certificate for another name", func(t *testing.T) {
		r := newRig(t, rigOptions{originNames: []string{"track.other.example"}})
		if status := getStatus(t, r, "/ls/click"); status != 502 {
			t.Errorf("status %d, want 502", status)
		}
		failureLog(t, r, "upstream", "", fmt.Sprintf("https://localhost:%d", r.origin.Port()), "origin certificate does not match the origin name")
		if n := r.origin.Count(); n != 0 {
			t.Errorf("origin received %d requests over a connection that failed verification", n)
		}
	})

	t.Run("origin certificate from an untrusted CA", func(t *testing.T) {
		other, err := standin.NewCA("someone else's CA")
		if err != nil {
			t.Fatal(err)
		}
		r := newRig(t, rigOptions{originCA: other})
		if status := getStatus(t, r, "/ls/click"); status != 502 {
			t.Errorf("status %d, want 502", status)
		}
		failureLog(t, r, "upstream", "", fmt.Sprintf("https://localhost:%d", r.origin.Port()), "origin certificate is signed by an untrusted authority")
	})

	t.Run("origin certificate expired", func(t *testing.T) {
		r := newRig(t, rigOptions{originExpired: true})
		if status := getStatus(t, r, "/ls/click"); status != 502 {
			t.Errorf("status %d, want 502", status)
		}
		e := r.caddy.waitLog(t, "origin request failed", func(e map[string]any) bool {
			return strings.HasPrefix(fmt.Sprint(e["cause"]), "origin certificate is invalid")
		})
		if !strings.Contains(fmt.Sprint(e["cause"]), "expired") {
			t.Errorf("cause %q does not say the certificate expired", e["cause"])
		}
		if n := r.origin.Count(); n != 0 {
			t.Errorf("origin received %d requests over a connection that failed verification", n)
		}
	})

	t.Run("request body is never replayed", func(t *testing.T) {
		r := newRig(t, rigOptions{})
		r.respond(standin.Response{CloseWithoutResponse: true})
		body := []byte("email=a%40example.com&unsubscribe=1")
		res, err := r.rawClient(t).Do(standin.RawRequest{Method: "POST", Target: "/unsubscribe", Host: trackingDomain,
			Headers: []standin.Field{{Name: "Content-Type", Value: "application/x-www-form-urlencoded"}}, Body: body}, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 502 {
			t.Errorf("status %d, want 502", res.Status)
		}
		failureLog(t, r, "upstream", "", fmt.Sprintf("https://localhost:%d", r.origin.Port()), "origin closed the connection without a response")
		if n := r.origin.Count(); n != 1 {
			t.Errorf("origin received the POST %d times, want exactly once", n)
		}
	})

	t.Run("body over max_body_size", func(t *testing.T) {
		r := newRig(t, rigOptions{linktrack: "max_body_size 1KiB"})
		c := r.rawClient(t)
		res, err := c.Do(standin.RawRequest{Method: "POST", Target: "/collect", Host: trackingDomain, Body: make([]byte, 2048)}, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 413 {
			t.Errorf("declared oversized body: status %d, want 413", res.Status)
		}
		if n := r.origin.Count(); n != 0 {
			t.Errorf("origin received %d requests for a body declared too large", n)
		}
		res, err = r.rawClient(t).Do(standin.RawRequest{Method: "POST", Target: "/collect", Host: trackingDomain, Body: make([]byte, 4096), Chunked: true}, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 413 {
			t.Errorf("chunked oversized body: status %d, want 413", res.Status)
		}
		// a body under the cap still passes
		res, err = r.rawClient(t).Do(standin.RawRequest{Method: "POST", Target: "/collect", Host: trackingDomain, Body: make([]byte, 1000)}, 30*time.Second)
		if err != nil || res.Status != 302 {
			t.Errorf("body under the cap: %v, status %v", err, res)
		}
	})
}

// TestOriginFaultsMidResponse: an origin that resets or goes silent in
// the middle of a body gets the client's connection aborted, not a
// response that looks complete, and the server keeps serving.
func TestOriginFaultsMidResponse(t *testing.T) {
	r := newRig(t, rigOptions{linktrack: "read_timeout 1s"})
	body := bytes.Repeat([]byte("x"), 100_000)
	for _, tc := range []struct {
		name string
		res  standin.Response
	}{
		{"resets mid-body", standin.Response{Status: 200, Body: body, CutAfter: 1000}},
		{"hangs mid-body", standin.Response{Status: 200, Body: body, CutAfter: 1000, HangAfterCut: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.respond(tc.res)
			c := r.rawClient(t)
			res, err := c.Do(standin.RawRequest{Method: "GET", Target: "/big", Host: trackingDomain}, 30*time.Second)
			if err == nil && len(res.Body) == len(body) {
				t.Fatalf("the client got a complete body from an origin that cut it")
			}
			r.caddy.waitLog(t, "aborting incomplete response from origin", nil)
			if rec, err := r.origin.Next(5 * time.Second); err != nil || rec.Target != "/big" || rec.Err != "" {
				t.Errorf("origin: %v %v, want GET /big once, whole", err, rec)
			}
			r.respond(redirectResponse())
			assertServing(t, r)
		})
	}
}

// TestOriginRecovers: while the origin refuses connections clicks get
// 502; once it listens again they are served, with no restart.
func TestOriginRecovers(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	r := newRig(t, rigOptions{upstream: fmt.Sprintf("https://localhost:%d", port), linktrack: "tls_trust_pool file " + caFile})
	if status := getStatus(t, r, "/ls/click"); status != 502 {
		t.Fatalf("origin down: status %d, want 502", status)
	}
	leaf, err := ca.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	origin, err := standin.Start(standin.Config{Certificate: &leaf.TLS, Addr: fmt.Sprintf("127.0.0.1:%d", port),
		Respond: func(*standin.Received) standin.Response { return redirectResponse() }})
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	if status := getStatus(t, r, "/ls/click"); status != 302 {
		t.Errorf("origin back: status %d, want its 302", status)
	}
}

func TestUnresolvableProviderOrigin(t *testing.T) {
	// the transport's resolver is a closed loopback port: the lookup of
	// track-eu.customer.io fails at once and nothing leaves the machine
	r := newRig(t, rigOptions{provider: "customerio eu", linktrack: fmt.Sprintf("resolvers 127.0.0.1:%d\n\t\tdial_timeout 2s", closedUDPPort(t))})
	if status := getStatus(t, r, "/health"); status != 502 {
		t.Errorf("status %d, want 502", status)
	}
	failureLog(t, r, "customerio", "eu", "https://track-eu.customer.io", "origin name does not resolve")
}

// TestNeverReachesOrigin sends requests that must be answered locally.
func TestNeverReachesOrigin(t *testing.T) {
	r := newRig(t, rigOptions{})
	for _, tc := range []struct {
		name   string
		raw    string
		status int // 0: any status but the origin's
	}{
		{name: "unknown host", raw: "GET /ls/click HTTP/1.1\r\nHost: other.example\r\n\r\n"},
		{name: "absolute-form to another host", raw: "GET https://evil.example/x HTTP/1.1\r\nHost: " + trackingDomain + "\r\n\r\n"},
		{name: "CONNECT", raw: "CONNECT " + trackingDomain + ":443 HTTP/1.1\r\nHost: " + trackingDomain + ":443\r\n\r\n", status: 405},
		{name: "invalid escape in path", raw: "GET /p/%zz HTTP/1.1\r\nHost: " + trackingDomain + "\r\n\r\n", status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.origin.Count()
			c := r.rawClient(t)
			if err := c.WriteRaw([]byte(tc.raw)); err != nil {
				t.Fatal(err)
			}
			method, _, _ := strings.Cut(tc.raw, " ")
			res, err := c.ReadResponse(method, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status != 0 && res.Status != tc.status {
				t.Errorf("status %d, want %d", res.Status, tc.status)
			}
			if res.Status == 302 {
				t.Errorf("got the origin's redirect")
			}
			if n := r.origin.Count() - before; n != 0 {
				t.Errorf("origin received %d requests", n)
			}
		})
	}
}
