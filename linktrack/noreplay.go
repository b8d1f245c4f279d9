package linktrack

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// A click must reach the origin once. Go's http.Transport sends a
// request again on a new connection when a reused connection fails
// after the request was written but before the response began, if the
// request is replayable: it has no body (or a GetBody) and its method
// is GET, HEAD, OPTIONS or TRACE, or it carries an Idempotency-Key
// (net/http's Request.isReplayable, golang/go#48438). The origin has
// then seen the click twice. A request with a body that cannot be
// rewound is never replayable, so linktrack gives every such bodyless
// request an empty body of its own, unsentBody. That body also tells
// whether the request was ever handed to the connection in full, so a
// request that failed before that can be sent once more, safely.

// identityEncoding keeps net/http from probing or chunking unsentBody:
// with it, the request goes out with neither Content-Length nor
// Transfer-Encoding, exactly as a bodyless request does.
var identityEncoding = []string{"identity"}

// unsentBody is the empty body of a bodyless request. net/http reads
// it only after it has flushed the request head to the connection, so
// a request whose unsentBody was never read never reached the origin
// as a whole request.
type unsentBody struct {
	read atomic.Bool
}

func (b *unsentBody) Read([]byte) (int, error) {
	b.read.Store(true)
	return 0, io.EOF
}

// WriteTo spares io.Copy its 32 KiB buffer.
func (b *unsentBody) WriteTo(_ io.Writer) (int64, error) {
	b.read.Store(true)
	return 0, nil
}

func (*unsentBody) Close() error { return nil }

// replayable reports whether net/http would send r again after a
// failure on a reused connection, were its body nil.
func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := r.Header["Idempotency-Key"]
	_, xKey := r.Header["X-Idempotency-Key"]
	return key || xKey
}

// sendOnceMore reports whether a request that failed over HTTP/1.x
// may be sent again: it has an unsentBody that was never read, so the
// origin never received it whole; it expects no 100-continue, which
// would send the head without reading the body; it failed on a
// connection that was already open, not in a dial or TLS handshake,
// which a second try would only repeat; and its client is still
// waiting.
func sendOnceMore(out *http.Request, err error) bool {
	body, ok := out.Body.(*unsentBody)
	if !ok || body.read.Load() || out.Context().Err() != nil {
		return false
	}
	if _, expect := out.Header["Expect"]; expect {
		return false
	}
	var dialErr reverseproxy.DialError
	if errors.As(err, &dialErr) {
		return false
	}
	_, _, handshake := tlsFailure(err)
	return !handshake
}
