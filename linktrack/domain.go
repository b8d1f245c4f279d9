package linktrack

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// domainProfile converts registry domains to their ASCII form. It is
// the profile browsers use to look names up: it lowercases, maps
// Unicode input to punycode, and rejects what DNS cannot hold.
var domainProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(true),
	idna.VerifyDNSLength(true),
)

// CanonicalDomain checks a tenant domain and returns its canonical form:
// lowercase ASCII, IDNA input as punycode, no trailing dot. A leading
// "*." makes a one-label wildcard above a name of at least two labels
// (`*.clicks.example.com`). IP addresses, ports, paths and other
// wildcard forms are rejected.
func CanonicalDomain(name string) (string, error) {
	raw := strings.TrimSuffix(strings.TrimSpace(name), ".")
	if raw == "" {
		return "", fmt.Errorf("domain is empty")
	}
	if _, err := netip.ParseAddr(strings.Trim(raw, "[]")); err == nil {
		return "", fmt.Errorf("'%s' is an IP address; tenants are domain names", name)
	}
	wildcard := strings.HasPrefix(raw, "*.")
	if wildcard {
		raw = raw[2:]
	}
	if strings.ContainsAny(raw, "*") {
		return "", fmt.Errorf("'%s': only a whole leading label may be a wildcard, as in *.clicks.example.com", name)
	}
	if strings.ContainsAny(raw, ":/?#@[] ") {
		return "", fmt.Errorf("'%s' is not a domain name (no scheme, port or path)", name)
	}
	ascii, err := domainProfile.ToASCII(raw)
	if err != nil {
		return "", fmt.Errorf("'%s' is not a valid domain name: %v", name, err)
	}
	if !strings.Contains(ascii, ".") {
		return "", fmt.Errorf("'%s' has a single label; a tracking domain has at least two", name)
	}
	if wildcard {
		return "*." + ascii, nil
	}
	return ascii, nil
}
