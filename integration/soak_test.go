package integration

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// The reload and soak tests load the server for minutes, so CI skips
// them. Run them with:
//
//	go test ./integration -run 'TestReloadUnderLoad|TestSoak' -soak -v -timeout 30m
var soak = flag.Bool("soak", false, "run the reload-under-load and soak tests")

// loadClients sends GET requests from conns keep-alive connections to
// addr, with hosts in turn, until stop closes; it counts the requests
// answered 302 and those that failed.
func loadClients(addr string, conns int, hosts []string, stop <-chan struct{}) (served, failed *atomic.Int64, wait func()) {
	served, failed = new(atomic.Int64), new(atomic.Int64)
	client := &http.Client{
		Transport: &http.Transport{
			MaxIdleConnsPerHost: conns,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; ; i += conns {
				select {
				case <-stop:
					return
				default:
				}
				res, err := client.Get("http://" + hosts[i%len(hosts)] + "/ls/click?upn=" + strconv.Itoa(i))
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusFound {
					served.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	return served, failed, wg.Wait
}

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestReloadUnderLoad reloads Caddy with a changed config three times
// while 64 connections send clicks for 30 s; no request may fail.
func TestReloadUnderLoad(t *testing.T) {
	if !*soak {
		t.Skip("run with -soak")
	}
	r := newRig(t, rigOptions{})
	config := r.caddy.cmd.Args[len(r.caddy.cmd.Args)-3] // the Caddyfile passed to caddy run
	stop := make(chan struct{})
	served, failed, wait := loadClients(fmt.Sprintf("127.0.0.1:%d", r.httpPort), 64, []string{trackingDomain}, stop)
	start := time.Now()
	for i := range 3 {
		time.Sleep(7 * time.Second) // spread the reloads over the load window
		raw, err := os.ReadFile(config)
		if err != nil {
			t.Fatal(err)
		}
		changed := strings.Replace(string(raw), "linktrack {", fmt.Sprintf("linktrack {\n\t\tliveness_path /_live%d", i), 1)
		if err := os.WriteFile(config, []byte(changed), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := runCaddy(t, "reload", "--config", config, "--address", fmt.Sprintf("127.0.0.1:%d", r.adminPort)); err != nil {
			t.Fatalf("caddy reload: %v\n%s", err, out)
		}
	}
	time.Sleep(30*time.Second - time.Since(start))
	close(stop)
	wait()
	t.Logf("reload under load: 3 reloads, %d requests served, %d failed, %.0f req/s", served.Load(), failed.Load(), float64(served.Load())/time.Since(start).Seconds())
	if failed.Load() != 0 {
		t.Errorf("%d requests failed during reloads", failed.Load())
	}
}

// TestSoak serves 1,000 tenants for 10 minutes and reports RSS at the
// start and at the end.
func TestSoak(t *testing.T) {
	if !*soak {
		t.Skip("run with -soak")
	}
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	var hosts []string
	for i := range 1000 {
		hosts = append(hosts, fmt.Sprintf("click%d.brand%d.test", i, i%97))
	}
	tenantsFile := filepath.Join(dir, "tenants.json")
	writeTenantsFile(t, tenantsFile, hosts...)
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := &acmeCA{directory: "https://127.0.0.1:1/dir", minicaRoot: caFile} // never used: plain HTTP only
	p := startCaddy(t, "caddyfile", multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, "tenants_file "+tenantsFile))

	stop := make(chan struct{})
	served, failed, wait := loadClients(fmt.Sprintf("127.0.0.1:%d", ports.http), 32, hosts, stop)
	time.Sleep(15 * time.Second) // warm up before the first reading
	startRSS, start, startServed := rssKiB(t, p.cmd.Process.Pid), time.Now(), served.Load()
	time.Sleep(10 * time.Minute)
	endRSS := rssKiB(t, p.cmd.Process.Pid)
	close(stop)
	wait()
	t.Logf("soak: 1,000 tenants, 10 min, %d requests (%.0f req/s), %d failed; RSS %d MiB at the start, %d MiB at the end",
		served.Load()-startServed, float64(served.Load()-startServed)/time.Since(start).Seconds(), failed.Load(), startRSS/1024, endRSS/1024)
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	if endRSS > startRSS*3/2+20*1024 {
		t.Errorf("RSS grew from %d to %d KiB", startRSS, endRSS)
	}
}
