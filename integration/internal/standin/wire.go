package standin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits that keep the origin and the client bounded.
const (
	maxHeaderBytes = 1 << 20  // request line or status line plus header block; also chunk lines plus trailers
	maxBodyBytes   = 64 << 20 // de-chunked body
	maxKeptBody    = 64 << 10 // largest body kept in Received.Body
	bufferSize     = 64 << 10 // bufio buffer size for connections
)

var (
	errHeaderTooLarge = errors.New("standin: header block exceeds 1 MiB")
	errBodyTooLarge   = errors.New("standin: body exceeds 64 MiB")
)

// Field is one header line as seen on the wire.
type Field struct{ Name, Value string }

// values returns the values of all fields named name (case-insensitive), in order.
func values(fields []Field, name string) []string {
	var vs []string
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// hasField reports whether a field named name (case-insensitive) is present.
func hasField(fields []Field, name string) bool {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// hasToken reports whether any field named name carries token in its
// comma-separated list (both compared case-insensitively).
func hasToken(fields []Field, name, token string) bool {
	for _, v := range values(fields, name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// isChunked reports whether the final transfer coding among the given
// Transfer-Encoding values is "chunked".
func isChunked(te []string) bool {
	if len(te) == 0 {
		return false
	}
	codings := strings.Split(te[len(te)-1], ",")
	return strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked")
}

// contentLength returns the declared Content-Length, or -1 if there is none.
// Several Content-Length fields are accepted only if they agree.
func contentLength(fields []Field) (int64, error) {
	n := int64(-1)
	for _, v := range values(fields, "Content-Length") {
		m, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || m < 0 {
			return -1, fmt.Errorf("standin: invalid content-length %q", v)
		}
		if n >= 0 && m != n {
			return -1, fmt.Errorf("standin: conflicting content-length values %d and %d", n, m)
		}
		n = m
	}
	return n, nil
}

// readLine reads one line, strips its CRLF (or bare LF) terminator and
// charges the bytes read against *budget. At end of input it returns io.EOF
// if nothing was read and io.ErrUnexpectedEOF otherwise.
func readLine(br *bufio.Reader, budget *int) (string, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > *budget {
			return "", errHeaderTooLarge
		}
		*budget -= len(frag)
		line = append(line, frag...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line), nil
}

// parseField splits a header line at its first colon and trims optional
// whitespace around the value. A line without a colon becomes a field with
// that name and an empty value.
func parseField(line string) Field {
	name, value, ok := strings.Cut(line, ":")
	if !ok {
		return Field{Name: line}
	}
	return Field{Name: name, Value: strings.Trim(value, " \t")}
}

// readFields reads header lines up to and including the empty line that ends
// the block.
func readFields(br *bufio.Reader, budget *int) ([]Field, error) {
	var fields []Field
	for {
		line, err := readLine(br, budget)
		if err != nil {
			return fields, unexpectedEOF(err)
		}
		if line == "" {
			return fields, nil
		}
		fields = append(fields, parseField(line))
	}
}

// readChunked de-chunks a chunked body from br into w, accepting at most max
// body bytes, and returns the body length and the trailer fields.
func readChunked(br *bufio.Reader, w io.Writer, max int64) (int64, []Field, error) {
	budget := maxHeaderBytes
	var n int64
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return n, nil, fmt.Errorf("standin: read chunk size: %w", unexpectedEOF(err))
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return n, nil, err
		}
		if size == 0 {
			break
		}
		if size > max-n {
			return n, nil, errBodyTooLarge
		}
		m, err := io.CopyN(w, br, size)
		n += m
		if err != nil {
			return n, nil, fmt.Errorf("standin: read chunk data: %w", unexpectedEOF(err))
		}
		line, err = readLine(br, &budget)
		if err != nil {
			return n, nil, fmt.Errorf("standin: read chunk end: %w", unexpectedEOF(err))
		}
		if line != "" {
			return n, nil, fmt.Errorf("standin: chunk data followed by %q instead of CRLF", line)
		}
	}
	trailers, err := readFields(br, &budget)
	if err != nil {
		return n, trailers, fmt.Errorf("standin: read trailers: %w", err)
	}
	return n, trailers, nil
}

// parseChunkSize parses a chunk-size line, ignoring chunk extensions.
func parseChunkSize(line string) (int64, error) {
	s, _, _ := strings.Cut(line, ";")
	s = strings.TrimRight(s, " \t")
	if s == "" || len(s) > 15 {
		return 0, fmt.Errorf("standin: invalid chunk size line %q", line)
	}
	size, err := strconv.ParseInt(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("standin: invalid chunk size line %q: %w", line, err)
	}
	return size, nil
}

// readBodyN copies exactly n body bytes from br to w.
func readBodyN(br *bufio.Reader, w io.Writer, n int64) (int64, error) {
	if n > maxBodyBytes {
		return 0, errBodyTooLarge
	}
	m, err := io.CopyN(w, br, n)
	if err != nil {
		return m, fmt.Errorf("standin: read body: %w", unexpectedEOF(err))
	}
	return m, nil
}

// appendChunked appends body in chunked encoding, split into up to three
// chunks of uneven size, followed by the last chunk and the trailers.
func appendChunked(dst, body []byte, trailers []Field) []byte {
	n := len(body)
	cuts := []int{0, n / 2, n * 5 / 6, n}
	for i := 1; i < len(cuts); i++ {
		chunk := body[cuts[i-1]:cuts[i]]
		if len(chunk) == 0 {
			continue
		}
		dst = fmt.Appendf(dst, "%x\r\n", len(chunk))
		dst = append(dst, chunk...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "0\r\n"...)
	dst = appendFields(dst, trailers)
	return append(dst, "\r\n"...)
}

// appendFields appends each field as "Name: Value\r\n".
func appendFields(dst []byte, fields []Field) []byte {
	for _, f := range fields {
		dst = fmt.Appendf(dst, "%s: %s\r\n", f.Name, f.Value)
	}
	return dst
}

// unexpectedEOF turns io.EOF into io.ErrUnexpectedEOF, for reads that
// cannot legitimately end there.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
