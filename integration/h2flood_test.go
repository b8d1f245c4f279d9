package integration

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Conn is a raw HTTP/2 client connection for abusive frame patterns.
type h2Conn struct {
	conn   *tls.Conn
	framer *http2.Framer
	block  bytes.Buffer
	enc    *hpack.Encoder
}

func dialH2(t *testing.T, r *rig) *h2Conn {
	t.Helper()
	cfg := r.clientTLS()
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.httpsPort), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if conn.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatal("server did not negotiate h2")
	}
	c := &h2Conn{conn: conn, framer: http2.NewFramer(conn, conn)}
	c.enc = hpack.NewEncoder(&c.block)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// open sends HEADERS for a GET on a new stream.
func (c *h2Conn) open(stream uint32, path string, endStream bool) error {
	c.block.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", trackingDomain}, {":path", path}} {
		if err := c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return err
		}
	}
	return c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: c.block.Bytes(), EndStream: endStream, EndHeaders: true})
}

// TestHTTP2RapidResetAndFloods opens thousands of streams and resets
// them at once (CVE-2023-44487), then floods past the concurrent stream
// limit; the server must keep serving, and the origin must not receive
// a request per stream.
func TestHTTP2RapidResetAndFloods(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.respond(redirectResponse())

	const streams = 2000
	c := dialH2(t, r)
	_ = c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	sent := 0
	for i := range streams {
		id := uint32(2*i + 1)
		if c.open(id, "/reset", false) != nil || c.framer.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // the server closed the connection: the mitigation
		}
		sent++
	}
	c.conn.Close()
	t.Logf("rapid reset: %d streams opened and reset; origin received %d requests", sent, r.origin.Count())
	assertServing(t, r)

	// a flood of streams never read: past the concurrent stream limit
	before := r.origin.Count()
	c = dialH2(t, r)
	_ = c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	opened := 0
	for i := range streams {
		if c.open(uint32(2*i+1), "/flood", true) != nil {
			break
		}
		opened++
	}
	c.conn.Close()
	t.Logf("flood: %d streams opened; origin received %d requests", opened, r.origin.Count()-before)
	assertServing(t, r)
	if n := r.origin.Count() - before; n > 300 {
		t.Errorf("a flood of %d streams on one connection reached the origin %d times; want at most the concurrent stream limit", opened, n)
	}
}
