package linktrack

import (
	"net/http"
	"net/url"
	"testing"
)

func TestCanonicalHost(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"link.example.com", "link.example.com", true},
		{"LINK.Example.COM", "link.example.com", true},
		{"link.example.com:443", "link.example.com", true},
		{"link.example.com.", "link.example.com", true},
		{"Link.Example.com.:8443", "link.example.com", true},
		{"[::1]:443", "[::1]", true},
		{"127.0.0.1:80", "127.0.0.1", true},
		{"", "", false},
		{":443", "", false},
		{"[::1", "", false},
		{"..", "", false},
		{"::", "", false},
		{"a:b:443", "", false},
		{"link.example.com..", "link.example.com", true},
	} {
		got, ok := CanonicalHost(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CanonicalHost(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestOriginURLKeepsRequestTarget checks, through Go's own request
// writer, that the request-target written to the origin is the one the
// server parsed, byte for byte.
func TestOriginURLKeepsRequestTarget(t *testing.T) {
	origin, _ := url.Parse("https://origin.example")
	p := &originProxy{url: origin}
	for _, target := range []string{
		"/",
		"/p/a|b/x%2Fy",
		"/x%2Fy",
		"/x%2fy",
		"/x%252Fy",
		"//double//slash",
		"//x%2Fy",
		"/a/./b/../c",
		"/a;param=1/b;c=2",
		"/a+b/c+d?q=a+b",
		"/%E2%9C%93/%e2%9c%93",
		"/p/!'()*/^{}`",
		"/CL0/https:%2F%2Fshop.example%2F%3Futm_source=x/1/AbC+dE/f==",
		"/p?",
		"/p?a=1&a=2&bare&empty=&=v&x=%zz&y=%2F",
		"*",
	} {
		in, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		got := p.originURL(in).RequestURI()
		if got != target {
			t.Errorf("request-target %q written as %q", target, got)
		}
		if got := requestTarget(in); got != target && target != "*" {
			t.Errorf("requestTarget(%q) = %q", target, got)
		}
	}
}

func TestRemoveHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":          {"keep-alive, X-Secret", "Upgrade"},
		"X-Secret":            {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Authorization": {"Basic x"},
		"Te":                  {"trailers"},
		"Upgrade":             {"websocket"},
		"Transfer-Encoding":   {"chunked"},
		"Cookie":              {"a=1", "b=2"},
		"Accept-Language":     {"de"},
	}
	removeHopByHop(h)
	if len(h) != 2 || len(h["Cookie"]) != 2 || h.Get("Accept-Language") != "de" {
		t.Errorf("unexpected header after removal: %v", h)
	}
}
