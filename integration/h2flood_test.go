package integration

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// h2Conn is a raw HTTP/2 client connection for abusive frame patterns.
// It never acknowledges the server's SETTINGS nor grants flow-control
// window; a reader hands what the server sends to the test as events.
type h2Conn struct {
	conn   *tls.Conn
	framer *http2.Framer
	block  bytes.Buffer
	enc    *hpack.Encoder
	events chan h2Event
	closed chan struct{}
}

// h2Event is one frame the server sent, or the end of the connection.
type h2Event struct {
	typ        http2.FrameType
	stream     uint32        // the frame's stream; for GOAWAY, the last stream processed
	code       http2.ErrCode // of RST_STREAM and GOAWAY
	status     string        // :status of a response's HEADERS
	maxStreams uint32        // of SETTINGS, when it sets MAX_CONCURRENT_STREAMS
	ping       [8]byte       // of PING
	ack        bool          // of SETTINGS and PING
	err        error         // reading failed: the connection ended
}

func (e h2Event) String() string {
	switch {
	case e.err != nil:
		return "connection ended: " + e.err.Error()
	case e.typ == http2.FrameGoAway:
		return fmt.Sprintf("GOAWAY %v, last stream %d", e.code, e.stream)
	case e.typ == http2.FrameRSTStream:
		return fmt.Sprintf("RST_STREAM %v on stream %d", e.code, e.stream)
	case e.typ == http2.FrameHeaders:
		return fmt.Sprintf("HEADERS :status %s on stream %d", e.status, e.stream)
	}
	return fmt.Sprintf("%v on stream %d", e.typ, e.stream)
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
	// bounds every read and write of the test
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := &h2Conn{conn: conn, framer: http2.NewFramer(conn, conn), events: make(chan h2Event, 64), closed: make(chan struct{})}
	c.framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.block)
	t.Cleanup(c.close)
	go c.read()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// read turns the server's frames into events until the connection ends.
func (c *h2Conn) read() {
	for {
		f, err := c.framer.ReadFrame()
		e := h2Event{err: err}
		if err == nil {
			e.typ, e.stream = f.Header().Type, f.Header().StreamID
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				e.code = f.ErrCode
			case *http2.GoAwayFrame:
				e.code, e.stream = f.ErrCode, f.LastStreamID
			case *http2.MetaHeadersFrame:
				e.status = f.PseudoValue("status")
			case *http2.SettingsFrame:
				e.ack = f.IsAck()
				e.maxStreams, _ = f.Value(http2.SettingMaxConcurrentStreams)
			case *http2.PingFrame:
				e.ping, e.ack = f.Data, f.IsAck()
			}
		}
		select {
		case c.events <- e:
		case <-c.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

// next returns the server's next event, or fails the test once the
// connection's deadline has passed with none.
func (c *h2Conn) next(t *testing.T) h2Event {
	t.Helper()
	select {
	case e := <-c.events:
		return e
	case <-time.After(70 * time.Second):
		t.Fatal("the server neither sent a frame nor ended the connection")
		return h2Event{}
	}
}

func (c *h2Conn) close() {
	select {
	case <-c.closed:
	default:
		close(c.closed)
		c.conn.Close()
	}
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

// TestHTTP2RapidResetAndFloods opens 2,000 streams and resets each at
// once (CVE-2023-44487), then opens 2,000 streams at once against an
// origin that never answers, past the concurrent stream limit. The
// server must take all of the first, or end the connection with
// ENHANCE_YOUR_CALM; it must refuse every stream of the second beyond
// its limit, and the origin must receive exactly the limit; after each,
// the server still serves. The origin is closed at the end, and then
// every request it ever received is accounted for.
func TestHTTP2RapidResetAndFloods(t *testing.T) {
	const streams = 2000
	r := newRig(t, rigOptions{})
	r.respond(redirectResponse())
	var seen []*standin.Received // the origin's records, as the test takes them

	// rapid reset: HEADERS without END_STREAM, then RST_STREAM, 2,000
	// times; then a PING, which the server answers only once it has
	// read every frame before it
	c := dialH2(t, r)
	sent := 0
	for i := range streams {
		id := uint32(2*i + 1)
		if c.open(id, "/reset", false) != nil || c.framer.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		sent++
	}
	ping := [8]byte{'r', 'e', 's', 'e', 't'}
	_ = c.framer.WritePing(false, ping) // if the connection has ended, the events say how
	for e := c.next(t); ; e = c.next(t) {
		if e.typ == http2.FramePing && e.ack && e.ping == ping {
			if sent != streams {
				t.Fatalf("rapid reset: %d of %d streams sent", sent, streams)
			}
			t.Logf("rapid reset: the server took %d streams opened and reset, and kept the connection", sent)
			break
		}
		if e.typ == http2.FrameGoAway && e.code == http2.ErrCodeEnhanceYourCalm {
			// Go's mitigation: more handlers waiting to start than 4
			// times the stream limit
			t.Logf("rapid reset: the server ended the connection with %v after %d of %d streams were sent", e, sent, streams)
			break
		}
		if e.err != nil || e.typ == http2.FrameGoAway {
			t.Fatalf("rapid reset: %d of %d streams sent, then %v; want the server to answer a PING after all of them, or to end the connection with ENHANCE_YOUR_CALM", sent, streams, e)
		}
	}
	c.close()
	seen = append(seen, r.serving(t)...)

	// flood: 2,000 streams with END_STREAM at once; the origin holds
	// each request it gets, so no stream within the limit ends
	r.respond(standin.Response{Hang: true})
	c = dialH2(t, r)
	opened := 0
	for i := range streams {
		if c.open(uint32(2*i+1), "/flood", true) != nil {
			break
		}
		opened++
	}
	if opened != streams {
		t.Fatalf("flood: the connection failed after %d of %d streams", opened, streams)
	}
	var limit uint32
	refused := map[uint32]bool{}
	for limit == 0 || len(refused) < streams-int(limit) {
		e := c.next(t)
		switch {
		case e.typ == http2.FrameSettings && !e.ack && e.maxStreams != 0:
			limit = e.maxStreams
		case e.typ == http2.FrameRSTStream && (e.code == http2.ErrCodeRefusedStream || e.code == http2.ErrCodeProtocol):
			if refused[e.stream] {
				t.Fatalf("flood: stream %d refused twice", e.stream)
			}
			refused[e.stream] = true
		case e.err != nil, e.typ == http2.FrameGoAway, e.typ == http2.FrameHeaders, e.typ == http2.FrameRSTStream:
			t.Fatalf("flood: after %d streams refused: %v; want the streams past the limit refused, and no answer to the others", len(refused), e)
		}
	}
	if limit != 250 {
		t.Errorf("flood: the server allows %d concurrent streams, want Go's default of 250", limit)
	}
	for id := range refused {
		if id <= 2*limit-1 {
			t.Errorf("flood: stream %d, within the first %d, was refused", id, limit)
		}
	}
	// the streams within the limit each reach the origin; the records
	// are the marker that the server has forwarded all it took
	for flood := 0; flood < int(limit); {
		rec, err := r.origin.Next(30 * time.Second)
		if err != nil {
			t.Fatalf("flood: %d of the %d streams within the limit reached the origin: %v", flood, limit, err)
		}
		seen = append(seen, rec)
		if rec.Target == "/flood" {
			flood++
		}
	}
	t.Logf("flood: %d streams opened, %d refused, %d reached the origin", opened, len(refused), limit)
	c.close()
	r.respond(redirectResponse())
	seen = append(seen, r.serving(t)...)

	// every request the origin received: those of reset streams, cut
	// short, since no stream ended its body; exactly the limit of the
	// flood, whole; nothing else
	seen = append(seen, r.closeOrigin(t)...)
	reset, flood := 0, 0
	for _, rec := range seen {
		switch {
		case rec.Target == "/reset" && rec.Err != "":
			reset++
		case rec.Target == "/flood" && rec.Err == "":
			flood++
		default:
			t.Errorf("origin received %s", describeRecord(rec))
		}
	}
	if flood != int(limit) {
		t.Errorf("a flood of %d streams on one connection reached the origin %d times; want the concurrent stream limit, %d", opened, flood, limit)
	}
	t.Logf("origin: %d of the reset streams, each cut short; %d of the flood", reset, flood)
}
