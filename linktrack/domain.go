package linktrack

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// Lengths DNS allows a domain name in its ASCII form, without the final
// dot.
const (
	maxDomainLength = 253
	maxLabelLength  = 63
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

// lenientProfile is domainProfile without the checks of lengths, bidi
// and STD3 rules: when domainProfile refuses a name, its ASCII form
// tells which length, if any, is at fault.
var lenientProfile = idna.New(idna.MapForLookup(), idna.Transitional(false))

// CanonicalDomain checks a tenant domain and returns its canonical form:
// lowercase ASCII, IDNA input as punycode, no trailing dot. A leading
// "*." makes a one-label wildcard above a name of at least two labels
// (`*.clicks.example.com`). IP addresses, ports, paths, other wildcard
// forms, labels over 63 bytes and names over 253 bytes (in ASCII) are
// rejected, and so is Unicode with no punycode form; the error names
// the fault.
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
		return "", domainError(name, raw, err)
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
	if len(name) > maxDomainLength {
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
		if len(label) == 0 || len(label) > maxLabelLength || label[0] == '-' || label[len(label)-1] == '-' ||
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

// domainError explains why domainProfile refused raw (name as given):
// a name or label too long, Unicode with no punycode form, or another
// fault IDNA names.
func domainError(name, raw string, err error) error {
	if ascii, lerr := lenientProfile.ToASCII(raw); lerr == nil || ascii != "" {
		if len(ascii) > maxDomainLength {
			return fmt.Errorf("'%s' is %d bytes long; a domain name has at most %d", shorten(name), len(ascii), maxDomainLength)
		}
		for _, label := range strings.Split(ascii, ".") {
			if len(label) > maxLabelLength {
				return fmt.Errorf("'%s' has a label of %d bytes, '%s'; a label has at most %d", shorten(name), len(label), shorten(label), maxLabelLength)
			}
		}
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] >= utf8.RuneSelf {
			return fmt.Errorf("'%s' is not a valid internationalized domain name; it has no punycode form: %v", shorten(name), err)
		}
	}
	return fmt.Errorf("'%s' is not a valid domain name: %v", shorten(name), err)
}

// shorten cuts a name quoted in an error to 80 bytes.
func shorten(s string) string {
	if len(s) <= 80 {
		return s
	}
	cut := 77
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// checkNotPublicSuffix refuses a canonical domain that is a public
// suffix (co.uk, github.io) or a wildcard right below one (*.co.uk):
// no one tenant owns it, and no CA issues for it. It costs a lookup in
// the public suffix list (about half a microsecond), so the admin API
// asks it of every domain it is sent, while a tenants file of a million
// entries, the operator's own, is not asked.
func checkNotPublicSuffix(domain string) error {
	name := strings.TrimPrefix(domain, "*.")
	if suffix, _ := publicsuffix.PublicSuffix(name); suffix == name {
		if name != domain {
			return fmt.Errorf("'%s' would cover every name under the public suffix '%s'", domain, name)
		}
		return fmt.Errorf("'%s' is a public suffix; a tenant's domain is a name below one", domain)
	}
	return nil
}
