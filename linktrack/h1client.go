package linktrack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"golang.org/x/net/http/httpguts"
)

// h1Client is linktrack's lean upstream HTTP/1.1 client. It sends
// requests to one origin over a LIFO pool of keep-alive connections,
// writes each request head once with its small body, and reads the
// response on the handler's own goroutine: none of http.Transport's
// per-connection read and write goroutines, nor the channel hand-offs
// between them.
//
// It is built from the provisioned `http` transport, whose options stay
// the configuration surface: the TLS client config (trust pool, server
// name, client certificates, ...), the dialer (dial timeout, resolver,
// local address, TCP keep-alive probes, read and write timeouts), the
// TLS handshake timeout, the response header timeout, the most idle
// connections per host, the idle timeout, the largest response head and
// the buffer sizes. It is used only when the transport speaks HTTP/1.x
// alone (linktrack's default, `versions 1.1`), and not at all when the
// transport has an option it does not implement: `proxy_protocol`, a
// `network_proxy` (or a proxy from the environment for this origin), a
// server name with placeholders, `max_conns_per_host`,
// `expect_continue_timeout`, `compression` on, or keep-alive off. Then
// the standard client sends every request.
//
// A request whose body is longer than maxLeanBody, or of unknown
// length, also takes the standard client, which writes the body while
// it reads the response.
//
// A request is never sent twice once any byte of it reached the
// connection (see noreplay.go). A bodyless request whose write failed
// on a reused connection before any byte was written is sent once
// more, on a new connection; a failed dial or TLS handshake is not.
type h1Client struct {
	addr             string      // host:port dialed
	tls              *tls.Config // nil for a plain-HTTP origin
	dialer           func(ctx context.Context, network, addr string) (net.Conn, error)
	handshakeTimeout time.Duration
	headerTimeout    time.Duration
	maxHeaderBytes   int64
	readBufferSize   int
	writeBufferSize  int
	pool             *h1Pool
}

// maxLeanBody is the longest request body the lean client sends: one
// the kernel takes at once with its head, so that writing it never
// waits for an origin that answers before reading it.
const maxLeanBody = 16 << 10

// newH1Client returns the lean client for origin, configured from the
// provisioned transport, or nil with the reason when the transport has
// an option it does not implement. The caller checks that the transport
// speaks HTTP/1.x only.
func newH1Client(origin *url.URL, transport *reverseproxy.HTTPTransport) (*h1Client, string) {
	rt := transport.Transport
	switch {
	case rt == nil:
		return nil, "no http.Transport"
	case transport.ProxyProtocol != "":
		return nil, "proxy_protocol"
	case len(transport.NetworkProxyRaw) > 0 || transport.ForwardProxyURL != "":
		return nil, "network_proxy"
	case rt.DialTLSContext != nil || rt.DialTLS != nil:
		return nil, "a custom TLS dialer (a server name with placeholders)"
	case rt.MaxConnsPerHost > 0:
		return nil, "max_conns_per_host"
	case rt.ExpectContinueTimeout > 0:
		return nil, "expect_continue_timeout"
	case !rt.DisableCompression:
		return nil, "compression"
	case rt.DisableKeepAlives:
		return nil, "keep-alive off"
	case rt.ForceAttemptHTTP2 || rt.Protocols != nil || len(rt.TLSNextProto) > 0:
		return nil, "HTTP/2"
	case origin.Scheme != "https" && origin.Scheme != "http":
		return nil, "scheme " + origin.Scheme
	}
	if rt.Proxy != nil {
		proxy, err := rt.Proxy(&http.Request{Method: http.MethodGet, URL: origin, Header: http.Header{}})
		if err != nil || proxy != nil {
			return nil, "a proxy from the environment"
		}
	}

	c := &h1Client{
		dialer:           rt.DialContext,
		handshakeTimeout: rt.TLSHandshakeTimeout,
		headerTimeout:    rt.ResponseHeaderTimeout,
		maxHeaderBytes:   rt.MaxResponseHeaderBytes,
		readBufferSize:   rt.ReadBufferSize,
		writeBufferSize:  rt.WriteBufferSize,
	}
	if c.dialer == nil {
		c.dialer = new(net.Dialer).DialContext
	}
	if c.maxHeaderBytes <= 0 {
		c.maxHeaderBytes = 10 << 20 // http.Transport's default
	}
	if c.readBufferSize <= 0 {
		c.readBufferSize = 4 << 10
	}
	if c.writeBufferSize <= 0 {
		c.writeBufferSize = 4 << 10
	}
	port := origin.Port()
	if port == "" {
		port = "443"
		if origin.Scheme == "http" {
			port = "80"
		}
	}
	c.addr = net.JoinHostPort(origin.Hostname(), port)
	if origin.Scheme == "https" {
		if rt.TLSClientConfig != nil {
			c.tls = rt.TLSClientConfig.Clone()
		} else {
			c.tls = new(tls.Config)
		}
		if c.tls.ServerName == "" {
			c.tls.ServerName = origin.Hostname()
		}
	}
	maxIdle := rt.MaxIdleConnsPerHost
	if maxIdle == 0 {
		maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	if rt.MaxIdleConns > 0 && rt.MaxIdleConns < maxIdle {
		maxIdle = rt.MaxIdleConns
	}
	c.pool = newH1Pool(maxIdle, rt.IdleConnTimeout)
	return c, ""
}

// sends reports whether the lean client sends out: a request with no
// body, or with a body of known length up to maxLeanBody.
func (c *h1Client) sends(out *http.Request) bool {
	switch out.Body.(type) {
	case nil, *unsentBody:
		return true
	}
	return out.ContentLength > 0 && out.ContentLength <= maxLeanBody &&
		len(out.TransferEncoding) == 0 && out.Trailer == nil
}

// h1Request is what the lean client sends: a built outgoing request
// (builtRequest), or a bodyless click whose head is written straight
// from the incoming request (clickHead).
type h1Request interface {
	// check refuses what Go's client refuses to write
	check() error
	// write writes the head, and a small body, and flushes them
	write(c *h1Conn) error
	// request returns the request whose context and method govern
	// the exchange
	request() *http.Request
	// bodyless reports whether no body byte is sent
	bodyless() bool
}

// roundTrip sends req to the origin on an idle connection, or a new
// one, and returns the response head; its body streams from the
// connection.
func (c *h1Client) roundTrip(req h1Request) (*http.Response, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	ctx := req.request().Context()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn := c.pool.get()
	if conn == nil {
		var err error
		if conn, err = c.dial(ctx); err != nil {
			return nil, err
		}
	}
	res, written, err := conn.roundTrip(req)
	if err != nil && conn.reused && !written && req.bodyless() && ctx.Err() == nil {
		// the connection died while idle and the origin got nothing:
		// send the request once more, on a new connection
		if conn, err = c.dial(ctx); err != nil {
			return nil, err
		}
		res, _, err = conn.roundTrip(req)
	}
	return res, err
}

// closeIdle closes the idle connections, when the config that
// provisioned the client is unloaded.
func (c *h1Client) closeIdle() { c.pool.closeIdle() }

// builtRequest is an outgoing request built by outgoingRequest, as the
// lean client sends it.
type builtRequest http.Request

func (b *builtRequest) request() *http.Request { return (*http.Request)(b) }
func (b *builtRequest) check() error           { return checkOutgoing(b.request()) }
func (b *builtRequest) write(c *h1Conn) error  { return c.writeRequest(b.request()) }

// bodyless reports whether the request carries no body bytes.
func (b *builtRequest) bodyless() bool {
	switch b.Body.(type) {
	case nil, *unsentBody:
		return true
	}
	return false
}

// checkOutgoing refuses what Go's client refuses to write: an invalid
// method, field name or field value, a control byte in the
// request-target, or a Host that has no punycode form.
func checkOutgoing(out *http.Request) error {
	if out.Method != "" && !httpguts.ValidHeaderFieldName(out.Method) {
		return fmt.Errorf("net/http: invalid method %q", out.Method)
	}
	for name, values := range out.Header {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("net/http: invalid header field name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				// the value may be sensitive: not in the error
				return fmt.Errorf("net/http: invalid header field value for %q", name)
			}
		}
	}
	if hasControlByte(targetPath(out.URL)) || hasControlByte(out.URL.RawQuery) {
		return errors.New("net/http: can't write control character in Request.URL")
	}
	_, err := outgoingHostField(out.Host)
	return err
}
