package integration

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

var firstClick = flag.Bool("firstclick", false, "run the first-click benchmark: handshake times of new tenants with and without pre-issuance")

// TestFirstClickBenchmark measures the TLS handshake of the first click
// on 10 new tenants clicked at once, with pre-issuance and with on-demand
// issuance only, in alternating rounds of one run. Each round runs a
// fresh Caddy and Pebble. Not run in CI:
//
//	go test ./integration -run TestFirstClickBenchmark -firstclick -v -timeout 20m
func TestFirstClickBenchmark(t *testing.T) {
	if !*firstClick {
		t.Skip("benchmark; run with -firstclick")
	}
	const rounds, tenants = 3, 10
	results := map[string][]time.Duration{}
	var ready []time.Duration
	for round := range rounds {
		for _, mode := range []string{"pre-issuance", "on demand"} {
			inline := ""
			if mode == "on demand" {
				inline = "pre_issuance off"
			}
			r := newTenantRig(t, inline)
			var domains []string
			for i := range tenants {
				domains = append(domains, fmt.Sprintf("new%d.round%d.shop.test", i, round))
			}
			added := time.Now()
			writeTenantsFile(t, r.tenantsFile, domains...)
			if mode == "pre-issuance" {
				r.caddy.waitLogCount(t, 2*time.Minute, "tenant certificate obtained", tenants, nil)
				ready = append(ready, time.Since(added))
			} else {
				r.caddy.waitLog(t, "tenant registry loaded", func(e map[string]any) bool { return e["tenants"] == float64(tenants) })
			}
			roots := r.acme.issuingRoots(t)
			orders := r.acme.orders()

			times := make([]time.Duration, tenants)
			var wg sync.WaitGroup
			for i, d := range domains {
				wg.Go(func() {
					start := time.Now()
					conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Minute}, "tcp",
						fmt.Sprintf("127.0.0.1:%d", r.httpsPort), &tls.Config{RootCAs: roots, ServerName: d})
					times[i] = time.Since(start)
					if err != nil {
						t.Errorf("%s: first handshake for %s: %v\n%s", mode, d, err, grepLines(r.caddy.logText(), d))
						return
					}
					conn.Close()
				})
			}
			wg.Wait()
			results[mode] = append(results[mode], times...)
			newOrders := r.acme.orders() - orders
			if mode == "pre-issuance" && newOrders != 0 {
				t.Errorf("pre-issuance: the first clicks placed %d orders", newOrders)
			}
			if mode == "on demand" && newOrders != tenants {
				t.Errorf("on demand: the first clicks placed %d orders, want %d", newOrders, tenants)
			}
			r.caddy.stop()
		}
	}
	t.Logf("first handshake of %d new tenants clicked at once, %d rounds:", tenants, rounds)
	t.Logf("%-14s %10s %10s %10s", "mode", "median", "p90", "max")
	for _, mode := range []string{"pre-issuance", "on demand"} {
		d := results[mode]
		slices.Sort(d)
		t.Logf("%-14s %10s %10s %10s", mode, d[len(d)/2].Round(time.Microsecond), d[len(d)*9/10].Round(time.Microsecond), d[len(d)-1].Round(time.Microsecond))
	}
	slices.Sort(ready)
	t.Logf("pre-issuance: all %d certificates ready %s after the tenants were added (median of %d rounds)", tenants, ready[len(ready)/2].Round(time.Millisecond), rounds)
	pre, onDemand := results["pre-issuance"], results["on demand"]
	t.Logf("median ratio on demand : pre-issuance = %.0f", float64(onDemand[len(onDemand)/2])/float64(pre[len(pre)/2]))
}
