// Package linktrack implements caddy-linktrack: a Caddy HTTP handler that
// serves an email provider's click and open tracking links on a branded
// domain, forwarding each request to the provider's tracking origin byte
// for byte.
package linktrack

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Default values of the handler's options.
const (
	DefaultMaxBodySize           = 10 << 20
	DefaultMaxIdleConnsPerHost   = 128
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultReadTimeout           = 60 * time.Second

	// DefaultIdleConnTimeout is how long an idle connection to the
	// origin is kept. A request is never sent twice, so a connection
	// must be dropped before the origin closes it: this is below the
	// 5s keep-alive timeout of Node.js, Apache httpd and uvicorn, the
	// shortest that common origin servers use by default.
	DefaultIdleConnTimeout = 4 * time.Second
)

// Handler proxies tracking requests to an email provider's tracking
// origin. With a provider or an upstream, it serves one origin for
// whatever domains its site matches. With neither, it serves the tenant
// registry of the linktrack app: the request's Host selects the tenant,
// and an unknown Host, or one of a tenant disabled or pending ownership
// verification, is answered 421 without dialing any origin. The Host
// sent to the origin is the tracking domain the client asked for
// (lowercase, without port or trailing dot), while the TLS connection to
// the origin uses the origin's own name for SNI and certificate
// verification. The request-target, every end-to-end
// header and the body are forwarded unchanged; the origin's response
// comes back unchanged, redirects included.
//
// At most one of provider and upstream may be set.
type Handler struct {
	// The email provider whose tracking origin receives the requests:
	// customerio, iterable, mailgun, sendgrid, ses or sparkpost (the
	// README lists the catalog). Default: none; set provider or
	// upstream.
	Provider string `json:"provider,omitempty"`

	// The provider's region. Default: the provider's one obvious
	// default where it has one (sendgrid: `global`); otherwise
	// REQUIRED with a provider, because a wrong region silently breaks
	// attribution. For ses, any AWS region name, e.g. `eu-west-1`.
	Region string `json:"region,omitempty"`

	// The URL of any other tracking origin, e.g.
	// `https://track.esp.example` or `http://10.0.0.5:8080`: a scheme
	// (https or http), a host and an optional port, nothing else.
	// Default: none; set provider or upstream.
	Upstream string `json:"upstream,omitempty"`

	// How to reach the origin: the options of reverse_proxy's `http`
	// transport, in the same words (tls_server_name, tls_trust_pool,
	// dial_timeout, response_header_timeout,
	// keepalive_idle_conns_per_host, ...). linktrack's defaults differ
	// from reverse_proxy's where fidelity or speed requires it: HTTP/1.1
	// only (`versions 1.1`, so repeated Cookie lines stay separate),
	// compression off (no Accept-Encoding is injected and nothing is
	// decompressed), 128 idle connections per host, a 30s response
	// header timeout, a 60s read timeout (an origin silent that long in
	// the middle of a body is cut off, like nginx's proxy_read_timeout),
	// idle connections dropped after 4s (below the 5s keep-alive
	// timeout of Node.js and Apache, since a request is never sent
	// twice), and TLS enabled for https origins. Dial timeout: 3s.
	Transport *reverseproxy.HTTPTransport `json:"transport,omitempty"`

	// The largest request body forwarded, in bytes. A larger request
	// gets 413 and, when its length is declared up front, never reaches
	// the origin. Bodies are streamed, never buffered. Default: 10 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`

	// Answer plain-HTTP requests with a 308 redirect to HTTPS instead
	// of proxying them. Default: false: old `http://` links are proxied
	// like `https://` ones, as providers advise.
	HTTPRedirect bool `json:"http_redirect,omitempty"`

	// Files served locally for providers that expect the customer to
	// host app-link association files. Default: none; every path goes
	// to the origin.
	AppLinks *AppLinks `json:"app_links,omitempty"`

	// A path answered locally with 200 for load balancers' liveness
	// checks, for any Host; it never reaches an origin and is distinct
	// from the origin's own /health. Default: none.
	LivenessPath string `json:"liveness_path,omitempty"`

	// Annotation of likely mail-scanner traffic, observation only.
	// Default: none.
	Scanners *Scanners `json:"scanners,omitempty"`

	// How long a read of a request body, or a write of a response
	// linktrack streams, may stall before the connection is aborted,
	// when Caddy's server does not guard them already. By default it
	// does: its read_idle_timeout and write_idle_timeout wrap every
	// request, and this option changes nothing. A server that serves
	// only linktrack may turn those off (`timeouts { read_body_idle
	// -1s; write_idle -1s }` in the global `servers` option), sparing
	// every click their per-request wrappers: linktrack then applies the
	// same guard, with Caddy's own wrappers, only to a request that has
	// a body and to a response whose body net/http does not buffer
	// whole. Default: 1 minute, as Caddy's; a negative value turns the
	// guard off.
	ClientIdleTimeout caddy.Duration `json:"client_idle_timeout,omitempty"`

	// Count requests per tenant in caddy_linktrack_tenant_requests_total,
	// labelled by tenant. Each tenant adds series, so this suits small
	// deployments. Default: false.
	PerTenantMetrics bool `json:"per_tenant_metrics,omitempty"`

	origin    *url.URL
	region    string
	proxy     *originProxy
	app       *App // registry mode
	rejected  *prometheus.CounterVec
	scanners  *scannerDetector
	byTenant  *prometheus.CounterVec
	httpsPort int
	appLinks  *appLinkFiles
	guard     clientGuard
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.linktrack",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler: it resolves the origin, loads the
// origin transport with linktrack's defaults and reads app-link files.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.MaxBodySize == 0 {
		h.MaxBodySize = DefaultMaxBodySize
	}
	if h.MaxBodySize < 0 {
		return fmt.Errorf("max_body_size must be positive, got %d", h.MaxBodySize)
	}
	if h.ClientIdleTimeout == 0 {
		h.ClientIdleTimeout = caddy.Duration(DefaultClientIdleTimeout)
	}
	h.guard = clientGuard{timeout: time.Duration(h.ClientIdleTimeout), logger: ctx.Logger()}

	if h.PerTenantMetrics {
		var err error
		if h.byTenant, err = newTenantRequests(ctx.GetMetricsRegistry()); err != nil {
			return err
		}
	}
	if h.LivenessPath != "" && !strings.HasPrefix(h.LivenessPath, "/") {
		return fmt.Errorf("liveness_path '%s' must begin with '/'", h.LivenessPath)
	}
	if h.Scanners != nil {
		var err error
		if h.scanners, err = h.Scanners.provision(ctx.GetMetricsRegistry()); err != nil {
			return err
		}
	}

	h.httpsPort = caddyhttp.DefaultHTTPSPort
	if app, err := ctx.App("http"); err == nil {
		if port := app.(*caddyhttp.App).HTTPSPort; port != 0 {
			h.httpsPort = port
		}
	}

	if h.Provider == "" && h.Upstream == "" {
		return h.provisionRegistryMode(ctx)
	}
	var err error
	h.origin, h.region, err = h.resolveOrigin()
	if err != nil {
		return err
	}
	h.proxy, err = newOriginProxy(ctx, h.origin, h.providerLabel(), h.region, h.Transport)
	if err != nil {
		return err
	}
	if h.AppLinks != nil {
		h.appLinks, err = h.AppLinks.load()
		if err != nil {
			return err
		}
	}
	return nil
}

// provisionRegistryMode connects the handler to the linktrack app's
// tenant registry.
func (h *Handler) provisionRegistryMode(ctx caddy.Context) error {
	switch {
	case h.Region != "":
		return errors.New("region is set, but without a provider or upstream the handler serves the tenant registry; set regions per tenant")
	case h.Transport != nil:
		return errors.New("transport is set, but without a provider or upstream the handler serves the tenant registry; set transports per named origin")
	case h.AppLinks != nil:
		return errors.New("app_links is set, but without a provider or upstream the handler serves the tenant registry; set app_links per tenant")
	}
	app, err := ctx.AppIfConfigured("linktrack")
	if err != nil {
		return fmt.Errorf("without a provider or upstream the handler serves the tenant registry of the linktrack app: %v", err)
	}
	h.app = app.(*App)
	h.rejected, err = newRejections(ctx.GetMetricsRegistry())
	return err
}

// resolveOrigin returns the origin from the provider catalog or from
// the upstream URL.
func (h *Handler) resolveOrigin() (*url.URL, string, error) {
	switch {
	case h.Provider != "" && h.Upstream != "":
		return nil, "", errors.New("provider and upstream are mutually exclusive; set one")
	case h.Provider != "":
		return LookupOrigin(h.Provider, h.Region)
	default:
		if h.Region != "" {
			return nil, "", fmt.Errorf("region '%s' given without a provider; upstream takes no region", h.Region)
		}
		u, err := ParseUpstream(h.Upstream)
		return u, "", err
	}
}

// providerLabel names the provider in logs: the catalog name, or
// "upstream" for an explicit origin.
func (h *Handler) providerLabel() string {
	if h.Provider != "" {
		return h.Provider
	}
	return "upstream"
}

// Cleanup releases the handler's resources. The transport is a module
// loaded through the Caddy context, which cleans it up itself.
func (h *Handler) Cleanup() error {
	h.proxy = nil
	h.appLinks = nil
	return nil
}

// ServeHTTP proxies the request to the origin and copies the origin's
// response back unchanged.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// Go's server drops a Content-Length sent beside
		// Transfer-Encoding, so no handler can tell that the framing
		// was ambiguous; RFC 9112 section 6.1 then requires closing the
		// connection. Clicks never send a chunked body, so every
		// connection that carried one is closed after the response.
		w.Header().Set("Connection", "close")
	}
	if r.Method == http.MethodConnect {
		return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("CONNECT is never proxied"))
	}
	if h.LivenessPath != "" && r.URL.Path == h.LivenessPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		serveLiveness(w, r)
		return nil
	}
	host, ok := CanonicalHost(r.Host)
	if !ok {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("invalid or missing Host '%s'", r.Host))
	}
	if h.HTTPRedirect && r.TLS == nil {
		h.redirectToHTTPS(w, r, host)
		return nil
	}
	proxy, appLinks, tenant := h.proxy, h.appLinks, host
	if h.app != nil {
		key, e, err := h.tenant(r, host)
		if err != nil {
			return err
		}
		if why := h.app.refusal(key, e); why != "" {
			h.rejected.WithLabelValues(why).Inc()
			return caddyhttp.Error(http.StatusMisdirectedRequest, fmt.Errorf("tenant for host '%s' is %s", host, why))
		}
		proxy, appLinks = e.route.proxy, e.appLinks
		if key.wildcard {
			tenant = "*." + key.domain
		}
	}
	proxy.setVars(r, tenant)
	if h.scanners != nil {
		h.scanners.mark(r)
	}
	if appLinks != nil && appLinks.serve(w, r) {
		return nil
	}
	if r.ContentLength > h.MaxBodySize {
		return caddyhttp.Error(http.StatusRequestEntityTooLarge,
			fmt.Errorf("request body of %d bytes exceeds max_body_size %d", r.ContentLength, h.MaxBodySize))
	}
	limits := clientLimits{maxBodySize: h.MaxBodySize}
	guardBody, guardWrites := h.guard.guards(r)
	if guardBody {
		defer h.guard.guardBody(w, r)()
	}
	if guardWrites {
		limits.writeGuard = h.guard
	}
	status, err := proxy.forward(w, r, host, tenant, limits)
	if h.byTenant != nil {
		h.byTenant.WithLabelValues(tenant, statusClass(status)).Inc()
	}
	return err
}

// tenant returns the registry entry for the request's host. An unknown
// host, or a TLS connection whose SNI names another tenant than the
// Host, gets 421: one tenant's certificate never fronts another tenant.
func (h *Handler) tenant(r *http.Request, host string) (tenantKey, entry, error) {
	s := h.app.snapshot()
	key, e, ok := s.match(host)
	if !ok {
		h.rejected.WithLabelValues("unknown_host").Inc()
		return tenantKey{}, entry{}, caddyhttp.Error(http.StatusMisdirectedRequest, fmt.Errorf("no tenant for host '%s'", host))
	}
	if r.TLS != nil {
		sni, _ := CanonicalHost(r.TLS.ServerName)
		if sni != host {
			if sniKey, _, ok := s.match(sni); !ok || sniKey != key {
				h.rejected.WithLabelValues("sni_mismatch").Inc()
				return tenantKey{}, entry{}, caddyhttp.Error(http.StatusMisdirectedRequest,
					fmt.Errorf("TLS server name '%s' and Host '%s' name different tenants", r.TLS.ServerName, host))
			}
		}
	}
	return key, e, nil
}

// serveLiveness answers a load balancer's liveness check locally.
func serveLiveness(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = io.WriteString(w, "OK\n")
	}
}

// redirectToHTTPS answers a plain-HTTP request with a permanent redirect
// to the same request-target over HTTPS.
func (h *Handler) redirectToHTTPS(w http.ResponseWriter, r *http.Request, host string) {
	target := "https://" + host
	if h.httpsPort != caddyhttp.DefaultHTTPSPort {
		target += fmt.Sprintf(":%d", h.httpsPort)
	}
	target += requestTarget(r.URL)
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusPermanentRedirect)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
