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
	},
	{
		Name:  "mailgun",
		Title: "Mailgun (legacy HTTP origin)",
		Regions: map[string]string{
			"us": "http://mailgun.org",
			"eu": "http://eu.mailgun.org",
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
	},
	{
		Name:         "ses",
		Title:        "Amazon SES",
		RegionOrigin: sesOrigin,
		RegionHelp:   "an AWS region name such as us-east-1 or eu-west-1",
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
