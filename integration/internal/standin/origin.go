// Package standin provides loopback test fixtures for end-to-end tests of an
// HTTPS reverse proxy: a stand-in origin that records exactly what it
// received and answers with a scripted response, a raw HTTP/1.1 client that
// sends exactly the bytes a test specifies, and a small test CA.
package standin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// handshakeTimeout bounds a TLS handshake on either side.
const handshakeTimeout = 10 * time.Second

// Received is one request exactly as the origin read it off the wire.
type Received struct {
	RequestLine   string // e.g. "GET /p/a|b?x=1 HTTP/1.1", without CRLF
	Method        string // split from RequestLine at its first space
	Target        string // between the first and the last space of RequestLine
	Proto         string // after the last space of RequestLine
	LeadingBlanks int    // empty lines read before RequestLine (RFC 9112 section 2.2 tolerates them)

	Headers    []Field // every header line in arrival order, names as sent (not canonicalized)
	Chunked    bool    // request used Transfer-Encoding: chunked
	Trailers   []Field // trailer fields after a chunked body, in order
	BodyLen    int64   // length of the de-chunked body
	BodySHA256 string  // hex SHA-256 of the de-chunked body
	Body       []byte  // the body if at most 64 KiB, else nil

	// Err is non-empty if the request was cut short, exceeded a limit or
	// had framing the origin cannot follow; the other fields hold what was
	// read. After a cut-short or oversized request the origin closes the
	// connection without answering; after unusable framing it answers and
	// then closes.
	Err string

	SNI        string // TLS ServerName from the ClientHello ("" if none or plain HTTP)
	ALPN       string // negotiated protocol ("" if none)
	TLS        bool   // request arrived over TLS
	ConnID     int    // 1-based index of the TCP connection this arrived on
	RemoteAddr string // peer address of that connection
}

// Values returns all values of the header name (case-insensitive), in order.
func (r *Received) Values(name string) []string { return values(r.Headers, name) }

// Response is what the origin answers.
//
// The scripted Headers are written first, in exactly this order and
// spelling. Unless they already include Content-Length or Transfer-Encoding,
// the origin then appends the framing header that matches Chunked,
// NoContentLength and Body; and unless they include Connection, it appends
// "Connection: close" when it is going to close the connection. For HEAD
// requests and 1xx, 204 and 304 statuses no body bytes are written, but a
// HEAD response still declares the framing of Body, as does any status when
// Body is non-nil.
type Response struct {
	Status          int     // default 200
	Reason          string  // default http.StatusText(Status)
	Headers         []Field // written in this exact order and spelling
	Body            []byte
	Chunked         bool    // send Body with Transfer-Encoding: chunked, in a few chunks
	NoContentLength bool    // neither Content-Length nor chunked: body delimited by closing the connection
	Trailers        []Field // trailer fields, only with Chunked

	// Hang makes the origin read the request and then never answer until
	// the origin is closed.
	Hang bool
	// CloseWithoutResponse makes the origin read the request fully and then
	// close the connection without writing anything.
	CloseWithoutResponse bool
	// ResetWithoutResponse makes the origin read the request fully and then
	// reset the TCP connection (RST, no TLS close_notify) without writing
	// anything.
	ResetWithoutResponse bool

	// CutAfter, if positive, sends the head, which declares the whole
	// body, and only this many bytes of the body; then the connection is
	// closed, or held open without another byte when HangAfterCut is set.
	CutAfter     int
	HangAfterCut bool
}

// Config configures an Origin.
type Config struct {
	Certificate *tls.Certificate         // nil means plain HTTP
	Respond     func(*Received) Response // nil means 200 with body "ok"; must not modify its argument
	OnHead      func(*Received)          // if set, called with a copy of each request once its header block is read, before its body
	Network     string                   // default "tcp"
	Addr        string                   // default "127.0.0.1:0" ("[::1]:0" for "tcp6")
}

// Origin is a stand-in origin server listening on loopback. It serves
// HTTP/1.1 with keep-alive and records every request it reads.
type Origin struct {
	ln      net.Listener
	tlsConf *tls.Config
	respond func(*Received) Response
	onHead  func(*Received)
	done    chan struct{} // closed by Close
	once    sync.Once
	wg      sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{}
	nconns    int
	ended     map[int]chan struct{} // closed when the connection with that ID ends
	queue     []*Received
	count     int
	notify    chan struct{} // closed and replaced whenever a record is queued
	acceptErr error
}

// Start starts an origin and returns once it is listening.
func Start(cfg Config) (*Origin, error) {
	network, addr := cfg.Network, cfg.Addr
	if network == "" {
		network = "tcp"
	}
	if addr == "" {
		addr = "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("standin: listen on %s %s: %w", network, addr, err)
	}
	o := &Origin{
		ln:      ln,
		respond: cfg.Respond,
		onHead:  cfg.OnHead,
		done:    make(chan struct{}),
		conns:   make(map[net.Conn]struct{}),
		ended:   make(map[int]chan struct{}),
		notify:  make(chan struct{}),
	}
	if o.respond == nil {
		o.respond = func(*Received) Response { return Response{Status: 200, Body: []byte("ok")} }
	}
	if cfg.Certificate != nil {
		o.tlsConf = &tls.Config{
			Certificates: []tls.Certificate{*cfg.Certificate},
			NextProtos:   []string{"http/1.1"},
		}
	}
	o.wg.Add(1)
	go o.serve()
	return o, nil
}

// Addr returns the host:port the origin is listening on.
func (o *Origin) Addr() string { return o.ln.Addr().String() }

// Port returns the TCP port the origin is listening on.
func (o *Origin) Port() int {
	if a, ok := o.ln.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// Next returns the next recorded request, waiting at most timeout for one
// to arrive. The error wraps os.ErrDeadlineExceeded on timeout.
func (o *Origin) Next(timeout time.Duration) (*Received, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		o.mu.Lock()
		if len(o.queue) > 0 {
			r := o.queue[0]
			o.queue[0] = nil
			o.queue = o.queue[1:]
			o.mu.Unlock()
			return r, nil
		}
		wait, closed := o.notify, o.closed
		o.mu.Unlock()
		if closed {
			return nil, errors.New("standin: origin closed with no request queued")
		}
		select {
		case <-wait:
		case <-o.done:
		case <-timer.C:
			return nil, fmt.Errorf("standin: no request within %v: %w", timeout, os.ErrDeadlineExceeded)
		}
	}
}

// Count returns the number of requests recorded since Start, including
// those already returned by Next or dropped by Reset.
func (o *Origin) Count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count
}

// Conns returns the number of TCP connections accepted since Start.
func (o *Origin) Conns() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nconns
}

// ConnEnded returns a channel that is closed once the connection with
// the given 1-based ID (Received.ConnID) has ended, closed by either side.
func (o *Origin) ConnEnded(id int) <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.endedLocked(id)
}

func (o *Origin) endedLocked(id int) chan struct{} {
	ch, ok := o.ended[id]
	if !ok {
		ch = make(chan struct{})
		o.ended[id] = ch
	}
	return ch
}

// Reset drops all queued records that Next has not returned yet.
func (o *Origin) Reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.queue)
	o.queue = nil
}

// Close stops accepting, closes all connections (including hung ones) and
// waits for the origin's goroutines to finish. Queued records remain
// available to Next.
func (o *Origin) Close() error {
	var err error
	o.once.Do(func() {
		o.mu.Lock()
		o.closed = true
		conns := make([]net.Conn, 0, len(o.conns))
		for c := range o.conns {
			conns = append(conns, c)
		}
		o.mu.Unlock()
		close(o.done)
		if cerr := o.ln.Close(); cerr != nil {
			err = fmt.Errorf("standin: close listener: %w", cerr)
		}
		for _, c := range conns {
			c.Close()
		}
	})
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.acceptErr != nil {
		return fmt.Errorf("standin: accept: %w", o.acceptErr)
	}
	return err
}

func (o *Origin) serve() {
	defer o.wg.Done()
	for {
		c, err := o.ln.Accept()
		if err != nil {
			o.mu.Lock()
			if !o.closed {
				o.acceptErr = err
			}
			o.mu.Unlock()
			return
		}
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			c.Close()
			return
		}
		o.nconns++
		id := o.nconns
		o.conns[c] = struct{}{}
		o.wg.Add(1)
		o.mu.Unlock()
		go o.serveConn(c, id)
	}
}

func (o *Origin) push(r *Received) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.queue = append(o.queue, r)
	o.count++
	close(o.notify)
	o.notify = make(chan struct{})
}

func (o *Origin) serveConn(raw net.Conn, id int) {
	defer o.wg.Done()
	defer func() {
		o.mu.Lock()
		delete(o.conns, raw)
		close(o.endedLocked(id))
		o.mu.Unlock()
	}()
	conn := raw
	defer func() { conn.Close() }()

	tmpl := Received{ConnID: id, RemoteAddr: raw.RemoteAddr().String()}
	if o.tlsConf != nil {
		tc := tls.Server(raw, o.tlsConf)
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return
		}
		conn = tc
		st := tc.ConnectionState()
		tmpl.TLS, tmpl.SNI, tmpl.ALPN = true, st.ServerName, st.NegotiatedProtocol
	}

	br := bufio.NewReaderSize(conn, bufferSize)
	bw := bufio.NewWriterSize(conn, bufferSize)
	for {
		r := tmpl
		next := readRequest(br, bw, &r, o.onHead)
		if next == connEnded {
			return
		}
		o.push(&r)
		if next == abort {
			return
		}
		resp := o.respond(&r)
		switch {
		case resp.Hang:
			<-o.done
			return
		case resp.CloseWithoutResponse:
			return
		case resp.ResetWithoutResponse:
			if tc, ok := raw.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			raw.Close() // before the deferred Close, which would send close_notify
			return
		}
		closing := next == answerAndClose || resp.NoContentLength || hasToken(resp.Headers, "Connection", "close") || resp.CutAfter > 0
		if err := writeResponse(bw, r.Method, &resp, closing); err != nil || closing {
			if resp.CutAfter > 0 && resp.HangAfterCut {
				<-o.done
			}
			return
		}
	}
}

// outcome tells serveConn what to do after readRequest.
type outcome int

const (
	connEnded      outcome = iota // the connection ended before a request line; nothing to record
	answer                        // answer, then read the next request
	answerAndClose                // answer, then close the connection
	abort                         // record the request, then close without answering
)

// readRequest reads one request into r and decides how the connection
// continues. Requests that are cut short or exceed a limit have r.Err set
// and lead to abort; malformed framing sets r.Err and leads to
// answerAndClose, since the rest of the stream cannot be delimited.
func readRequest(br *bufio.Reader, bw *bufio.Writer, r *Received, onHead func(*Received)) outcome {
	budget := maxHeaderBytes
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return connEnded
		}
		if line != "" {
			r.RequestLine = line
			break
		}
		r.LeadingBlanks++
	}
	r.Method, r.Target, r.Proto = splitRequestLine(r.RequestLine)

	body := newBodyRecorder()
	defer body.store(r)

	var err error
	r.Headers, err = readFields(br, &budget)
	if err != nil {
		r.Err = fmt.Sprintf("read header block: %v", err)
		return abort
	}
	if onHead != nil {
		head := *r
		onHead(&head)
	}
	next := answerAndClose
	if wantsKeepAlive(r) {
		next = answer
	}

	te := r.Values("Transfer-Encoding")
	cl, clErr := contentLength(r.Headers)
	switch {
	case len(te) > 0 && !isChunked(te):
		r.Err = fmt.Sprintf("unsupported transfer-encoding %q", strings.Join(te, ", "))
		return answerAndClose
	case len(te) > 0:
		r.Chunked = true
		if cl >= 0 || clErr != nil {
			next = answerAndClose // RFC 9112 section 6.3: close after ambiguous framing
		}
	case clErr != nil:
		r.Err = clErr.Error()
		return answerAndClose
	case cl <= 0:
		return next
	}

	if hasToken(r.Headers, "Expect", "100-continue") {
		if _, err := bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err == nil {
			err = bw.Flush()
		}
		if err != nil {
			r.Err = fmt.Sprintf("write 100 continue: %v", err)
			return abort
		}
	}
	if r.Chunked {
		_, r.Trailers, err = readChunked(br, body, maxBodyBytes)
	} else {
		_, err = readBodyN(br, body, cl)
	}
	if err != nil {
		r.Err = fmt.Sprintf("read body: %v", err)
		return abort
	}
	return next
}

// splitRequestLine splits a request line at its first and last space.
func splitRequestLine(line string) (method, target, proto string) {
	i := strings.IndexByte(line, ' ')
	if i < 0 {
		return line, "", ""
	}
	j := strings.LastIndexByte(line, ' ')
	if i == j {
		return line[:i], line[i+1:], ""
	}
	return line[:i], line[i+1 : j], line[j+1:]
}

// wantsKeepAlive reports whether the client allows the connection to be
// reused after this request.
func wantsKeepAlive(r *Received) bool {
	switch {
	case hasToken(r.Headers, "Connection", "close"):
		return false
	case r.Proto == "HTTP/1.1":
		return true
	case r.Proto == "HTTP/1.0":
		return hasToken(r.Headers, "Connection", "keep-alive")
	}
	return false
}

// bodyRecorder hashes a body and keeps it while it is small enough.
type bodyRecorder struct {
	sum  hash.Hash
	n    int64
	kept []byte
}

func newBodyRecorder() *bodyRecorder { return &bodyRecorder{sum: sha256.New()} }

func (b *bodyRecorder) Write(p []byte) (int, error) {
	b.sum.Write(p)
	b.n += int64(len(p))
	if b.n <= maxKeptBody {
		b.kept = append(b.kept, p...)
	} else {
		b.kept = nil
	}
	return len(p), nil
}

func (b *bodyRecorder) store(r *Received) {
	r.BodyLen = b.n
	r.BodySHA256 = hex.EncodeToString(b.sum.Sum(nil))
	r.Body = b.kept
}

// writeResponse writes resp as the answer to a request with the given method.
func writeResponse(bw *bufio.Writer, method string, resp *Response, closeAfter bool) error {
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	reason := resp.Reason
	if reason == "" {
		reason = http.StatusText(status)
	}
	noBody := method == http.MethodHead || status/100 == 1 || status == http.StatusNoContent || status == http.StatusNotModified

	b := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\n", status, reason)
	b = appendFields(b, resp.Headers)
	if !hasField(resp.Headers, "Content-Length") && !hasField(resp.Headers, "Transfer-Encoding") {
		switch {
		case resp.Chunked:
			b = append(b, "Transfer-Encoding: chunked\r\n"...)
		case resp.NoContentLength:
		case noBody && method != http.MethodHead && resp.Body == nil:
		default:
			b = fmt.Appendf(b, "Content-Length: %d\r\n", len(resp.Body))
		}
	}
	if closeAfter && !hasField(resp.Headers, "Connection") {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if _, err := bw.Write(b); err != nil {
		return fmt.Errorf("standin: write response head: %w", err)
	}
	if !noBody {
		body := resp.Body
		if resp.Chunked {
			body = appendChunked(nil, resp.Body, resp.Trailers)
		}
		if resp.CutAfter > 0 && resp.CutAfter < len(body) {
			body = body[:resp.CutAfter]
		}
		if _, err := bw.Write(body); err != nil {
			return fmt.Errorf("standin: write response body: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("standin: write response: %w", err)
	}
	return nil
}
