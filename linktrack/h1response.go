package linktrack

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// readPlainResponse reads a response head of the plain shape most
// origins send, in a handful of allocations instead of
// http.ReadResponse's dozen: HTTP/1.1, a final status that has a body,
// one Content-Length, canonical field names, and none of the fields
// whose handling http.ReadResponse adjusts (Transfer-Encoding, Trailer,
// Pragma). For every other head, or when the head is not yet whole in
// the buffer, it returns nil and consumes nothing, so that
// http.ReadResponse reads the same bytes. The response it returns is
// the one http.ReadResponse returns; its body reads from br.
func readPlainResponse(br *bufio.Reader, out *http.Request, pr *plainResponse) *http.Response {
	if out.Method == http.MethodHead {
		return nil
	}
	head := peekHead(br)
	if head == nil || !pr.parse(head) {
		return nil
	}
	br.Discard(len(head))
	res := &pr.res
	res.Request = out
	pr.body = fixedBody{br: br, left: res.ContentLength}
	res.Body = &pr.body
	return res
}

// plainResponse is what the plain-head reader fills, one per
// connection: the response, its header map and its body, reused by the
// connection's next response. That one is read only after the body's
// Close handed the connection back, when the handler is done with this
// response. The field values are the response's own (the handler's
// header map keeps them); only the containers are reused.
type plainResponse struct {
	res    http.Response
	header http.Header
	body   fixedBody
}

// peekHead returns the bytes of the response head, up to its empty
// line, without consuming them, or nil if they do not fit in br's
// buffer, the connection failed first, or a line ends in a bare LF.
func peekHead(br *bufio.Reader) []byte {
	for {
		b, _ := br.Peek(br.Buffered())
		// the first empty line ends the head, whatever its line endings
		for i := bytes.IndexByte(b, '\n'); i >= 0 && i+1 < len(b); {
			switch {
			case b[i+1] == '\n':
				return nil
			case b[i+1] == '\r' && i+2 < len(b) && b[i+2] == '\n':
				if i == 0 || b[i-1] != '\r' {
					return nil
				}
				return b[:i+3]
			}
			j := bytes.IndexByte(b[i+1:], '\n')
			if j < 0 {
				break
			}
			i += 1 + j
		}
		if len(b) >= br.Size() {
			return nil
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return nil // http.ReadResponse meets the error again
		}
	}
}

// parse parses a whole response head of the plain shape into pr, or
// reports false.
func (pr *plainResponse) parse(head []byte) bool {
	s := string(head) // one allocation for every name and value
	line, rest, _ := strings.Cut(s, "\r\n")
	if len(line) < len("HTTP/1.1 200") || line[:9] != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return false
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return false
	}

	lines := strings.Count(rest, "\r\n") - 1
	if pr.header == nil {
		pr.header = make(http.Header, lines)
	}
	header := pr.header
	clear(header)
	values := make([]string, 0, lines) // backs every field's values, as textproto does
	length := int64(-1)
	for {
		var field string
		field, rest, _ = strings.Cut(rest, "\r\n")
		if field == "" {
			break
		}
		name, value, ok := strings.Cut(field, ":")
		if !ok || !canonicalToken(name) || !plainValue(value) {
			return false
		}
		value = strings.Trim(value, " \t")
		switch name {
		case "Transfer-Encoding", "Trailer", "Pragma":
			return false
		case "Content-Length":
			if length >= 0 || len(value) == 0 || len(value) > 18 {
				return false
			}
			length = 0
			for _, c := range []byte(value) {
				if c < '0' || c > '9' {
					return false
				}
				length = length*10 + int64(c-'0')
			}
		}
		if prior := header[name]; len(prior) > 0 {
			// repeated lines: their values in order, in one slice that
			// may grow past the shared backing
			header[name] = append(prior[:len(prior):len(prior)], value)
			continue
		}
		values = append(values, value)
		header[name] = values[len(values)-1 : len(values) : len(values)]
	}
	if length < 0 {
		return false
	}

	pr.res = http.Response{
		Status:        line[9:],
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		ContentLength: length,
	}
	if httpguts.HeaderValuesContainsToken(header["Connection"], "close") {
		// as http.ReadResponse: the field goes, the connection closes
		pr.res.Close = true
		delete(header, "Connection")
	}
	return true
}

// canonicalToken reports whether name is a field name already in the
// canonical form http.CanonicalHeaderKey gives it.
func canonicalToken(name string) bool {
	if name == "" {
		return false
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z':
			if upper {
				return false
			}
		case 'A' <= c && c <= 'Z':
			if !upper {
				return false
			}
		case '0' <= c && c <= '9', c == '-':
		case strings.IndexByte("!#$%&'*+.^_`|~", c) >= 0:
		default:
			return false
		}
		upper = c == '-'
	}
	return true
}

// plainValue reports whether a field value holds no control byte but
// tab, so http.ReadResponse would take it as it is, trimmed.
func plainValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// fixedBody is a response body of known length, read straight from the
// connection's buffer: io.EOF with its last bytes, and
// io.ErrUnexpectedEOF if the connection ends before them, as
// http.ReadResponse's body does.
type fixedBody struct {
	br   *bufio.Reader
	left int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: h1Body decides the connection's fate.
func (b *fixedBody) Close() error { return nil }
