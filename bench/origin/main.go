// Command origin is the benchmark's stand-in for an email provider's click
// tracking endpoint. Over HTTPS (HTTP/1.1 only, keep-alive on; with -h2
// it offers HTTP/2 in ALPN as well, as most providers' origins do) it answers
//
//	/health      200 {}
//	anything     302 Location: https://shop.example.com/p?utm_source=email&utm_campaign=x
//
// and echoes the Host it saw in X-Origin-Host, so the harness can check
// that every proxy rewrote Host to the tracking domain. It listens on
// 127.0.0.1 and, when available, on ::1 with the same port, because the
// proxies dial "localhost", which may resolve to either.
package main

import (
	"crypto/tls"
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"
)

// Location is the redirect target every tracked click resolves to.
const Location = "https://shop.example.com/p?utm_source=email&utm_campaign=x"

const body = `<a href="` + Location + `">Found</a>.` + "\n"

func main() {
	port := flag.Int("port", 0, "TCP port (required)")
	certFile := flag.String("cert", "origin.pem", "certificate PEM")
	keyFile := flag.String("key", "origin.key", "private key PEM")
	h2 := flag.Bool("h2", false, "offer HTTP/2 as well as HTTP/1.1")
	flag.Parse()
	if *port == 0 {
		log.Fatal("origin: -port is required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("origin: %v", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Origin-Host", r.Host)
		w.Write([]byte("{}"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Location", Location)
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("X-Origin-Host", r.Host)
		w.WriteHeader(http.StatusFound)
		w.Write([]byte(body))
	})

	// Without -h2, HTTP/1.1 only: no "h2" in ALPN, so every proxy speaks
	// HTTP/1.1 to us. With -h2, a proxy that offers h2 gets it.
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(*h2)
	srv := &http.Server{
		Handler:   mux,
		Protocols: &protos,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(discard{}, "", 0), // handshake noise from closing proxies
	}

	p := strconv.Itoa(*port)
	ln4, err := net.Listen("tcp4", "127.0.0.1:"+p)
	if err != nil {
		log.Fatalf("origin: %v", err)
	}
	if ln6, err := net.Listen("tcp6", "[::1]:"+p); err == nil {
		go func() { log.Fatal(srv.ServeTLS(ln6, "", "")) }()
	}
	log.Fatal(srv.ServeTLS(ln4, "", ""))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
