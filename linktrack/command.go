package linktrack

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "linktrack",
		Short: "Commands for linktrack, the email link-tracking proxy",
		Long: `
Commands for linktrack, the plugin that serves an email provider's click and
open tracking links on a branded domain.
`,
		CobraFunc: func(cmd *cobra.Command) {
			providersCmd := &cobra.Command{
				Use:   "providers [--json]",
				Short: "Lists the provider catalog: regions, origins, health checks and CNAME targets",
				Long: `
Lists every provider and region linktrack knows, the tracking origin each one
forwards to, the provider's own check of a tracking domain, which
'caddy linktrack check' runs, and the CNAME targets it detects the provider
and region from.
`,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdProviders),
			}
			providersCmd.Flags().Bool("json", false, "Print JSON")
			cmd.AddCommand(providersCmd)

			checkCmd := &cobra.Command{
				Use:   "check <domain> [--provider <name> [--region <region>] | --upstream <url>] [--resolve <server>] [--json]",
				Short: "Checks a tracking domain: DNS, provider, CAA, TLS, reachability, the provider's own check and HSTS",
				Long: `
Checks a tracking domain the way the email provider's "verify domain" button
and the first click will see it:

  dns       the CNAME, A and AAAA chain, and whether it points at the server
  detect    the provider and region whose tracking host the CNAME chain
            reaches, and whether that provider issues certificates itself
  caa       whether CAA records allow Let's Encrypt or ZeroSSL to issue
  tls       the certificate chain, names, expiry and key type
  http      reachability over HTTP (old http:// links, ACME HTTP-01)
  https     reachability over HTTPS
  provider  the provider's own check, through the domain
  hsts      HSTS includeSubDomains on the parent domain, which forces https
  switch    while a domain moves from the provider's host to linktrack,
            which step is done and what comes next

Without --provider and --upstream, the provider and region are detected
from the CNAME chain, and the Caddyfile and tenant that serve the domain
are printed; an unknown CNAME is reported, never guessed.

Each check passes, warns or fails, with a one-line fix. The exit code is 1
when any check fails. --resolve tests a server, by address or name, before
DNS points at it.
`,
				Args: cobra.ExactArgs(1),
				RunE: caddycmd.WrapCommandFuncForCobra(cmdCheck),
			}
			f := checkCmd.Flags()
			f.String("provider", "", "The email provider; default: detected from the CNAME")
			f.String("region", "", "The provider's region")
			f.String("upstream", "", "Any other origin, instead of a provider")
			f.String("resolve", "", "Connect to this server (IP address or host name) instead of the one DNS gives")
			f.String("dns-server", "", "DNS server (host:port); default: the first of /etc/resolv.conf")
			f.Int("http-port", 80, "HTTP port of the server")
			f.Int("https-port", 443, "HTTPS port of the server")
			f.String("ca-file", "", "PEM file of extra trusted roots, for a private or test CA")
			f.Duration("timeout", 10*time.Second, "Timeout of each network step")
			f.Bool("json", false, "Print JSON")
			cmd.AddCommand(checkCmd)
		},
	})
}

func cmdCheck(fl caddycmd.Flags) (int, error) {
	domain, err := CanonicalDomain(fl.Arg(0))
	if err != nil || strings.HasPrefix(domain, "*.") {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("domain: %v", err)
	}
	dnsServer := fl.String("dns-server")
	if dnsServer == "" {
		servers, err := systemResolvers()
		if err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("no DNS server: pass --dns-server (%v)", err)
		}
		dnsServer = servers[0]
	}
	c := newDomainCheck(domain, dnsResolver{servers: []string{dnsServer}}, fl.Int("http-port"), fl.Int("https-port"), fl.Duration("timeout"))
	c.resolve = fl.String("resolve")
	switch provider, upstream := fl.String("provider"), fl.String("upstream"); {
	case provider != "" && upstream != "":
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--provider and --upstream are mutually exclusive")
	case provider != "":
		if err := c.forProvider(provider, fl.String("region")); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
	case upstream != "":
		if err := c.forOrigin("", upstream); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
	case fl.String("region") != "":
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--region needs --provider")
	}
	if c.resolve != "" {
		if _, err := netip.ParseAddr(c.resolve); err == nil {
			c.resolveIP = c.resolve
		} else if name, err := CanonicalDomain(c.resolve); err != nil || strings.HasPrefix(name, "*.") {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--resolve: '%s' is neither an IP address nor a host name", c.resolve)
		} else {
			c.resolve = name
		}
	}
	if caFile := fl.String("ca-file"); caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--ca-file: %v", err)
		}
		if c.roots, err = x509.SystemCertPool(); err != nil {
			c.roots = x509.NewCertPool()
		}
		if !c.roots.AppendCertsFromPEM(pem) {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--ca-file: no certificate in %s", caFile)
		}
	}

	results := c.run(context.Background())
	failed := failures(results) > 0
	serve := c.provider != nil && !c.explicit
	if fl.Bool("json") {
		out := map[string]any{"domain": domain, "origin": c.origin, "ok": !failed, "checks": results}
		if m := c.detected; m != nil {
			detected := map[string]any{
				"provider": m.Provider.Name, "title": m.Provider.Title, "cname": m.Host,
				"source": m.Target.Source, "self_issued": m.Target.SelfIssued, "no_proxy": m.Target.NoProxy,
			}
			if m.Region != "" {
				detected["region"] = m.Region
			}
			if serve {
				detected["caddyfile"], detected["tenant"] = c.caddyfile(), c.tenant()
			}
			out["detected"] = detected
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "\t")
		if err := enc.Encode(out); err != nil {
			return 1, err
		}
	} else {
		fmt.Printf("%s (%s)\n", domain, c.origin)
		if serve {
			tenant, _ := json.Marshal(c.tenant())
			fmt.Printf("\nCaddyfile:\n\n%s\ntenant: %s\n\n", indent(c.caddyfile(), "\t"), tenant)
		}
		for _, r := range results {
			fmt.Printf("%-4s  %-8s  %s\n", strings.ToUpper(r.Status), r.Check, r.Detail)
			if r.Fix != "" {
				fmt.Printf("      %-8s  fix: %s\n", "", r.Fix)
			}
			if r.Next != "" {
				fmt.Printf("      %-8s  next: %s\n", "", r.Next)
			}
		}
	}
	if failed {
		// Caddy's command wrapper exits 1 only with an error
		return 1, fmt.Errorf("%d of %d checks failed", failures(results), len(results))
	}
	return 0, nil
}

// indent prefixes each line of text.
func indent(text, prefix string) string {
	lines := strings.SplitAfter(text, "\n")
	for i, line := range lines {
		if line != "" {
			lines[i] = prefix + line
		}
	}
	return strings.Join(lines, "")
}

// catalogRow is one provider and region of the catalog.
type catalogRow struct {
	Provider string   `json:"provider"`
	Region   string   `json:"region"`
	Default  bool     `json:"default,omitempty"`
	Origin   string   `json:"origin"`
	Check    string   `json:"check,omitempty"`
	CNAME    []string `json:"cname,omitempty"`
}

func catalogRows() []catalogRow {
	var rows []catalogRow
	for _, p := range Providers() {
		check := ""
		if p.Check != nil {
			check = p.Check.Method + " " + p.Check.Path + " → " + p.Check.Expect
			if !p.Check.Confirmed {
				check += " (unconfirmed: warns)"
			}
		}
		regions := p.RegionNames()
		if regions == nil {
			regions = []string{"<" + p.RegionHelp + ">"}
		}
		for _, region := range regions {
			origin := "https://r.<region>.awstrack.me"
			if u, _, err := p.Origin(region); err == nil {
				origin = u.String()
			}
			var cnames []string
			for _, t := range p.CNAMETargets {
				if t.Region == region || p.Regions == nil {
					cnames = append(cnames, t.Host)
				}
			}
			rows = append(rows, catalogRow{Provider: p.Name, Region: region, Default: region == p.DefaultRegion, Origin: origin, Check: check, CNAME: cnames})
		}
	}
	return rows
}

func cmdProviders(fl caddycmd.Flags) (int, error) {
	rows := catalogRows()
	if fl.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "\t")
		if err := enc.Encode(rows); err != nil {
			return 1, err
		}
		return 0, nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROVIDER\tREGION\tORIGIN\tCNAME TARGETS\tHEALTH CHECK")
	for _, r := range rows {
		region := r.Region
		if r.Default {
			region += " (default)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Provider, region, r.Origin, strings.Join(r.CNAME, ", "), strings.TrimSpace(r.Check))
	}
	return 0, w.Flush()
}
