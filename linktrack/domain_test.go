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
		{in: strings.Repeat("a", 64) + ".example.com", wantErr: "not a valid domain name"},
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
