package standin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	dialTimeout = 10 * time.Second
	// clientHandshakeTimeout bounds a client's TLS handshake. It is long
	// because a server with on-demand TLS may obtain a certificate during
	// the handshake; Caddy allows that up to 180s.
	clientHandshakeTimeout = 3 * time.Minute
	continueTimeout        = 5 * time.Second  // longest wait for "100 Continue"
	writeTimeout           = 10 * time.Second // bounds WriteRaw
	maxInterim             = 32               // 1xx responses accepted before a final one
)

// ErrNoContinue is returned by RawClient.Do, wrapped, when a request with
// ExpectContinue receives a final response before "100 Continue".
var ErrNoContinue = errors.New("final response arrived before 100 continue")

// RawRequest is an HTTP/1.1 request written to the wire verbatim.
type RawRequest struct {
	Method, Target string  // written verbatim as "<Method> <Target> HTTP/1.1"
	Host           string  // written as the first header "Host: <Host>" unless empty
	Headers        []Field // written verbatim after Host, in order, as "<Name>: <Value>"

	// Body is the request body. Unless Headers already include
	// Content-Length or Transfer-Encoding (then nothing is added), Do adds
	// "Transfer-Encoding: chunked" if Chunked is set, or else
	// "Content-Length" if Body is non-nil (even if empty).
	Body     []byte
	Chunked  bool    // send Body chunked, in up to three chunks of uneven size
	Trailers []Field // trailer fields after a chunked Body, only with Chunked

	// ExpectContinue adds "Expect: 100-continue". If there are body bytes
	// to send, Do then sends only the head and waits (at most 5s) for
	// "100 Continue" before sending the body; a final response arriving
	// first is an error wrapping ErrNoContinue.
	ExpectContinue bool
}

// RawResponse is one HTTP/1.1 response as read off the wire.
type RawResponse struct {
	StatusLine string  // without CRLF
	Status     int     // status code from StatusLine
	Headers    []Field // in wire order, names as sent
	Body       []byte  // de-chunked
	Trailers   []Field // trailer fields after a chunked body
	Interim    []int   // 1xx statuses seen before the final response, e.g. 100
}

// Values returns all values of the header name (case-insensitive), in order.
func (r *RawResponse) Values(name string) []string { return values(r.Headers, name) }

// RawClient is an HTTP/1.1 client that keeps one connection, TLS or plain,
// open for keep-alive and writes requests byte for byte. It is not safe for
// concurrent use.
type RawClient struct {
	conn net.Conn
	br   *bufio.Reader
}

// DialRaw connects to addr. A nil tlsConfig means plain TCP; otherwise
// DialRaw performs the TLS handshake with NextProtos forced to
// ["http/1.1"] and ServerName defaulting to the host of addr.
func DialRaw(addr string, tlsConfig *tls.Config) (*RawClient, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("standin: dial %s: %w", addr, err)
	}
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				conn.Close()
				return nil, fmt.Errorf("standin: split %s: %w", addr, err)
			}
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), clientHandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("standin: tls handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	return &RawClient{conn: conn, br: bufio.NewReaderSize(conn, bufferSize)}, nil
}

// Do writes req and reads the response, all within timeout. On timeout the
// error wraps os.ErrDeadlineExceeded. If the response arrives before an
// expected "100 Continue", Do returns it together with an error wrapping
// ErrNoContinue.
func (c *RawClient) Do(req RawRequest, timeout time.Duration) (*RawResponse, error) {
	deadline := time.Now().Add(timeout)
	if err := c.conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("standin: set deadline: %w", err)
	}
	defer c.conn.SetDeadline(time.Time{})

	head, body := req.encode()
	if !req.ExpectContinue || len(body) == 0 {
		if _, err := c.conn.Write(append(head, body...)); err != nil {
			return nil, fmt.Errorf("standin: write request: %w", err)
		}
		return c.readResponse(req.Method)
	}

	if _, err := c.conn.Write(head); err != nil {
		return nil, fmt.Errorf("standin: write request head: %w", err)
	}
	if d := time.Now().Add(continueTimeout); d.Before(deadline) {
		if err := c.conn.SetReadDeadline(d); err != nil {
			return nil, fmt.Errorf("standin: set deadline: %w", err)
		}
	}
	interim, final, err := c.awaitContinue(req.Method)
	if err != nil {
		return nil, fmt.Errorf("standin: await 100 continue: %w", err)
	}
	if final != nil {
		return final, fmt.Errorf("standin: status %d: %w", final.Status, ErrNoContinue)
	}
	if err := c.conn.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("standin: set deadline: %w", err)
	}
	if _, err := c.conn.Write(body); err != nil {
		return nil, fmt.Errorf("standin: write request body: %w", err)
	}
	resp, err := c.readResponse(req.Method)
	if resp != nil {
		resp.Interim = append(interim, resp.Interim...)
	}
	return resp, err
}

// WriteRaw writes b to the connection as is, for requests that a RawRequest
// cannot express.
func (c *RawClient) WriteRaw(b []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("standin: set deadline: %w", err)
	}
	defer c.conn.SetWriteDeadline(time.Time{})
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("standin: write: %w", err)
	}
	return nil
}

// ReadResponse reads one final response (and any 1xx before it) to a
// request with the given method, waiting at most timeout. If the peer
// closed the connection before a status line, the error wraps io.EOF.
func (c *RawClient) ReadResponse(method string, timeout time.Duration) (*RawResponse, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("standin: set deadline: %w", err)
	}
	defer c.conn.SetReadDeadline(time.Time{})
	return c.readResponse(method)
}

// Close closes the connection.
func (c *RawClient) Close() error { return c.conn.Close() }

// encode returns the request head, including the empty line, and the
// encoded body.
func (r *RawRequest) encode() (head, body []byte) {
	head = fmt.Appendf(nil, "%s %s HTTP/1.1\r\n", r.Method, r.Target)
	if r.Host != "" {
		head = fmt.Appendf(head, "Host: %s\r\n", r.Host)
	}
	head = appendFields(head, r.Headers)
	if !hasField(r.Headers, "Content-Length") && !hasField(r.Headers, "Transfer-Encoding") {
		switch {
		case r.Chunked:
			head = append(head, "Transfer-Encoding: chunked\r\n"...)
		case r.Body != nil:
			head = fmt.Appendf(head, "Content-Length: %d\r\n", len(r.Body))
		}
	}
	if r.ExpectContinue {
		head = append(head, "Expect: 100-continue\r\n"...)
	}
	head = append(head, "\r\n"...)
	if r.Chunked {
		return head, appendChunked(nil, r.Body, r.Trailers)
	}
	return head, r.Body
}

// awaitContinue reads 1xx responses up to and including "100 Continue" and
// returns their statuses. If a final response comes first, it is returned
// as final, complete with its body.
func (c *RawClient) awaitContinue(method string) (interim []int, final *RawResponse, err error) {
	for range maxInterim {
		r, err := c.readHead()
		if err != nil {
			return interim, nil, err
		}
		if !isInterim(r.Status) {
			r.Interim = interim
			return interim, r, c.readBody(method, r)
		}
		interim = append(interim, r.Status)
		if r.Status == http.StatusContinue {
			return interim, nil, nil
		}
	}
	return interim, nil, fmt.Errorf("standin: more than %d interim responses", maxInterim)
}

// readResponse reads 1xx responses and then one final response.
func (c *RawClient) readResponse(method string) (*RawResponse, error) {
	var interim []int
	for range maxInterim {
		r, err := c.readHead()
		if err != nil {
			return nil, err
		}
		if isInterim(r.Status) {
			interim = append(interim, r.Status)
			continue
		}
		r.Interim = interim
		if err := c.readBody(method, r); err != nil {
			return nil, err
		}
		return r, nil
	}
	return nil, fmt.Errorf("standin: more than %d interim responses", maxInterim)
}

// readHead reads a status line and its header block.
func (c *RawClient) readHead() (*RawResponse, error) {
	budget := maxHeaderBytes
	line, err := readLine(c.br, &budget)
	if err != nil {
		return nil, fmt.Errorf("standin: read status line: %w", err)
	}
	r := &RawResponse{StatusLine: line}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	r.Status, err = strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/") || len(code) != 3 || err != nil {
		return nil, fmt.Errorf("standin: malformed status line %q", line)
	}
	r.Headers, err = readFields(c.br, &budget)
	if err != nil {
		return nil, fmt.Errorf("standin: read response header block: %w", err)
	}
	return r, nil
}

// readBody reads the body of a final response to a request with the given
// method.
func (c *RawClient) readBody(method string, r *RawResponse) error {
	if method == http.MethodHead || r.Status/100 == 1 || r.Status == http.StatusNoContent || r.Status == http.StatusNotModified {
		return nil
	}
	var buf bytes.Buffer
	if te := r.Values("Transfer-Encoding"); len(te) > 0 {
		if isChunked(te) {
			_, trailers, err := readChunked(c.br, &buf, maxBodyBytes)
			r.Body, r.Trailers = buf.Bytes(), trailers
			return err
		}
		return c.readToEOF(r)
	}
	n, err := contentLength(r.Headers)
	switch {
	case err != nil:
		return err
	case n < 0:
		return c.readToEOF(r)
	}
	_, err = readBodyN(c.br, &buf, n)
	r.Body = buf.Bytes()
	return err
}

// readToEOF reads a body delimited by the end of the connection.
func (c *RawClient) readToEOF(r *RawResponse) error {
	b, err := io.ReadAll(io.LimitReader(c.br, maxBodyBytes+1))
	r.Body = b
	if err != nil {
		return fmt.Errorf("standin: read body: %w", err)
	}
	if len(b) > maxBodyBytes {
		return errBodyTooLarge
	}
	return nil
}

// isInterim reports whether status is a 1xx status after which the final
// response still follows.
func isInterim(status int) bool {
	return status/100 == 1 && status != http.StatusSwitchingProtocols
}
