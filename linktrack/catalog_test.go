package linktrack

import (
	"net/http"
	"strings"
	"testing"
)

func TestLookupOrigin(t *testing.T) {
	for _, tc := range []struct {
		provider, region string
		wantOrigin       string
		wantRegion       string
		wantErr          []string
	}{
		{provider: "customerio", region: "us", wantOrigin: "https://track.customer.io", wantRegion: "us"},
		{provider: "customerio", region: "eu", wantOrigin: "https://track-eu.customer.io", wantRegion: "eu"},
		{provider: "customerio", wantErr: []string{"needs a region", "eu, us"}},
		{provider: "customerio", region: "ap", wantErr: []string{"unknown region 'ap'", "eu, us"}},
		{provider: "sendgrid", wantOrigin: "https://sendgrid.net", wantRegion: "global"},
		{provider: "sendgrid", region: "eu", wantOrigin: "https://eu.sendgrid.net", wantRegion: "eu"},
		{provider: "sparkpost", region: "us", wantOrigin: "https://spgo.io", wantRegion: "us"},
		{provider: "sparkpost", region: "eu", wantOrigin: "https://eu.spgo.io", wantRegion: "eu"},
		{provider: "sparkpost", wantErr: []string{"needs a region"}},
		{provider: "ses", region: "eu-west-1", wantOrigin: "https://r.eu-west-1.awstrack.me", wantRegion: "eu-west-1"},
		{provider: "ses", region: "us-gov-west-1", wantOrigin: "https://r.us-gov-west-1.awstrack.me", wantRegion: "us-gov-west-1"},
		{provider: "ses", region: "ap-southeast-2", wantOrigin: "https://r.ap-southeast-2.awstrack.me", wantRegion: "ap-southeast-2"},
		{provider: "ses", region: "eu-west", wantErr: []string{"not an AWS region name"}},
		{provider: "ses", region: "evil.com/x", wantErr: []string{"not an AWS region name"}},
		{provider: "ses", region: "EU-WEST-1", wantErr: []string{"not an AWS region name"}},
		{provider: "ses", wantErr: []string{"needs a region", "AWS region name"}},
		{provider: "mailgun", region: "us", wantOrigin: "http://mailgun.org", wantRegion: "us"},
		{provider: "mailgun", region: "eu", wantOrigin: "http://eu.mailgun.org", wantRegion: "eu"},
		{provider: "iterable", region: "us", wantOrigin: "https://links.iterable.com", wantRegion: "us"},
		{provider: "iterable", region: "eu", wantOrigin: "https://links.eu.iterable.com", wantRegion: "eu"},
		{provider: "mailchimp", region: "us", wantErr: []string{"unknown provider 'mailchimp'", "customerio, iterable, mailgun, sendgrid, ses, sparkpost"}},
	} {
		origin, region, err := LookupOrigin(tc.provider, tc.region)
		name := tc.provider + "/" + tc.region
		if len(tc.wantErr) > 0 {
			if err == nil {
				t.Errorf("%s: expected error, got origin %s", name, origin)
				continue
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: error %q does not contain %q", name, err, want)
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: unexpected error: %v", name, err)
			continue
		}
		if origin.String() != tc.wantOrigin || region != tc.wantRegion {
			t.Errorf("%s: got %s (region %s), want %s (region %s)", name, origin, region, tc.wantOrigin, tc.wantRegion)
		}
	}
}

func TestProvidersSorted(t *testing.T) {
	names := ProviderNames()
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Fatalf("catalog not sorted by name: %v", names)
		}
	}
	for _, p := range Providers() {
		if p.DefaultRegion != "" && p.Regions[p.DefaultRegion] == "" {
			t.Errorf("%s: default region %q is not one of its regions", p.Name, p.DefaultRegion)
		}
		if (p.Regions == nil) == (p.RegionOrigin == nil) {
			t.Errorf("%s: exactly one of Regions and RegionOrigin must be set", p.Name)
		}
	}
}

func TestParseUpstream(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "https://track.esp.example", want: "https://track.esp.example"},
		{in: "https://track.esp.example/", want: "https://track.esp.example"},
		{in: "http://10.0.0.5:8080", want: "http://10.0.0.5:8080"},
		{in: "https://[::1]:8443", want: "https://[::1]:8443"},
		{in: "ftp://x.example", wantErr: "scheme must be https or http"},
		{in: "track.esp.example", wantErr: "scheme must be https or http"},
		{in: "https://", wantErr: "missing host"},
		{in: "https://x.example/path", wantErr: "only scheme, host and port"},
		{in: "https://x.example?q=1", wantErr: "only scheme, host and port"},
		{in: "https://user:pw@x.example", wantErr: "only scheme, host and port"},
	} {
		u, err := ParseUpstream(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("%s: got %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
}

func TestHealthChecks(t *testing.T) {
	cio, _ := LookupProvider("customerio")
	if err := cio.Check.Verify(200, nil, []byte("{}\n")); err != nil {
		t.Errorf("customerio {}: %v", err)
	}
	if err := cio.Check.Verify(200, nil, []byte("Invalid link security token")); err == nil {
		t.Error("customerio accepted a wrong body")
	}
	sp, _ := LookupProvider("sparkpost")
	if sp.Check.Verify(302, nil, nil) != nil || sp.Check.Verify(200, nil, nil) == nil {
		t.Error("sparkpost check: want 302 only")
	}
	ses, _ := LookupProvider("ses")
	if ses.Check.Confirmed {
		t.Error("the SES check has no primary source; it must only warn")
	}
	h := http.Header{"X-Amz-Ses-Region": {"eu-west-1"}}
	if ses.Check.Verify(200, h, nil) != nil || ses.Check.Verify(200, http.Header{}, nil) == nil {
		t.Error("ses check: want 200 with x-amz-ses-region")
	}
}

func TestCNAMETargets(t *testing.T) {
	seen := make(map[string]string)
	for _, p := range append(Providers(), selfIssuers...) {
		if len(p.CNAMETargets) == 0 {
			t.Errorf("%s: no CNAME targets", p.Name)
		}
		covered := make(map[string]bool)
		for _, target := range p.CNAMETargets {
			name := p.Name + " " + target.Host
			if target.Host != strings.ToLower(strings.TrimSuffix(target.Host, ".")) {
				t.Errorf("%s: host not lowercase without a trailing dot", name)
			}
			if other, ok := seen[target.Host]; ok {
				t.Errorf("%s: host also listed by %s", name, other)
			}
			seen[target.Host] = p.Name
			if target.Source == "" {
				t.Errorf("%s: no source", name)
			}
			if target.NoProxy && target.SelfIssued == "" {
				t.Errorf("%s: no proxy recipe, yet the provider issues no certificate", name)
			}
			patterned := strings.Contains(target.Host, "<region>")
			switch {
			case p.Regions == nil && p.RegionOrigin == nil:
				if target.Region != "" || !target.NoProxy {
					t.Errorf("%s: a provider without origins has no regions and no proxy recipe", name)
				}
			case patterned != (target.Region == ""):
				t.Errorf("%s: exactly one of a region and a <region> host", name)
			case !patterned:
				if _, _, err := p.Origin(target.Region); err != nil {
					t.Errorf("%s: region: %v", name, err)
				}
				covered[target.Region] = true
				m, ok := matchCNAME(target.Host)
				if !ok || m.Provider.Name != p.Name || m.Region != target.Region || m.Target != target {
					t.Errorf("%s: matched %+v, %v", name, m, ok)
				}
			}
		}
		for _, region := range p.RegionNames() {
			if !covered[region] {
				t.Errorf("%s: region %s has no CNAME target", p.Name, region)
			}
		}
	}
}

func TestMatchCNAME(t *testing.T) {
	for _, tc := range []struct {
		host             string
		provider, region string // "" for no match
		selfIssued       bool
		noProxy          bool
	}{
		{host: "e.customeriomail.com", provider: "customerio", region: "us", selfIssued: true},
		{host: "E-EU.CustomerioMail.com.", provider: "customerio", region: "eu", selfIssued: true},
		{host: "sendgrid.net", provider: "sendgrid", region: "global"},
		{host: "eu.sendgrid.net", provider: "sendgrid", region: "eu"},
		{host: "spgo.io", provider: "sparkpost", region: "us"},
		{host: "eu.spgo.io", provider: "sparkpost", region: "eu"},
		{host: "v2.spgo.io", provider: "sparkpost", region: "us", selfIssued: true, noProxy: true},
		{host: "eu.v2.spgo.io", provider: "sparkpost", region: "eu", selfIssued: true, noProxy: true},
		{host: "r.us-east-1.awstrack.me", provider: "ses", region: "us-east-1"},
		{host: "r.ap-southeast-2.awstrack.me", provider: "ses", region: "ap-southeast-2"},
		{host: "mailgun.org", provider: "mailgun", region: "us", selfIssued: true},
		{host: "eu.mailgun.org", provider: "mailgun", region: "eu", selfIssued: true},
		{host: "links.iterable.com", provider: "iterable", region: "us"},
		{host: "links.eu.iterable.com", provider: "iterable", region: "eu"},
		{host: "t.mailjet.com", provider: "mailjet", selfIssued: true, noProxy: true},
		// whole names only: no guess from a suffix or a near miss
		{host: "u123.wl.sendgrid.net"},
		{host: "sendgrid.net.example.com"},
		{host: "r.awstrack.me"},
		{host: "r.eu-west.awstrack.me"},
		{host: "r.a.b.awstrack.me"},
		{host: "x.e.customeriomail.com"},
		{host: "mandrillapp.com"},
		{host: ""},
	} {
		m, ok := matchCNAME(tc.host)
		if tc.provider == "" {
			if ok {
				t.Errorf("%q: matched %s %s, want no match", tc.host, m.Provider.Name, m.Region)
			}
			continue
		}
		if !ok || m.Provider.Name != tc.provider || m.Region != tc.region {
			t.Errorf("%q: got %s %s (%v), want %s %s", tc.host, m.Provider.Name, m.Region, ok, tc.provider, tc.region)
			continue
		}
		if (m.Target.SelfIssued != "") != tc.selfIssued || m.Target.NoProxy != tc.noProxy {
			t.Errorf("%q: self-issued %q, no proxy %v; want %v, %v", tc.host, m.Target.SelfIssued, m.Target.NoProxy, tc.selfIssued, tc.noProxy)
		}
	}
}
