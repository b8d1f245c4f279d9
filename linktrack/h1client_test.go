package linktrack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// headRecorder is a plain-HTTP origin that records the bytes of each
// request it receives, head and body, and answers 302.
type headRecorder struct {
	ln       net.Listener
	received chan string
}

func newHeadRecorder(t *testing.T) *headRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &headRecorder{ln: ln, received: make(chan string, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go o.serve(conn)
		}
	}()
	return o
}

func (o *headRecorder) serve(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		var msg strings.Builder
		length := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			msg.WriteString(line)
			if name, value, ok := strings.Cut(line, ":"); ok && textproto.CanonicalMIMEHeaderKey(name) == "Content-Length" {
				length, _ = strconv.Atoi(strings.TrimSpace(value))
			}
			if line == "\r\n" {
				break
			}
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		msg.Write(body)
		o.received <- msg.String()
		if _, err := io.WriteString(conn, "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"); err != nil {
			return
		}
	}
}

// testOriginProxy is an origin proxy to origin through a fresh
// http.Transport, with linktrack's lean client when lean is set.
func testOriginProxy(t *testing.T, origin string, lean bool) *originProxy {
	t.Helper()
	u, err := url.Parse(origin)
	if err != nil {
		t.Fatal(err)
	}
	transport := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: DefaultMaxIdleConnsPerHost}
	t.Cleanup(transport.CloseIdleConnections)
	return testProxyOver(t, u, transport, lean)
}

// testProxyOver returns a proxy to u that sends through transport, or
// through the lean client built from it when lean, as linktrack sets
// them up for an HTTP/1.1 origin.
func testProxyOver(t *testing.T, u *url.URL, transport *http.Transport, lean bool) *originProxy {
	t.Helper()
	metrics, err := newProxyMetrics(prometheus.NewRegistry(), "upstream", "")
	if err != nil {
		t.Fatal(err)
	}
	p := &originProxy{
		url:         u,
		transport:   &reverseproxy.HTTPTransport{Transport: transport},
		bufPool:     &sync.Pool{New: func() any { b := make([]byte, 1024); return &b }},
		logger:      zap.NewNop(),
		metrics:     metrics,
		guardReplay: true,
		http1Only:   true,
	}
	if lean {
		var reason string
		if p.client, reason = newH1Client(u, p.transport); p.client == nil {
			t.Fatalf("no lean client: %s", reason)
		}
		t.Cleanup(p.client.closeIdle)
	}
	return p
}

// TestLeanClientWritesWhatTransportWrites: for each kind of request, the
// lean client sends the origin the same bytes as http.Transport.
func TestLeanClientWritesWhatTransportWrites(t *testing.T) {
	type request struct {
		method, target, body string
		header               map[string][]string
	}
	browser := map[string][]string{
		"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64)"},
		"Accept":          {"text/html"},
		"Cookie":          {"a=1", "b=2"},
		"Accept-Encoding": {"gzip, br"},
		"Connection":      {"keep-alive, X-Hop"},
		"X-Hop":           {"dropped"},
		"Te":              {"trailers"},
	}
	for _, tc := range []request{
		{method: "GET", target: "/CL0/https:%2F%2Fshop.example.com%2Fp%3Futm_source=email/1/abc=", header: browser},
		{method: "GET", target: "/p/a|b^c/%2F?q=%zz&x=a+b", header: browser},
		{method: "GET", target: "//double/slash%2F?", header: browser},
		{method: "GET", target: "/no-user-agent"},
		{method: "GET", target: "/ls/click?upn=1", header: map[string][]string{"User-Agent": {""}, "X-Forwarded-For": {"203.0.113.9"}}},
		{method: "GET", target: "/named", header: map[string][]string{"Connection": {"user-agent, X-Forwarded-For", "te"}, "User-Agent": {"ua"}, "X-Forwarded-For": {"203.0.113.9"}, "Te": {"trailers"}}},
		{method: "HEAD", target: "/open.gif", header: browser},
		{method: "OPTIONS", target: "*"},
		{method: "DELETE", target: "/d"},
		{method: "POST", target: "/form"},
		{method: "POST", target: "/form", header: map[string][]string{"Idempotency-Key": {"k1"}}},
		{method: "POST", target: "/form", body: "a=1&b=2", header: map[string][]string{"Content-Type": {"application/x-www-form-urlencoded"}}},
		{method: "PUT", target: "/put", body: "x", header: map[string][]string{"Expect": {"100-continue"}}},
		{method: "PATCH", target: "/patch"},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			var got [2]string
			for i, lean := range []bool{false, true} {
				origin := newHeadRecorder(t)
				p := testOriginProxy(t, "http://"+origin.ln.Addr().String(), lean)
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				r := httptest.NewRequest(tc.method, "http://link.example.com"+tc.target, body)
				for name, values := range tc.header {
					r.Header[name] = values
				}
				w := httptest.NewRecorder()
				if status, err := p.forward(w, r, "link.example.com", "link.example.com", clientLimits{maxBodySize: DefaultMaxBodySize}); status != http.StatusFound {
					t.Fatalf("lean %v: status %d, error %v", lean, status, err)
				}
				if w.Header().Get("Location") != "/x" {
					t.Errorf("lean %v: Location %q", lean, w.Header().Get("Location"))
				}
				got[i] = <-origin.received
			}
			if got[0] != got[1] {
				t.Errorf("the lean client wrote\n%q\nhttp.Transport wrote\n%q", got[1], got[0])
			}
		})
	}
}

// TestLeanClientSkipsConnectionClosedWhileIdle: when the origin closes
// an idle connection, the next request goes on a new connection and
// succeeds, instead of being written to the closed one and lost.
func TestLeanClientSkipsConnectionClosedWhileIdle(t *testing.T) {
	var received int
	var mu sync.Mutex
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		received++
		mu.Unlock()
		w.WriteHeader(http.StatusFound)
	}))
	defer origin.Close()
	p := testOriginProxy(t, origin.URL, true)
	click := func() int {
		r := httptest.NewRequest(http.MethodGet, "http://link.example.com/ls/click?upn=1", nil)
		status, _ := p.forward(httptest.NewRecorder(), r, "link.example.com", "link.example.com", clientLimits{maxBodySize: DefaultMaxBodySize})
		return status
	}
	if status := click(); status != http.StatusFound {
		t.Fatalf("first click: status %d", status)
	}
	origin.CloseClientConnections()
	// wait until the origin's close reached the proxy's socket
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.client.pool.mu.Lock()
		idle := p.client.pool.idle
		closed := len(idle) == 1 && !idle[0].peerQuiet()
		p.client.pool.mu.Unlock()
		if closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the origin's close never reached the idle connection")
		}
		runtime.Gosched()
	}
	if status := click(); status != http.StatusFound {
		t.Errorf("click after the origin closed the idle connection: status %d, want 302", status)
	}
	mu.Lock()
	defer mu.Unlock()
	if received != 2 {
		t.Errorf("origin received %d requests, want 2", received)
	}
}

// TestLeanClientPoolIsLIFO: the most recently used connection is taken
// first, and a full pool closes what it cannot keep.
func TestLeanClientPoolIsLIFO(t *testing.T) {
	p := newH1Pool(2, time.Hour)
	conns := make([]*h1Conn, 3)
	for i := range conns {
		client, server := net.Pipe()
		defer server.Close()
		conns[i] = &h1Conn{raw: client, wire: h1Wire{conn: client}, waitTimer: time.AfterFunc(time.Hour, func() {})}
	}
	for _, c := range conns {
		p.put(c)
	}
	if _, err := conns[2].raw.Write([]byte{0}); err == nil {
		t.Error("the connection beyond the pool's size is still open")
	}
	if c := p.get(); c != conns[1] {
		t.Error("get did not return the most recently used connection")
	}
	if c := p.get(); c != conns[0] {
		t.Error("get did not return the older connection second")
	}
	if c := p.get(); c != nil {
		t.Error("an empty pool returned a connection")
	}
	p.closeIdle()
}

// TestLeanClientLeavesWhenClientLeaves: a client that goes away while
// the origin has not answered gets 499, and the connection to the
// origin is closed instead of waiting for the response.
func TestLeanClientLeavesWhenClientLeaves(t *testing.T) {
	arrived, originGone, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done(): // the proxy closed the connection
			close(originGone)
		case <-release: // the test failed
		}
	}))
	defer origin.Close()
	defer close(release)
	p := testOriginProxy(t, origin.URL, true)

	ctx, leave := context.WithCancel(context.Background())
	r := httptest.NewRequest(http.MethodGet, "http://link.example.com/ls/click?upn=1", nil).WithContext(ctx)
	done := make(chan int)
	go func() {
		status, _ := p.forward(httptest.NewRecorder(), r, "link.example.com", "link.example.com", clientLimits{maxBodySize: DefaultMaxBodySize})
		done <- status
	}()
	<-arrived
	leave()
	select {
	case status := <-done:
		if status != statusClientClosedRequest {
			t.Errorf("status %d, want %d", status, statusClientClosedRequest)
		}
	case <-time.After(time.Minute):
		t.Fatal("the proxy still waits for the origin after its client left")
	}
	select {
	case <-originGone:
	case <-time.After(time.Minute):
		t.Fatal("the connection to the origin is still open after the client left")
	}
}

// TestLeanClientConcurrentClicks: clicks from many goroutines over TLS
// share the pool; each reaches the origin once and gets its own answer.
func TestLeanClientConcurrentClicks(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.RawQuery]++
		mu.Unlock()
		w.Header().Set("Location", "https://shop.example.com/?"+r.URL.RawQuery)
		w.WriteHeader(http.StatusFound)
		io.WriteString(w, "moved\n")
	}))
	origin.EnableHTTP2 = false
	origin.StartTLS()
	defer origin.Close()
	p := testOriginProxy(t, origin.URL, false)
	p.transport.Transport.TLSClientConfig = origin.Client().Transport.(*http.Transport).TLSClientConfig
	u, _ := url.Parse(origin.URL)
	var reason string
	if p.client, reason = newH1Client(u, p.transport); p.client == nil {
		t.Fatalf("no lean client: %s", reason)
	}
	defer p.client.closeIdle()

	const workers, clicks = 8, 40
	var wg sync.WaitGroup
	errs := make(chan string, workers*clicks)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range clicks {
				q := "w=" + strconv.Itoa(w) + "&i=" + strconv.Itoa(i)
				r := httptest.NewRequest(http.MethodGet, "https://link.example.com/c?"+q, nil)
				rec := httptest.NewRecorder()
				status, err := p.forward(rec, r, "link.example.com", "link.example.com", clientLimits{maxBodySize: DefaultMaxBodySize})
				if status != http.StatusFound || rec.Header().Get("Location") != "https://shop.example.com/?"+q || rec.Body.String() != "moved\n" {
					errs <- q + ": status " + strconv.Itoa(status) + ", Location " + rec.Header().Get("Location") + ", error " + fmt.Sprint(err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != workers*clicks {
		t.Errorf("origin saw %d distinct clicks, want %d", len(seen), workers*clicks)
	}
	for q, n := range seen {
		if n != 1 {
			t.Errorf("click %s reached the origin %d times", q, n)
		}
	}
}
