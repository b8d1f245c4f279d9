package linktrack

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// clickHead is a bodyless request to the origin whose head the lean
// client writes straight from the incoming request: the bytes
// http.Transport writes for the request outgoingRequest would build,
// without building that request or its header map. The client's
// fields are read where they are; hop-by-hop fields, those named in
// Connection and the client's X-Forwarded-* are skipped, and the
// proxy's own fields are merged into the sorted order.
type clickHead struct {
	in      *http.Request
	target  url.URL // the request-target, as originURL sets it
	host    string  // the tracking domain, sent as Host and X-Forwarded-Host
	nilBody bool    // outgoingRequest leaves Body nil: no replay guard

	// the fields named in Connection, canonical
	named []string

	keepTrailers bool
	sendXFF      bool
	xff, proto   string
}

// bodylessClick reports whether r carries no body, so that its head
// alone is the request to the origin.
func bodylessClick(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
}

// clickHead returns the head of the bodyless request r for the origin.
func (p *originProxy) clickHead(r *http.Request, host string) *clickHead {
	h := &clickHead{in: r, host: host, nilBody: !(p.guardReplay && replayable(r))}
	p.setOriginURL(&h.target, r.URL)
	for _, field := range r.Header["Connection"] {
		for name := range strings.SplitSeq(field, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.named = append(h.named, http.CanonicalHeaderKey(name))
			}
		}
	}
	h.keepTrailers = httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers")
	h.xff, h.sendXFF, h.proto = forwardedValues(r, h.field("X-Forwarded-For"), h.field("X-Forwarded-Proto"))
	return h
}

// dropped reports whether the client's field name does not reach the
// origin as the client sent it: hop-by-hop, named in Connection, or
// set by the proxy.
func (h *clickHead) dropped(name string) bool {
	switch name {
	case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host":
		return true
	}
	return slices.Contains(hopByHopHeaders, name) || slices.Contains(h.named, name)
}

// field returns the client's values of name unless it is hop-by-hop.
func (h *clickHead) field(name string) []string {
	if slices.Contains(hopByHopHeaders, name) || slices.Contains(h.named, name) {
		return nil
	}
	return h.in.Header[name]
}

func (h *clickHead) request() *http.Request { return h.in }
func (h *clickHead) bodyless() bool         { return true }

// check refuses what checkOutgoing refuses in the built request.
func (h *clickHead) check() error {
	if h.in.Method != "" && !httpguts.ValidHeaderFieldName(h.in.Method) {
		return fmt.Errorf("net/http: invalid method %q", h.in.Method)
	}
	for name, values := range h.in.Header {
		if h.dropped(name) {
			continue
		}
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("net/http: invalid header field name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				// the value may be sensitive: not in the error
				return fmt.Errorf("net/http: invalid header field value for %q", name)
			}
		}
	}
	switch {
	case !httpguts.ValidHeaderFieldValue(h.xff):
		return errors.New(`net/http: invalid header field value for "X-Forwarded-For"`)
	case !httpguts.ValidHeaderFieldValue(h.proto):
		return errors.New(`net/http: invalid header field value for "X-Forwarded-Proto"`)
	case !httpguts.ValidHeaderFieldValue(h.host):
		return errors.New(`net/http: invalid header field value for "X-Forwarded-Host"`)
	}
	if hasControlByte(targetPath(&h.target)) || hasControlByte(h.target.RawQuery) {
		return errors.New("net/http: can't write control character in Request.URL")
	}
	_, err := outgoingHostField(h.host)
	return err
}

// write writes the head as writeRequest writes the built request.
func (h *clickHead) write(c *h1Conn) error {
	bw := c.bw
	host, _ := outgoingHostField(h.host) // checked by check
	method := writeRequestLine(bw, h.in.Method, &h.target, host)

	// an absent User-Agent is sent as present and empty: none is written
	if ua := h.field("User-Agent"); len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}
	if h.nilBody && needsZeroLength(method) {
		bw.WriteString("Content-Length: 0\r\n")
	}

	keys := c.keys[:0]
	for name := range h.in.Header {
		if !writtenFirst(name) && !h.dropped(name) {
			keys = append(keys, name)
		}
	}
	if h.keepTrailers {
		keys = append(keys, "Te")
	}
	if h.sendXFF {
		keys = append(keys, "X-Forwarded-For")
	}
	keys = append(keys, "X-Forwarded-Host", "X-Forwarded-Proto")
	slices.Sort(keys)
	for _, name := range keys {
		switch name {
		case "Te":
			writeField(bw, name, "trailers")
		case "X-Forwarded-For":
			writeField(bw, name, h.xff)
		case "X-Forwarded-Host":
			writeField(bw, name, h.host)
		case "X-Forwarded-Proto":
			writeField(bw, name, h.proto)
		default:
			for _, v := range h.in.Header[name] {
				writeField(bw, name, v)
			}
		}
	}
	clear(keys)
	c.keys = keys[:0]
	bw.WriteString("\r\n")
	return bw.Flush()
}

// Interface guards
var (
	_ h1Request = (*clickHead)(nil)
	_ h1Request = (*builtRequest)(nil)
)
