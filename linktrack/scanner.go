package linktrack

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
)

// Scanners configures the annotation of likely mail-scanner traffic.
// Mail security gateways (Microsoft Safe Links, Mimecast, Proofpoint,
// Barracuda, ...) follow links before people do. linktrack marks such
// requests in the {http.vars.linktrack.scanner} placeholder and in a
// metric, for the operator's own accounting. It is observation only:
// marked requests are forwarded exactly like any other, because the
// provider scores clicks itself and must see them.
//
// The signals are heuristics. Gateways that fetch with a browser's
// user agent from addresses not listed are not recognized, and a
// person behind a listed network is marked too.
type Scanners struct {
	// Case-insensitive substrings of User-Agent values that mark a
	// scanner. Default: none.
	UserAgents []string `json:"user_agents,omitempty"`

	// A file of IP ranges in CIDR form, one per line ('#' starts a
	// comment), for example the published ranges of the gateways your
	// recipients use. It is read when the config loads. Default: none.
	RangesFile string `json:"ranges_file,omitempty"`

	// Do not mark HEAD requests, which people's browsers do not send
	// for a click. Default: false (HEAD requests are marked).
	IgnoreHEAD bool `json:"ignore_head,omitempty"`
}

// scannerDetector marks requests with the first matching signal.
type scannerDetector struct {
	userAgents []string // lowercase
	ranges     map[int]map[netip.Prefix]struct{}
	bits       []int // prefix lengths present, longest first
	ignoreHEAD bool
	marked     *prometheus.CounterVec
}

const varScanner = "linktrack.scanner"

func (s *Scanners) provision(registry *prometheus.Registry) (*scannerDetector, error) {
	d := &scannerDetector{ignoreHEAD: s.IgnoreHEAD, ranges: make(map[int]map[netip.Prefix]struct{})}
	for _, ua := range s.UserAgents {
		if ua = strings.ToLower(strings.TrimSpace(ua)); ua != "" {
			d.userAgents = append(d.userAgents, ua)
		}
	}
	if s.RangesFile != "" {
		if err := d.loadRanges(s.RangesFile); err != nil {
			return nil, fmt.Errorf("scanners.ranges_file: %v", err)
		}
	}
	var err error
	d.marked, err = register(registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "scanner_requests_total",
		Help:      "Requests marked as likely mail-scanner traffic, by signal; they are forwarded like any other.",
	}, []string{"signal"}))
	return d, err
}

func (d *scannerDetector) loadRanges(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		if text = strings.TrimSpace(text); text == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(text)
		if err != nil {
			return fmt.Errorf("%s:%d: %v", path, line, err)
		}
		prefix = prefix.Masked()
		if d.ranges[prefix.Bits()] == nil {
			d.ranges[prefix.Bits()] = make(map[netip.Prefix]struct{})
			d.bits = append(d.bits, prefix.Bits())
		}
		d.ranges[prefix.Bits()][prefix] = struct{}{}
	}
	slices.Sort(d.bits)
	slices.Reverse(d.bits)
	return sc.Err()
}

// mark annotates a likely scanner request and returns its signal, or "".
func (d *scannerDetector) mark(r *http.Request) string {
	signal := d.signal(r)
	if signal != "" {
		caddyhttp.SetVar(r.Context(), varScanner, signal)
		d.marked.WithLabelValues(signal).Inc()
	}
	return signal
}

func (d *scannerDetector) signal(r *http.Request) string {
	if r.Method == http.MethodHead && !d.ignoreHEAD {
		return "head"
	}
	if len(d.userAgents) > 0 {
		ua := strings.ToLower(r.Header.Get("User-Agent"))
		for _, s := range d.userAgents {
			if strings.Contains(ua, s) {
				return "user_agent"
			}
		}
	}
	if len(d.bits) > 0 {
		if ip := clientAddr(r); ip.IsValid() {
			for _, bits := range d.bits {
				if p, err := ip.Prefix(bits); err == nil {
					if _, ok := d.ranges[bits][p]; ok {
						return "ip_range"
					}
				}
			}
		}
	}
	return ""
}

// clientAddr is the client's address as Caddy determined it, which
// honors the server's trusted_proxies.
func clientAddr(r *http.Request) netip.Addr {
	addr, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if addr == "" {
		addr, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}
