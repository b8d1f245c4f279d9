package linktrack

import (
	"strings"
	"testing"
)

func TestCanonicalDomain(t *testing.T) {
	for _, tc := range []struct {
		in, want, wantErr string
	}{
		{in: "click.brand-a.com", want: "click.brand-a.com"},
		{in: "Click.Brand-A.COM.", want: "click.brand-a.com"},
		{in: "  links.example.org ", want: "links.example.org"},
		{in: "klick.bücher.example", want: "klick.xn--bcher-kva.example"},
		{in: "KLICK.BÜCHER.EXAMPLE", want: "klick.xn--bcher-kva.example"},
		{in: "klick.xn--bcher-kva.example", want: "klick.xn--bcher-kva.example"},
		{in: "*.clicks.example.com", want: "*.clicks.example.com"},
		{in: "*.Clicks.Example.com.", want: "*.clicks.example.com"},
		{in: "", wantErr: "empty"},
		{in: "203.0.113.7", wantErr: "IP address"},
		{in: "[2001:db8::1]", wantErr: "IP address"},
		{in: "2001:db8::1", wantErr: "IP address"},
		{in: "localhost", wantErr: "single label"},
		{in: "*.com", wantErr: "single label"},
		{in: "a.*.example.com", wantErr: "whole leading label"},
		{in: "*example.com", wantErr: "whole leading label"},
		{in: "**.example.com", wantErr: "whole leading label"},
		{in: "link.example.com:443", wantErr: "no scheme, port or path"},
		{in: "https://link.example.com", wantErr: "no scheme, port or path"},
		{in: "link.example.com/x", wantErr: "no scheme, port or path"},
		{in: "bad_name.example.com", wantErr: "not a valid domain name"},
		{in: "0.0\xbc0", wantErr: "not valid UTF-8"},
		{in: "0000..", wantErr: "single label"},
		{in: "a..example.com", wantErr: "not a valid domain name"},
		{in: "a.b.123", wantErr: "numeric label"},
		{in: "link.example.com..", want: "link.example.com"},
		{in: "-lead.example.com", wantErr: "not a valid domain name"},
		{in: strings.Repeat("a", 64) + ".example.com", wantErr: "a label of 64 bytes"},
		{in: strings.Repeat("a", 63) + ".example.com", want: strings.Repeat("a", 63) + ".example.com"},
		{in: strings.Repeat("bücher", 10) + ".example.com", wantErr: "a label has at most 63"},         // 60 letters, more in punycode
		{in: strings.Repeat("abcdefghi.", 25) + "com", want: strings.Repeat("abcdefghi.", 25) + "com"}, // 253 bytes
		{in: strings.Repeat("abcdefghi.", 25) + "comx", wantErr: "254 bytes long; a domain name has at most 253"},
		{in: strings.Repeat("abcdefghi.", 25) + "com.", want: strings.Repeat("abcdefghi.", 25) + "com"}, // the final dot is not counted
		{in: strings.Repeat("bücher.", 36) + "com", wantErr: "bytes long; a domain name has at most 253"},
		{in: "a\u200d.example.com", wantErr: "no punycode form"},     // a joiner out of context
		{in: "x\U000E0001.example.com", wantErr: "no punycode form"}, // a disallowed rune
		{in: "\u0627b.example.com", wantErr: "no punycode form"},     // right-to-left and left-to-right mixed
		{in: "[::1]", wantErr: "IP address"},
		{in: "::ffff:192.0.2.1", wantErr: "IP address"},
	} {
		got, err := CanonicalDomain(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("CanonicalDomain(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CanonicalDomain(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestPlainDomainFastPath checks that the fast path agrees with IDNA on
// every name it accepts.
func TestPlainDomainFastPath(t *testing.T) {
	for _, name := range []string{
		"click.brand-a.com", "a.b", "x1.y2.z3", "click1234.brand77.example.com",
		"a--b.example.com", "xn--bcher-kva.example", "-a.example.com", "a-.example.com",
		"a..b", ".a.b", "a.b.", "1.2.3.4", "a.123", "UPPER.example.com", "a_b.example.com",
		strings.Repeat("a", 63) + ".com", strings.Repeat("a", 64) + ".com",
	} {
		if !isPlainDomain(name) {
			continue
		}
		want, err := domainProfile.ToASCII(name)
		if err != nil || want != name {
			t.Errorf("fast path accepts %q, but IDNA gives %q, %v", name, want, err)
		}
	}
}

func TestCheckNotPublicSuffix(t *testing.T) {
	for _, tc := range []struct{ in, wantErr string }{
		{in: "co.uk", wantErr: "'co.uk' is a public suffix"},
		{in: "github.io", wantErr: "is a public suffix"}, // a private-section suffix
		{in: "*.co.uk", wantErr: "every name under the public suffix 'co.uk'"},
		{in: "brand.co.uk"},
		{in: "click.brand.co.uk"},
		{in: "*.clicks.brand.co.uk"},
		{in: "pages.github.io"},
		{in: "click.brand.test"},
	} {
		domain, err := CanonicalDomain(tc.in)
		if err != nil {
			t.Fatalf("CanonicalDomain(%q): %v", tc.in, err)
		}
		err = checkNotPublicSuffix(domain)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("checkNotPublicSuffix(%q) = %v; want %q", tc.in, err, tc.wantErr)
		}
	}
}
