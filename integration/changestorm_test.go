package integration

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	changeStorm         = flag.Bool("changestorm", false, "run the change storm benchmark: click latency on one node, idle and under a storm of admin API PUTs, with the default change_limit and with it effectively off")
	changeStormTenants  = flag.Int("changestorm-tenants", 10000, "tenants TestChangeStorm stores before it starts the node")
	changeStormRate     = flag.Int("changestorm-rate", 1000, "PUTs a second TestChangeStorm's storm aims at")
	changeStormDuration = flag.Duration("changestorm-duration", 30*time.Second, "how long TestChangeStorm's storm lasts")
	changeStormIdle     = flag.Duration("changestorm-idle", 10*time.Second, "how long TestChangeStorm measures clicks with no change")
	changeStormClicks   = flag.Int("changestorm-clicks", 400, "clicks a second TestChangeStorm's clients send, in all")
	changeStormLimits   = flag.String("changestorm-limits", "default,1000000 1s", "the change_limit values TestChangeStorm runs with, each on a node of its own, comma-separated; default is the option left out")
)

// What TestChangeStorm's clients are.
const (
	changeStormClients    = 8  // concurrent click clients, each paced at a share of -changestorm-clicks
	changeStormPutWorkers = 64 // concurrent PUTs at most; a PUT due when all are busy is not sent
)

// TestChangeStorm measures what a control plane that loops on PUT does
// to clicks, through the real Caddy binary: one node on plain HTTP with
// pre_issuance off and -changestorm-tenants stored tenants. 8 clients
// click existing tenants at -changestorm-clicks a second in all (keep-
// alive, each click paced, its latency from send to the whole answer)
// for -changestorm-idle with no change, then for the -changestorm-
// duration of a storm of PUTs of new tenants paced at -changestorm-rate
// a second. It does so with each change_limit of -changestorm-limits,
// by default the default (50 1s) and 1000000 1s (effectively off), each
// on a node of its own,
// and prints click p50/p99 in each phase, the ratio to that node's idle
// figure, and the PUTs sent, accepted (201) and refused (429). Timings
// are reported, not asserted; a 429 without Retry-After, a click that
// is not 302 or a PUT answered otherwise fails the test. Not run in CI:
//
//	go test ./integration -run TestChangeStorm -changestorm -v -timeout 10m
//
// -changestorm-limits 'default,10 1s,1000000 1s' adds a lower limit.
func TestChangeStorm(t *testing.T) {
	if !*changeStorm {
		t.Skip("benchmark; run with -changestorm")
	}
	if *changeStormTenants < 1 || *changeStormRate < 1 || *changeStormClicks < changeStormClients {
		t.Fatal("-changestorm-tenants and -changestorm-rate must be positive, -changestorm-clicks at least 8")
	}
	var results []*stormResult
	defer func() { logStormTable(t, results) }()
	for limit := range strings.SplitSeq(*changeStormLimits, ",") {
		limit = strings.TrimSpace(limit)
		name, option := limit, "change_limit "+limit
		if limit == "default" {
			name, option = "default (50 1s)", ""
		}
		t.Run(strings.ReplaceAll(limit, " ", "_"), func(t *testing.T) {
			r := &stormResult{limit: name}
			results = append(results, r)
			measureChangeStorm(t, option, r)
		})
	}
}

// stormResult is what one change_limit measured.
type stormResult struct {
	limit       string
	idle, storm clickStats
	puts        putStats
}

type clickStats struct {
	sent, failed int
	latencies    []time.Duration
}

func (c clickStats) quantile(q float64) time.Duration {
	if len(c.latencies) == 0 {
		return 0
	}
	return c.latencies[min(len(c.latencies)-1, int(q*float64(len(c.latencies))))]
}

type putStats struct {
	behind                                      int // due when every worker was busy: not sent
	sent, created, refused, other, noRetryAfter atomic.Int64
	firstOther                                  atomic.Value // string
	elapsed                                     time.Duration
}

func measureChangeStorm(t *testing.T, option string, r *stormResult) {
	rig := newStoreRig(t)
	n := *changeStormTenants
	populateStore(t, rig.storage, n)
	node := startStormNode(t, rig, option, storeBenchDomain(n-1))

	clicks := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: changeStormClients, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Timeout: 30 * time.Second,
	}
	defer clicks.CloseIdleConnections()
	target := fmt.Sprintf("http://127.0.0.1:%d/ls/click", node.httpPort)

	// warm up the connections and the click path
	clickFor(clicks, target, n, 2*time.Second)
	rig.origin.Reset()

	r.idle = clickFor(clicks, target, n, *changeStormIdle)
	rig.origin.Reset()
	t.Logf("idle: %d clicks, p50 %s, p99 %s", len(r.idle.latencies), ms(r.idle.quantile(0.5)), ms(r.idle.quantile(0.99)))

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		storm(node.adminPort, *changeStormRate, *changeStormDuration, &r.puts)
	}()
	r.storm = clickFor(clicks, target, n, *changeStormDuration)
	wg.Wait()
	rig.origin.Reset()
	p := &r.puts
	t.Logf("storm: %d clicks, p50 %s, p99 %s; PUTs sent %d (%d not sent, workers busy), 201 %d, 429 %d, other %d, in %s",
		len(r.storm.latencies), ms(r.storm.quantile(0.5)), ms(r.storm.quantile(0.99)),
		p.sent.Load(), p.behind, p.created.Load(), p.refused.Load(), p.other.Load(), p.elapsed.Round(time.Millisecond))

	for _, c := range []clickStats{r.idle, r.storm} {
		if c.failed > 0 {
			t.Errorf("%d of %d clicks not answered 302", c.failed, c.sent)
		}
	}
	if k := p.noRetryAfter.Load(); k > 0 {
		t.Errorf("%d of %d answers 429 without Retry-After", k, p.refused.Load())
	}
	if k := p.other.Load(); k > 0 {
		t.Errorf("%d PUTs answered neither 201 nor 429, the first: %v", k, p.firstOther.Load())
	}
}

// startStormNode starts a node on the rig's storage, on plain HTTP with
// pre_issuance off and the change_limit option given (none for the
// default), and returns once it answers a click for last with 302.
func startStormNode(t *testing.T, rig *storeRig, option, last string) *storeNode {
	t.Helper()
	node := &storeNode{storage: rig.storage}
	node.httpPort, node.httpsPort, node.adminPort = freePort(t), freePort(t), freePort(t)
	config := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	storage file_system %s
	servers {
		protocols h1
	}
	linktrack {
		origin esp https://localhost:%d {
			tls_trust_pool file %s
		}
		pre_issuance off
		storage_refresh_interval %s
		%s
	}
}

http:// {
	linktrack
}
`, node.adminPort, node.httpPort, node.httpsPort, rig.storage, rig.origin.Port(), rig.caFile, storeBenchRefresh, option)
	began := time.Now()
	node.caddy = startCaddy(t, "caddyfile", config)
	waitServed(t, node, last, began, time.Minute)
	return node
}

// clickFor clicks stored tenants (of n, in turn) from changeStormClients
// clients for d, each paced at its share of -changestorm-clicks; a
// client that falls behind sends at once. It returns the latencies of
// the 302s, sorted.
func clickFor(client *http.Client, target string, n int, d time.Duration) clickStats {
	interval := time.Duration(changeStormClients) * time.Second / time.Duration(*changeStormClicks)
	count := int(d / interval)
	var mu sync.Mutex
	var all clickStats
	var wg sync.WaitGroup
	start := time.Now()
	for c := range changeStormClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			failed := 0
			for i := range count {
				at := start.Add(time.Duration(i)*interval + time.Duration(c)*interval/changeStormClients)
				if time.Since(start) > d+5*time.Second {
					break
				}
				time.Sleep(time.Until(at))
				req, _ := http.NewRequest("GET", target, nil)
				req.Host = storeBenchDomain((c*count + i) % n)
				began := time.Now()
				res, err := client.Do(req)
				if err != nil {
					failed++
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusFound {
					failed++
					continue
				}
				mine = append(mine, time.Since(began))
			}
			mu.Lock()
			all.sent += len(mine) + failed
			all.failed += failed
			all.latencies = append(all.latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all.latencies)
	return all
}

// storm PUTs new tenants through the admin API on port, paced at rate a
// second for d, from at most changeStormPutWorkers at a time.
func storm(port, rate int, d time.Duration, p *putStats) {
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: changeStormPutWorkers},
		Timeout:   30 * time.Second,
	}
	defer client.CloseIdleConnections()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range changeStormPutWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				put(client, port, i, p)
			}
		}()
	}
	interval := time.Second / time.Duration(rate)
	total := int(d / interval)
	start := time.Now()
	for i := range total {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		if time.Since(start) > d+time.Second {
			p.behind += total - i
			break
		}
		select {
		case jobs <- i:
		default:
			p.behind++
		}
	}
	close(jobs)
	wg.Wait()
	p.elapsed = time.Since(start)
}

func put(client *http.Client, port, i int, p *putStats) {
	p.sent.Add(1)
	url := fmt.Sprintf("http://127.0.0.1:%d/linktrack/tenants/storm%06d.bench.test", port, i)
	req, _ := http.NewRequest("PUT", url, strings.NewReader(`{"origin": "esp"}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		p.other.Add(1)
		p.firstOther.CompareAndSwap(nil, err.Error())
		return
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	switch res.StatusCode {
	case http.StatusCreated:
		p.created.Add(1)
	case http.StatusTooManyRequests:
		p.refused.Add(1)
		if res.Header.Get("Retry-After") == "" {
			p.noRetryAfter.Add(1)
		}
	default:
		p.other.Add(1)
		p.firstOther.CompareAndSwap(nil, fmt.Sprintf("%d %s", res.StatusCode, body))
	}
}

// logStormTable prints what each change_limit measured.
func logStormTable(t *testing.T, results []*stormResult) {
	if len(results) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nchange storm: %s stored tenants, %d click clients at %d clicks/s in all, PUTs of new tenants paced at %d/s for %s\n\n",
		thousands(*changeStormTenants), changeStormClients, *changeStormClicks, *changeStormRate, *changeStormDuration)
	b.WriteString("| change_limit | phase | clicks | click p50 | click p99 | p99 / idle | PUTs sent | 201 | 429 | 429 without Retry-After |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range results {
		idle99 := r.idle.quantile(0.99)
		fmt.Fprintf(&b, "| %s | idle %s | %s | %s | %s | 1.00 | | | | |\n", r.limit, *changeStormIdle,
			thousands(len(r.idle.latencies)), ms(r.idle.quantile(0.5)), ms(idle99))
		if len(r.storm.latencies) == 0 {
			continue
		}
		ratio := 0.0
		if idle99 > 0 {
			ratio = float64(r.storm.quantile(0.99)) / float64(idle99)
		}
		p := &r.puts
		fmt.Fprintf(&b, "| %s | storm %s | %s | %s | %s | %.2f | %s | %s | %s | %d |\n", r.limit, *changeStormDuration,
			thousands(len(r.storm.latencies)), ms(r.storm.quantile(0.5)), ms(r.storm.quantile(0.99)), ratio,
			thousands(int(p.sent.Load())), thousands(int(p.created.Load())), thousands(int(p.refused.Load())), p.noRetryAfter.Load())
	}
	t.Log(b.String())
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}
