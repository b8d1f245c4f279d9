package linktrack

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// originProxy forwards requests to one tracking origin. There is one per
// distinct origin, shared by every site or tenant that uses it, so they
// share its keep-alive pool too.
type originProxy struct {
	url       *url.URL
	transport *reverseproxy.HTTPTransport
	bufPool   *sync.Pool
	logger    *zap.Logger
	metrics   *proxyMetrics

	// the values of the linktrack.* request variables, boxed once
	providerVar, regionVar, originVar any

	// guardReplay is set when the transport may speak HTTP/1.x, whose
	// client would send a failed request again (see noreplay.go);
	// http1Only when it speaks nothing else, so that a request that
	// never reached a connection may be sent once more.
	guardReplay, http1Only bool

	// client sends the requests it can when the transport speaks
	// HTTP/1.x only; nil when the transport has an option it does not
	// implement (see h1client.go)
	client *h1Client
}

// newOriginProxy loads Caddy's http transport for the origin, with
// linktrack's defaults applied to the options left unset, and a logger
// that names provider, region and origin.
func newOriginProxy(ctx caddy.Context, origin *url.URL, provider, region string, configured *reverseproxy.HTTPTransport) (*originProxy, error) {
	transport, err := transportWithDefaults(origin, configured)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(transport)
	if err != nil {
		return nil, fmt.Errorf("encoding transport: %v", err)
	}
	mod, err := ctx.LoadModuleByID("http.reverse_proxy.transport.http", raw)
	if err != nil {
		return nil, fmt.Errorf("loading transport: %v", err)
	}
	metrics, err := newProxyMetrics(ctx.GetMetricsRegistry(), provider, region)
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %v", err)
	}
	guardReplay, http1Only := httpVersions(transport.Versions)
	loaded := mod.(*reverseproxy.HTTPTransport)
	var client *h1Client
	if http1Only {
		var reason string
		if client, reason = newH1Client(origin, loaded); client != nil {
			ctx.OnCancel(client.closeIdle)
		} else {
			ctx.Logger().Debug("origin requests take the standard HTTP client",
				zap.String("origin", origin.String()), zap.String("because", reason))
		}
	}
	return &originProxy{
		client:      client,
		guardReplay: guardReplay,
		http1Only:   http1Only,
		providerVar: provider,
		regionVar:   region,
		originVar:   origin.String(),
		metrics:     metrics,
		url:         origin,
		transport:   loaded,
		bufPool: &sync.Pool{New: func() any {
			b := make([]byte, 32*1024)
			return &b
		}},
		logger: ctx.Logger().With(
			zap.String("provider", provider),
			zap.String("region", region),
			zap.String("origin", origin.String()),
		),
	}, nil
}

// transportWithDefaults returns a copy of the configured transport with
// linktrack's defaults applied to every option the user left unset.
func transportWithDefaults(origin *url.URL, configured *reverseproxy.HTTPTransport) (*reverseproxy.HTTPTransport, error) {
	t := new(reverseproxy.HTTPTransport)
	if configured != nil {
		*t = *configured
	}
	if len(t.Versions) == 0 {
		t.Versions = []string{"1.1"}
	}
	if t.Compression == nil {
		off := false
		t.Compression = &off
	}
	if t.KeepAlive == nil {
		t.KeepAlive = new(reverseproxy.KeepAlive)
	} else {
		ka := *t.KeepAlive
		t.KeepAlive = &ka
	}
	if t.KeepAlive.MaxIdleConnsPerHost == 0 {
		t.KeepAlive.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if t.KeepAlive.IdleConnTimeout == 0 {
		t.KeepAlive.IdleConnTimeout = caddy.Duration(DefaultIdleConnTimeout)
	}
	if t.ResponseHeaderTimeout == 0 {
		t.ResponseHeaderTimeout = caddy.Duration(DefaultResponseHeaderTimeout)
	}
	if t.ReadTimeout == 0 {
		t.ReadTimeout = caddy.Duration(DefaultReadTimeout)
	}
	switch origin.Scheme {
	case "https":
		if t.TLS == nil {
			t.TLS = new(reverseproxy.TLSConfig)
		}
	case "http":
		if t.TLS != nil {
			return nil, fmt.Errorf("transport TLS options are set, but origin '%s' speaks plain HTTP", origin)
		}
	}
	return t, nil
}

// httpVersions reports whether a transport with these versions may
// speak HTTP/1.x to the origin, and whether it speaks nothing else.
func httpVersions(versions []string) (http1, http1Only bool) {
	http1Only = true
	for _, v := range versions {
		switch v {
		case "1.0", "1.1":
			http1 = true
		default:
			http1Only = false
		}
	}
	return http1, http1 && http1Only
}

// Request variables linktrack sets, read as {http.vars.linktrack.*}.
const (
	varTenant   = "linktrack.tenant"
	varProvider = "linktrack.provider"
	varRegion   = "linktrack.region"
	varOrigin   = "linktrack.origin"
)

// setVars makes the tenant, provider, region and origin of a request
// available to Caddy's access log and templates.
func (p *originProxy) setVars(r *http.Request, tenant string) {
	ctx := r.Context()
	caddyhttp.SetVar(ctx, varTenant, tenant)
	caddyhttp.SetVar(ctx, varProvider, p.providerVar)
	caddyhttp.SetVar(ctx, varRegion, p.regionVar)
	caddyhttp.SetVar(ctx, varOrigin, p.originVar)
}

// forward sends the request to the origin with Host set to the tracking
// domain host, and copies the origin's response back unchanged. tenant
// names the registered domain in logs. It returns the status the client
// got.
func (p *originProxy) forward(w http.ResponseWriter, r *http.Request, host, tenant string, limits clientLimits) (int, error) {
	start := time.Now()
	if p.client != nil && bodylessClick(r) {
		// the head is written straight from r
		res, err := p.client.roundTrip(p.clickHead(r, host))
		if err != nil {
			return p.failure(r, tenant, time.Since(start), err)
		}
		return p.respond(w, r, res, start, limits.writeGuard)
	}
	out := p.outgoingRequest(w, r, host, limits.maxBodySize)
	var res *http.Response
	var err error
	if p.client != nil && p.client.sends(out) {
		res, err = p.client.roundTrip((*builtRequest)(out))
	} else {
		res, err = p.transport.RoundTrip(out)
		if err != nil && p.http1Only && sendOnceMore(out, err) {
			out.Body = new(unsentBody)
			res, err = p.transport.RoundTrip(out)
		}
	}
	if err != nil {
		if body, ok := out.Body.(*clientBody); ok && body.err != nil {
			err = clientBodyError{body.err}
			if r.ProtoMajor == 1 {
				// over HTTP/1, what follows a malformed or oversized body
				// cannot be told from a next request; Go's server closes
				// the connection on its own only while the body is
				// unclosed, and the transport has closed it
				w.Header().Set("Connection", "close")
			}
		}
		return p.failure(r, tenant, time.Since(start), err)
	}
	return p.respond(w, r, res, start, limits.writeGuard)
}

// respond records the origin's answer and copies it to the client,
// with writes guarded by guard when its timeout is set. The status is
// read first: the lean client reuses res for the connection's next
// response once the body is closed.
func (p *originProxy) respond(w http.ResponseWriter, r *http.Request, res *http.Response, start time.Time, guard clientGuard) (int, error) {
	status := res.StatusCode
	p.metrics.observe(status, time.Since(start))
	return status, p.writeResponse(w, r, res, guard)
}

// clientLimits is what the handler allows a client: the largest body,
// and how long a write of a streamed response may stall when linktrack
// guards it (writeGuard's timeout is zero when Caddy's server does).
type clientLimits struct {
	maxBodySize int64
	writeGuard  clientGuard
}
