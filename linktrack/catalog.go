package linktrack

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Provider describes one email provider's tracking origins. The catalog
// is fixed at build time; anything it does not list is reached with an
// explicit upstream URL instead.
type Provider struct {
	// Name is the identifier used in configuration, e.g. "customerio".
	Name string

	// Title is the provider's display name.
	Title string

	// Regions maps each region name to the origin URL serving it.
	// Providers whose regions follow a pattern (SES) leave it nil and
	// set RegionOrigin instead.
	Regions map[string]string

	// DefaultRegion is used when no region is configured. It is set
	// only where the provider has one obvious default; otherwise a
	// region is required, because a wrong region silently breaks
	// attribution.
	DefaultRegion string

	// RegionOrigin builds the origin for a patterned region, or
	// returns an error describing the expected form.
	RegionOrigin func(region string) (string, error)

	// RegionHelp describes the valid regions in error messages when
	// Regions is nil.
	RegionHelp string

	// Check is the provider's own test of a tracking domain, run
	// through the domain; nil where the provider documents none.
	Check *HealthCheck

	// CNAMETargets are the hosts the provider tells customers to point
	// their tracking domain's CNAME at, by region. `caddy linktrack
	// check` finds the provider and region of a domain from them.
	CNAMETargets []CNAMETarget
}

// CNAMETarget is a host a provider tells customers to point a tracking
// domain's CNAME at.
type CNAMETarget struct {
	// Host is the target, lowercase without a trailing dot. In a
	// provider whose regions follow a pattern, "<region>" stands for
	// the region, e.g. "r.<region>.awstrack.me".
	Host string

	// Region is the region whose origin serves the target; empty when
	// Host holds "<region>".
	Region string

	// SelfIssued says when the provider issues the certificate of a
	// domain CNAMEd here itself, e.g. "for domains added from October
	// 2025". By default (empty) it never does, and HTTPS needs a
	// proxy. A proxy in front of a domain the provider issues for takes
	// the CNAME away from the provider and breaks its issuance.
	SelfIssued string

	// NoProxy is true where the provider serves HTTPS for the target
	// itself and the catalog has no proxy recipe for it. By default a
	// domain CNAMEd here can be served with the provider and Region.
	NoProxy bool

	// Source is where the provider documents the target: a URL, or a
	// site and the page's title.
	Source string
}

// HealthCheck is a request a provider documents for verifying that its
// tracking domain is proxied correctly, and the answer it expects.
type HealthCheck struct {
	Method string
	Path   string

	// Expect describes the expected answer for people.
	Expect string

	// Confirmed is false where no primary source confirms the check:
	// its failure is a warning, not an error.
	Confirmed bool

	// Verify returns an error describing how an answer differs from
	// the expected one.
	Verify func(status int, header http.Header, body []byte) error
}

// providers is the catalog. Sources for every origin are listed in the
// README's provider table.
var providers = []Provider{
	{
		Name:  "customerio",
		Title: "Customer.io",
		Regions: map[string]string{
			"us": "https://track.customer.io",
			"eu": "https://track-eu.customer.io",
		},
		CNAMETargets: []CNAMETarget{
			{Host: "e.customeriomail.com", Region: "us", SelfIssued: cioSelfIssued, Source: cioSource},
			{Host: "e-eu.customeriomail.com", Region: "eu", SelfIssued: cioSelfIssued, Source: cioSource},
		},
		Check: &HealthCheck{
			Method: http.MethodGet, Path: "/health", Expect: "200 with body {}", Confirmed: true,
			Verify: func(status int, _ http.Header, body []byte) error {
				if status != http.StatusOK || strings.TrimSpace(string(body)) != "{}" {
					return fmt.Errorf("got %d %q, want 200 {}", status, truncate(body, 60))
				}
				return nil
			},
		},
	},
	{
		Name:  "iterable",
		Title: "Iterable",
		Regions: map[string]string{
			"us": "https://links.iterable.com",
			"eu": "https://links.eu.iterable.com",
		},
		CNAMETargets: []CNAMETarget{
			{Host: "links.iterable.com", Region: "us", Source: "https://support.iterable.com/hc/en-us/articles/115000427446"},
			{Host: "links.eu.iterable.com", Region: "eu", Source: "https://support.iterable.com/hc/en-us/articles/115000427446"},
		},
	},
	{
		Name:  "mailgun",
		Title: "Mailgun (legacy HTTP origin)",
		Regions: map[string]string{
			"us": "http://mailgun.org",
			"eu": "http://eu.mailgun.org",
		},
		CNAMETargets: []CNAMETarget{
			{Host: "mailgun.org", Region: "us", SelfIssued: mailgunSelfIssued, Source: mailgunSource},
			{Host: "eu.mailgun.org", Region: "eu", SelfIssued: mailgunSelfIssued, Source: mailgunSource},
		},
	},
	{
		Name:  "sendgrid",
		Title: "SendGrid",
		Regions: map[string]string{
			"global": "https://sendgrid.net",
			"eu":     "https://eu.sendgrid.net",
		},
		DefaultRegion: "global",
		CNAMETargets: []CNAMETarget{
			{Host: "sendgrid.net", Region: "global", Source: `support.sendgrid.com, "SSL Click Tracking Steps"`},
			// unconfirmed for link branding, like the origin
			{Host: "eu.sendgrid.net", Region: "eu", Source: "https://www.twilio.com/docs/sendgrid/api-reference/link-branding"},
		},
	},
	{
		Name:         "ses",
		Title:        "Amazon SES",
		RegionOrigin: sesOrigin,
		RegionHelp:   "an AWS region name such as us-east-1 or eu-west-1",
		CNAMETargets: []CNAMETarget{
			{Host: "r.<region>.awstrack.me", Source: "https://docs.aws.amazon.com/ses/latest/dg/configure-custom-open-click-domains.html"},
		},
		Check: &HealthCheck{
			Method: http.MethodHead, Path: "/favicon.ico", Expect: "200 with an x-amz-ses-region header",
			Verify: func(status int, header http.Header, _ []byte) error {
				if status != http.StatusOK || header.Get("X-Amz-Ses-Region") == "" {
					return fmt.Errorf("got %d, x-amz-ses-region %q; want 200 with the header", status, header.Get("X-Amz-Ses-Region"))
				}
				return nil
			},
		},
	},
	{
		Name:  "sparkpost",
		Title: "SparkPost",
		Regions: map[string]string{
			"us": "https://spgo.io",
			"eu": "https://eu.spgo.io",
		},
		CNAMETargets: []CNAMETarget{
			{Host: "spgo.io", Region: "us", Source: sparkpostSource},
			{Host: "eu.spgo.io", Region: "eu", Source: sparkpostSource},
			{Host: "v2.spgo.io", Region: "us", SelfIssued: sparkpostSelfIssued, NoProxy: true, Source: sparkpostManagedSource},
			{Host: "eu.v2.spgo.io", Region: "eu", SelfIssued: sparkpostSelfIssued, NoProxy: true, Source: sparkpostManagedSource},
		},
		Check: &HealthCheck{
			Method: http.MethodGet, Path: "/f/a/b/c/d", Expect: "302 (server: msys-http, unless a CDN rewrites it)", Confirmed: true,
			Verify: func(status int, _ http.Header, _ []byte) error {
				if status != http.StatusFound {
					return fmt.Errorf("got %d, want 302", status)
				}
				return nil
			},
		},
	},
}

// Where providers document their CNAME targets, and when they issue
// certificates themselves.
const (
	cioSource              = "https://docs.customer.io/journeys/https-link-verification"
	cioSelfIssued          = "for domains added to Customer.io from October 2025"
	mailgunSource          = "https://help.mailgun.com/hc/en-us/articles/360011566033"
	mailgunSelfIssued      = "when Mailgun's managed HTTPS is turned on for the domain (most plans offer it)"
	sparkpostSource        = "https://github.com/SparkPost/support-docs (enabling-https-engagement-tracking)"
	sparkpostManagedSource = `SparkPost support-docs, "Managed HTTPS for Tracking Domains"`
	sparkpostSelfIssued    = "with managed HTTPS, the default for its tracking domains since December 2025"
)

// selfIssuers are providers that serve HTTPS for their customers'
// tracking domains themselves and have no origin to proxy to. The
// catalog knows them only to say that no proxy is needed.
var selfIssuers = []Provider{
	{
		Name:  "mailjet",
		Title: "Mailjet",
		CNAMETargets: []CNAMETarget{
			{Host: "t.mailjet.com", SelfIssued: "when HTTPS is chosen in the tracking settings", NoProxy: true,
				Source: "https://documentation.mailjet.com/hc/en-us/articles/30625039188379"},
		},
	},
}

// awsRegion matches AWS region names: a two-letter area, an optional
// partition (gov, iso, isob, isof, isoe), a direction and a number,
// e.g. us-east-1, eu-central-2, us-gov-west-1, ap-southeast-5.
var awsRegion = regexp.MustCompile(`^[a-z]{2}(-(gov|iso|isob|isoe|isof))?-(central|north|south|east|west|northeast|northwest|southeast|southwest)-[1-9][0-9]?$`)

func sesOrigin(region string) (string, error) {
	if !awsRegion.MatchString(region) {
		return "", fmt.Errorf("'%s' is not an AWS region name (expected a form like us-east-1 or eu-west-1)", region)
	}
	return "https://r." + region + ".awstrack.me", nil
}

// Providers returns the catalog, sorted by name.
func Providers() []Provider {
	return slices.Clone(providers)
}

// LookupProvider returns the catalog entry with the given name.
func LookupProvider(name string) (Provider, bool) {
	for _, p := range providers {
		if p.Name == name {
			return p, true
		}
	}
	return Provider{}, false
}

// cnameMatch is a provider found from a name in a tracking domain's
// CNAME chain.
type cnameMatch struct {
	Provider Provider
	Target   CNAMETarget
	Host     string // the name that matched
	Region   string // "" for a provider with no origins
}

// matchCNAME finds the provider, and the region, whose CNAME target is
// host. It knows the catalog's providers and the self-issuers, and
// matches whole names only: anything else is no match, not a guess.
func matchCNAME(host string) (cnameMatch, bool) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, p := range slices.Concat(providers, selfIssuers) {
		for _, t := range p.CNAMETargets {
			if region, ok := t.match(p, host); ok {
				return cnameMatch{Provider: p, Target: t, Host: host, Region: region}, true
			}
		}
	}
	return cnameMatch{}, false
}

// match reports whether host is the target of p, and its region.
func (t CNAMETarget) match(p Provider, host string) (string, bool) {
	prefix, suffix, patterned := strings.Cut(t.Host, "<region>")
	if !patterned {
		return t.Region, host == t.Host
	}
	rest, ok := strings.CutPrefix(host, prefix)
	if !ok {
		return "", false
	}
	region, ok := strings.CutSuffix(rest, suffix)
	if !ok || region == "" {
		return "", false
	}
	if _, _, err := p.Origin(region); err != nil {
		return "", false
	}
	return region, true
}

// ProviderNames returns the names of all providers in the catalog.
func ProviderNames() []string {
	names := make([]string, 0, len(providers))
	for _, p := range providers {
		names = append(names, p.Name)
	}
	return names
}

// RegionNames returns the provider's named regions, sorted. It returns
// nil for a provider whose regions follow a pattern.
func (p Provider) RegionNames() []string {
	if p.Regions == nil {
		return nil
	}
	names := make([]string, 0, len(p.Regions))
	for r := range p.Regions {
		names = append(names, r)
	}
	slices.Sort(names)
	return names
}

// regionChoices describes the valid regions for error messages.
func (p Provider) regionChoices() string {
	if p.Regions == nil {
		return p.RegionHelp
	}
	return strings.Join(p.RegionNames(), ", ")
}

// Origin returns the origin URL for the region, applying the default
// region when region is empty, and the region that was used.
func (p Provider) Origin(region string) (*url.URL, string, error) {
	if region == "" {
		region = p.DefaultRegion
	}
	if region == "" {
		return nil, "", fmt.Errorf("provider '%s' needs a region; valid regions: %s", p.Name, p.regionChoices())
	}
	var raw string
	if p.Regions != nil {
		var ok bool
		raw, ok = p.Regions[region]
		if !ok {
			return nil, "", fmt.Errorf("unknown region '%s' for provider '%s'; valid regions: %s", region, p.Name, p.regionChoices())
		}
	} else {
		var err error
		raw, err = p.RegionOrigin(region)
		if err != nil {
			return nil, "", fmt.Errorf("invalid region for provider '%s': %v", p.Name, err)
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("catalog origin '%s' for provider '%s': %v", raw, p.Name, err)
	}
	return u, region, nil
}

// LookupOrigin resolves a provider and region to an origin URL. An
// unknown provider or region yields an error that lists the valid
// choices.
func LookupOrigin(provider, region string) (*url.URL, string, error) {
	p, ok := LookupProvider(provider)
	if !ok {
		return nil, "", fmt.Errorf("unknown provider '%s'; valid providers: %s", provider, strings.Join(ProviderNames(), ", "))
	}
	return p.Origin(region)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// ParseUpstream checks a user-supplied origin URL: scheme http or https,
// a host, an optional port, and nothing else.
func ParseUpstream(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid upstream '%s': %v", raw, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("invalid upstream '%s': scheme must be https or http", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("invalid upstream '%s': missing host", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid upstream '%s': only scheme, host and port are allowed; the request's own path and query are forwarded unchanged", raw)
	}
	u.Path = ""
	return u, nil
}
