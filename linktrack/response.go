package linktrack

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// writeResponse copies the origin's response to the client unchanged:
// status, end-to-end headers (Location and Set-Cookie included), body
// bytes and trailers. Redirects are never followed; nothing is cached
// or decompressed. Caddy's own Server header gives way to the origin's.
func (p *originProxy) writeResponse(w http.ResponseWriter, r *http.Request, res *http.Response, guard clientGuard) error {
	defer res.Body.Close()

	header := w.Header()
	delete(header, "Server")
	removeHopByHop(res.Header)
	for name, values := range res.Header {
		header[name] = values
	}
	if _, ok := res.Header["Content-Type"]; !ok {
		// a nil value stops net/http from sniffing and adding one
		header["Content-Type"] = nil
	}
	if len(res.Trailer) > 0 {
		names := make([]string, 0, len(res.Trailer))
		for name := range res.Trailer {
			names = append(names, name)
		}
		header["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(res.StatusCode)

	// flush as data arrives when the origin streams a body of unknown
	// length; otherwise let the server buffer small bodies
	body := w
	if guard.timeout > 0 {
		var done func()
		body, done = guard.guardWriter(w, r, res)
		defer done()
	}
	if err := p.copyBody(body, res.Body, res.ContentLength < 0); err != nil {
		if c := p.logger.Check(zap.WarnLevel, "aborting incomplete response from origin"); c != nil {
			c.Write(zap.Error(err))
		}
		// headers are out: the only honest signal left is to abort
		// the stream, as Go's and Caddy's proxies do
		panic(http.ErrAbortHandler)
	}

	for name, values := range res.Trailer {
		header[http.TrailerPrefix+name] = values
	}
	return nil
}

// copyBody streams src to w with a pooled buffer. An error writing to
// the client says so; an error reading src is returned as it is.
func (p *originProxy) copyBody(w http.ResponseWriter, src io.Reader, flush bool) error {
	bufp := p.bufPool.Get().(*[]byte)
	defer p.bufPool.Put(bufp)
	buf := *bufp

	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, readErr := src.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("writing to the client: %w", err)
			}
			if rc != nil {
				if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return fmt.Errorf("writing to the client: %w", err)
				}
			}
		}
		if readErr == io.EOF {
			return nil
		}
		if readErr != nil {
			return readErr
		}
	}
}
