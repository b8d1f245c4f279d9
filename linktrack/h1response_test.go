package linktrack

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestPlainResponseReadsWhatReadResponseReads: for each response, the
// lean client's plain-head reader either gives what http.ReadResponse
// gives (status, fields, length, keep-alive, body and its errors) and
// leaves the connection where it does, or reads nothing and leaves the
// head to http.ReadResponse.
func TestPlainResponseReadsWhatReadResponseReads(t *testing.T) {
	const body = `<a href="https://shop.example.com/p">Found</a>.`
	for _, tc := range []struct {
		name, raw string
		plain     bool // read by the plain-head reader
	}{
		{"redirect", "HTTP/1.1 302 Found\r\nLocation: https://shop.example.com/p?utm_source=email\r\nContent-Type: text/html; charset=utf-8\r\nDate: Mon, 30 Nov 2026 06:00:00 GMT\r\nContent-Length: 47\r\n\r\n" + body + "NEXT", true},
		{"set-cookie lines and spaces", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-A:tight\r\nSet-Cookie: b=2 \t\r\nX-Empty:\r\nSet-Cookie:  c=3\r\nContent-Length: 0\r\n\r\n", true},
		{"connection close", "HTTP/1.1 302 Found\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nLocation: /x\r\nContent-Length: 3\r\n\r\nabc", true},
		{"connection keep-alive", "HTTP/1.1 302 Found\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nLocation: /x\r\nContent-Length: 3\r\n\r\nabc", true},
		{"no reason", "HTTP/1.1 404\r\nContent-Length: 2\r\n\r\nno", true},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true},
		{"tokens and digits", "HTTP/1.1 200 OK\r\nX-1st_b.c~d: v\r\nContent-Md5: x\r\nContent-Length: 1\r\n\r\nz", true},
		{"lowercase name", "HTTP/1.1 200 OK\r\nlocation: /x\r\nContent-Length: 0\r\n\r\n", false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
		{"no length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", false},
		{"pragma", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n", false},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"no content", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false},
		{"continue first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n", false},
		{"space before colon", "HTTP/1.1 200 OK\r\nX-A : one\r\nContent-Length: 0\r\n\r\n", false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", false},
		{"bare LF end", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n", false},
		{"control byte", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n", false},
		{"truncated head", "HTTP/1.1 200 OK\r\nContent-Le", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				req, _ := http.NewRequest(method, "http://origin.example/", nil)
				want, wantBody, wantErr, wantRest := readWith(t, tc.raw, func(br *bufio.Reader) (*http.Response, error) {
					return http.ReadResponse(br, req)
				})
				var pr plainResponse
				plain := false
				got, gotBody, gotErr, gotRest := readWith(t, tc.raw, func(br *bufio.Reader) (*http.Response, error) {
					if res := readPlainResponse(br, req, &pr); res != nil {
						plain = true
						return res, nil
					}
					return http.ReadResponse(br, req)
				})
				if wantPlain := tc.plain && method == http.MethodGet; plain != wantPlain {
					t.Fatalf("%s: read by the plain-head reader: %v, want %v", method, plain, wantPlain)
				}
				if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
					t.Fatalf("%s: error %v, http.ReadResponse's %v", method, gotErr, wantErr)
				}
				if want == nil {
					return
				}
				for _, f := range []struct {
					name      string
					got, want any
				}{
					{"status", got.Status, want.Status},
					{"status code", got.StatusCode, want.StatusCode},
					{"proto", got.Proto, want.Proto},
					{"header", got.Header, want.Header},
					{"length", got.ContentLength, want.ContentLength},
					{"close", got.Close, want.Close},
					{"trailer", got.Trailer, want.Trailer},
					{"transfer-encoding", got.TransferEncoding, want.TransferEncoding},
					{"body", gotBody, wantBody},
					{"rest", gotRest, wantRest},
				} {
					if !reflect.DeepEqual(f.got, f.want) {
						t.Errorf("%s: %s %#v, http.ReadResponse's %#v", method, f.name, f.got, f.want)
					}
				}
			}
		})
	}
}

// readWith reads a response from raw with read, then its body, and
// returns them, the body's error and what is left on the connection.
func readWith(t *testing.T, raw string, read func(*bufio.Reader) (*http.Response, error)) (*http.Response, string, error, string) {
	t.Helper()
	br := bufio.NewReaderSize(iotestHalfReader{strings.NewReader(raw)}, 4096)
	res, err := read(br)
	if err != nil {
		return nil, "", err, ""
	}
	b, bodyErr := io.ReadAll(res.Body)
	if bodyErr != nil {
		b = append(b, "; error: "+bodyErr.Error()...)
	}
	rest, _ := io.ReadAll(br)
	return res, string(b), nil, string(rest)
}

// iotestHalfReader returns the bytes of a few at a time, as a
// connection may, then io.EOF.
type iotestHalfReader struct{ r io.Reader }

func (h iotestHalfReader) Read(p []byte) (int, error) {
	if len(p) > 7 {
		p = p[:7]
	}
	n, err := h.r.Read(p)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

// TestPlainResponseReuseKeepsValues: a connection's next response reuses
// the response and its header map, never the values a handler copied
// from the previous one, which Caddy may still read (an access log of
// the response's fields, after the handler returns).
func TestPlainResponseReuseKeepsValues(t *testing.T) {
	var pr plainResponse
	read := func(raw string) http.Header {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://origin.example/", nil)
		res := readPlainResponse(bufio.NewReader(strings.NewReader(raw)), req, &pr)
		if res == nil {
			t.Fatalf("not read as a plain head: %q", raw)
		}
		copied := make(http.Header)
		for name, values := range res.Header {
			copied[name] = values // as writeResponse does
		}
		return copied
	}
	first := read("HTTP/1.1 302 Found\r\nLocation: /first\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n\r\n")
	second := read("HTTP/1.1 200 OK\r\nLocation: /second\r\nSet-Cookie: b=2\r\nX-More: 1\r\nContent-Length: 0\r\n\r\n")
	if got := first["Location"]; len(got) != 1 || got[0] != "/first" {
		t.Errorf("first response's Location after the second was read: %q", got)
	}
	if got := first["Set-Cookie"]; len(got) != 1 || got[0] != "a=1" {
		t.Errorf("first response's Set-Cookie after the second was read: %q", got)
	}
	if _, ok := first["X-More"]; ok {
		t.Error("first response's fields gained the second's X-More")
	}
	if got := second["Location"]; len(got) != 1 || got[0] != "/second" {
		t.Errorf("second response's Location: %q", got)
	}
	if pr.res.StatusCode != http.StatusOK || len(pr.header) != 4 {
		t.Errorf("reused response: status %d, %d fields, want 200 and 4", pr.res.StatusCode, len(pr.header))
	}
}
