package linktrack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dnsResolver asks DNS servers questions directly, recursion desired,
// trying each server in turn until one answers. The check command and
// the DNS readiness checks of dns_targets share it.
type dnsResolver struct {
	servers []string // host:port
	timeout time.Duration
}

// systemResolvers returns the DNS servers of /etc/resolv.conf, as
// host:port.
func systemResolvers() ([]string, error) {
	conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, err
	}
	if len(conf.Servers) == 0 {
		return nil, errors.New("/etc/resolv.conf names no nameserver")
	}
	servers := make([]string, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		servers = append(servers, net.JoinHostPort(s, conf.Port))
	}
	return servers, nil
}

// query asks one question, of each server in turn until one answers.
// NXDOMAIN is an empty answer.
func (r dnsResolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	client := &dns.Client{Timeout: r.timeout}
	var err error
	for _, server := range r.servers {
		var in *dns.Msg
		in, _, err = client.ExchangeContext(ctx, m, server)
		if err != nil {
			continue
		}
		if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
			err = fmt.Errorf("%s", dns.RcodeToString[in.Rcode])
			continue
		}
		return in.Answer, nil
	}
	if err == nil {
		err = errors.New("no DNS server")
	}
	return nil, err
}

// addresses returns the A and AAAA records of name, and the error of
// a query that failed, if one did.
func (r dnsResolver) addresses(ctx context.Context, name string) ([]string, error) {
	var addrs []string
	var errs []error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		answers, err := r.query(ctx, name, qtype)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s query for %s failed: %v", dns.TypeToString[qtype], name, err))
			continue
		}
		for _, rr := range answers {
			switch rr := rr.(type) {
			case *dns.A:
				addrs = append(addrs, rr.A.String())
			case *dns.AAAA:
				addrs = append(addrs, rr.AAAA.String())
			}
		}
	}
	return addrs, errors.Join(errs...)
}

// cnameChain follows name's CNAME records and returns their targets in
// order, lowercase, without the final dot: empty when name has none.
// It stops at a loop, after 16 targets or 8 queries.
func (r dnsResolver) cnameChain(ctx context.Context, name string) ([]string, error) {
	var cnames []string
	for range 8 {
		answers, err := r.query(ctx, name, dns.TypeCNAME)
		if err != nil {
			return cnames, fmt.Errorf("CNAME query for %s failed: %v", name, err)
		}
		// a resolver may answer with the whole chain: follow it by owner
		targets := make(map[string]string)
		for _, rr := range answers {
			if cname, ok := rr.(*dns.CNAME); ok {
				owner := strings.ToLower(strings.TrimSuffix(cname.Hdr.Name, "."))
				targets[owner] = strings.ToLower(strings.TrimSuffix(cname.Target, "."))
			}
		}
		start := name
		for target := targets[name]; target != "" && !slices.Contains(cnames, target) && len(cnames) < 16; target = targets[name] {
			cnames = append(cnames, target)
			name = target
		}
		if name == start {
			break
		}
	}
	return cnames, nil
}
