package linktrack

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// h1Conn is one connection of the lean client to the origin. One
// request at a time uses it, on the handler's own goroutine: the head
// and a small body are written in one flush, the response is read with
// bufio, and the connection goes back to the pool only when its body
// was read to the end and the origin allowed keep-alive.
type h1Conn struct {
	client *h1Client
	raw    net.Conn // what the dialer returned; closing it stops any read or write
	wire   h1Wire   // the TLS client over raw, or raw for a plain-HTTP origin
	br     *bufio.Reader
	bw     *bufio.Writer
	sys    syscall.RawConn // raw's socket, for the liveness check; nil if unknown

	reused    bool
	idleSince time.Time

	// while a response head is awaited, waitTimer checks every
	// watchInterval that the client still waits and that the response
	// header timeout has not passed; else it closes the connection
	waitTimer *time.Timer
	waitMu    sync.Mutex
	waitCtx   context.Context // nil when no head is awaited
	waitUntil time.Time       // zero without response header timeout
	waitCause error           // why the timer closed the connection

	// per request, reused to spare allocations
	keys      []string
	body      h1Body
	plain     plainResponse
	peekByte  [1]byte
	peekQuiet bool
	peekFn    func(fd uintptr) bool
}

// h1Wire counts the bytes written to the connection and limits the
// bytes read while a response head is expected, as http.Transport does.
//
// A read error is sticky: once readPlainResponse's peek has met it,
// http.ReadResponse meets it again, after the same bytes.
type h1Wire struct {
	conn      net.Conn
	written   int64
	readLimit int64
	readErr   error
}

func (w *h1Wire) Read(p []byte) (int, error) {
	if w.readErr != nil {
		return 0, w.readErr
	}
	if w.readLimit <= 0 {
		return 0, errHeaderLimit
	}
	if int64(len(p)) > w.readLimit {
		p = p[:w.readLimit]
	}
	n, err := w.conn.Read(p)
	w.readLimit -= int64(n)
	w.readErr = err
	return n, err
}

func (w *h1Wire) Write(p []byte) (int, error) {
	n, err := w.conn.Write(p)
	w.written += int64(n)
	return n, err
}

var errHeaderLimit = errors.New("read limit of the response head exhausted")

// headerTimeoutError is returned when the origin sent no response head
// within the response header timeout; failure.go reports it as 504.
type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "net/http: timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

// tlsHandshakeTimeoutError is returned when the TLS handshake with the
// origin outlasts the transport's handshake timeout, worded as
// http.Transport words it (failure.go looks for "TLS handshake timeout").
type tlsHandshakeTimeoutError struct{}

func (tlsHandshakeTimeoutError) Error() string   { return "net/http: TLS handshake timeout" }
func (tlsHandshakeTimeoutError) Timeout() bool   { return true }
func (tlsHandshakeTimeoutError) Temporary() bool { return true }

// dial opens a new connection to the origin: the transport's dialer,
// then the TLS handshake within the handshake timeout.
func (c *h1Client) dial(ctx context.Context) (*h1Conn, error) {
	raw, err := c.dialer(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	conn := raw
	if c.tls != nil {
		tc := tls.Client(raw, c.tls)
		hctx, cancel := ctx, context.CancelFunc(func() {})
		if c.handshakeTimeout > 0 {
			hctx, cancel = context.WithTimeout(ctx, c.handshakeTimeout)
		}
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return nil, tlsHandshakeTimeoutError{}
			}
			return nil, err
		}
		conn = tc
	}
	h := &h1Conn{client: c, raw: raw, wire: h1Wire{conn: conn, readLimit: math.MaxInt64}}
	h.br = bufio.NewReaderSize(&h.wire, c.readBufferSize)
	h.bw = bufio.NewWriterSize(&h.wire, c.writeBufferSize)
	h.peekFn = h.peek
	if sc, ok := raw.(syscall.Conn); ok {
		h.sys, _ = sc.SyscallConn()
	}
	h.waitTimer = time.AfterFunc(watchInterval, h.checkWait)
	h.waitTimer.Stop()
	return h, nil
}

// watchInterval is how often the lean client checks, while it awaits a
// response head, that the client is still there: a client that went
// away is noticed within it, without a goroutine or an allocation per
// request. While a body streams, a client that went away is noticed at
// the next write to it.
const watchInterval = 250 * time.Millisecond

// awaitHead starts watching the client's context and the response
// header timeout, until headArrived.
func (c *h1Conn) awaitHead(ctx context.Context) {
	first := watchInterval
	c.waitMu.Lock()
	c.waitCtx, c.waitCause, c.waitUntil = ctx, nil, time.Time{}
	if t := c.client.headerTimeout; t > 0 {
		c.waitUntil = time.Now().Add(t)
		first = min(first, t)
	}
	c.waitMu.Unlock()
	c.waitTimer.Reset(first)
}

// headArrived stops the watch, and returns why the watch closed the
// connection, if it did.
func (c *h1Conn) headArrived() error {
	c.waitTimer.Stop()
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	c.waitCtx = nil
	return c.waitCause
}

// checkWait runs on waitTimer: it closes the connection when the client
// went away or the head is late, and checks again later otherwise.
func (c *h1Conn) checkWait() {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	if c.waitCtx == nil {
		return // the head arrived
	}
	if err := c.waitCtx.Err(); err != nil {
		c.waitCause = err
		c.raw.Close()
		return
	}
	next := watchInterval
	if !c.waitUntil.IsZero() {
		left := time.Until(c.waitUntil)
		if left <= 0 {
			c.waitCause = headerTimeoutError{}
			c.raw.Close()
			return
		}
		next = min(next, left)
	}
	c.waitTimer.Reset(next)
}

// close closes the connection, telling a TLS origin first.
func (c *h1Conn) close() {
	c.waitTimer.Stop()
	c.wire.conn.Close()
}

// roundTrip sends req and reads its response head. written reports
// whether any byte of the request reached the connection. On success
// the response's body hands the connection back when it is closed.
func (c *h1Conn) roundTrip(req h1Request) (res *http.Response, written bool, err error) {
	before := c.wire.written
	if err = req.write(c); err != nil {
		c.close()
		return nil, c.wire.written > before, err
	}

	out := req.request()
	c.awaitHead(out.Context())
	c.wire.readLimit = c.client.maxHeaderBytes
	res = readPlainResponse(c.br, out, &c.plain)
	for res == nil {
		res, err = http.ReadResponse(c.br, out)
		// 1xx responses other than 101 are skipped, within one limit
		// for all heads, as http.Transport does without a trace
		if err != nil || res.StatusCode < 100 || res.StatusCode > 199 || res.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		res = nil
	}
	if cause := c.headArrived(); cause != nil {
		// the watch closed the connection
		res, err = nil, cause
	}
	if err != nil {
		if c.wire.readLimit <= 0 {
			err = fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", c.client.maxHeaderBytes)
		}
		c.close()
		return nil, true, err
	}
	c.wire.readLimit = math.MaxInt64
	c.body = h1Body{conn: c, body: res.Body, keepAlive: !res.Close && res.StatusCode != http.StatusSwitchingProtocols}
	res.Body = &c.body
	return res, true, nil
}

// h1Body is the body of a response read by the lean client. Its Close
// hands the connection back to the pool when the body was read to the
// end and the origin allowed keep-alive, and closes it otherwise.
type h1Body struct {
	conn      *h1Conn
	body      io.ReadCloser
	eof       bool
	keepAlive bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close never closes the body read by http.ReadResponse, which would
// read the rest of it first.
func (b *h1Body) Close() error {
	c := b.conn
	if c == nil {
		return nil
	}
	b.conn = nil
	if b.eof && b.keepAlive && c.br.Buffered() == 0 {
		c.client.pool.put(c)
	} else {
		c.close()
	}
	return nil
}
