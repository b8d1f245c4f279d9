package linktrack

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// deadableConn is a client connection that can be made to fail every
// write without writing a byte, as a connection the peer has reset.
type deadableConn struct {
	net.Conn
	dead atomic.Bool
}

func (c *deadableConn) Write(p []byte) (int, error) {
	if c.dead.Load() {
		return 0, syscall.EPIPE
	}
	return c.Conn.Write(p)
}

// noReplayRig is an origin proxy in front of a Go origin server,
// through a real http.Transport whose connections the test can kill.
type noReplayRig struct {
	proxy *originProxy
	conns []*deadableConn
	mu    sync.Mutex

	received atomic.Int32
	hangUp   atomic.Bool // the origin closes the connection after reading a request
}

// newNoReplayRig returns the rig; with lean, the proxy sends through
// linktrack's lean client built from the same transport.
func newNoReplayRig(t *testing.T, lean bool) *noReplayRig {
	t.Helper()
	rig := new(noReplayRig)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.received.Add(1)
		if rig.hangUp.Load() {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.WriteHeader(http.StatusFound)
	}))
	t.Cleanup(origin.Close)

	transport := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c := &deadableConn{Conn: conn}
			rig.mu.Lock()
			rig.conns = append(rig.conns, c)
			rig.mu.Unlock()
			return c, nil
		},
	}
	t.Cleanup(transport.CloseIdleConnections)

	originURL, _ := url.Parse(origin.URL)
	rig.proxy = testProxyOver(t, originURL, transport, lean)
	return rig
}

// clients names the two ways a proxy sends to the origin.
var clients = []struct {
	name string
	lean bool
}{{"transport", false}, {"lean", true}}

// click forwards one request and returns the status the client got.
func (rig *noReplayRig) click(t *testing.T, method string) int {
	t.Helper()
	r := httptest.NewRequest(method, "https://link.example.com/ls/click?upn=1", nil)
	w := httptest.NewRecorder()
	status, _ := rig.proxy.forward(w, r, "link.example.com", "link.example.com", clientLimits{maxBodySize: DefaultMaxBodySize})
	return status
}

func (rig *noReplayRig) connCount() int {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	return len(rig.conns)
}

func TestRequestNotWrittenIsSentOnceMore(t *testing.T) {
	for _, client := range clients {
		for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
			t.Run(client.name+"/"+method, func(t *testing.T) {
				testRequestNotWrittenIsSentOnceMore(t, client.lean, method)
			})
		}
	}
}

func testRequestNotWrittenIsSentOnceMore(t *testing.T, lean bool, method string) {
	rig := newNoReplayRig(t, lean)
	if status := rig.click(t, method); status != http.StatusFound {
		t.Fatalf("first click: status %d", status)
	}
	rig.mu.Lock()
	rig.conns[0].dead.Store(true) // the idle connection dies
	rig.mu.Unlock()

	if status := rig.click(t, method); status != http.StatusFound {
		t.Errorf("click on a dead connection: status %d, want 302 from a new connection", status)
	}
	if n := rig.received.Load(); n != 2 {
		t.Errorf("origin received %d requests, want 2: each click once", n)
	}
	if n := rig.connCount(); n != 2 {
		t.Errorf("%d connections dialed, want 2", n)
	}
}

func TestRequestWrittenIsNotSentAgain(t *testing.T) {
	for _, client := range clients {
		for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPost} {
			t.Run(client.name+"/"+method, func(t *testing.T) {
				testRequestWrittenIsNotSentAgain(t, client.lean, method)
			})
		}
	}
}

func testRequestWrittenIsNotSentAgain(t *testing.T, lean bool, method string) {
	rig := newNoReplayRig(t, lean)
	if status := rig.click(t, method); status != http.StatusFound {
		t.Fatalf("first click: status %d", status)
	}
	rig.hangUp.Store(true)
	if status := rig.click(t, method); status != http.StatusBadGateway {
		t.Errorf("status %d, want 502", status)
	}
	if n := rig.received.Load(); n != 2 {
		t.Errorf("origin received %d requests, want 2: the second click was sent again", n)
	}
}

func TestUnsentBodyOnlyWhereReplayable(t *testing.T) {
	p := &originProxy{url: &url.URL{Scheme: "https", Host: "origin.example"}, guardReplay: true}
	for _, tc := range []struct {
		method string
		header string
		guard  bool
	}{
		{http.MethodGet, "", true},
		{http.MethodHead, "", true},
		{http.MethodOptions, "", true},
		{http.MethodTrace, "", true},
		{http.MethodPost, "", false},
		{http.MethodPost, "Idempotency-Key", true},
		{http.MethodPut, "X-Idempotency-Key", true},
		{http.MethodDelete, "", false},
	} {
		r := httptest.NewRequest(tc.method, "https://link.example.com/", nil)
		if tc.header != "" {
			r.Header.Set(tc.header, "k")
		}
		out := p.outgoingRequest(httptest.NewRecorder(), r, "link.example.com", DefaultMaxBodySize)
		_, guarded := out.Body.(*unsentBody)
		if guarded != tc.guard {
			t.Errorf("%s %s: unsentBody %v, want %v", tc.method, tc.header, guarded, tc.guard)
		}
		if !guarded && out.Body != nil {
			t.Errorf("%s %s: body %T, want nil", tc.method, tc.header, out.Body)
		}
	}
}

func TestSendOnceMoreRefusesDialAndClientGone(t *testing.T) {
	fresh := func(ctx context.Context) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "https://link.example.com/", nil).WithContext(ctx)
		r.Body = new(unsentBody)
		return r
	}
	closed := errors.New("write: broken pipe")
	if !sendOnceMore(fresh(context.Background()), closed) {
		t.Error("an unsent request on a broken connection is not sent once more")
	}
	if sendOnceMore(fresh(context.Background()), reverseproxy.NewDialError(errors.New("connection refused"))) {
		t.Error("a failed dial is tried again")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if sendOnceMore(fresh(ctx), closed) {
		t.Error("a request whose client left is tried again")
	}
	sent := fresh(context.Background())
	sent.Body.(*unsentBody).read.Store(true)
	if sendOnceMore(sent, closed) {
		t.Error("a request the connection took whole is tried again")
	}
	expect := fresh(context.Background())
	expect.Header.Set("Expect", "100-continue")
	if sendOnceMore(expect, closed) {
		t.Error("a request expecting 100-continue is tried again")
	}
}

func TestIdleConnTimeoutDefault(t *testing.T) {
	origin := &url.URL{Scheme: "https", Host: "origin.example"}
	got, err := transportWithDefaults(origin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(got.KeepAlive.IdleConnTimeout); d != DefaultIdleConnTimeout {
		t.Errorf("idle timeout %v, want %v", d, DefaultIdleConnTimeout)
	}
	configured := &reverseproxy.HTTPTransport{KeepAlive: &reverseproxy.KeepAlive{IdleConnTimeout: caddy.Duration(time.Minute)}}
	if got, _ = transportWithDefaults(origin, configured); time.Duration(got.KeepAlive.IdleConnTimeout) != time.Minute {
		t.Errorf("a configured idle timeout became %v", time.Duration(got.KeepAlive.IdleConnTimeout))
	}
}
