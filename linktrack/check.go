package linktrack

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Check statuses.
const (
	checkPass = "pass"
	checkWarn = "warn"
	checkFail = "fail"
)

// checkResult is the outcome of one check of a tracking domain.
type checkResult struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
	Next   string `json:"next,omitempty"`
}

// domainCheck checks a tracking domain the way a provider's "verify
// domain" button and a user's first click will see it.
type domainCheck struct {
	domain    string
	provider  *Provider // nil for an upstream, or until detected
	region    string
	origin    string // what the domain is checked against, for people
	explicit  bool   // the provider or upstream was given, not detected
	resolve   string // --resolve as given: the tested server, for people
	resolveIP string // connect here instead of the resolved address
	dns       dnsResolver
	httpPort  int
	httpsPort int
	roots     *x509.CertPool // nil: the system's
	timeout   time.Duration
	// why the checks that need the domain's certificate (tls, https,
	// provider) are not run: a handshake with a server that has none
	// yet would order one; empty to run them
	noCertificate string

	// decided by the DNS check
	connectIP      string
	serverAddrs    []string    // the tested server's addresses
	cnames         []string    // the domain's CNAME chain, without the domain
	detected       *cnameMatch // the first provider host in cnames
	pointsAtServer bool        // --resolve given and DNS reaches it

	tlsOK   bool // the certificate verified
	httpsOK bool
}

// newDomainCheck returns the checks of domain, whose DNS questions
// resolver answers, against a server listening on httpPort and
// httpsPort; each network step takes at most timeout. The command and
// the admin API's check now call both start here.
func newDomainCheck(domain string, resolver dnsResolver, httpPort, httpsPort int, timeout time.Duration) *domainCheck {
	resolver.timeout = timeout
	return &domainCheck{domain: domain, dns: resolver, httpPort: httpPort, httpsPort: httpsPort, timeout: timeout, origin: "provider not given"}
}

// forProvider checks the domain as served for provider and region.
func (c *domainCheck) forProvider(provider, region string) error {
	u, region, err := LookupOrigin(provider, region)
	if err != nil {
		return err
	}
	p, _ := LookupProvider(provider)
	c.provider, c.region, c.explicit = &p, region, true
	c.origin = fmt.Sprintf("%s %s → %s", provider, region, u)
	return nil
}

// forOrigin checks the domain as served for an origin that is no
// provider: an upstream URL, or a named origin (name is then its name).
func (c *domainCheck) forOrigin(name, upstream string) error {
	u, err := ParseUpstream(upstream)
	if err != nil {
		return err
	}
	c.origin, c.explicit = u.String(), true
	if name != "" {
		c.origin = "origin " + name + " → " + c.origin
	}
	return nil
}

// failures counts the checks of results that failed.
func failures(results []checkResult) int {
	n := 0
	for _, r := range results {
		if r.Status == checkFail {
			n++
		}
	}
	return n
}

// allowedCAs are the CAA identities of the CAs Caddy uses by default.
var allowedCAs = []string{"letsencrypt.org", "sectigo.com"}

// run runs every check in order.
func (c *domainCheck) run(ctx context.Context) []checkResult {
	results := []checkResult{c.checkDNS(ctx)}
	if r, ok := c.checkDetect(); ok {
		results = append(results, r)
	}
	results = append(results, c.checkCAA(ctx), c.checkTLS(ctx))
	results = append(results, c.checkReachable(ctx, "http"), c.checkReachable(ctx, "https"))
	results = append(results, c.checkProvider(ctx), c.checkHSTS(ctx))
	if r, ok := c.checkSwitch(results); ok {
		results = append(results, r)
	}
	return results
}

// atProvider reports whether the checks reach the provider's own host:
// the domain's CNAME still points at the provider, and no --resolve
// names another server.
func (c *domainCheck) atProvider() bool {
	return c.detected != nil && c.resolveIP == ""
}

// resolver asks the DNS servers of the check.
func (c *domainCheck) resolver() dnsResolver {
	return c.dns
}

// query asks the DNS server one question.
func (c *domainCheck) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	return c.resolver().query(ctx, name, qtype)
}

// addresses returns the A and AAAA records of name.
func (c *domainCheck) addresses(ctx context.Context, name string) []string {
	addrs, _ := c.resolver().addresses(ctx, name)
	return addrs
}

func (c *domainCheck) checkDNS(ctx context.Context) checkResult {
	r := checkResult{Check: "dns"}
	if c.resolve != "" && c.resolveIP == "" {
		c.serverAddrs = c.addresses(ctx, c.resolve)
		if len(c.serverAddrs) == 0 {
			r.Status, r.Detail = checkFail, fmt.Sprintf("--resolve %s: the name has no A or AAAA record", c.resolve)
			r.Fix = "pass the server's address, or a name that resolves to it"
			return r
		}
		c.resolveIP = c.serverAddrs[0]
	} else if c.resolveIP != "" {
		c.serverAddrs = []string{c.resolveIP}
	}
	chain := []string{c.domain}
	cnames, err := c.resolver().cnameChain(ctx, c.domain)
	if err != nil {
		r.Status, r.Detail = checkFail, err.Error()
		r.Fix = "check the DNS server, or pass --dns-server"
		return r
	}
	c.cnames = cnames
	name := c.domain
	for _, target := range cnames {
		chain = append(chain, "CNAME "+target)
		name = target
	}
	for _, cname := range c.cnames {
		if m, ok := matchCNAME(cname); ok {
			c.detected = &m
			break
		}
	}
	addrs := c.addresses(ctx, name)
	for _, addr := range addrs {
		if strings.Contains(addr, ":") {
			chain = append(chain, "AAAA "+addr)
		} else {
			chain = append(chain, "A "+addr)
		}
	}
	c.pointsAtServer = c.resolveIP != "" && c.detected == nil &&
		(slices.Contains(c.cnames, strings.ToLower(c.resolve)) || slices.ContainsFunc(addrs, func(a string) bool { return slices.Contains(c.serverAddrs, a) }))
	r.Detail = strings.Join(chain, " → ")
	switch {
	case len(addrs) == 0 && c.resolveIP == "":
		r.Status = checkFail
		r.Fix = "create a CNAME (or A/AAAA records) for " + c.domain + " pointing at the server running linktrack"
	case len(addrs) == 0:
		r.Status, c.connectIP = checkWarn, c.resolveIP
		r.Fix = "testing " + c.resolve + " as asked; create the DNS records before verifying the domain with the provider"
	case c.resolveIP != "" && !c.pointsAtServer:
		r.Status, c.connectIP = checkWarn, c.resolveIP
		r.Detail += " (not " + c.resolve + ", the server tested)"
		r.Fix = "point the CNAME at " + c.resolve + " when it is ready to serve"
	case c.atProvider() && c.detected.Target.NoProxy:
		r.Status, c.connectIP = checkPass, addrs[0]
	case c.atProvider():
		r.Status, c.connectIP = checkWarn, addrs[0]
		r.Detail += " (" + c.detected.Provider.Title + "'s own host, not a linktrack server)"
		r.Fix = "the checks below reach " + c.detected.Provider.Title + "; test the server that will serve " + c.domain + " with --resolve <its address or name> before moving the CNAME"
	default:
		r.Status, c.connectIP = checkPass, addrs[0]
		if c.resolveIP != "" {
			c.connectIP = c.resolveIP
		}
	}
	return r
}

// checkDetect names the provider whose tracking host the domain's CNAME
// chain reaches. It reports only when no provider was given, or when the
// chain reaches one. When none was given, the checks after it use the
// provider and region it detects.
func (c *domainCheck) checkDetect() (checkResult, bool) {
	r := checkResult{Check: "detect"}
	m := c.detected
	if m == nil {
		if c.explicit {
			return r, false
		}
		r.Status = checkWarn
		if len(c.cnames) == 0 {
			r.Detail = c.domain + " has no CNAME: no provider to detect"
		} else {
			r.Detail = fmt.Sprintf("the CNAME chain ends at %s, which is no provider's tracking host in the catalog; no provider guessed", c.cnames[len(c.cnames)-1])
		}
		r.Fix = "pass --provider and --region, or --upstream ('caddy linktrack providers' lists the catalog)"
		return r, true
	}
	p := m.Provider
	r.Status = checkPass
	r.Detail = fmt.Sprintf("CNAME %s is %s", m.Host, p.Title)
	if m.Region != "" {
		r.Detail += ", region " + m.Region
	}
	if !m.Target.NoProxy {
		u, _, _ := p.Origin(m.Region)
		r.Detail += ", origin " + u.String()
	}
	if m.Target.SelfIssued != "" {
		r.Status = checkWarn
		r.Detail += fmt.Sprintf("; %s issues the certificate itself %s: then no proxy is needed, and a proxy in front of it breaks %s's own issuance",
			p.Title, m.Target.SelfIssued, p.Title)
		if m.Target.NoProxy {
			r.Fix = fmt.Sprintf("keep the CNAME at %s and turn HTTPS on in %s", m.Host, p.Title)
		} else {
			r.Fix = fmt.Sprintf("if %s issues it for this domain, keep the CNAME at %s and turn HTTPS on there; otherwise serve it with `linktrack %s %s`", p.Title, m.Host, p.Name, m.Region)
		}
	}
	switch {
	case !c.explicit && !m.Target.NoProxy:
		c.provider, c.region = &p, m.Region
		u, _, _ := p.Origin(m.Region)
		c.origin = fmt.Sprintf("%s %s → %s, detected", p.Name, m.Region, u)
	case !c.explicit:
		c.origin = p.Title + ", detected"
	case c.provider == nil || c.provider.Name != p.Name || (m.Region != "" && c.region != m.Region):
		r.Status = checkWarn
		r.Detail += ", not " + c.origin + " as asked"
		r.Fix = "check --provider and --region: a wrong region silently breaks attribution"
	}
	return r, true
}

// caddyfile returns the site block that serves the detected provider.
func (c *domainCheck) caddyfile() string {
	return fmt.Sprintf("%s, http://%s {\n\tlinktrack %s %s\n}\n", c.domain, c.domain, c.provider.Name, c.region)
}

// tenant returns the tenant that serves the detected provider.
func (c *domainCheck) tenant() Tenant {
	return Tenant{Domain: c.domain, Provider: c.provider.Name, Region: c.region}
}

func (c *domainCheck) checkCAA(ctx context.Context) checkResult {
	r := checkResult{Check: "caa"}
	labels := strings.Split(c.domain, ".")
	for i := 0; i < len(labels)-1; i++ {
		name := strings.Join(labels[i:], ".")
		answers, err := c.query(ctx, name, dns.TypeCAA)
		if err != nil {
			r.Status, r.Detail = checkWarn, fmt.Sprintf("CAA query for %s failed: %v", name, err)
			r.Fix = "a CA that cannot read CAA records refuses to issue; check the domain's DNS"
			return r
		}
		var issuers []string
		found := false
		for _, rr := range answers {
			if caa, ok := rr.(*dns.CAA); ok {
				found = true // the answer may also hold the CNAMEs followed
				if caa.Tag == "issue" {
					issuers = append(issuers, strings.TrimSpace(strings.Split(caa.Value, ";")[0]))
				}
			}
		}
		if !found {
			continue
		}
		r.Detail = fmt.Sprintf("%s allows %s", name, strings.Join(issuers, ", "))
		for _, ca := range allowedCAs {
			if slices.Contains(issuers, ca) {
				r.Status = checkPass
				return r
			}
		}
		r.Status = checkFail
		r.Fix = fmt.Sprintf(`add a CAA record: %s. CAA 0 issue "letsencrypt.org"`, name)
		return r
	}
	r.Status, r.Detail = checkPass, "no CAA records: any CA may issue"
	return r
}

func (c *domainCheck) dialer() *net.Dialer { return &net.Dialer{Timeout: c.timeout} }

// address is where to connect for the domain on port.
func (c *domainCheck) address(port int) string {
	return net.JoinHostPort(c.connectIP, strconv.Itoa(port))
}

// notRun is a check not run because the server has no certificate for
// the domain yet.
func (c *domainCheck) notRun(check string) (checkResult, bool) {
	if c.noCertificate == "" {
		return checkResult{}, false
	}
	return checkResult{Check: check, Status: checkWarn, Detail: "not run: " + c.noCertificate,
		Fix: "check again once the certificate is valid"}, true
}

func (c *domainCheck) checkTLS(ctx context.Context) checkResult {
	if r, skip := c.notRun("tls"); skip {
		return r
	}
	r := checkResult{Check: "tls"}
	if c.connectIP == "" {
		r.Status, r.Detail, r.Fix = checkFail, "no address to connect to", "fix DNS first"
		return r
	}
	d := &tls.Dialer{NetDialer: c.dialer(), Config: &tls.Config{ServerName: c.domain, RootCAs: c.roots}}
	conn, err := d.DialContext(ctx, "tcp", c.address(c.httpsPort))
	if err != nil {
		r.Status, r.Detail = checkFail, fmt.Sprintf("TLS to %s: %v", c.address(c.httpsPort), err)
		r.Fix = "make sure linktrack serves " + c.domain + " (a site address, or a tenant with on-demand TLS) and that its certificate was issued"
		if c.atProvider() {
			r.Status, r.Fix = checkWarn, c.noHTTPSAtProvider()
		}
		return r
	}
	defer conn.Close()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	left := time.Until(leaf.NotAfter)
	r.Detail = fmt.Sprintf("issued by %s for %s, expires %s (in %d days), key %s",
		leaf.Issuer.CommonName, strings.Join(leaf.DNSNames, ", "), leaf.NotAfter.UTC().Format("2006-01-02"), int(left.Hours()/24), keyType(leaf))
	r.Status, c.tlsOK = checkPass, true
	if c.atProvider() {
		r.Detail += ", served by " + c.detected.Provider.Title + " itself"
	}
	if left < 14*24*time.Hour {
		r.Status, r.Fix = checkWarn, "renewal should have happened by now; check Caddy's logs for certificate errors"
	}
	return r
}

func keyType(cert *x509.Certificate) string {
	switch k := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return cert.PublicKeyAlgorithm.String()
}

// get sends one request for the domain to the tested server.
func (c *domainCheck) get(ctx context.Context, scheme, host, method, path string) (*http.Response, []byte, error) {
	port := c.httpsPort
	if scheme == "http" {
		port = c.httpPort
	}
	addr := c.address(port)
	client := &http.Client{
		Timeout: c.timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return c.dialer().DialContext(ctx, network, addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: c.roots, ServerName: host},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, method, (&url.URL{Scheme: scheme, Host: host, Path: path}).String(), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("User-Agent", "caddy-linktrack-check")
	res, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	return res, body, nil
}

func (c *domainCheck) checkReachable(ctx context.Context, scheme string) checkResult {
	if r, skip := c.notRun(scheme); skip && scheme == "https" {
		return r
	}
	r := checkResult{Check: scheme}
	if c.connectIP == "" {
		r.Status, r.Detail, r.Fix = checkFail, "no address to connect to", "fix DNS first"
		return r
	}
	res, _, err := c.get(ctx, scheme, c.domain, http.MethodGet, "/")
	if err != nil {
		r.Status, r.Detail = checkFail, err.Error()
		switch {
		case scheme == "http":
			r.Fix = "open port 80: old http:// links and ACME HTTP-01 need it"
		case c.atProvider():
			r.Status, r.Fix = checkWarn, "see tls"
		default:
			r.Fix = "open port 443 and serve the domain over HTTPS"
		}
		return r
	}
	if scheme == "https" {
		c.httpsOK = true
	}
	r.Status, r.Detail = checkPass, fmt.Sprintf("GET %s://%s/ answered %d", scheme, c.domain, res.StatusCode)
	if res.StatusCode == http.StatusMisdirectedRequest {
		r.Status, r.Fix = checkFail, "the server answers 421 for "+c.domain+": it is not a tenant there (add it), or the tenant is disabled or pending ownership"
	}
	return r
}

func (c *domainCheck) checkProvider(ctx context.Context) checkResult {
	if r, skip := c.notRun("provider"); skip {
		return r
	}
	r := checkResult{Check: "provider"}
	if c.atProvider() {
		r.Status, r.Detail = checkWarn, "not run: it tests a proxy, and DNS points at "+c.detected.Provider.Title
		r.Fix = "pass --resolve <server> to run it through the server that will serve " + c.domain
		if c.detected.Target.NoProxy {
			r.Status, r.Detail, r.Fix = checkPass, "not needed: "+c.detected.Provider.Title+" serves "+c.domain+" itself", ""
		}
		return r
	}
	if c.provider == nil || c.provider.Check == nil {
		r.Status, r.Detail = checkWarn, "the provider documents no check of its own"
		r.Fix = "click a tracked link from a test email and confirm it redirects"
		return r
	}
	hc := c.provider.Check
	res, body, err := c.get(ctx, "https", c.domain, hc.Method, hc.Path)
	if err == nil {
		err = hc.Verify(res.StatusCode, res.Header, body)
	}
	label := fmt.Sprintf("%s %s %s (want %s)", c.provider.Name, hc.Method, hc.Path, hc.Expect)
	switch {
	case err == nil:
		r.Status, r.Detail = checkPass, label
	case !hc.Confirmed:
		r.Status, r.Detail = checkWarn, label+": "+err.Error()+"; this check is not confirmed by the provider"
		r.Fix = "click a tracked link from a test email and confirm it redirects"
	default:
		r.Status, r.Detail = checkFail, label+": "+err.Error()
		r.Fix = "check the provider and region, and that Host reaches the origin as " + c.domain
	}
	return r
}

func (c *domainCheck) checkHSTS(ctx context.Context) checkResult {
	r := checkResult{Check: "hsts"}
	_, parent, ok := strings.Cut(c.domain, ".")
	if !ok || !strings.Contains(parent, ".") {
		r.Status, r.Detail = checkPass, "no parent domain to check"
		return r
	}
	res, _, err := c.get(ctx, "https", parent, http.MethodGet, "/")
	if err != nil {
		r.Status, r.Detail = checkWarn, fmt.Sprintf("could not read HSTS of %s: %v", parent, err)
		r.Fix = "check https://" + parent + "/ for Strict-Transport-Security with includeSubDomains yourself"
		return r
	}
	hsts := res.Header.Get("Strict-Transport-Security")
	if !strings.Contains(strings.ToLower(hsts), "includesubdomains") {
		r.Status, r.Detail = checkPass, parent+" sets no HSTS includeSubDomains: http:// links stay http://"
		return r
	}
	r.Detail = fmt.Sprintf("%s sets HSTS %q: browsers turn http:// tracking links into https://", parent, hsts)
	r.Status = checkPass
	if !c.httpsOK {
		r.Status, r.Fix = checkFail, "serve "+c.domain+" over HTTPS: every click from a browser that saw "+parent+" is forced to it"
	}
	return r
}

// noHTTPSAtProvider is the fix when the provider's own host has no
// HTTPS for the domain.
func (c *domainCheck) noHTTPSAtProvider() string {
	title := c.detected.Provider.Title
	if c.detected.Target.NoProxy {
		return "turn HTTPS on in " + title + " for " + c.domain
	}
	return title + " serves no HTTPS for " + c.domain + ", so https:// links fail until a proxy serves it: run linktrack for it and test that server with --resolve before moving the CNAME"
}

// certificateOptions is how a server gets a domain's certificate before
// the domain's CNAME moves to it, when HTTP-01 cannot validate yet.
const certificateOptions = "get its certificate before DNS moves: a DNS-01 issuer " +
	"(Caddy built with a caddy-dns module, `tls { dns <provider> ... }`), or a certificate " +
	"obtained elsewhere and loaded (`tls <cert_file> <key_file>`); or lower the CNAME's TTL and " +
	"let the first click after the move obtain it on demand (see the README)"

// checkSwitch says which step of moving a domain from the provider's
// host to linktrack is done, and what comes next: (1) the server holds
// the certificate and proxies, (2) the CNAME moves, (3) the provider's
// verify passes, (4) HTTPS links are turned on. It reports while the
// CNAME points at a provider, and when --resolve names the server the
// CNAME reaches.
func (c *domainCheck) checkSwitch(results []checkResult) (checkResult, bool) {
	r := checkResult{Check: "switch"}
	status := func(check string) string {
		for _, res := range results {
			if res.Check == check {
				return res.Status
			}
		}
		return ""
	}
	title := "the provider"
	if c.provider != nil {
		title = c.provider.Title
	}
	serves := status("tls") != checkFail && status("http") == checkPass &&
		status("https") == checkPass && status("provider") != checkFail
	switch {
	case c.detected != nil && c.detected.Target.NoProxy:
		return r, false

	case c.atProvider() && c.tlsOK:
		title = c.detected.Provider.Title
		r.Status = checkWarn
		r.Detail = fmt.Sprintf("%s serves a valid certificate for %s itself: no proxy is needed, and moving the CNAME to one breaks %s's own issuance", title, c.domain, title)
		r.Fix = fmt.Sprintf("keep the CNAME at %s; turn HTTPS links on in %s if they are off", c.detected.Host, title)

	case c.atProvider():
		title = c.detected.Provider.Title
		r.Status = checkWarn
		r.Detail = fmt.Sprintf("step 1 of 4: %s still points at %s; its https:// links need a proxy", c.domain, title)
		r.Next = fmt.Sprintf("serve %s from linktrack, then test that server before moving the CNAME: caddy linktrack check %s --resolve <server>", c.domain, c.domain)

	case c.detected != nil && serves:
		title = c.detected.Provider.Title
		r.Status = checkPass
		r.Detail = fmt.Sprintf("step 1 of 4 done: %s holds the certificate for %s, and http:// and https:// clicks through it reach %s", c.resolve, c.domain, title)
		r.Next = fmt.Sprintf("move the CNAME of %s from %s to %s (step 2), then run this check again with --provider %s --region %s",
			c.domain, c.detected.Host, c.resolve, c.detected.Provider.Name, c.detected.Region)

	case c.detected != nil:
		r.Status = checkFail
		r.Detail = fmt.Sprintf("step 1 of 4 not done: %s does not serve %s yet; do not move the CNAME", c.resolve, c.domain)
		r.Fix = "fix the failed checks above"
		if status("tls") == checkFail {
			r.Detail = fmt.Sprintf("step 1 of 4 not done: %s holds no valid certificate for %s; do not move the CNAME yet", c.resolve, c.domain)
			r.Fix = certificateOptions
		}

	case c.pointsAtServer && serves:
		r.Status = checkPass
		r.Detail = fmt.Sprintf("step 2 of 4 done: %s points at %s, which serves it over http:// and https://", c.domain, c.resolve)
		if status("provider") == checkPass {
			r.Detail += "; " + title + "'s own check passes through it"
		}
		r.Next = fmt.Sprintf("verify the domain in %s (step 3); only when that passes, turn HTTPS links on (step 4)", title)

	case c.pointsAtServer:
		r.Status = checkFail
		r.Detail = fmt.Sprintf("%s points at %s, which does not serve it: clicks fail", c.domain, c.resolve)
		r.Fix = "fix the failed checks above, or point the CNAME back at " + title

	default:
		return r, false
	}
	return r, true
}
