package linktrack

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// benchClick is an AWS SES style tracked link, as bench/ requests it.
const benchClick = "https://link.example.test/CL0/https:%2F%2Fshop.example.com%2Fp%3Futm_source=email/1/abc="

// benchOrigin is a loopback TLS origin that answers every click as the
// bench's origin does, and an HTTP/1.1 keep-alive transport to it set up
// as linktrack's defaults set Caddy's.
func benchOrigin(b *testing.B) (*url.URL, *http.Transport) {
	b.Helper()
	const location = "https://shop.example.com/p?utm_source=email&utm_campaign=x"
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Location"] = []string{location}
		h["Content-Type"] = []string{"text/html; charset=utf-8"}
		w.WriteHeader(http.StatusFound)
		io.WriteString(w, `<a href="`+location+`">Found</a>.`+"\n")
	}))
	origin.EnableHTTP2 = false
	origin.StartTLS()
	b.Cleanup(origin.Close)
	transport := origin.Client().Transport.(*http.Transport).Clone()
	transport.ForceAttemptHTTP2 = false
	transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	transport.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	transport.DisableCompression = true
	b.Cleanup(transport.CloseIdleConnections)
	u, _ := url.Parse(origin.URL)
	return u, transport
}

// benchWriter is a reusable ResponseWriter that discards the body.
type benchWriter struct {
	header http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.header }
func (w *benchWriter) WriteHeader(status int)      { w.status = status }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }

// benchRequest returns a click as Caddy's server hands it to the handler,
// with a browser's header fields and Caddy's vars in its context.
func benchRequest() *http.Request {
	r := httptest.NewRequest(http.MethodGet, benchClick, nil)
	r.RemoteAddr = "192.0.2.7:51234"
	r.TLS = &tls.ConnectionState{ServerName: "link.example.test", HandshakeComplete: true}
	for k, v := range map[string]string{
		"User-Agent":      "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
		"Accept":          "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
		"Accept-Language": "en-US,en;q=0.9",
		"Accept-Encoding": "gzip, deflate, br",
	} {
		r.Header.Set(k, v)
	}
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx)
}

// BenchmarkForward drives the handler, one click at a time, through a
// real loopback TLS origin with linktrack's lean client, as linktrack
// sends by default. Its allocs/op include the origin server's, which
// BenchmarkOriginAlone measures with the bare http.Transport:
// BenchmarkForwardTransport is the handler on that transport.
func BenchmarkForward(b *testing.B) { benchmarkForward(b, true) }

// BenchmarkForwardTransport drives the handler through http.Transport,
// as it sends when the transport has an option the lean client does
// not implement.
func BenchmarkForwardTransport(b *testing.B) { benchmarkForward(b, false) }

func benchmarkForward(b *testing.B, lean bool) {
	originURL, transport := benchOrigin(b)
	metrics, err := newProxyMetrics(prometheus.NewRegistry(), "upstream", "")
	if err != nil {
		b.Fatal(err)
	}
	h := &Handler{MaxBodySize: DefaultMaxBodySize, proxy: &originProxy{
		url:         originURL,
		transport:   &reverseproxy.HTTPTransport{Transport: transport},
		bufPool:     &sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }},
		logger:      zap.NewNop(),
		metrics:     metrics,
		providerVar: "upstream", regionVar: "", originVar: originURL.String(),
		guardReplay: true,
		http1Only:   true,
	}}
	if lean {
		var reason string
		if h.proxy.client, reason = newH1Client(originURL, h.proxy.transport); h.proxy.client == nil {
			b.Fatalf("no lean client: %s", reason)
		}
		b.Cleanup(h.proxy.client.closeIdle)
	}
	template := benchRequest()
	w := &benchWriter{header: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		r := new(http.Request)
		*r = *template
		clear(w.header)
		if err := h.ServeHTTP(w, r, nil); err != nil || w.status != http.StatusFound {
			b.Fatalf("status %d, error %v", w.status, err)
		}
	}
}

// BenchmarkOriginAlone sends the same click straight through the
// transport and drains the response: the origin's and the transport's
// allocations, without linktrack.
func BenchmarkOriginAlone(b *testing.B) {
	originURL, transport := benchOrigin(b)
	target := *originURL
	target.Opaque = "/CL0/https:%2F%2Fshop.example.com%2Fp%3Futm_source=email/1/abc="
	template := benchRequest()
	template.RequestURI = ""
	template.URL = &target
	template.Host = "link.example.test"
	template.Body = nil
	buf := make([]byte, 32*1024)
	b.ReportAllocs()
	for b.Loop() {
		r := new(http.Request)
		*r = *template
		res, err := transport.RoundTrip(r)
		if err != nil {
			b.Fatal(err)
		}
		io.CopyBuffer(io.Discard, struct{ io.Reader }{res.Body}, buf)
		res.Body.Close()
	}
}
