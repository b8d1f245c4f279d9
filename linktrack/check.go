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
}

// domainCheck checks a tracking domain the way a provider's "verify
// domain" button and a user's first click will see it.
type domainCheck struct {
	domain    string
	provider  *Provider // nil for an upstream
	resolveIP string    // connect here instead of the resolved address
	dnsServer string    // host:port
	httpPort  int
	httpsPort int
	roots     *x509.CertPool // nil: the system's
	timeout   time.Duration

	connectIP string // decided by the DNS check
	httpsOK   bool
}

// allowedCAs are the CAA identities of the CAs Caddy uses by default.
var allowedCAs = []string{"letsencrypt.org", "sectigo.com"}

// run runs every check in order.
func (c *domainCheck) run(ctx context.Context) []checkResult {
	results := []checkResult{c.checkDNS(ctx), c.checkCAA(ctx), c.checkTLS(ctx)}
	results = append(results, c.checkReachable(ctx, "http"), c.checkReachable(ctx, "https"))
	results = append(results, c.checkProvider(ctx), c.checkHSTS(ctx))
	return results
}

// query asks the DNS server one question.
func (c *domainCheck) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	client := &dns.Client{Timeout: c.timeout}
	in, _, err := client.ExchangeContext(ctx, m, c.dnsServer)
	if err != nil {
		return nil, err
	}
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s", dns.RcodeToString[in.Rcode])
	}
	return in.Answer, nil
}

func (c *domainCheck) checkDNS(ctx context.Context) checkResult {
	r := checkResult{Check: "dns"}
	chain := []string{c.domain}
	name := c.domain
	for range 8 {
		answers, err := c.query(ctx, name, dns.TypeCNAME)
		if err != nil {
			r.Status, r.Detail = checkFail, fmt.Sprintf("CNAME query for %s failed: %v", name, err)
			r.Fix = "check the DNS server, or pass --dns-server"
			return r
		}
		target := ""
		for _, rr := range answers {
			if cname, ok := rr.(*dns.CNAME); ok {
				target = strings.TrimSuffix(cname.Target, ".")
			}
		}
		if target == "" || target == name {
			break
		}
		chain = append(chain, "CNAME "+target)
		name = target
	}
	var addrs []string
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		answers, err := c.query(ctx, name, qtype)
		if err != nil {
			continue
		}
		for _, rr := range answers {
			switch rr := rr.(type) {
			case *dns.A:
				addrs = append(addrs, rr.A.String())
				chain = append(chain, "A "+rr.A.String())
			case *dns.AAAA:
				addrs = append(addrs, rr.AAAA.String())
				chain = append(chain, "AAAA "+rr.AAAA.String())
			}
		}
	}
	r.Detail = strings.Join(chain, " → ")
	switch {
	case len(addrs) == 0 && c.resolveIP == "":
		r.Status = checkFail
		r.Fix = "create a CNAME (or A/AAAA records) for " + c.domain + " pointing at the server running linktrack"
	case len(addrs) == 0:
		r.Status, c.connectIP = checkWarn, c.resolveIP
		r.Fix = "testing " + c.resolveIP + " as asked; create the DNS records before verifying the domain with the provider"
	case c.resolveIP != "" && !slices.Contains(addrs, c.resolveIP):
		r.Status, c.connectIP = checkWarn, c.resolveIP
		r.Detail += " (not " + c.resolveIP + ", the server tested)"
		r.Fix = "point the CNAME at " + c.resolveIP + " when it is ready to serve"
	default:
		r.Status, c.connectIP = checkPass, addrs[0]
		if c.resolveIP != "" {
			c.connectIP = c.resolveIP
		}
	}
	return r
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

func (c *domainCheck) checkTLS(ctx context.Context) checkResult {
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
		return r
	}
	defer conn.Close()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	left := time.Until(leaf.NotAfter)
	r.Detail = fmt.Sprintf("issued by %s for %s, expires %s (in %d days), key %s",
		leaf.Issuer.CommonName, strings.Join(leaf.DNSNames, ", "), leaf.NotAfter.UTC().Format("2006-01-02"), int(left.Hours()/24), keyType(leaf))
	r.Status = checkPass
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
	r := checkResult{Check: scheme}
	if c.connectIP == "" {
		r.Status, r.Detail, r.Fix = checkFail, "no address to connect to", "fix DNS first"
		return r
	}
	res, _, err := c.get(ctx, scheme, c.domain, http.MethodGet, "/")
	if err != nil {
		r.Status, r.Detail = checkFail, err.Error()
		if scheme == "http" {
			r.Fix = "open port 80: old http:// links and ACME HTTP-01 need it"
		} else {
			r.Fix = "open port 443 and serve the domain over HTTPS"
		}
		return r
	}
	if scheme == "https" {
		c.httpsOK = true
	}
	r.Status, r.Detail = checkPass, fmt.Sprintf("GET %s://%s/ answered %d", scheme, c.domain, res.StatusCode)
	if res.StatusCode == http.StatusMisdirectedRequest {
		r.Status, r.Fix = checkFail, "the server answers but has no tenant "+c.domain+"; add it"
	}
	return r
}

func (c *domainCheck) checkProvider(ctx context.Context) checkResult {
	r := checkResult{Check: "provider"}
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
