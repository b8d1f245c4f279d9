package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// exchange is one request a client sends and the answer the origin
// gives it.
type exchange struct {
	name           string
	method         string
	target         string
	headers        []standin.Field // in wire order, Host excluded
	body           []byte
	chunked        bool              // HTTP/1.1: chunked framing; HTTP/2 and HTTP/3: no declared length
	expectContinue bool              // HTTP/1.1: waits for 100 Continue; HTTP/2 and HTTP/3: sends the body at once
	response       *standin.Response // nil: redirectResponse()
	h1Only         bool              // uses something HTTP/2 and HTTP/3 cannot carry
}

// The number of exchanges sent over each protocol, as the README states
// them.
const (
	h1Exchanges = 59
	h2Exchanges = 58
	h3Exchanges = 58
)

// notCompared are fields that describe a hop, not the message; they may
// differ between the client's hop and the proxy's. They are left out of
// the client's request and of both responses.
var notCompared = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Keep-Alive": true, "Te": true, "Trailer": true, "Upgrade": true, "Proxy-Connection": true,
	"Proxy-Authorization": true, "Proxy-Authenticate": true, "Alt-Svc": true,
}

// framing are the fields that frame the request on the proxy's own hop.
// They are the only ones left out of what the origin received: Host and
// Content-Length are checked on their own, and any other field the proxy
// let through, hop-by-hop or not, makes the headers differ.
var framing = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true}

// hopByHop are the fields that must not reach the origin (RFC 9110
// section 7.6.1), besides those the client's Connection field names.
// Only "TE: trailers" passes.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate",
	"Te", "Trailer", "Upgrade",
}

// browser is the header block of an ordinary click.
func browser(extra ...standin.Field) []standin.Field {
	return append([]standin.Field{
		{Name: "User-Agent", Value: "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"},
		{Name: "Accept", Value: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{Name: "Accept-Language", Value: "de-DE,de;q=0.9,en;q=0.8"},
	}, extra...)
}

func get(name, target string, extra ...standin.Field) exchange {
	return exchange{name: name, method: http.MethodGet, target: target, headers: browser(extra...)}
}

func respondWith(status int, headers []standin.Field, body []byte) *standin.Response {
	all := append([]standin.Field{{Name: "Date", Value: "Sun, 22 Nov 2026 10:00:00 GMT"}}, headers...)
	return &standin.Response{Status: status, Headers: all, Body: body}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// longQuery is a query of more than 7 KB with repeated, bare and empty
// keys, as ESPs write them for long UTM-laden URLs.
func longQuery() string {
	var q strings.Builder
	q.WriteString("upn=")
	q.WriteString(strings.Repeat("aGVsbG8td29ybGQ", 300))
	q.WriteString("&utm_source=email&utm_source=newsletter&bare&empty=&=novalue&x=%zz&sig=AbC%2Bd%2Fe%3D%3D")
	for i := 0; q.Len() < 7500; i++ {
		q.WriteString("&k" + strconv.Itoa(i) + "=v%20" + strconv.Itoa(i))
	}
	return q.String()
}

func exchanges() []exchange {
	pixel := []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
	big := randomBytes(5 << 20)
	cookie10k := "session=" + strings.Repeat("c", 10*1024)
	form := []byte("email=shopper%40example.com&list=weekly&unsubscribe=1")

	return []exchange{
		// request-targets, byte for byte
		{name: "health", method: http.MethodGet, target: "/health", headers: browser(),
			response: respondWith(200, []standin.Field{{Name: "Content-Type", Value: "application/json"}}, []byte("{}"))},
		get("pipe and encoded slash", "/p/a|b/x%2Fy"),
		get("encoded slash", "/ls/click/x%2Fy"),
		get("lowercase encoded slash", "/ls/click/x%2fy"),
		get("double encoded slash", "/x%252Fy"),
		get("double slash", "//double//slash/"),
		get("double slash with encoded slash", "//x%2Fy"),
		get("dot segment", "/a/./b"),
		get("dot dot segment", "/a/../b"),
		get("path params", "/a;param=1/b;c=2,3"),
		get("plus in path and query", "/a+b/c+d?q=a+b&r=%2B"),
		get("utf-8 upper hex", "/caf%C3%A9/%E2%9C%93"),
		get("utf-8 lower hex", "/caf%c3%a9/%e2%9c%93"),
		get("invalid escape in query", "/q?x=%zz&y=%&z=%2"),
		get("base64 token", "/CL0/https:%2F%2Fshop.example.com%2Fp%3Futm_source=email/1/0100018c-6b1f-4e7a/AbC+dEf/gh==/312"),
		get("base64 query token", "/ls/click?upn=aGVsbG8gd29ybGQ=/d29ybGQ=&__s=xyz"),
		get("sub-delims", "/p/!'()*$,;=:@/x"),
		get("chars go re-escapes", "/p/a^b{c}d`e/x%2Fy/!'()*"),
		get("raw quote", "/p/\"quoted\"/x"),
		get("empty query", "/p?"),
		get("odd query", "/p?&&=&a==b&"),
		get("long path", "/f/"+strings.Repeat("a1B2c3D4e5", 200)),
		get("query over 7 KB", "/ls/click?"+longQuery()),
		get("sparkpost open pixel", "/q/AbCdEf_gH-iJ/track.gif"),
		get("ses click", "/CL0/https:%2F%2Fexample.com%2F/1/010201/abc=123"),
		get("sendgrid universal link", "/uni/ls/click?upn=u001.abc-2Bdef-3D"),
		get("iterable click", "/a/hEwAAAA?ver=2&_t_hash=c7e3a"),

		// methods
		{name: "HEAD", method: http.MethodHead, target: "/favicon.ico", headers: browser(),
			response: respondWith(200, []standin.Field{{Name: "Content-Type", Value: "image/x-icon"}, {Name: "X-Amz-Ses-Region", Value: "eu-west-1"}}, make([]byte, 318))},
		{name: "OPTIONS", method: http.MethodOptions, target: "/ls/click", headers: browser(standin.Field{Name: "Origin", Value: "https://mail.example.com"}),
			response: respondWith(204, []standin.Field{{Name: "Allow", Value: "GET, HEAD, OPTIONS"}}, nil)},
		{name: "DELETE", method: http.MethodDelete, target: "/api/subscription/42", headers: browser()},
		{name: "extension method", method: "PROPFIND", target: "/dav/x", headers: browser(standin.Field{Name: "Depth", Value: "1"})},
		{name: "extension method without body", method: "PURGE", target: "/cache/x", headers: nil},

		// bodies
		{name: "POST empty body", method: http.MethodPost, target: "/unsubscribe", headers: browser(), body: []byte{}},
		{name: "POST form", method: http.MethodPost, target: "/unsubscribe?id=42",
			headers: browser(standin.Field{Name: "Content-Type", Value: "application/x-www-form-urlencoded"}), body: form},
		{name: "PUT 5 MiB binary", method: http.MethodPut, target: "/upload/blob",
			headers: []standin.Field{{Name: "Content-Type", Value: "application/octet-stream"}}, body: big},
		{name: "PATCH json", method: http.MethodPatch, target: "/api/prefs",
			headers: []standin.Field{{Name: "Content-Type", Value: "application/json"}}, body: []byte(`{"weekly":false}`)},
		{name: "POST chunked", method: http.MethodPost, target: "/collect",
			headers: []standin.Field{{Name: "Content-Type", Value: "text/plain"}}, body: randomBytes(100_000), chunked: true},
		{name: "POST expect continue", method: http.MethodPost, target: "/collect",
			headers: []standin.Field{{Name: "Content-Type", Value: "application/octet-stream"}}, body: randomBytes(64 * 1024), expectContinue: true},

		// request headers
		{name: "repeated cookie lines", method: http.MethodGet, target: "/ls/click?upn=1",
			headers: browser(standin.Field{Name: "Cookie", Value: "a=1; b=2"}, standin.Field{Name: "Cookie", Value: "c=3"})},
		{name: "10 KB cookie", method: http.MethodGet, target: "/ls/click", headers: browser(standin.Field{Name: "Cookie", Value: cookie10k})},
		{name: "repeated custom header keeps order", method: http.MethodGet, target: "/",
			headers: []standin.Field{{Name: "X-Trace", Value: "3"}, {Name: "X-Trace", Value: "1"}, {Name: "X-Trace", Value: "2"}}},
		{name: "no user agent is added", method: http.MethodGet, target: "/wf/open?upn=x", headers: []standin.Field{{Name: "Accept", Value: "*/*"}}},
		{name: "no accept-encoding is added", method: http.MethodGet, target: "/", headers: []standin.Field{{Name: "User-Agent", Value: "curl/8.9.1"}}},
		{name: "scanner user agent", method: http.MethodHead, target: "/ls/click?upn=abc",
			headers: []standin.Field{{Name: "User-Agent", Value: "Mozilla/5.0 (compatible; Microsoft Safe Links)"}}},
		{name: "empty header value", method: http.MethodGet, target: "/", headers: browser(standin.Field{Name: "X-Empty", Value: ""})},
		{name: "spoofed forwarded-for is replaced", method: http.MethodGet, target: "/ls/click",
			headers: browser(standin.Field{Name: "X-Forwarded-For", Value: "203.0.113.9"}, standin.Field{Name: "X-Forwarded-Host", Value: "evil.example"}, standin.Field{Name: "X-Forwarded-Proto", Value: "gopher"})},
		// HTTP/2 and HTTP/3 forbid connection-specific fields (RFC 9113
		// 8.2.2, RFC 9114 4.2): Go's HTTP/2 client refuses this request,
		// and quic-go's drops Connection, Keep-Alive, Proxy-Connection and
		// Upgrade unsent, after which Caddy's HTTP/3 server refuses a TE
		// other than "trailers"
		{name: "hop-by-hop headers are dropped", method: http.MethodGet, target: "/",
			headers: browser(standin.Field{Name: "Connection", Value: "X-Hop"}, standin.Field{Name: "X-Hop", Value: "1"},
				standin.Field{Name: "Keep-Alive", Value: "timeout=5"}, standin.Field{Name: "Proxy-Authorization", Value: "Basic Zm9vOmJhcg=="},
				standin.Field{Name: "Proxy-Connection", Value: "keep-alive"}, standin.Field{Name: "TE", Value: "gzip"},
				standin.Field{Name: "Upgrade", Value: "websocket"}), h1Only: true},
		{name: "proxy-authorization is dropped, TE trailers kept", method: http.MethodGet, target: "/",
			headers: browser(standin.Field{Name: "Proxy-Authorization", Value: "Basic Zm9vOmJhcg=="}, standin.Field{Name: "TE", Value: "trailers"})},
		{name: "accept-encoding passes untouched", method: http.MethodGet, target: "/", headers: browser(standin.Field{Name: "Accept-Encoding", Value: "gzip, br"}),
			response: respondWith(200, []standin.Field{{Name: "Content-Encoding", Value: "gzip"}, {Name: "Content-Type", Value: "text/html"}, {Name: "Vary", Value: "Accept-Encoding"}},
				[]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcbH\xcd\xc9\xc9\x07\x00\x86\xa6\x106\x05\x00\x00\x00"))},

		// responses
		{name: "permanent redirect", method: http.MethodGet, target: "/ls/click?upn=p",
			response: respondWith(301, []standin.Field{{Name: "Location", Value: "https://shop.example.com/?utm_source=email&utm_campaign=x%2Fy"}}, nil)},
		{name: "temporary redirect for POST", method: http.MethodPost, target: "/f/form", body: form,
			headers:  []standin.Field{{Name: "Content-Type", Value: "application/x-www-form-urlencoded"}},
			response: respondWith(307, []standin.Field{{Name: "Location", Value: "/f/form/next?x=1"}}, nil)},
		{name: "set-cookie lines", method: http.MethodGet, target: "/ls/click?upn=c",
			response: respondWith(302, []standin.Field{
				{Name: "Location", Value: "https://shop.example.com/"},
				{Name: "Set-Cookie", Value: "uid=1; Path=/; Secure; HttpOnly"},
				{Name: "Set-Cookie", Value: "seen=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/"},
				{Name: "Set-Cookie", Value: "ab=b; SameSite=None; Secure"},
			}, nil)},
		{name: "open pixel", method: http.MethodGet, target: "/wf/open?upn=px", headers: browser(),
			response: respondWith(200, []standin.Field{{Name: "Content-Type", Value: "image/gif"}, {Name: "Cache-Control", Value: "no-cache, no-store, must-revalidate"}, {Name: "Pragma", Value: "no-cache"}}, pixel)},
		{name: "not modified", method: http.MethodGet, target: "/img/logo.png", headers: browser(standin.Field{Name: "If-None-Match", Value: `"abc"`}),
			response: respondWith(304, []standin.Field{{Name: "Etag", Value: `"abc"`}}, nil)},
		{name: "origin 404", method: http.MethodGet, target: "/nope",
			response: respondWith(404, []standin.Field{{Name: "Content-Type", Value: "text/plain"}}, []byte("Invalid link security token\n"))},
		{name: "origin 503", method: http.MethodGet, target: "/busy",
			response: respondWith(503, []standin.Field{{Name: "Retry-After", Value: "120"}}, []byte("try later"))},
		{name: "origin server header is kept", method: http.MethodGet, target: "/f/a/b/c/d",
			response: respondWith(302, []standin.Field{{Name: "Server", Value: "msys-http"}, {Name: "Location", Value: "https://example.com/"}}, nil)},
		{name: "chunked response", method: http.MethodGet, target: "/stream", response: func() *standin.Response {
			r := respondWith(200, []standin.Field{{Name: "Content-Type", Value: "application/octet-stream"}}, randomBytes(1<<20))
			r.Chunked = true
			return r
		}()},
		{name: "repeated response headers", method: http.MethodGet, target: "/links",
			response: respondWith(200, []standin.Field{{Name: "Link", Value: "</a.css>; rel=preload"}, {Name: "Link", Value: "</b.js>; rel=preload"}, {Name: "X-Custom", Value: "v"}}, []byte("ok"))},
	}
}

// TestForwarding sends every exchange over HTTP/1.1, HTTP/2 and HTTP/3
// and checks that the origin received what the client sent, and the
// client received what the origin sent.
func TestForwarding(t *testing.T) {
	r := newRig(t, rigOptions{h3: true})
	parent := t
	h1 := r.rawClient(t)
	h2 := r.h2Client()
	h3 := r.h3Client(t)
	sent := make(map[string]int)
	for _, ex := range exchanges() {
		res := redirectResponse()
		if ex.response != nil {
			res = *ex.response
		}
		run := func(proto string, send func(*testing.T) clientResult) {
			sent[proto]++
			t.Run(proto+"/"+ex.name, func(t *testing.T) {
				r.respond(res)
				r.origin.Reset()
				before := r.origin.Count()
				got := send(t)
				checkExchange(t, r, ex, res, got, before, proto)
			})
		}
		run("h1", func(t *testing.T) clientResult {
			got := sendH1(t, h1, ex)
			// a chunked request body closes its connection (RFC 9112
			// section 6.1, see TestChunkedRequestClosesConnection)
			if closed := strings.EqualFold(got.headers.Get("Connection"), "close"); closed != ex.chunked {
				t.Errorf("response Connection %q after a request chunked=%v", got.headers.Get("Connection"), ex.chunked)
			}
			if ex.chunked {
				h1 = r.rawClient(parent)
			}
			return got
		})
		if !ex.h1Only {
			run("h2", func(t *testing.T) clientResult { return sendHTTP(t, h2, ex, 2) })
			run("h3", func(t *testing.T) clientResult { return sendHTTP(t, h3, ex, 3) })
		}
	}
	want := map[string]int{"h1": h1Exchanges, "h2": h2Exchanges, "h3": h3Exchanges}
	if !maps.Equal(sent, want) {
		t.Errorf("exchanges sent per protocol %v; the README states %v", sent, want)
	}
}

// TestForwardingCountsInReadme checks that the README states the
// number of exchanges TestForwarding sends over each protocol.
func TestForwardingCountsInReadme(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	if h2Exchanges != h3Exchanges {
		t.Fatalf("%d exchanges over HTTP/2, %d over HTTP/3: the README's sentence states one count for both", h2Exchanges, h3Exchanges)
	}
	claim := fmt.Sprintf("sends %d exchanges over HTTP/1.1, from a raw client writing exact bytes, and %d of them over HTTP/2, with Go's client, and over HTTP/3,", h1Exchanges, h2Exchanges)
	if !strings.Contains(text, claim) {
		t.Errorf("the README does not state %q", claim)
	}
}

// clientResult is what the client received.
type clientResult struct {
	status  int
	headers http.Header
	body    []byte
	interim []int
}

func sendH1(t *testing.T, c *standin.RawClient, ex exchange) clientResult {
	t.Helper()
	res, err := c.Do(standin.RawRequest{
		Method:         ex.method,
		Target:         ex.target,
		Host:           trackingDomain,
		Headers:        ex.headers,
		Body:           ex.body,
		Chunked:        ex.chunked,
		ExpectContinue: ex.expectContinue,
	}, 30*time.Second)
	if err != nil {
		t.Fatalf("HTTP/1.1 exchange: %v", err)
	}
	header := make(http.Header)
	for _, f := range res.Headers {
		header.Add(f.Name, f.Value)
	}
	return clientResult{status: res.Status, headers: header, body: res.Body, interim: res.Interim}
}

// sendHTTP sends ex with Go's client interface over HTTP/2 or HTTP/3,
// as major says, and fails if the response came over another protocol.
func sendHTTP(t *testing.T, client *http.Client, ex exchange, major int) clientResult {
	t.Helper()
	u, err := url.ParseRequestURI(ex.target)
	if err != nil {
		t.Fatalf("target %q: %v", ex.target, err)
	}
	u.Scheme, u.Host = "https", trackingDomain
	if u.RawPath != "" && !strings.HasPrefix(u.RawPath, "//") {
		// send the path exactly as written
		u.Opaque, u.Path, u.RawPath = u.RawPath, "", ""
	}
	var body io.Reader
	if ex.body != nil {
		body = bytes.NewReader(ex.body)
		if ex.chunked {
			body = io.MultiReader(bytes.NewReader(ex.body)) // hides the length
		}
	}
	var interim []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		interim = append(interim, code)
		return nil
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	req, err := http.NewRequestWithContext(ctx, ex.method, u.String(), body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL = u
	for _, f := range ex.headers {
		req.Header.Add(f.Name, f.Value)
	}
	if ex.expectContinue {
		req.Header.Set("Expect", "100-continue")
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // Go's client adds none then
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("HTTP/%d exchange: %v", major, err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != major {
		t.Fatalf("response came over %s, not HTTP/%d", res.Proto, major)
	}
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading HTTP/%d response: %v", major, err)
	}
	return clientResult{status: res.StatusCode, headers: res.Header, body: got, interim: interim}
}

// checkExchange compares both directions of one exchange.
func checkExchange(t *testing.T, r *rig, ex exchange, sent standin.Response, got clientResult, countBefore int, proto string) {
	t.Helper()
	rec, err := r.origin.Next(10 * time.Second)
	if err != nil {
		t.Fatalf("origin received nothing: %v", err)
	}
	if n := r.origin.Count() - countBefore; n != 1 {
		t.Errorf("origin received %d requests, want 1", n)
	}

	// request line: method and target byte for byte, HTTP/1.1 upstream
	if rec.Method != ex.method || rec.Target != ex.target || rec.Proto != "HTTP/1.1" {
		t.Errorf("origin request line %q, want %q", rec.RequestLine, ex.method+" "+ex.target+" HTTP/1.1")
	}
	// Host is the tracking domain; SNI is the origin's own name
	if hosts := rec.Values("Host"); !slices.Equal(hosts, []string{trackingDomain}) {
		t.Errorf("origin Host %q, want %q", hosts, trackingDomain)
	}
	if rec.SNI != "localhost" {
		t.Errorf("origin SNI %q, want the origin's name localhost", rec.SNI)
	}

	// end-to-end headers: the client's, in order; plus only X-Forwarded-*
	want := expectedOriginHeaders(ex, proto)
	gotHeaders := groupFields(rec.Headers, framing)
	if !headersEqual(gotHeaders, want) {
		t.Errorf("origin headers differ\n got: %v\nwant: %v", gotHeaders, want)
	}
	for _, name := range append(connectionNamed(ex), hopByHop...) {
		if values := rec.Values(name); len(values) > 0 && !slices.Equal(values, want[name]) {
			t.Errorf("hop-by-hop field %s %q reached the origin", name, values)
		}
	}
	if cl := rec.Values("Content-Length"); len(cl) > 0 && cl[0] != strconv.Itoa(len(ex.body)) {
		t.Errorf("origin Content-Length %q for a %d-byte body", cl, len(ex.body))
	}

	// body
	if rec.BodyLen != int64(len(ex.body)) || rec.BodySHA256 != sha(ex.body) {
		t.Errorf("origin body: %d bytes sha %s; client sent %d bytes sha %s", rec.BodyLen, rec.BodySHA256, len(ex.body), sha(ex.body))
	}
	// Caddy's HTTP/3 server, quic-go's, never sends 100 Continue
	if ex.expectContinue && proto != "h3" && !slices.Contains(got.interim, 100) {
		t.Errorf("client saw no 100 Continue (interim %v)", got.interim)
	}

	// response: status, headers and body unchanged
	if got.status != sent.Status {
		t.Errorf("client status %d, origin sent %d", got.status, sent.Status)
	}
	wantRes := groupFields(sent.Headers, notCompared)
	gotRes := make(map[string][]string)
	for name, values := range got.headers {
		if !notCompared[http.CanonicalHeaderKey(name)] {
			gotRes[http.CanonicalHeaderKey(name)] = values
		}
	}
	if !headersEqual(gotRes, wantRes) {
		t.Errorf("client response headers differ\n got: %v\nwant: %v", gotRes, wantRes)
	}
	wantBody := sent.Body
	if ex.method == http.MethodHead || sent.Status == 204 || sent.Status == 304 {
		wantBody = nil
	}
	if !bytes.Equal(got.body, wantBody) {
		t.Errorf("client body: %d bytes sha %s; origin sent %d bytes sha %s", len(got.body), sha(got.body), len(wantBody), sha(wantBody))
	}
	if ex.method == http.MethodHead && sent.Body != nil {
		if cl := got.headers.Get("Content-Length"); cl != strconv.Itoa(len(sent.Body)) {
			t.Errorf("HEAD Content-Length %q, origin sent %d", cl, len(sent.Body))
		}
	}
}

// connectionNamed returns the fields named in the client's Connection
// field, in canonical form.
func connectionNamed(ex exchange) []string {
	var names []string
	for _, f := range ex.headers {
		if http.CanonicalHeaderKey(f.Name) == "Connection" {
			for name := range strings.SplitSeq(f.Value, ",") {
				names = append(names, http.CanonicalHeaderKey(strings.TrimSpace(name)))
			}
		}
	}
	return names
}

// expectedOriginHeaders is the client's header block, sent over proto
// ("h1", "h2" or "h3"), as the origin should see it: hop-by-hop fields
// removed except "TE: trailers", X-Forwarded-* set.
func expectedOriginHeaders(ex exchange, proto string) map[string][]string {
	skip := make(map[string]bool)
	for _, name := range connectionNamed(ex) {
		skip[name] = true
	}
	want := make(map[string][]string)
	for _, f := range ex.headers {
		name := http.CanonicalHeaderKey(f.Name)
		if name == "Te" && f.Value == "trailers" {
			want[name] = []string{"trailers"}
		}
		if notCompared[name] || skip[name] {
			continue
		}
		want[name] = append(want[name], f.Value)
	}
	if ex.expectContinue && proto != "h2" {
		// Go's HTTP/2 server answers 100-continue itself and removes
		// Expect from the request
		want["Expect"] = []string{"100-continue"}
	}
	if proto != "h1" && len(want["Cookie"]) > 1 {
		// HTTP/2 and HTTP/3 servers join split cookie fields (RFC 9113
		// 8.2.3, RFC 9114 4.2.1)
		want["Cookie"] = []string{strings.Join(want["Cookie"], "; ")}
	}
	want["X-Forwarded-For"] = []string{"127.0.0.1"}
	want["X-Forwarded-Proto"] = []string{"https"}
	want["X-Forwarded-Host"] = []string{trackingDomain}
	return want
}

// groupFields groups header lines by canonical name, keeping the order
// of values, and leaves out the fields in skip.
func groupFields(fields []standin.Field, skip map[string]bool) map[string][]string {
	grouped := make(map[string][]string)
	for _, f := range fields {
		name := http.CanonicalHeaderKey(f.Name)
		if skip[name] {
			continue
		}
		grouped[name] = append(grouped[name], f.Value)
	}
	return grouped
}

func headersEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for name, values := range a {
		if !slices.Equal(values, b[name]) {
			return false
		}
	}
	return true
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
