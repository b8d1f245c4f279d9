package linktrack

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// DefaultClientIdleTimeout is how long a read of a request body, or a
// write of a streamed response, may stall when linktrack guards it:
// the default of Caddy's read_idle_timeout and write_idle_timeout.
const DefaultClientIdleTimeout = time.Minute

// bufferedResponseSize is the largest response body that net/http
// holds in its buffer until the handler returns, so that no write of it
// can stall while the handler runs (bufferBeforeChunkingSize in
// net/http). Caddy's write idle timeout, which only covers writes made
// by the handler, guards nothing for such a response either.
const bufferedResponseSize = 2048

// clientGuard applies Caddy's idle timeouts, with Caddy's own
// IdleTimeoutReader and IdleTimeoutWriter, to the exchanges with a
// client that can stall, when nothing else guards them. By default
// Caddy's server wraps every request's body and response writer itself
// (read_idle_timeout, write_idle_timeout), and then the guard does
// nothing. A server that serves only linktrack may turn those off, so
// that a click, which has no body and gets a response net/http
// buffers whole, skips them: the guard then wraps only a request that
// has a body, and only a response that linktrack streams.
type clientGuard struct {
	timeout time.Duration // <= 0: off
	logger  *zap.Logger
}

// guards reports whether r's body needs guarding (it has one and
// nothing guards it yet) and whether writes to the client do: they do
// unless Caddy's server or a timeouts handler wraps the response writer
// already. Both are false when the guard is off.
func (g clientGuard) guards(r *http.Request) (body bool, writes bool) {
	if g.timeout <= 0 {
		return false, false
	}
	reader, writer := caddyhttp.IdleTimeoutsFromContext(r.Context())
	return reader == nil && !bodylessClick(r), writer == nil
}

// guardBody wraps r.Body in an IdleTimeoutReader. The returned
// function must run before the handler returns.
func (g clientGuard) guardBody(w http.ResponseWriter, r *http.Request) (done func()) {
	start := time.Now()
	readTimeout, _ := serverTimeouts(r)
	reader := &caddyhttp.IdleTimeoutReader{
		ReadCloser: r.Body,
		Ctrl:       http.NewResponseController(w),
		Deadline: caddyhttp.IdleDeadline{
			Start:        start,
			Timeout:      g.timeout,
			HardDeadline: ceiling(start, readTimeout),
		},
		Logger:            g.logger,
		DrainDeadline:     r.ProtoMajor == 1 && r.ContentLength != 0,
		ClearBetweenReads: r.ProtoMajor == 2,
	}
	r.Body = reader
	return reader.HandlerDone
}

// guardWriter wraps w in an IdleTimeoutWriter when res's body may not
// fit net/http's buffer: its length is unknown or larger. It returns w
// unchanged otherwise. The returned function must run before the
// handler returns.
func (g clientGuard) guardWriter(w http.ResponseWriter, r *http.Request, res *http.Response) (http.ResponseWriter, func()) {
	if res.ContentLength >= 0 && res.ContentLength <= bufferedResponseSize {
		return w, func() {}
	}
	start := time.Now()
	_, writeTimeout := serverTimeouts(r)
	writer := &caddyhttp.IdleTimeoutWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		Ctrl:                  http.NewResponseController(w),
		Deadline: caddyhttp.IdleDeadline{
			Start:        start,
			Timeout:      g.timeout,
			HardDeadline: ceiling(start, writeTimeout),
		},
		Logger:             g.logger,
		ClearBetweenWrites: r.ProtoMajor == 2,
	}
	return writer, writer.HandlerDone
}

// serverTimeouts returns the read_timeout and write_timeout of the
// server r came in on, which cap the whole transfer as they cap Caddy's
// own wrappers: zero when unset.
func serverTimeouts(r *http.Request) (read, write time.Duration) {
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		return time.Duration(srv.ReadTimeout), time.Duration(srv.WriteTimeout)
	}
	return 0, 0
}

// ceiling returns the hard deadline a timeout puts on a transfer that
// began at start: zero for none.
func ceiling(start time.Time, timeout time.Duration) time.Time {
	if timeout <= 0 {
		return time.Time{}
	}
	return start.Add(timeout)
}
