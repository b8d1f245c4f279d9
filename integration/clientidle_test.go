package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// idleGuards are the two ways a server guards what can stall after the
// request head, each with a 1s timeout: Caddy's own read and write idle
// timeouts, or, with those off as a server that serves only linktrack
// may set them, linktrack's client_idle_timeout. A stalled client meets
// the same end either way.
var idleGuards = []struct {
	name string
	opts rigOptions
}{
	{"caddy", rigOptions{
		servers: "timeouts {\n\t\t\tread_body_idle 1s\n\t\t\twrite_idle 1s\n\t\t}",
	}},
	{"linktrack", rigOptions{
		linktrack: "client_idle_timeout 1s",
		servers:   "timeouts {\n\t\t\tread_body_idle -1s\n\t\t\twrite_idle -1s\n\t\t}",
	}},
}

// eachIdleGuard runs test once with each of idleGuards.
func eachIdleGuard(t *testing.T, test func(t *testing.T, r *rig)) {
	for _, g := range idleGuards {
		t.Run(g.name, func(t *testing.T) { test(t, newRig(t, g.opts)) })
	}
}

// TestClientIdleStalledBody: a client that declares a body and stops
// sending it has its connection closed by either guard once the body
// stalls for 1s, with a 408 first. The origin
// gets nothing, and the server serves on.
func TestClientIdleStalledBody(t *testing.T) {
	eachIdleGuard(t, func(t *testing.T, r *rig) {
		c := r.plainClient(t)
		if err := c.WriteRaw([]byte("POST /stalled HTTP/1.1\r\nHost: " + trackingDomain + "\r\nContent-Length: 10\r\n\r\nabc")); err != nil {
			t.Fatal(err)
		}
		// a bound on the test, not a timing assertion: the guard fires
		// after 1s of silence
		res, err := c.ReadResponse("POST", 20*time.Second)
		if err != nil || res.Status != http.StatusRequestTimeout {
			t.Fatalf("the stalled body was answered %v %v, want 408", res, err)
		}
		assertClosed(t, c)

		assertServing(t, r)
		if late := r.closeOrigin(t); len(late) != 0 {
			t.Errorf("the origin received %s, want nothing of the stalled request", describeRecords(late))
		}
	})
}

// TestClientIdleStalledReader: a client that stops reading a large
// response has its connection closed by either guard once writing to it
// stalls for 1s: it gets the response cut short.
// The origin got the request once, whole, and the server serves on.
func TestClientIdleStalledReader(t *testing.T) {
	eachIdleGuard(t, func(t *testing.T, r *rig) {
		// far more than loopback's socket buffers hold on both sides
		const size = 64 << 20
		r.respond(standin.Response{Status: 200, Body: bytes.Repeat([]byte("x"), size)})
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("GET /big HTTP/1.1\r\nHost: " + trackingDomain + "\r\n\r\n")); err != nil {
			t.Fatal(err)
		}

		// nothing is read until the server has given up on the client
		e := r.caddy.waitLogFor(t, 30*time.Second, "aborting incomplete response from origin", nil)
		if why, _ := e["error"].(string); !strings.Contains(why, "writing to the client") || !strings.Contains(why, "timeout") {
			t.Errorf("the response was aborted for %q, want the timeout writing to the client", why)
		}

		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the response head: %v", err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("the connection stayed open after the abort: %v", err)
		case err == nil && n == size:
			t.Fatalf("the client got the whole body of %d bytes, want it cut short", n)
		}

		if rec, err := r.origin.Next(5 * time.Second); err != nil || rec.Target != "/big" || rec.Err != "" {
			t.Errorf("origin: %v %v, want GET /big once, whole", err, rec)
		}
		r.respond(redirectResponse())
		assertServing(t, r)
	})
}

// TestClientIdleStalledBodyHTTP2: over HTTP/2, a request body that
// stops arriving gets 408 from either guard once it stalls for 1s, and
// the origin gets nothing of it.
func TestClientIdleStalledBodyHTTP2(t *testing.T) {
	eachIdleGuard(t, func(t *testing.T, r *rig) {
		body, feed := io.Pipe()
		defer feed.Close()
		go feed.Write([]byte("abc")) // then nothing: the pipe stays open
		req, err := http.NewRequest("POST", "https://"+trackingDomain+"/stalled", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 10
		res, err := r.h2Client().Do(req)
		if err != nil {
			t.Fatalf("no answer to the stalled body: %v", err)
		}
		res.Body.Close()
		if res.ProtoMajor != 2 || res.StatusCode != http.StatusRequestTimeout {
			t.Errorf("the stalled body was answered %s over %s, want 408 over HTTP/2", res.Status, res.Proto)
		}

		assertServing(t, r)
		if late := r.closeOrigin(t); len(late) != 0 {
			t.Errorf("the origin received %s, want nothing of the stalled request", describeRecords(late))
		}
	})
}
