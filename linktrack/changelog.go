package linktrack

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// loggedDomains caps the domains one change's log line and event name;
// the counts still cover a bulk change of any size.
const loggedDomains = 20

// tenantChange is one change asked of the admin API, as it is recorded.
type tenantChange struct {
	operation string   // put, delete or bulk
	domains   []string // canonical, or as sent when invalid; at most loggedDomains
	bulkSent  bool     // a bulk change decoded: put and remove hold its counts
	put       int
	remove    int
	created   int
	err       string // why a change answered by its handler failed
}

// name records a domain of the change, cut to a length a domain may
// have, while fewer than loggedDomains are recorded.
func (c *tenantChange) name(domain string) {
	if len(c.domains) < loggedDomains {
		if len(domain) > maxDomainLength+2 {
			domain = domain[:maxDomainLength] + "..."
		}
		c.domains = append(c.domains, domain)
	}
}

// bulk records the domains of a bulk change and how many it puts and
// removes.
func (c *tenantChange) bulk(b bulkChange) {
	c.bulkSent, c.put, c.remove = true, len(b.Tenants), len(b.Remove)
	for _, t := range b.Tenants {
		c.name(t.Domain)
	}
	for _, d := range b.Remove {
		c.name(d)
	}
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.MaxBytesReader and http.ResponseController reach the
// connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recordChange runs the handler of a change and records the change,
// whatever its result: one log line, "tenant change", and one
// tenant_change event, each with the operation, the domains, the
// status answered, the error if any, and who asked. Who asked is the
// subject of the client certificate when the request came over mutual
// TLS (Caddy's remote admin endpoint), else the remote address. The
// tenant's fields are not recorded beyond its domain, nor is any header.
func (api *AdminAPI) recordChange(w http.ResponseWriter, r *http.Request, operation string,
	handle func(http.ResponseWriter, *http.Request, *tenantChange) error) error {
	c := &tenantChange{operation: operation}
	sw := &statusWriter{ResponseWriter: w}
	err := handle(sw, r, c)
	status := sw.status
	if err != nil {
		status = http.StatusInternalServerError
		var apiErr caddy.APIError
		if errors.As(err, &apiErr) && apiErr.HTTPStatus != 0 {
			status = apiErr.HTTPStatus
		}
		c.err = err.Error()
	}
	api.logChange(r, c, status)
	return err
}

// clientIdentity returns who sent r: the subject of its verified client
// certificate, or its remote address when it came without one.
func clientIdentity(r *http.Request) (client, auth string) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0].Subject.String(), "client_certificate"
	}
	return r.RemoteAddr, "none"
}

// logChange writes the log line and emits the event of a change.
func (api *AdminAPI) logChange(r *http.Request, c *tenantChange, status int) {
	client, auth := clientIdentity(r)
	level := zapcore.InfoLevel
	if status >= http.StatusInternalServerError {
		level = zapcore.ErrorLevel
	}
	if ce := api.logger.Check(level, "tenant change"); ce != nil {
		fields := []zap.Field{
			zap.String("operation", c.operation),
			zap.Strings("domains", c.domains),
		}
		if c.bulkSent {
			fields = append(fields, zap.Int("put", c.put), zap.Int("remove", c.remove))
		}
		if status < http.StatusBadRequest {
			fields = append(fields, zap.Int("created", c.created))
		}
		fields = append(fields, zap.Int("status", status))
		if c.err != "" {
			fields = append(fields, zap.String("error", c.err))
		}
		fields = append(fields, zap.String("client", client), zap.String("client_auth", auth), zap.String("remote_addr", r.RemoteAddr))
		ce.Write(fields...)
	}
	a := api.app
	if a == nil || a.events == nil {
		return
	}
	data := map[string]any{
		"operation":   c.operation,
		"domains":     c.domains,
		"status":      status,
		"client":      client,
		"client_auth": auth,
		"remote_addr": r.RemoteAddr,
	}
	if c.bulkSent {
		data["put"], data["remove"] = c.put, c.remove
	}
	if status < http.StatusBadRequest {
		data["created"] = c.created
	}
	if c.err != "" {
		data["error"] = c.err
	}
	a.events.Emit(a.ctx, "tenant_change", data)
}
