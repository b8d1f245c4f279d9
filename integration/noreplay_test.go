package integration

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// TestNoReplay: when the origin drops a reused connection after reading
// a request, the request is not sent again. Go's transport would send a
// GET, HEAD, OPTIONS or a request with an Idempotency-Key a second time;
// a replayed click is a second click in the provider's reports.
func TestNoReplay(t *testing.T) {
	r := newRig(t, rigOptions{})
	origin := fmt.Sprintf("https://localhost:%d", r.origin.Port())
	for _, drop := range []struct {
		name     string
		response standin.Response
	}{
		{"reset", standin.Response{ResetWithoutResponse: true}},
		{"close", standin.Response{CloseWithoutResponse: true}},
	} {
		for _, tc := range []struct {
			method  string
			headers []standin.Field
			body    []byte
		}{
			{method: "GET"},
			{method: "HEAD"},
			{method: "OPTIONS"},
			{method: "POST", body: []byte("email=a%40example.com&unsubscribe=1")},
			{method: "POST", headers: []standin.Field{{Name: "Idempotency-Key", Value: "k-1"}}},
		} {
			name := drop.name + " " + tc.method
			if len(tc.headers) > 0 {
				name += " with " + tc.headers[0].Name
			}
			t.Run(name, func(t *testing.T) {
				target := "/ls/click?upn=" + strings.ReplaceAll(strings.ToLower(name), " ", "-")
				c := r.rawClient(t)

				// a first request opens the connection the second one reuses
				r.origin.Reset()
				r.respond(redirectResponse())
				if res := doRaw(t, c, standin.RawRequest{Method: "GET", Target: "/warm", Host: trackingDomain}); res.Status != 302 {
					t.Fatalf("warm-up: status %d, want 302", res.Status)
				}
				warm := nextReceived(t, r)

				failures := len(r.caddy.logEntriesNamed("origin request failed"))
				r.respond(drop.response)
				res := doRaw(t, c, standin.RawRequest{Method: tc.method, Target: target, Host: trackingDomain, Headers: tc.headers, Body: tc.body})
				r.respond(redirectResponse())
				if res.Status != 502 {
					t.Errorf("status %d, want 502", res.Status)
				}
				logged := r.caddy.waitLogCount(t, 10*time.Second, "origin request failed", failures+1, nil)
				if e := logged[len(logged)-1]; e["cause"] != "origin closed the connection without a response" || e["origin"] != origin {
					t.Errorf("log entry %v; want cause 'origin closed the connection without a response' and origin %s", e, origin)
				}

				got := nextReceived(t, r)
				if got.Target != target || got.Method != tc.method {
					t.Fatalf("origin received %q, want %s %s", got.RequestLine, tc.method, target)
				}
				if got.ConnID != warm.ConnID {
					t.Fatalf("request arrived on connection %d, warm-up on %d: the reused connection was not tested", got.ConnID, warm.ConnID)
				}
				// the proxy answered the client only after its last try,
				// so every copy the origin will ever see is recorded by now
				if n := countTarget(r, target); n != 0 {
					t.Errorf("origin received the request %d more times after the dropped connection", n)
				}
			})
		}
	}
}

// countTarget drains the origin's queued records and counts those for
// target.
func countTarget(r *rig, target string) int {
	n := 0
	for {
		rec, err := r.origin.Next(0)
		if err != nil {
			return n
		}
		if rec.Target == target {
			n++
		}
	}
}

// TestIdleOriginConnectionsDropped: an idle connection to the origin is
// closed by the proxy after the default idle timeout, so a request is
// never written to a connection the origin has already closed as idle;
// the next request opens a new connection and succeeds.
func TestIdleOriginConnectionsDropped(t *testing.T) {
	r := newRig(t, rigOptions{})
	c := r.rawClient(t)
	if res := doRaw(t, c, standin.RawRequest{Method: "GET", Target: "/first", Host: trackingDomain}); res.Status != 302 {
		t.Fatalf("status %d, want 302", res.Status)
	}
	first := nextReceived(t, r)

	// the stand-in never closes an idle connection itself
	select {
	case <-r.origin.ConnEnded(first.ConnID):
	case <-time.After(time.Minute):
		t.Fatal("the proxy kept its idle connection to the origin for a minute")
	}

	if res := doRaw(t, c, standin.RawRequest{Method: "GET", Target: "/second", Host: trackingDomain}); res.Status != 302 {
		t.Fatalf("after the idle connection was dropped: status %d, want 302", res.Status)
	}
	second := nextReceived(t, r)
	if second.ConnID == first.ConnID {
		t.Fatalf("second request on connection %d, which had ended", second.ConnID)
	}
}

// TestChunkedRequestClosesConnection: a request with both Content-Length
// and Transfer-Encoding is forwarded chunked, then the client connection
// is closed (RFC 9112 section 6.1), so a request smuggled behind it in
// the same bytes never reaches the origin.
func TestChunkedRequestClosesConnection(t *testing.T) {
	r := newRig(t, rigOptions{})
	host := "Host: " + trackingDomain + "\r\n"
	hidden := "GET /hidden HTTP/1.1\r\n" + host + "\r\n"
	for _, tc := range []struct {
		name, raw string
	}{
		{"Content-Length and chunked", "POST /cl-te HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + hidden},
		{"chunked and Content-Length", "POST /te-cl HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + hidden},
		{"chunked alone", "POST /te HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + hidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.origin.Reset()
			target := strings.Fields(tc.raw)[1]
			c := r.rawClient(t)
			if err := c.WriteRaw([]byte(tc.raw)); err != nil {
				t.Fatal(err)
			}
			res, err := c.ReadResponse("POST", 30*time.Second)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			if res.Status != 302 {
				t.Errorf("status %d, want 302", res.Status)
			}
			if v := res.Values("Connection"); len(v) != 1 || !strings.EqualFold(v[0], "close") {
				t.Errorf("Connection %q, want close", v)
			}
			if res, err := c.ReadResponse("GET", 30*time.Second); !errors.Is(err, io.EOF) {
				if res != nil {
					t.Fatalf("the connection stayed open and the request smuggled behind got status %d; want the connection closed", res.Status)
				}
				t.Fatalf("after the response: %v; want the connection closed", err)
			}

			got := nextReceived(t, r)
			if got.Target != target || !got.Chunked || string(got.Body) != "abc" {
				t.Errorf("origin received %q chunked=%v body %q; want %s chunked with body abc", got.RequestLine, got.Chunked, got.Body, target)
			}
			// a request on a new connection marks the end of what the
			// origin received for this case
			if res := doRaw(t, r.rawClient(t), standin.RawRequest{Method: "GET", Target: "/after", Host: trackingDomain}); res.Status != 302 {
				t.Fatalf("/after: status %d", res.Status)
			}
			if after := nextReceived(t, r); after.Target != "/after" {
				t.Errorf("origin received %q; the smuggled request was forwarded", after.RequestLine)
			}
		})
	}

	t.Run("a request without a body keeps the connection", func(t *testing.T) {
		c := r.rawClient(t)
		for _, target := range []string{"/one", "/two"} {
			if res := doRaw(t, c, standin.RawRequest{Method: "GET", Target: target, Host: trackingDomain}); res.Status != 302 || len(res.Values("Connection")) > 0 {
				t.Fatalf("%s: status %d, Connection %q; want 302 and keep-alive", target, res.Status, res.Values("Connection"))
			}
		}
	})
}
