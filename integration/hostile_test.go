package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// TestHostileInput sends malformed and hostile requests over raw
// sockets. Each case checks the status, that the origin received no
// complete request it should not have, and that the server still serves
// a good request afterwards.
func TestHostileInput(t *testing.T) {
	dir := t.TempDir()
	assetlinks := filepath.Join(dir, "assetlinks.json")
	if err := os.WriteFile(assetlinks, []byte(`[]`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{
		linktrack: "assetlinks " + assetlinks + "\n\t\tmax_body_size 64KiB",
		servers:   "timeouts {\n\t\t\tread_header 1s\n\t\t}",
	})
	host := "Host: " + trackingDomain + "\r\n"
	for _, tc := range []struct {
		name   string
		raw    string
		status int    // expected status
		target string // the target the origin must receive; "" means nothing complete
	}{
		{name: "two Host headers", raw: "GET /a HTTP/1.1\r\n" + host + "Host: other.example\r\n\r\n", status: 400},
		{name: "two Content-Length headers", raw: "POST /a HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", status: 400},
		{name: "Content-Length and chunked", raw: "POST /cl-te HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status: 302, target: "/cl-te"},
		{name: "chunk sizes ending in bare LF", raw: "POST /a HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", status: 400},
		{name: "NUL in path", raw: "GET /a\x00b HTTP/1.1\r\n" + host + "\r\n", status: 400},
		{name: "invalid UTF-8 in path", raw: "GET /a\xffb/%ff HTTP/1.1\r\n" + host + "\r\n", status: 302, target: "/a\xffb/%ff"},
		{name: "dot-dot near app-link files", raw: "GET /.well-known/../.well-known/assetlinks.json HTTP/1.1\r\n" + host + "\r\n", status: 302, target: "/.well-known/../.well-known/assetlinks.json"},
		{name: "dot-dot out of the root", raw: "GET /../../etc/passwd HTTP/1.1\r\n" + host + "\r\n", status: 302, target: "/../../etc/passwd"},
		{name: "oversized request line", raw: "GET /" + strings.Repeat("a", 1100<<10) + " HTTP/1.1\r\n" + host + "\r\n", status: 431},
		{name: "oversized headers", raw: "GET /a HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 1100<<10) + "\r\n\r\n", status: 431},
		{name: "body over the cap", raw: "POST /a HTTP/1.1\r\n" + host + "Content-Length: 70000\r\n\r\n" + strings.Repeat("a", 70000), status: 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.origin.Reset()
			before := r.origin.Count()
			c := r.rawClient(t)
			go c.WriteRaw([]byte(tc.raw)) // the server may answer before reading it all
			method, _, _ := strings.Cut(tc.raw, " ")
			res, err := c.ReadResponse(method, 30*time.Second)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			if res.Status != tc.status {
				t.Errorf("status %d, want %d", res.Status, tc.status)
			}
			complete := 0
			for n := r.origin.Count() - before; n > 0; n-- {
				rec, err := r.origin.Next(5 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if rec.Err != "" {
					continue // cut short: the origin discards it
				}
				complete++
				if rec.Target != tc.target {
					t.Errorf("origin received %q", rec.RequestLine)
				}
				if len(rec.Values("Content-Length")) > 0 && len(rec.Values("Transfer-Encoding")) > 0 {
					t.Errorf("origin received both Content-Length and Transfer-Encoding")
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.target != ""]; complete != want {
				t.Errorf("origin received %d complete requests, want %d", complete, want)
			}
			assertServing(t, r)
		})
	}

	t.Run("slowloris", func(t *testing.T) {
		before := r.origin.Count()
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// a header line now and then, never the end of the header block
		if _, err := conn.Write([]byte("GET /a HTTP/1.1\r\n" + host)); err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() {
			buf := make([]byte, 1024)
			for {
				if _, err := conn.Read(buf); err != nil {
					closed <- err
					return
				}
			}
		}()
		select {
		case err := <-closed:
			if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Logf("connection ended with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a client that never finishes its headers kept its connection past read_header")
		}
		if n := r.origin.Count() - before; n != 0 {
			t.Errorf("origin received %d requests", n)
		}
		assertServing(t, r)
	})
}

// assertServing checks that the server still proxies a good request.
func assertServing(t *testing.T, r *rig) {
	t.Helper()
	res, err := r.rawClient(t).Do(standin.RawRequest{Method: "GET", Target: "/after", Host: trackingDomain}, 30*time.Second)
	if err != nil || res.Status != 302 {
		t.Fatalf("the server stopped serving: %v %v", err, res)
	}
	// earlier requests cut short may still be queued before it
	for {
		rec, err := r.origin.Next(5 * time.Second)
		if err != nil {
			t.Fatalf("the good request did not reach the origin: %v", err)
		}
		if rec.Target == "/after" {
			return
		}
	}
}
