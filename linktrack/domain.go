package linktrack

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

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
	raw := strings.TrimRight(strings.TrimSpace(name), ".")
	if raw == "" {
		return "", fmt.Errorf("domain is empty")
	}
	if !utf8.ValidString(raw) {
		return "", fmt.Errorf("'%s' is not valid UTF-8", name)
	}
	if _, err := netip.ParseAddr(strings.Trim(raw, "[]")); err == nil {
		return "", fmt.Errorf("'%s' is an IP address; tenants are domain names", name)
	}
	if isPlainDomain(raw) {
		return raw, nil
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
	if strings.Contains(ascii, "..") || strings.HasPrefix(ascii, ".") {
		return "", fmt.Errorf("'%s' has an empty label", name)
	}
	if last := ascii[strings.LastIndexByte(ascii, '.')+1:]; strings.Trim(last, "0123456789") == "" {
		return "", fmt.Errorf("'%s' ends in a numeric label; it is not a domain name", name)
	}
	if wildcard {
		return "*." + ascii, nil
	}
	return ascii, nil
}

// isPlainDomain reports whether name is already a canonical domain that
// IDNA would leave unchanged: lowercase ASCII letters, digits and
// hyphens, at least two labels of 1 to 63 bytes that neither start nor
// end with a hyphen, no punycode label, at most 253 bytes. It saves the
// IDNA conversion for the common case, which matters for a million
// tenants.
func isPlainDomain(name string) bool {
	if len(name) > 253 {
		return false
	}
	labels, start := 0, 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' {
			c := name[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
			continue
		}
		label := name[start:i]
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			(len(label) >= 4 && label[2] == '-' && label[3] == '-') {
			return false
		}
		labels++
		start = i + 1
	}
	if labels < 2 {
		return false
	}
	// an all-numeric last label would make an IPv4 address or worse
	last := name[strings.LastIndexByte(name, '.')+1:]
	return strings.TrimLeft(last, "0123456789") != ""
}
