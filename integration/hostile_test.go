package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// connAfter is what a hostile case expects of the client's connection
// once the response is read.
type connAfter int

const (
	connUnchecked connAfter = iota
	connClosed              // the server closes it: the rest of the stream cannot be trusted
	connKept                // it serves a next request, with nothing left over from this one
)

// TestHostileInput sends malformed and hostile requests over raw
// sockets, each to a Caddy and origin of its own. Each case checks the
// status, what becomes of the client's connection, and that the server
// still serves a good request afterwards. Then the origin is closed,
// which waits until it has recorded everything Caddy sent it, and it
// must have received exactly the requests the case expects, each once
// and whole: any other record, complete or cut short, fails the case.
func TestHostileInput(t *testing.T) {
	dir := t.TempDir()
	assetlinks := filepath.Join(dir, "assetlinks.json")
	if err := os.WriteFile(assetlinks, []byte(`[]`), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := rigOptions{
		linktrack: "assetlinks " + assetlinks + "\n\t\tmax_body_size 64KiB",
		servers:   "timeouts {\n\t\t\tread_header 1s\n\t\t}",
	}
	host := "Host: " + trackingDomain + "\r\n"
	for _, tc := range []struct {
		name   string
		raw    string
		status int       // expected status
		target string    // the target the origin must receive, whole and once; "" means nothing
		body   string    // the body the origin must receive with target
		cut    string    // the target the origin must receive cut short, once, with no body byte
		conn   connAfter // the client's connection after the response
	}{
		{name: "two Host headers", raw: "GET /two-host HTTP/1.1\r\n" + host + "Host: other.example\r\n\r\n", status: 400, conn: connClosed},
		{name: "two Content-Length headers", raw: "POST /two-cl HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", status: 400, conn: connClosed},
		// the connection's fate after ambiguous framing is another test's
		{name: "Content-Length and chunked", raw: "POST /cl-te HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status: 302, target: "/cl-te", body: "abc"},
		// the head goes out before the first chunk is read, so the origin
		// gets the request cut short, with none of the body
		{name: "chunk sizes ending in bare LF", raw: "POST /bare-lf HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", status: 400, cut: "/bare-lf", conn: connClosed},
		// what follows a broken chunk is not another request
		{name: "a request after a bare-LF chunk size", raw: "POST /bare-lf-2 HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\nGET /smuggled HTTP/1.1\r\n" + host + "\r\n", status: 400, cut: "/bare-lf-2", conn: connClosed},
		{name: "NUL in path", raw: "GET /nul\x00b HTTP/1.1\r\n" + host + "\r\n", status: 400, conn: connClosed},
		{name: "invalid UTF-8 in path", raw: "GET /a\xffb/%ff HTTP/1.1\r\n" + host + "\r\n", status: 302, target: "/a\xffb/%ff", conn: connKept},
		{name: "dot-dot near app-link files", raw: "GET /.well-known/../.well-known/assetlinks.json HTTP/1.1\r\n" + host + "\r\n", status: 302, target: "/.well-known/../.well-known/assetlinks.json", conn: connKept},
		{name: "dot-dot out of the root", raw: "GET /../../etc/passwd HTTP/1.1\r\n" + host + "\r\n", status: 302, target: "/../../etc/passwd", conn: connKept},
		{name: "oversized request line", raw: "GET /" + strings.Repeat("a", 1100<<10) + " HTTP/1.1\r\n" + host + "\r\n", status: 431, conn: connClosed},
		{name: "oversized headers", raw: "GET /big-headers HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 1100<<10) + "\r\n\r\n", status: 431, conn: connClosed},
		{name: "body over the cap", raw: "POST /over-cap HTTP/1.1\r\n" + host + "Content-Length: 70000\r\n\r\n" + strings.Repeat("a", 70000), status: 413, conn: connKept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, opts)
			c := r.rawClient(t)
			wrote := make(chan error, 1)
			go func() { wrote <- c.WriteRaw([]byte(tc.raw)) }() // the server may answer before reading it all
			method, _, _ := strings.Cut(tc.raw, " ")
			res, err := c.ReadResponse(method, 30*time.Second)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			if res.Status != tc.status {
				t.Errorf("status %d, want %d", res.Status, tc.status)
			}
			var want []string
			if tc.target != "" {
				want = append(want, tc.target)
			}
			if tc.cut != "" {
				want = append(want, tc.cut)
			}
			switch tc.conn {
			case connClosed:
				assertClosed(t, c)
			case connKept:
				if err := <-wrote; err != nil {
					t.Fatalf("the server stopped reading the request: %v", err)
				}
				next, err := c.Do(standin.RawRequest{Method: "GET", Target: "/next", Host: trackingDomain}, 30*time.Second)
				if err != nil || next.Status != 302 {
					t.Errorf("the connection did not serve a next request: %v %v", err, next)
				}
				want = append(want, "/next")
			}
			// the origin queues a request before it answers, so the
			// records of forwarded requests are there already
			for _, target := range want {
				rec, err := r.origin.Next(5 * time.Second)
				switch {
				case err != nil:
					t.Fatalf("origin never received %q: %v", target, err)
				case target == tc.cut:
					if rec.Err == "" || rec.Target != target || rec.BodyLen != 0 {
						t.Errorf("origin received %s, want %q cut short before its body", describeRecord(rec), target)
					}
				case rec.Err != "" || rec.Target != target:
					t.Errorf("origin received %s, want %q whole", describeRecord(rec), target)
				case len(rec.Values("Content-Length")) > 0 && len(rec.Values("Transfer-Encoding")) > 0:
					t.Errorf("origin received both Content-Length and Transfer-Encoding: %q", rec.Headers)
				case target == tc.target && string(rec.Body) != tc.body:
					t.Errorf("origin received the body %q, want %q", rec.Body, tc.body)
				}
			}
			assertServing(t, r)
			if late := r.closeOrigin(t); len(late) != 0 {
				t.Errorf("after /after the origin received %s", describeRecords(late))
			}
		})
	}

	t.Run("slowloris", func(t *testing.T) {
		r := newRig(t, opts)
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// a header line now and then, never the end of the header block
		if _, err := conn.Write([]byte("GET /slow HTTP/1.1\r\n" + host)); err != nil {
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
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("connection ended with %v, want it closed by the server", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a client that never finishes its headers kept its connection past read_header")
		}
		assertServing(t, r)
		if late := r.closeOrigin(t); len(late) != 0 {
			t.Errorf("after /after the origin received %s", describeRecords(late))
		}
	})
}

// assertClosed checks that the server closed the client's connection
// after the response it read: the next read ends, rather than waiting.
func assertClosed(t *testing.T, c *standin.RawClient) {
	t.Helper()
	res, err := c.ReadResponse("GET", 10*time.Second)
	switch {
	case err == nil:
		t.Errorf("the server read on after the response: it answered %q to what followed", res.StatusLine)
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("the server kept the connection open: %v", err)
	case !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET):
		t.Errorf("the connection ended with %v, want it closed by the server", err)
	}
}

// assertServing checks that the server still proxies a good request on
// a new connection, and that the origin's record of it is the next one
// queued, whole: any record before it is evidence the caller has not
// accounted for.
func assertServing(t *testing.T, r *rig) {
	t.Helper()
	if before := r.serving(t); len(before) != 0 {
		t.Errorf("before /after the origin received %s", describeRecords(before))
	}
}

// serving sends GET /after on a new connection, checks that it is
// proxied, and returns the origin's records queued before it.
func (r *rig) serving(t *testing.T) []*standin.Received {
	t.Helper()
	res, err := r.rawClient(t).Do(standin.RawRequest{Method: "GET", Target: "/after", Host: trackingDomain}, 30*time.Second)
	if err != nil || res.Status != 302 {
		t.Fatalf("the server stopped serving: %v %v", err, res)
	}
	var before []*standin.Received
	for {
		// the origin queues a request before it answers, so the record
		// of /after is there already
		rec, err := r.origin.Next(5 * time.Second)
		if err != nil {
			t.Fatalf("the good request did not reach the origin: %v; before it: %s", err, describeRecords(before))
		}
		if rec.Target == "/after" && rec.Err == "" {
			return before
		}
		before = append(before, rec)
	}
}

// closeOrigin closes the rig's origin and returns the records it queued
// that Next has not returned. Close waits until every connection's
// reader is done, so everything Caddy sent has been recorded, whole or
// cut short: the list is final, and an absence in it is one.
func (r *rig) closeOrigin(t testing.TB) []*standin.Received {
	t.Helper()
	if err := r.origin.Close(); err != nil {
		t.Errorf("closing the origin: %v", err)
	}
	var recs []*standin.Received
	for {
		rec, err := r.origin.Next(0)
		if err != nil {
			return recs
		}
		recs = append(recs, rec)
	}
}

// describeRecord names an origin record in a failure message.
func describeRecord(rec *standin.Received) string {
	s := fmt.Sprintf("%.120q", rec.RequestLine)
	if rec.Err != "" {
		s += fmt.Sprintf(" cut short after %d body bytes (%s)", rec.BodyLen, rec.Err)
	}
	return s
}

// describeRecords names the origin records in a failure message.
func describeRecords(recs []*standin.Received) string {
	if len(recs) == 0 {
		return "nothing"
	}
	var s []string
	for _, rec := range recs {
		s = append(s, describeRecord(rec))
	}
	return fmt.Sprintf("%d requests: %s", len(recs), strings.Join(s, ", "))
}
