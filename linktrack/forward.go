package linktrack

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/net/http/httpguts"
)

// hopByHopHeaders are removed in both directions: they describe one
// connection, not the message. The same list as Caddy's reverse proxy.
var hopByHopHeaders = []string{
	"Alt-Svc",
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// outgoing is everything built for one request to the origin, in one
// allocation instead of six: the request, its URL, the values of the
// X-Forwarded-* fields and the empty body of a bodyless request.
type outgoing struct {
	req       http.Request
	url       url.URL
	forwarded [3]string
	unsent    unsentBody
}

// outgoingRequest builds the request sent to the origin. It shares the
// incoming request's context, body and header values, and never
// modifies the incoming request.
func (p *originProxy) outgoingRequest(w http.ResponseWriter, r *http.Request, host string, maxBodySize int64) *http.Request {
	o := new(outgoing)
	out := &o.req
	*out = *r
	p.setOriginURL(&o.url, r.URL)
	out.URL = &o.url
	out.Host = host
	out.RequestURI = ""
	out.Close = false
	out.Header = outgoingHeader(r, host, &o.forwarded)

	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		out.Body, out.ContentLength = nil, 0
		if p.guardReplay && replayable(r) {
			// never sent twice by the transport; see noreplay.go
			out.Body, out.TransferEncoding = &o.unsent, identityEncoding
		}
	default:
		out.Body = &clientBody{ReadCloser: http.MaxBytesReader(w, r.Body, maxBodySize)}
	}
	return out
}

// clientBody remembers why reading the client's body failed, so that a
// malformed or oversized body is told apart from an origin failure.
type clientBody struct {
	io.ReadCloser
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// originURL points the request-target at the origin while keeping the
// path and query exactly as the client sent them.
//
// Go's client writes URL.EscapedPath(), which re-escapes the whole
// decoded path when the raw path holds a byte Go considers invalid
// (such as '|' or '^'), turning %2F into '/'. URL.Opaque is written
// verbatim instead, so the raw path goes there. An opaque value that
// begins with "//" would be read as an authority, so such paths go
// through RawPath, which Go writes verbatim whenever it is a valid
// encoding; only a path that both begins with "//" and holds such a
// byte is re-escaped.
func (p *originProxy) originURL(in *url.URL) *url.URL {
	u := new(url.URL)
	p.setOriginURL(u, in)
	return u
}

// setOriginURL sets u to originURL(in) without allocating it.
func (p *originProxy) setOriginURL(u *url.URL, in *url.URL) {
	*u = url.URL{
		Scheme:     p.url.Scheme,
		Host:       p.url.Host,
		RawQuery:   in.RawQuery,
		ForceQuery: in.ForceQuery,
	}
	switch {
	case in.RawPath == "":
		// the client's path is Go's default encoding of the decoded path
		u.Path = in.Path
	case strings.HasPrefix(in.RawPath, "//"):
		u.Path, u.RawPath = in.Path, in.RawPath
	default:
		u.Opaque = in.RawPath
	}
}

// requestTarget returns the path and query of u as the client sent them.
func requestTarget(u *url.URL) string {
	target := u.RawPath
	if target == "" {
		target = u.EscapedPath()
	}
	if target == "" {
		target = "/"
	}
	if u.ForceQuery || u.RawQuery != "" {
		target += "?" + u.RawQuery
	}
	return target
}

// outgoingHeader returns the header sent to the origin: the client's
// end-to-end fields with their values in order, plus X-Forwarded-For,
// X-Forwarded-Proto and X-Forwarded-Host. Nothing else is added; in
// particular no User-Agent, Accept-Encoding or Via. The X-Forwarded-*
// values are stored in forwarded, which the caller allocates.
func outgoingHeader(r *http.Request, host string, forwarded *[3]string) http.Header {
	out := make(http.Header, len(r.Header)+3)
	for name, values := range r.Header {
		out[name] = values
	}
	keepTrailers := httpguts.HeaderValuesContainsToken(out["Te"], "trailers")
	removeHopByHop(out)
	if keepTrailers {
		out["Te"] = []string{"trailers"}
	}

	// Go's client writes a default User-Agent unless the field is
	// present; an empty value is present but never written
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = []string{""}
	}

	setForwarded(out, r, host, forwarded)
	return out
}

// setForwarded sets the X-Forwarded-* fields. Values sent by the client
// are kept only when the peer is one of the server's trusted_proxies;
// otherwise they are replaced, so clients cannot spoof their address.
// Each field's one value is stored in vals and the field holds a slice
// of it with no room to grow, so no append reaches a neighbour.
func setForwarded(header http.Header, r *http.Request, host string, vals *[3]string) {
	xff, sendXFF, proto := forwardedValues(r, header["X-Forwarded-For"], header["X-Forwarded-Proto"])
	if sendXFF {
		vals[0] = xff
		header["X-Forwarded-For"] = vals[0:1:1]
	} else {
		delete(header, "X-Forwarded-For")
	}
	vals[1], vals[2] = proto, host
	header["X-Forwarded-Proto"] = vals[1:2:2]
	header["X-Forwarded-Host"] = vals[2:3:3]
}

// forwardedValues returns the values of X-Forwarded-For, whether it is
// sent, and of X-Forwarded-Proto, given the client's own fields (after
// hop-by-hop removal). X-Forwarded-Host is always the tracking domain.
func forwardedValues(r *http.Request, priorFor, priorProto []string) (xff string, sendXFF bool, proto string) {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)

	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peer = ""
	}
	peer, _, _ = strings.Cut(peer, "%")

	switch {
	case trusted && len(priorFor) > 0 && peer != "":
		xff, sendXFF = strings.Join(priorFor, ", ")+", "+peer, true
	case trusted && len(priorFor) > 0:
		xff, sendXFF = strings.Join(priorFor, ", "), true
	case peer != "":
		xff, sendXFF = peer, true
	}

	proto = "https"
	if r.TLS == nil {
		proto = "http"
	}
	if trusted && len(priorProto) > 0 && priorProto[len(priorProto)-1] != "" {
		proto = priorProto[len(priorProto)-1]
	}
	return xff, sendXFF, proto
}

// removeHopByHop deletes hop-by-hop fields, including those named in
// the Connection field (RFC 9110 section 7.6.1).
func removeHopByHop(header http.Header) {
	for _, field := range header["Connection"] {
		for name := range strings.SplitSeq(field, ",") {
			if name = strings.TrimSpace(name); name != "" {
				delete(header, http.CanonicalHeaderKey(name))
			}
		}
	}
	for _, name := range hopByHopHeaders {
		delete(header, name)
	}
}

// CanonicalHost returns the tracking domain named by a Host value:
// lowercase, without port and without trailing dot. It reports false
// for an empty host.
func CanonicalHost(hostport string) (string, bool) {
	host := hostport
	if strings.HasPrefix(host, "[") {
		// IPv6 literal
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", false
		}
		host = host[:end+1]
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
		if strings.Contains(host, ":") {
			return "", false // a name has no ':' outside IPv6 brackets
		}
	}
	host = strings.TrimRight(host, ".")
	if host == "" {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host), true
		}
	}
	return host, true
}
