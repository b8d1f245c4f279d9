package linktrack

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// writeRequest writes the request head, and a body of known small
// length, and flushes them together. The head has the bytes
// http.Transport writes for the same request: request line, Host,
// User-Agent, Content-Length, then the other fields sorted by name.
func (c *h1Conn) writeRequest(out *http.Request) error {
	bw := c.bw
	host, _ := outgoingHostField(out.Host) // checked by builtRequest.check
	method := writeRequestLine(bw, out.Method, out.URL, host)

	if ua, ok := out.Header["User-Agent"]; !ok {
		bw.WriteString("User-Agent: Go-http-client/1.1\r\n")
	} else if len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}

	hasBody := out.Body != nil && out.ContentLength > 0
	switch {
	case hasBody:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), out.ContentLength, 10))
		bw.WriteString("\r\n")
	case out.Body == nil && needsZeroLength(method):
		bw.WriteString("Content-Length: 0\r\n")
	}

	keys := c.keys[:0]
	for name := range out.Header {
		if !writtenFirst(name) {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys)
	for _, name := range keys {
		for _, v := range out.Header[name] {
			writeField(bw, name, v)
		}
	}
	clear(keys)
	c.keys = keys[:0]
	bw.WriteString("\r\n")

	if hasBody {
		if err := copyRequestBody(bw, out.Body, out.ContentLength); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// writeRequestLine writes the request line and the Host field, and
// returns the method written.
func writeRequestLine(bw *bufio.Writer, method string, u *url.URL, host string) string {
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	writeRequestTarget(bw, u)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	return method
}

// needsZeroLength reports whether a bodyless request of this method
// gets "Content-Length: 0": servers expect a length for these methods,
// and Go sends one.
func needsZeroLength(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

// writtenFirst reports whether a header field is written before the
// sorted fields, or never, whatever the header holds.
func writtenFirst(name string) bool {
	switch name {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// writeField writes one header field line.
func writeField(bw *bufio.Writer, name, value string) {
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(value))
	bw.WriteString("\r\n")
}

// copyRequestBody copies exactly n bytes of body into bw, straight
// into its buffer when they fit.
func copyRequestBody(bw *bufio.Writer, body io.Reader, n int64) error {
	if n <= int64(bw.Available()) {
		buf := bw.AvailableBuffer()[:n]
		if _, err := io.ReadFull(body, buf); err != nil {
			return err
		}
		_, err := bw.Write(buf)
		return err
	}
	copied, err := io.CopyN(bw, body, n)
	if err == io.EOF {
		return fmt.Errorf("http: ContentLength=%d with Body length %d", n, copied)
	}
	return err
}

// outgoingHostField returns the Host field's value as Go's client
// writes it: in punycode, without IPv6 zone, and empty when invalid.
func outgoingHostField(host string) (string, error) {
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil {
		return "", err
	}
	if !httpguts.ValidHostHeader(host) {
		return "", nil
	}
	if strings.HasPrefix(host, "[") {
		if i := strings.LastIndex(host, "]"); i >= 0 {
			if j := strings.LastIndex(host[:i], "%"); j >= 0 {
				host = host[:j] + host[i:]
			}
		}
	}
	return host, nil
}

// writeRequestTarget writes u.RequestURI() without building it.
func writeRequestTarget(bw *bufio.Writer, u *url.URL) {
	switch {
	case u.Opaque == "":
		bw.WriteString(targetPath(u))
	case strings.HasPrefix(u.Opaque, "//"):
		bw.WriteString(u.Scheme)
		bw.WriteByte(':')
		bw.WriteString(u.Opaque)
	default:
		bw.WriteString(u.Opaque)
	}
	if u.ForceQuery || u.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
}

// targetPath returns the path of the request-target, as
// u.RequestURI() writes it.
func targetPath(u *url.URL) string {
	if u.Opaque != "" {
		return u.Opaque
	}
	if path := u.EscapedPath(); path != "" {
		return path
	}
	return "/"
}

// hasControlByte reports whether s holds an ASCII control byte.
func hasControlByte(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}
