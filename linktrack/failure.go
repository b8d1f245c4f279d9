package linktrack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// clientBodyError is a failure to read the client's request body: the
// client's fault, not the origin's.
type clientBodyError struct{ err error }

func (e clientBodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e clientBodyError) Unwrap() error { return e.err }

// statusClientClosedRequest is the non-standard status Caddy uses when
// the client went away before the origin answered.
const statusClientClosedRequest = 499

// failure logs why the origin could not answer and returns the handler
// error that carries the status for the client: 413 for an oversized
// body, 408 for a body that stalled past the idle timeout, 504 when the
// origin sent no response headers in time, 502 for every other failure
// to reach the origin (refused, unresolvable or timed-out dial, TLS
// failure, connection closed). A request body is
// never replayed: the transport retries only requests it has not begun
// to send.
func (p *originProxy) failure(r *http.Request, tenant string, duration time.Duration, err error) (int, error) {
	status, slug, cause := classifyFailure(r, err)
	if status >= http.StatusInternalServerError {
		p.metrics.errors(slug).Inc()
	}
	p.metrics.requests[status/100].Inc()
	level := zapcore.ErrorLevel
	if status < http.StatusInternalServerError {
		level = zapcore.DebugLevel
	}
	if c := p.logger.Check(level, "origin request failed"); c != nil {
		c.Write(
			zap.String("tenant", tenant),
			zap.String("cause", cause),
			zap.Int("status", status),
			zap.Duration("duration", duration),
			zap.Error(err),
		)
	}
	return status, caddyhttp.Error(status, err)
}

// classifyFailure maps a round-trip error to the client's status, a
// short label for metrics and a cause for the log.
func classifyFailure(r *http.Request, err error) (int, string, string) {
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds max_body_size"
	}
	var bodyErr clientBodyError
	if errors.As(err, &bodyErr) && errors.Is(bodyErr.err, os.ErrDeadlineExceeded) {
		// the server cancels the request's context when a read of the
		// connection fails, so this comes before client_closed
		return http.StatusRequestTimeout, "body_timeout", "request body stalled past the idle timeout"
	}
	if errors.Is(r.Context().Err(), context.Canceled) {
		return statusClientClosedRequest, "client_closed", "client closed the request"
	}
	if errors.As(err, &bodyErr) {
		return http.StatusBadRequest, "bad_request_body", "client sent a malformed request body"
	}

	var dialErr reverseproxy.DialError
	if errors.As(err, &dialErr) {
		// DialError does not unwrap, so its text is all there is
		msg := dialErr.Error()
		switch {
		case strings.Contains(msg, "no such host"), strings.Contains(msg, "lookup "):
			return http.StatusBadGateway, "dns", "origin name does not resolve"
		case strings.Contains(msg, "connection refused"):
			return http.StatusBadGateway, "refused", "origin refused the connection"
		case strings.Contains(msg, "timeout"):
			return http.StatusBadGateway, "dial_timeout", "dial to origin timed out"
		default:
			return http.StatusBadGateway, "dial", "dial to origin failed"
		}
	}

	if slug, cause, ok := tlsFailure(err); ok {
		return http.StatusBadGateway, slug, cause
	}

	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return http.StatusGatewayTimeout, "header_timeout", "origin sent no response headers in time"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "server closed") || strings.Contains(err.Error(), "connection reset") {
		return http.StatusBadGateway, "closed", "origin closed the connection without a response"
	}
	return http.StatusBadGateway, "other", "origin request failed"
}

// tlsFailure describes a failed TLS handshake with the origin.
func tlsFailure(err error) (string, string, bool) {
	var hostnameErr x509.HostnameError
	if errors.As(err, &hostnameErr) {
		return "tls_name", "origin certificate does not match the origin name", true
	}
	var authorityErr x509.UnknownAuthorityError
	if errors.As(err, &authorityErr) {
		return "tls_authority", "origin certificate is signed by an untrusted authority", true
	}
	var invalidErr x509.CertificateInvalidError
	if errors.As(err, &invalidErr) {
		return "tls_invalid", "origin certificate is invalid: " + invalidErr.Error(), true
	}
	var verifyErr *tls.CertificateVerificationError
	if errors.As(err, &verifyErr) {
		return "tls_verify", "origin certificate failed verification", true
	}
	var recordErr tls.RecordHeaderError
	if errors.As(err, &recordErr) {
		return "not_tls", "origin did not answer with TLS", true
	}
	var alertErr tls.AlertError
	if errors.As(err, &alertErr) {
		return "tls_alert", "origin refused the TLS handshake: " + alertErr.Error(), true
	}
	if strings.Contains(err.Error(), "TLS handshake timeout") {
		return "tls_timeout", "TLS handshake with origin timed out", true
	}
	return "", "", false
}
