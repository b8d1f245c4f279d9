package linktrack

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The fuzz targets run briefly in CI (see integration/fuzz_test.go);
// run one longer with, for example:
//
//	go test ./linktrack -run '^$' -fuzz '^FuzzRequestTarget$' -fuzztime 10m

// FuzzCaddyfile feeds the handler's and the app's Caddyfile parsers:
// they must never panic, and what they accept must encode to JSON.
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"linktrack customerio eu",
		"linktrack {\n upstream https://x.example:8443\n tls_server_name a.example\n dial_timeout 2s\n}",
		"linktrack sendgrid {\n scanners {\n user_agents Mimecast\n ignore_head\n }\n liveness_path /live\n}",
		"linktrack {\n origin esp https://10.0.0.5 {\n tls_server_name t.example\n }\n tenant a.example.com esp\n tenant *.b.example.com customerio eu {\n assetlinks x.json\n }\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		var h Handler
		if h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)) == nil {
			if _, err := json.Marshal(&h); err != nil {
				t.Fatalf("accepted handler does not encode: %v", err)
			}
		}
		var a App
		if a.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)) == nil {
			if _, err := json.Marshal(&a); err != nil {
				t.Fatalf("accepted app does not encode: %v", err)
			}
		}
	})
}

// FuzzTenantsFile feeds the tenants file decoder: it must never panic,
// and what it accepts must encode back.
func FuzzTenantsFile(f *testing.F) {
	f.Add([]byte(`{"tenants": [{"domain": "a.example.com", "provider": "sendgrid"}]}`))
	f.Add([]byte(`{"tenants": [{"domain": "b.example.com", "origin": "esp", "app_links": {"assetlinks": "x.json"}}]}`))
	f.Add([]byte(`{"tenants": []}`))
	f.Add([]byte(`{"tenants": [{}], "x": 1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		tenants, err := decodeTenants(raw)
		if err != nil {
			return
		}
		if _, err := json.Marshal(tenantsFileContent{Tenants: tenants}); err != nil {
			t.Fatalf("accepted tenants do not encode: %v", err)
		}
	})
}

// FuzzDomains checks domain and host canonicalization: the canonical
// form is lowercase, stable when canonicalized again, and the fast path
// for plain names agrees with IDNA.
func FuzzDomains(f *testing.F) {
	for _, seed := range []string{"Click.Brand-A.com.", "*.clicks.example.com", "klick.bücher.example", "xn--bcher-kva.example", "[::1]:443", "a.b:80", "1.2.3.4", "a..b", "-a.example"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if d, err := CanonicalDomain(name); err == nil {
			if d != strings.ToLower(d) {
				t.Fatalf("CanonicalDomain(%q) = %q is not lowercase", name, d)
			}
			if again, err := CanonicalDomain(d); err != nil || again != d {
				t.Fatalf("CanonicalDomain(%q) = %q, but again gives %q, %v", name, d, again, err)
			}
		}
		if isPlainDomain(name) {
			if ascii, err := domainProfile.ToASCII(name); err != nil || ascii != name {
				t.Fatalf("fast path accepts %q, IDNA gives %q, %v", name, ascii, err)
			}
		}
		if h, ok := CanonicalHost(name); ok {
			if again, ok := CanonicalHost(h); !ok || again != h {
				t.Fatalf("CanonicalHost(%q) = %q, but again gives %q", name, h, again)
			}
		}
	})
}

// FuzzRequestTarget checks that the request-target Go's client writes
// to the origin is the one Go's server parsed, byte for byte. The one
// documented exception, the README's known limit: a path that both
// begins with "//" and holds a byte Go considers invalid in a path.
func FuzzRequestTarget(f *testing.F) {
	for _, seed := range []string{
		"/p/a|b/x%2Fy", "/x%252Fy", "//a//b", "/a/./b/../c", "/a;p=1/b", "/a+b?q=a+b", "/%E2%9C%93/%e2%9c%93",
		"/q?x=%zz&a=1&a=2&bare&empty=", "/CL0/https:%2F%2Fshop.example%2F/1/Ab+c/d==", "/p?", "/p/!'()*^{}`\"",
		"//x%2Fy/a%252Fb?u=%2F", "//a|b/x%2Fy",
	} {
		f.Add(seed)
	}
	origin, _ := url.Parse("https://origin.example")
	p := &originProxy{url: origin}
	f.Fuzz(func(t *testing.T, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t\x00") {
			// absolute-form is turned into origin-form by design, and Go's
			// server rejects the rest before any handler runs
			return
		}
		in, err := url.ParseRequestURI(target)
		if err != nil {
			return // Go's server answers 400
		}
		out := &http.Request{Method: http.MethodGet, URL: p.originURL(in), Host: "link.example.com", Header: http.Header{}}
		var wire bytes.Buffer
		if err := out.Write(&wire); err != nil {
			return // e.g. a control character Go's client refuses to send
		}
		line, _ := bufio.NewReader(&wire).ReadString('\n')
		sent := strings.TrimSuffix(strings.TrimPrefix(line, "GET "), " HTTP/1.1\r\n")
		if sent == target {
			return
		}
		rawPath, _, _ := strings.Cut(target, "?")
		if strings.HasPrefix(rawPath, "//") && holdsByteGoEscapes(rawPath) {
			return // the documented limit
		}
		t.Fatalf("target %q was written to the origin as %q", target, sent)
	})
}

// holdsByteGoEscapes reports whether path holds a byte that Go's URL
// encoder refuses to write as is in a path, asking Go itself one byte at
// a time. A '%' in a parsed path always starts a valid escape.
func holdsByteGoEscapes(path string) bool {
	for i := range len(path) {
		if path[i] == '%' {
			continue
		}
		p := "/" + path[i:i+1]
		if (&url.URL{Path: p, RawPath: p}).EscapedPath() != p {
			return true
		}
	}
	return false
}
