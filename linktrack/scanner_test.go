package linktrack

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestScannerSignals(t *testing.T) {
	ranges := filepath.Join(t.TempDir(), "ranges.txt")
	if err := os.WriteFile(ranges, []byte("# gateway ranges\n203.0.113.0/24\n198.51.100.7/32 # one host\n2001:db8:5::/48\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := (&Scanners{UserAgents: []string{"Mimecast", " proofpoint "}, RangesFile: ranges}).provision(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, ua, remote, want string
	}{
		{"GET", "Mozilla/5.0 Safari/605", "192.0.2.1:5000", ""},
		{"HEAD", "Mozilla/5.0", "192.0.2.1:5000", "head"},
		{"GET", "Mozilla/5.0 (compatible; MIMECAST URL Protect)", "192.0.2.1:5000", "user_agent"},
		{"GET", "ProofPoint-URLDefense/1.0", "192.0.2.1:5000", "user_agent"},
		{"GET", "Mozilla/5.0", "203.0.113.77:5000", "ip_range"},
		{"GET", "Mozilla/5.0", "198.51.100.7:5000", "ip_range"},
		{"GET", "Mozilla/5.0", "198.51.100.8:5000", ""},
		{"GET", "Mozilla/5.0", "[2001:db8:5:1::9]:5000", "ip_range"},
		{"GET", "Mozilla/5.0", "[::ffff:203.0.113.5]:5000", "ip_range"},
	} {
		r := httptest.NewRequest(tc.method, "http://link.example.com/ls/click", nil)
		r.Header.Set("User-Agent", tc.ua)
		r.RemoteAddr = tc.remote
		if got := d.signal(r); got != tc.want {
			t.Errorf("%s %q from %s: signal %q, want %q", tc.method, tc.ua, tc.remote, got, tc.want)
		}
	}
	ignoring, _ := (&Scanners{IgnoreHEAD: true}).provision(nil)
	if got := ignoring.signal(httptest.NewRequest("HEAD", "http://x.example/", nil)); got != "" {
		t.Errorf("ignore_head: signal %q", got)
	}
	bad := filepath.Join(t.TempDir(), "bad.txt")
	_ = os.WriteFile(bad, []byte("203.0.113.0/24\nnot-a-range\n"), 0o600)
	if _, err := (&Scanners{RangesFile: bad}).provision(nil); err == nil || !strings.Contains(err.Error(), "bad.txt:2") {
		t.Errorf("bad ranges file: %v, want an error naming line 2", err)
	}
}
