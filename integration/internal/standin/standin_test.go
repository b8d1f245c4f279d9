package standin

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wait bounds every step that is expected to succeed.
const wait = 5 * time.Second

// startTLS starts a TLS origin with a certificate for origin.test,
// 127.0.0.1 and ::1, and returns it with a client config that trusts it.
func startTLS(t *testing.T, respond func(*Received) Response) (*Origin, *tls.Config) {
	t.Helper()
	ca, err := NewCA("standin test ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("origin.test", "127.0.0.1", "::1")
	if err != nil {
		t.Fatal(err)
	}
	o, err := Start(Config{Certificate: &leaf.TLS, Respond: respond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o, &tls.Config{RootCAs: ca.Pool, ServerName: "origin.test"}
}

func dial(t *testing.T, addr string, cfg *tls.Config) *RawClient {
	t.Helper()
	c, err := DialRaw(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, o *Origin) *Received {
	t.Helper()
	r, err := o.Next(wait)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func do(t *testing.T, c *RawClient, req RawRequest) *RawResponse {
	t.Helper()
	resp, err := c.Do(req, wait)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func TestTargetIsByteExact(t *testing.T) {
	o, cfg := startTLS(t, nil)
	c := dial(t, o.Addr(), cfg)
	const target = "/p/a|b/x%2Fy?q=%zz&a=1&a=2"

	resp := do(t, c, RawRequest{Method: "GET", Target: target, Host: "origin.test"})
	equal(t, "StatusLine", resp.StatusLine, "HTTP/1.1 200 OK")
	equal(t, "response Body", string(resp.Body), "ok")
	equal(t, "response Headers", resp.Headers, []Field{{"Content-Length", "2"}})

	r := next(t, o)
	equal(t, "RequestLine", r.RequestLine, "GET "+target+" HTTP/1.1")
	equal(t, "Method", r.Method, "GET")
	equal(t, "Target", r.Target, target)
	equal(t, "Proto", r.Proto, "HTTP/1.1")
	equal(t, "Headers", r.Headers, []Field{{"Host", "origin.test"}})
	equal(t, "Chunked", r.Chunked, false)
	equal(t, "BodyLen", r.BodyLen, int64(0))
	equal(t, "BodySHA256", r.BodySHA256, sha(nil))
	equal(t, "TLS", r.TLS, true)
	equal(t, "SNI", r.SNI, "origin.test")
	equal(t, "ALPN", r.ALPN, "http/1.1")
	equal(t, "ConnID", r.ConnID, 1)
	equal(t, "Err", r.Err, "")
	if r.RemoteAddr == "" {
		t.Error("RemoteAddr is empty")
	}
}

func TestRepeatedHeadersKeptApart(t *testing.T) {
	scripted := []Field{{"Set-Cookie", "a=1"}, {"X-Order", "1"}, {"set-cookie", "b=2"}}
	o, cfg := startTLS(t, func(*Received) Response {
		return Response{Status: 201, Headers: scripted, Body: []byte("made")}
	})
	c := dial(t, o.Addr(), cfg)
	sent := []Field{{"X-Dup", "one"}, {"x-dup", "two, three"}, {"X-Other", "z"}, {"X-DUP", "four"}}

	resp := do(t, c, RawRequest{Method: "GET", Target: "/", Host: "h", Headers: sent})
	equal(t, "StatusLine", resp.StatusLine, "HTTP/1.1 201 Created")
	equal(t, "response Headers", resp.Headers, append(scripted, Field{"Content-Length", "4"}))
	equal(t, "response Values(SET-COOKIE)", resp.Values("SET-COOKIE"), []string{"a=1", "b=2"})

	r := next(t, o)
	equal(t, "Headers", r.Headers, append([]Field{{"Host", "h"}}, sent...))
	equal(t, "Values(x-DUP)", r.Values("x-DUP"), []string{"one", "two, three", "four"})
	equal(t, "Values(absent)", r.Values("absent"), []string(nil))
}

func TestRawLinesKeptAsSent(t *testing.T) {
	o, cfg := startTLS(t, nil)
	c := dial(t, o.Addr(), cfg)
	raw := "\r\nGET /raw HTTP/1.1\r\nHost: h\r\nX-Pad: \t v w \t\r\nNoColon\r\nX-Empty:\r\nbare-lf: yes\n\r\n"
	if err := c.WriteRaw([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	resp, err := c.ReadResponse("GET", wait)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "Status", resp.Status, 200)

	r := next(t, o)
	equal(t, "LeadingBlanks", r.LeadingBlanks, 1)
	equal(t, "RequestLine", r.RequestLine, "GET /raw HTTP/1.1")
	equal(t, "Headers", r.Headers, []Field{{"Host", "h"}, {"X-Pad", "v w"}, {"NoColon", ""}, {"X-Empty", ""}, {"bare-lf", "yes"}})
}

func TestChunkedBodyAndTrailers(t *testing.T) {
	respBody := []byte("a response body spread over several chunks")
	respTrailers := []Field{{"X-Resp-Trailer", "done"}}
	o, cfg := startTLS(t, func(*Received) Response {
		return Response{Status: 200, Body: respBody, Chunked: true, Trailers: respTrailers}
	})
	c := dial(t, o.Addr(), cfg)
	body := bytes.Repeat([]byte("0123456789abcdef"), 625) // 10000 bytes
	trailers := []Field{{"X-Sum", "abc"}, {"x-second", "v 2"}}

	resp := do(t, c, RawRequest{Method: "POST", Target: "/up", Host: "h", Body: body, Chunked: true, Trailers: trailers})
	equal(t, "response Body", resp.Body, respBody)
	equal(t, "response Trailers", resp.Trailers, respTrailers)
	equal(t, "response Transfer-Encoding", resp.Values("Transfer-Encoding"), []string{"chunked"})
	equal(t, "response Content-Length", resp.Values("Content-Length"), []string(nil))

	r := next(t, o)
	equal(t, "Chunked", r.Chunked, true)
	equal(t, "Transfer-Encoding", r.Values("Transfer-Encoding"), []string{"chunked"})
	equal(t, "Content-Length", r.Values("Content-Length"), []string(nil))
	equal(t, "BodyLen", r.BodyLen, int64(len(body)))
	equal(t, "BodySHA256", r.BodySHA256, sha(body))
	equal(t, "Body", r.Body, body)
	equal(t, "Trailers", r.Trailers, trailers)
	equal(t, "Err", r.Err, "")
}

func TestAppendChunkedSplitsUnevenly(t *testing.T) {
	got := string(appendChunked(nil, []byte("0123456789"), []Field{{"T", "1"}}))
	equal(t, "chunked encoding", got, "5\r\n01234\r\n3\r\n567\r\n2\r\n89\r\n0\r\nT: 1\r\n\r\n")
	equal(t, "empty body", string(appendChunked(nil, nil, nil)), "0\r\n\r\n")
}

func TestExpectContinue(t *testing.T) {
	o, cfg := startTLS(t, nil)
	c := dial(t, o.Addr(), cfg)

	resp := do(t, c, RawRequest{Method: "POST", Target: "/e", Host: "h", Body: []byte("payload"), ExpectContinue: true})
	equal(t, "Interim", resp.Interim, []int{100})
	equal(t, "Status", resp.Status, 200)

	r := next(t, o)
	equal(t, "Expect", r.Values("Expect"), []string{"100-continue"})
	equal(t, "Content-Length", r.Values("Content-Length"), []string{"7"})
	equal(t, "Body", string(r.Body), "payload")
}

func TestExpectContinueFinalResponseFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	extra := make(chan int, 1) // body bytes the server saw after the head
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			extra <- -1
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(wait))
		br := bufio.NewReader(conn)
		budget := maxHeaderBytes
		if _, err := readFields(br, &budget); err != nil {
			extra <- -1
			return
		}
		io.WriteString(conn, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 4\r\n\r\nnope")
		n, _ := io.Copy(io.Discard, br)
		extra <- int(n)
	}()

	c := dial(t, ln.Addr().String(), nil)
	resp, err := c.Do(RawRequest{Method: "PUT", Target: "/", Host: "h", Body: []byte("secret"), ExpectContinue: true}, wait)
	if !errors.Is(err, ErrNoContinue) {
		t.Fatalf("Do error = %v, want ErrNoContinue", err)
	}
	equal(t, "Status", resp.Status, 417)
	equal(t, "Body", string(resp.Body), "nope")
	c.Close()
	select {
	case n := <-extra:
		equal(t, "body bytes sent after the final response", n, 0)
	case <-time.After(wait):
		t.Fatal("server did not finish")
	}
}

func TestHeadAndBodilessStatuses(t *testing.T) {
	o, cfg := startTLS(t, func(r *Received) Response {
		switch r.Target {
		case "/304":
			return Response{Status: 304, Body: []byte("x")}
		case "/204":
			return Response{Status: 204}
		}
		return Response{Status: 200, Body: []byte("hello world")}
	})
	c := dial(t, o.Addr(), cfg)

	// Every response is read on one connection, so body bytes written where
	// none belong would corrupt the next status line.
	resp := do(t, c, RawRequest{Method: "HEAD", Target: "/", Host: "h"})
	equal(t, "HEAD Content-Length", resp.Values("Content-Length"), []string{"11"})
	equal(t, "HEAD body length", len(resp.Body), 0)

	resp = do(t, c, RawRequest{Method: "GET", Target: "/304", Host: "h"})
	equal(t, "304 Content-Length", resp.Values("Content-Length"), []string{"1"})
	equal(t, "304 body length", len(resp.Body), 0)

	resp = do(t, c, RawRequest{Method: "GET", Target: "/204", Host: "h"})
	equal(t, "204 Headers", resp.Headers, []Field(nil))

	resp = do(t, c, RawRequest{Method: "GET", Target: "/", Host: "h"})
	equal(t, "GET body", string(resp.Body), "hello world")
	equal(t, "Conns", o.Conns(), 1)
}

func TestHangUntilClose(t *testing.T) {
	o, cfg := startTLS(t, func(*Received) Response { return Response{Hang: true} })
	c := dial(t, o.Addr(), cfg)

	start := time.Now()
	_, err := c.Do(RawRequest{Method: "GET", Target: "/slow", Host: "h"}, 200*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Do error = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Do returned after %v, before its timeout", d)
	}
	equal(t, "Target", next(t, o).Target, "/slow")

	closed := make(chan error, 1)
	go func() { closed <- o.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return while a connection hung")
	}
	if _, err := c.ReadResponse("GET", wait); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadResponse after Close = %v, want the connection closed", err)
	}
}

func TestCloseWithoutResponse(t *testing.T) {
	o, cfg := startTLS(t, func(*Received) Response { return Response{CloseWithoutResponse: true} })
	c := dial(t, o.Addr(), cfg)

	resp, err := c.Do(RawRequest{Method: "POST", Target: "/drop", Host: "h", Body: []byte("data")}, wait)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("Do = %+v, %v; want error wrapping io.EOF", resp, err)
	}
	r := next(t, o)
	equal(t, "Body", string(r.Body), "data")
	equal(t, "Err", r.Err, "")
}

func TestConnectionClose(t *testing.T) {
	o, cfg := startTLS(t, nil)
	c := dial(t, o.Addr(), cfg)

	resp := do(t, c, RawRequest{Method: "GET", Target: "/1", Host: "h", Headers: []Field{{"Connection", "close"}}})
	equal(t, "response Connection", resp.Values("Connection"), []string{"close"})
	if _, err := c.ReadResponse("GET", wait); !errors.Is(err, io.EOF) {
		t.Errorf("ReadResponse after Connection: close = %v, want io.EOF", err)
	}
	equal(t, "first ConnID", next(t, o).ConnID, 1)

	c2 := dial(t, o.Addr(), cfg)
	do(t, c2, RawRequest{Method: "GET", Target: "/2", Host: "h"})
	equal(t, "second ConnID", next(t, o).ConnID, 2)
	equal(t, "Conns", o.Conns(), 2)
}

func TestKeepAlive(t *testing.T) {
	o, cfg := startTLS(t, nil)
	c := dial(t, o.Addr(), cfg)

	do(t, c, RawRequest{Method: "GET", Target: "/1", Host: "h"})
	resp := do(t, c, RawRequest{Method: "POST", Target: "/2", Host: "h", Body: []byte("hello")})
	equal(t, "second response Connection", resp.Values("Connection"), []string(nil))

	r1, r2 := next(t, o), next(t, o)
	equal(t, "targets", []string{r1.Target, r2.Target}, []string{"/1", "/2"})
	equal(t, "ConnIDs", []int{r1.ConnID, r2.ConnID}, []int{1, 1})
	equal(t, "second Content-Length", r2.Values("Content-Length"), []string{"5"})
	equal(t, "second Body", string(r2.Body), "hello")
	equal(t, "Conns", o.Conns(), 1)
	equal(t, "Count", o.Count(), 2)
}

func TestSNIRecorded(t *testing.T) {
	o, cfg := startTLS(t, nil)
	_, port, _ := net.SplitHostPort(o.Addr())
	byIP := &tls.Config{RootCAs: cfg.RootCAs} // SNI is never sent for IP literals
	other := &tls.Config{ServerName: "other.test", InsecureSkipVerify: true}

	for _, tc := range []struct {
		cfg     *tls.Config
		wantSNI string
	}{
		{cfg, "origin.test"},
		{byIP, ""},
		{other, "other.test"},
	} {
		c := dial(t, net.JoinHostPort("127.0.0.1", port), tc.cfg)
		do(t, c, RawRequest{Method: "GET", Target: "/", Host: "h"})
		r := next(t, o)
		equal(t, "SNI", r.SNI, tc.wantSNI)
		equal(t, "ALPN", r.ALPN, "http/1.1")
	}
}

func TestPlainHTTPAndCloseDelimitedBody(t *testing.T) {
	o, err := Start(Config{Respond: func(*Received) Response {
		return Response{Status: 200, Reason: "Fine", Body: []byte("until close"), NoContentLength: true}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	c := dial(t, o.Addr(), nil)

	resp := do(t, c, RawRequest{Method: "GET", Target: "/", Host: "h"})
	equal(t, "StatusLine", resp.StatusLine, "HTTP/1.1 200 Fine")
	equal(t, "Headers", resp.Headers, []Field{{"Connection", "close"}})
	equal(t, "Body", string(resp.Body), "until close")

	r := next(t, o)
	equal(t, "TLS", r.TLS, false)
	equal(t, "SNI", r.SNI, "")
	equal(t, "ALPN", r.ALPN, "")
	if o.Port() == 0 || !strings.HasSuffix(o.Addr(), ":"+strconv.Itoa(o.Port())) {
		t.Errorf("Addr %q does not end in Port %d", o.Addr(), o.Port())
	}
}

func TestIPv6(t *testing.T) {
	o, err := Start(Config{Network: "tcp6"})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer o.Close()
	if !strings.HasPrefix(o.Addr(), "[::1]:") {
		t.Errorf("Addr = %q, want [::1]:port", o.Addr())
	}
	c := dial(t, o.Addr(), nil)
	equal(t, "Body", string(do(t, c, RawRequest{Method: "GET", Target: "/", Host: "h"}).Body), "ok")
}

func TestNextCountReset(t *testing.T) {
	o, cfg := startTLS(t, nil)
	if _, err := o.Next(50 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Next on empty origin = %v, want deadline exceeded", err)
	}
	c := dial(t, o.Addr(), cfg)
	do(t, c, RawRequest{Method: "GET", Target: "/1", Host: "h"})
	do(t, c, RawRequest{Method: "GET", Target: "/2", Host: "h"})
	equal(t, "Count", o.Count(), 2)

	o.Reset()
	if r, err := o.Next(50 * time.Millisecond); err == nil {
		t.Errorf("Next after Reset returned %q", r.Target)
	}
	equal(t, "Count after Reset", o.Count(), 2)

	do(t, c, RawRequest{Method: "GET", Target: "/3", Host: "h"})
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	equal(t, "queued Target after Close", next(t, o).Target, "/3")
	start := time.Now()
	if _, err := o.Next(wait); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Next on closed, empty origin = %v, want closed error", err)
	}
	if d := time.Since(start); d > wait/2 {
		t.Errorf("Next on closed origin took %v", d)
	}
}

func TestLargeBodyHashedNotKept(t *testing.T) {
	o, cfg := startTLS(t, nil)
	c := dial(t, o.Addr(), cfg)
	body := bytes.Repeat([]byte{'z'}, 100<<10)

	do(t, c, RawRequest{Method: "PUT", Target: "/big", Host: "h", Body: body})
	r := next(t, o)
	equal(t, "BodyLen", r.BodyLen, int64(len(body)))
	equal(t, "BodySHA256", r.BodySHA256, sha(body))
	equal(t, "Body", r.Body, []byte(nil))
}

func TestTruncatedRequestRecorded(t *testing.T) {
	o, cfg := startTLS(t, nil)
	c := dial(t, o.Addr(), cfg)
	if err := c.WriteRaw([]byte("POST /cut HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")); err != nil {
		t.Fatal(err)
	}
	c.Close()

	r := next(t, o)
	equal(t, "Target", r.Target, "/cut")
	equal(t, "BodyLen", r.BodyLen, int64(3))
	if r.Err == "" {
		t.Error("Err is empty for a request cut short")
	}
}

func TestCA(t *testing.T) {
	ca, err := NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if !ca.Cert.IsCA || ca.Cert.NotBefore.After(now.Add(-59*time.Minute)) || ca.Cert.NotAfter.Before(now.Add(23*time.Hour)) {
		t.Errorf("CA IsCA=%v validity %v .. %v", ca.Cert.IsCA, ca.Cert.NotBefore, ca.Cert.NotAfter)
	}
	leaf, err := ca.Issue("example.test", "127.0.0.1", "[::1]")
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.TLS.Leaf
	equal(t, "DNSNames", cert.DNSNames, []string{"example.test"})
	equal(t, "IPAddresses", len(cert.IPAddresses), 2)

	opts := x509.VerifyOptions{Roots: ca.Pool, DNSName: "example.test"}
	if _, err := cert.Verify(opts); err != nil {
		t.Errorf("verify example.test: %v", err)
	}
	opts.DNSName = "::1"
	if _, err := cert.Verify(opts); err != nil {
		t.Errorf("verify ::1: %v", err)
	}
	opts.DNSName = "other.test"
	if _, err := cert.Verify(opts); err == nil {
		t.Error("verify other.test succeeded")
	}
	if _, err := ca.Issue(); err == nil {
		t.Error("Issue with no names succeeded")
	}

	dir := t.TempDir()
	certFile, keyFile, err := leaf.WriteFiles(dir, "leaf")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("load written key pair: %v", err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %v, %v; want mode 0600", fi, err)
	}
	caFile, err := ca.WriteFile(dir, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "CA file", got, ca.CertPEM)
}
