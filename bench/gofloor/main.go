// Command gofloor is the benchmark's "Go floor": the leanest faithful
// click proxy one can write with Go's standard library. A net/http
// server over TLS forwards every request to one origin through an
// http.Transport speaking HTTP/1.1 with keep-alive (128 idle connections
// per host, as linktrack keeps), with Host set to the tracking domain and
// the raw path kept verbatim (URL.Opaque, as linktrack's originURL), and
// copies the response back unchanged. It logs nothing.
//
// It does less than a real proxy must (hop-by-hop fields are dropped, but
// no X-Forwarded-*, no limits, no failure classes, no replay guard), so
// it is a floor for what any Go proxy costs, not a contender to deploy.
//
// With -pprof it also serves net/http/pprof, on a listener of its own,
// for the bench's BENCH_PROFILE.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// hopByHop are the fields that describe one connection, not the message.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func hasHopByHop(h http.Header) bool {
	for _, k := range hopByHop {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (required)")
	certFile := flag.String("cert", "", "certificate PEM of the tracking domain")
	keyFile := flag.String("key", "", "private key PEM")
	caFile := flag.String("ca", "", "CA PEM that signed the origin's certificate")
	upstream := flag.String("upstream", "", "origin URL, e.g. https://localhost:8443 (required)")
	host := flag.String("host", "", "Host sent to the origin (required)")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (default off)")
	flag.Parse()
	if *port == 0 || *upstream == "" || *host == "" {
		log.Fatal("gofloor: -port, -upstream and -host are required")
	}
	origin, err := url.Parse(*upstream)
	if err != nil {
		log.Fatalf("gofloor: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("gofloor: %v", err)
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("gofloor: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)

	// HTTP/1.1 only towards the origin: a non-nil, empty TLSNextProto
	// and no ForceAttemptHTTP2 keep h2 out of ALPN.
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool},
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       2 * time.Minute,
		ResponseHeaderTimeout: 10 * time.Second,
		DisableCompression:    true,
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := &url.URL{Scheme: origin.Scheme, Host: origin.Host, RawQuery: r.URL.RawQuery}
		if r.URL.RawPath != "" {
			u.Opaque = r.URL.RawPath
		} else {
			u.Path = r.URL.Path
		}
		out := new(http.Request)
		*out = *r // header shared: the transport only reads it
		out.URL, out.Host, out.RequestURI = u, *host, ""
		// a client's "Connection: close" is about its own connection,
		// never the origin's
		out.Close = false
		if hasHopByHop(r.Header) {
			out.Header = r.Header.Clone()
			for _, k := range hopByHop {
				delete(out.Header, k)
			}
		}
		if r.ContentLength == 0 {
			out.Body = nil
		}
		res, err := transport.RoundTrip(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		h := w.Header()
		for k, v := range res.Header {
			h[k] = v
		}
		w.WriteHeader(res.StatusCode)
		bp := bufs.Get().(*[]byte)
		io.CopyBuffer(w, res.Body, *bp)
		bufs.Put(bp)
	})

	srv := &http.Server{
		Handler:   handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	if *pprofAddr != "" {
		servePprof(*pprofAddr)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		log.Fatalf("gofloor: %v", err)
	}
	log.Fatal(srv.ServeTLS(ln, "", ""))
}

// servePprof serves the profiling endpoints on a listener and mux of their
// own, so that the proxy's handler stays what it is without -pprof.
func servePprof(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("gofloor: pprof: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { log.Fatal(http.Serve(ln, mux)) }()
}
