package integration

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/linktrack"
)

var (
	changeStorm         = flag.Bool("changestorm", false, "run the change storm benchmark: click latency on one node in interleaved rounds, idle and under a storm of admin API PUTs, with the default change_limit and with it effectively off")
	changeStormTenants  = flag.Int("changestorm-tenants", 10000, "tenants TestChangeStorm stores before it starts the node")
	changeStormRate     = flag.Int("changestorm-rate", 1000, "PUTs a second TestChangeStorm's storm aims at")
	changeStormDuration = flag.Duration("changestorm-duration", 30*time.Second, "how long each of TestChangeStorm's storms lasts")
	changeStormIdle     = flag.Duration("changestorm-idle", 15*time.Second, "how long TestChangeStorm measures clicks with no change, before the first storm and after each; a storm is compared with the idle phases before and after it, together as long as a storm by default")
	changeStormRounds   = flag.Int("changestorm-rounds", 5, "storms TestChangeStorm runs on each node, each followed by an idle phase")
	changeStormClicks   = flag.Int("changestorm-clicks", 400, "clicks a second TestChangeStorm's clients send, in all")
	changeStormLimits   = flag.String("changestorm-limits", "default,1000000 1s", "the change_limit values TestChangeStorm runs with, each on a node of its own, comma-separated; default is the option left out")
	changeStormNewConns = flag.Bool("changestorm-new-conns", false, "TestChangeStorm's storm opens a new connection for every PUT, as curl in a loop would, instead of keeping them alive as a control plane's client does")
	changeStormProfile  = flag.String("changestorm-profile", "", "a directory where TestChangeStorm saves a CPU profile of the node during each limit's first storm, for go tool pprof, and a 3 s execution trace from its middle, for go tool trace")
)

// What TestChangeStorm's clients are.
const (
	changeStormClients    = 8  // concurrent click clients, each paced at a share of -changestorm-clicks
	changeStormPutWorkers = 64 // concurrent PUTs at most; a PUT due when all are busy is not sent
	changeStormSettle     = 2 * time.Second
)

// TestChangeStorm measures what a control plane that loops on PUT does
// to clicks, through the real Caddy binary: one node on plain HTTP with
// pre_issuance off and -changestorm-tenants stored tenants. 8 clients
// click existing tenants at -changestorm-clicks a second in all (keep-
// alive, each click paced, its latency from send to the whole answer).
// It measures them for -changestorm-idle with no change, then, for
// each of -changestorm-rounds rounds, for the -changestorm-duration of
// a storm of PUTs of new tenants paced at -changestorm-rate a second
// and for -changestorm-idle with no change again. Each storm is
// compared with the idle phases before and after it, pooled, so that a
// busy neighbour on the machine weighs on idle and storm alike. The
// storm runs in a child process, from keep-alive connections as a
// control plane's client would (-changestorm-new-conns: a new one for
// each PUT). The node writes its admin log to a file. It does so with
// each change_limit of -changestorm-limits, by default the default
// (DefaultChangeLimit a second) and 1000000 1s (effectively off), each on a node of its own, and
// prints, for each round, click p50/p99 idle and in the storm, their
// ratio, the CPU the node, this process (clients and origin) and the
// storm process used, and the PUTs sent, accepted (201) and refused
// (429); then the median of each over the rounds, and the p99 of all
// storms' clicks against all idle clicks. Timings are reported, not
// asserted; a 429 without Retry-After, a click that is not 302 or a
// PUT answered otherwise fails the test. Not run in CI:
//
//	go test ./integration -run TestChangeStorm -changestorm -v -timeout 30m
//
// -changestorm-profile DIR saves the node's CPU profile of each limit's
// first storm, and an execution trace of 3 s of it.
func TestChangeStorm(t *testing.T) {
	if !*changeStorm {
		t.Skip("benchmark; run with -changestorm")
	}
	if *changeStormTenants < 1 || *changeStormRate < 1 || *changeStormClicks < changeStormClients || *changeStormRounds < 1 {
		t.Fatal("-changestorm-tenants, -changestorm-rate and -changestorm-rounds must be positive, -changestorm-clicks at least 8")
	}
	var results []*stormResult
	defer func() { logStormTable(t, results) }()
	for limit := range strings.SplitSeq(*changeStormLimits, ",") {
		limit = strings.TrimSpace(limit)
		name, option := limit, "change_limit "+limit
		if limit == "default" {
			name, option = fmt.Sprintf("default (%d 1s)", linktrack.DefaultChangeLimit), ""
		}
		t.Run(strings.ReplaceAll(limit, " ", "_"), func(t *testing.T) {
			r := &stormResult{limit: name}
			results = append(results, r)
			measureChangeStorm(t, option, r)
		})
	}
}

// stormResult is what one change_limit measured, round by round.
type stormResult struct {
	limit  string
	rounds []stormRound
	idle   []clickStats // every idle phase, the one before the first storm and the one after each
}

// stormRound is one round: a storm, and the idle phases before and
// after it, pooled.
type stormRound struct {
	idle, storm clickStats
	puts        *putStats
}

// clickStats are the clicks of one phase, and the CPU used meanwhile.
type clickStats struct {
	sent, failed int
	latencies    []time.Duration
	nodeCPU      float64 // the node's CPU seconds per second of the phase
	selfCPU      float64 // this process's
}

func (c clickStats) quantile(q float64) time.Duration {
	if len(c.latencies) == 0 {
		return 0
	}
	return c.latencies[min(len(c.latencies)-1, int(q*float64(len(c.latencies))))]
}

func (r stormRound) ratio() float64 {
	if idle := r.idle.quantile(0.99); idle > 0 {
		return float64(r.storm.quantile(0.99)) / float64(idle)
	}
	return 0
}

// putStats count a storm's PUTs.
type putStats struct {
	behind                                      int // due when every worker was busy: not sent
	sent, created, refused, other, noRetryAfter atomic.Int64
	firstOther                                  atomic.Value // string
	elapsed                                     time.Duration
	cpu                                         float64 // the storm process's CPU seconds per second
}

// stormEnv holds what a child of the test binary storms (stormSpec's
// fields, in JSON): TestChangeStorm runs its storm in a process of its
// own, so that the storm's goroutines do not delay the click clients'
// and the origin's in this one.
const stormEnv = "LINKTRACK_TEST_STORM"

// stormSpec is what a storm process does, and stormReport what it
// found.
type stormSpec struct {
	Port, First, Rate int
	Duration          time.Duration
	NewConns          bool
}

type stormReport struct {
	Behind, Sent, Created, Refused, Other, NoRetryAfter int64
	FirstOther                                          string
	Elapsed                                             time.Duration
}

// stormFrom runs a storm of -changestorm-rate PUTs a second for
// -changestorm-duration against the admin endpoint on port, new tenants
// numbered from first, in a child process, and adds what it found to p.
func stormFrom(port, first int, p *putStats) error {
	spec, _ := json.Marshal(stormSpec{Port: port, First: first, Rate: *changeStormRate, Duration: *changeStormDuration, NewConns: *changeStormNewConns})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), stormEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("storm process: %v", err)
	}
	var r stormReport
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("storm process's report %q: %v", out, err)
	}
	p.behind = int(r.Behind)
	p.sent.Store(r.Sent)
	p.created.Store(r.Created)
	p.refused.Store(r.Refused)
	p.other.Store(r.Other)
	p.noRetryAfter.Store(r.NoRetryAfter)
	if r.FirstOther != "" {
		p.firstOther.Store(r.FirstOther)
	}
	p.elapsed = r.Elapsed
	if p.elapsed > 0 {
		p.cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds() / p.elapsed.Seconds()
	}
	return nil
}

// runStorm is the storm process: it storms as spec says and writes its
// report to stdout.
func runStorm(spec string) int {
	var s stormSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var p putStats
	storm(s.Port, s.First, s.Rate, s.Duration, s.NewConns, &p)
	first, _ := p.firstOther.Load().(string)
	json.NewEncoder(os.Stdout).Encode(stormReport{
		Behind: int64(p.behind), Sent: p.sent.Load(), Created: p.created.Load(), Refused: p.refused.Load(),
		Other: p.other.Load(), NoRetryAfter: p.noRetryAfter.Load(), FirstOther: first, Elapsed: p.elapsed,
	})
	return 0
}

func measureChangeStorm(t *testing.T, option string, r *stormResult) {
	rig := newStoreRig(t)
	n := *changeStormTenants
	populateStore(t, rig.storage, n)
	node := startStormNode(t, rig, option, storeBenchDomain(n-1))
	pid := node.caddy.cmd.Process.Pid

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

	idle := func() clickStats {
		c := measured(t, pid, func() clickStats { return clickFor(clicks, target, n, *changeStormIdle) })
		rig.origin.Reset()
		if c.failed > 0 {
			t.Errorf("idle: %d of %d clicks not answered 302", c.failed, c.sent)
		}
		r.idle = append(r.idle, c)
		return c
	}
	before := idle()
	next := 0 // the next new tenant's number
	for round := range *changeStormRounds {
		rd := stormRound{puts: new(putStats)}
		var wg sync.WaitGroup
		if round == 0 && *changeStormProfile != "" {
			name := filepath.Join(*changeStormProfile, "storm-"+strings.ReplaceAll(r.limit, " ", "_"))
			wg.Add(2)
			go func() {
				defer wg.Done()
				seconds := int((*changeStormDuration - 2*time.Second).Seconds())
				saveProfile(t, node.adminPort, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), name+".pprof")
			}()
			go func() {
				defer wg.Done()
				time.Sleep(*changeStormDuration / 2)
				saveProfile(t, node.adminPort, "/debug/pprof/trace?seconds=3", name+".trace")
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stormFrom(node.adminPort, next, rd.puts); err != nil {
				t.Errorf("storm: %v", err)
			}
		}()
		rd.storm = measured(t, pid, func() clickStats { return clickFor(clicks, target, n, *changeStormDuration) })
		wg.Wait()
		rig.origin.Reset()
		next += int(*changeStormDuration / (time.Second / time.Duration(*changeStormRate)))
		// let the storm's last changes and connections settle
		time.Sleep(changeStormSettle)
		after := idle()
		rd.idle = merged(before, after)
		before = after
		r.rounds = append(r.rounds, rd)

		p := rd.puts
		t.Logf("round %d: idle p50 %s p99 %s, node CPU %.0f%%; storm p50 %s p99 %s (%.2fx), node CPU %.0f%%, storm process CPU %.0f%%; PUTs sent %d (%d not sent, workers busy), 201 %d, 429 %d, other %d",
			round+1, ms(rd.idle.quantile(0.5)), ms(rd.idle.quantile(0.99)), 100*rd.idle.nodeCPU,
			ms(rd.storm.quantile(0.5)), ms(rd.storm.quantile(0.99)), rd.ratio(), 100*rd.storm.nodeCPU, 100*p.cpu,
			p.sent.Load(), p.behind, p.created.Load(), p.refused.Load(), p.other.Load())
		if rd.storm.failed > 0 {
			t.Errorf("storm: %d of %d clicks not answered 302", rd.storm.failed, rd.storm.sent)
		}
		if k := p.noRetryAfter.Load(); k > 0 {
			t.Errorf("%d of %d answers 429 without Retry-After", k, p.refused.Load())
		}
		if k := p.other.Load(); k > 0 {
			t.Errorf("%d PUTs answered neither 201 nor 429, the first: %v", k, p.firstOther.Load())
		}
	}
}

// merged pools the clicks of phases, and averages their CPU.
func merged(phases ...clickStats) clickStats {
	var m clickStats
	for _, c := range phases {
		m.sent += c.sent
		m.failed += c.failed
		m.latencies = append(m.latencies, c.latencies...)
		m.nodeCPU += c.nodeCPU / float64(len(phases))
		m.selfCPU += c.selfCPU / float64(len(phases))
	}
	slices.Sort(m.latencies)
	return m
}

// measured runs phase and adds the CPU the node (pid) and this process
// used meanwhile, in seconds per second.
func measured(t *testing.T, pid int, phase func() clickStats) clickStats {
	t.Helper()
	node0, self0, began := processCPU(t, pid), selfCPU(), time.Now()
	c := phase()
	wall := time.Since(began).Seconds()
	c.nodeCPU = (processCPU(t, pid) - node0).Seconds() / wall
	c.selfCPU = (selfCPU() - self0).Seconds() / wall
	return c
}

// processCPU is the user and system CPU time pid has used, from
// /proc/<pid>/stat.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// the fields after the command name, which is in parentheses
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, stat)
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// selfCPU is the user and system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// saveProfile saves what the node's admin endpoint answers at path
// (a /debug/pprof/ profile or trace) as file.
func saveProfile(t *testing.T, adminPort int, path, file string) {
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, path))
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	defer res.Body.Close()
	profile, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(file), 0o755)
	}
	if err == nil {
		err = os.WriteFile(file, profile, 0o644)
	}
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	t.Logf("saved the node's %s of the storm as %s", path, file)
}

// startStormNode starts a node on the rig's storage, on plain HTTP with
// pre_issuance off and the change_limit option given (none for the
// default), and returns once it answers a click for last with 302. The
// admin endpoint's log lines (Caddy's "received request" for every
// request, linktrack's change log) go to a file, as a node would write
// them to its log: on stderr, this process, which also runs the click
// clients and the origin, would read each.
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
	log default {
		exclude admin.api
	}
	log admin_api {
		include admin.api
		output file %s
	}
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
`, node.adminPort, node.httpPort, node.httpsPort, rig.storage, filepath.Join(t.TempDir(), "admin.log"),
		rig.origin.Port(), rig.caFile, storeBenchRefresh, option)
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

// storm PUTs new tenants, numbered from first, through the admin API on
// port, paced at rate a second for d (newConns: a new connection for
// each), with at most changeStormPutWorkers in flight; a PUT due when
// that many are is not sent. The pacing loop wakes once a millisecond at most and hands out
// what is due, so the storm's own CPU stays small beside the node's.
func storm(port, first, rate int, d time.Duration, newConns bool, p *putStats) {
	jobs := make(chan int, changeStormPutWorkers)
	var inFlight atomic.Int64
	var wg sync.WaitGroup
	for range changeStormPutWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &putter{addr: "127.0.0.1:" + strconv.Itoa(port), newConns: newConns}
			defer c.close()
			for i := range jobs {
				c.put(i, p)
				inFlight.Add(-1)
			}
		}()
	}
	interval := time.Second / time.Duration(rate)
	total := int(d / interval)
	start := time.Now()
	for i := 0; i < total; {
		elapsed := time.Since(start)
		if elapsed > d+time.Second {
			p.behind += total - i
			break
		}
		for ; i < total && time.Duration(i)*interval <= elapsed; i++ {
			if inFlight.Load() >= changeStormPutWorkers {
				p.behind++
				continue
			}
			inFlight.Add(1)
			jobs <- first + i
		}
		time.Sleep(max(time.Millisecond, time.Until(start.Add(time.Duration(i)*interval))))
	}
	close(jobs)
	wg.Wait()
	p.elapsed = time.Since(start)
}

// putter sends PUTs over one HTTP/1.1 connection of its own, kept alive
// unless newConns, writing each request in one piece: no client
// goroutines or pools, so that the storm costs little CPU beside the
// node's.
type putter struct {
	addr     string
	newConns bool
	conn     net.Conn
	br       *bufio.Reader
	req      []byte
}

func (c *putter) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// put PUTs tenant i and counts the answer in p.
func (c *putter) put(i int, p *putStats) {
	p.sent.Add(1)
	status, retryAfter, body, err := c.roundTrip(i)
	switch {
	case err != nil:
		p.other.Add(1)
		p.firstOther.CompareAndSwap(nil, err.Error())
	case status == http.StatusCreated:
		p.created.Add(1)
	case status == http.StatusTooManyRequests:
		p.refused.Add(1)
		if retryAfter == "" {
			p.noRetryAfter.Add(1)
		}
	default:
		p.other.Add(1)
		p.firstOther.CompareAndSwap(nil, fmt.Sprintf("%d %s", status, body))
	}
}

func (c *putter) roundTrip(i int) (status int, retryAfter string, body []byte, err error) {
	const tenant = `{"origin": "esp"}`
	if c.conn == nil {
		if c.conn, err = net.DialTimeout("tcp", c.addr, 10*time.Second); err != nil {
			c.conn = nil
			return 0, "", nil, err
		}
		c.br = bufio.NewReader(c.conn)
	}
	c.req = append(c.req[:0], "PUT /linktrack/tenants/storm"...)
	c.req = strconv.AppendInt(c.req, int64(i), 10)
	c.req = append(c.req, ".bench.test HTTP/1.1\r\nHost: "...)
	c.req = append(c.req, c.addr...)
	c.req = append(c.req, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	c.req = strconv.AppendInt(c.req, int64(len(tenant)), 10)
	if c.newConns {
		c.req = append(c.req, "\r\nConnection: close"...)
	}
	c.req = append(c.req, "\r\n\r\n"+tenant...)
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err = c.conn.Write(c.req); err == nil {
		var res *http.Response
		if res, err = http.ReadResponse(c.br, nil); err == nil {
			body, err = io.ReadAll(res.Body)
			res.Body.Close()
			status, retryAfter = res.StatusCode, res.Header.Get("Retry-After")
			if res.Close {
				c.close()
			}
		}
	}
	if err != nil {
		c.close()
	}
	return status, retryAfter, body, err
}

// logStormTable prints what each change_limit measured, round by round,
// and the medians over the rounds.
func logStormTable(t *testing.T, results []*stormResult) {
	if len(results) == 0 {
		return
	}
	conns := "keep-alive"
	if *changeStormNewConns {
		conns = "a new connection each"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nchange storm: %s stored tenants, %d click clients at %d clicks/s in all; %s idle, then %d rounds of %s of PUTs of new tenants paced at %d/s (%s) and %s idle\n\n",
		thousands(*changeStormTenants), changeStormClients, *changeStormClicks, *changeStormIdle, *changeStormRounds, *changeStormDuration, *changeStormRate, conns, *changeStormIdle)
	b.WriteString("| change_limit | round | click p50 idle / storm | click p99 idle / storm | p99 storm / idle | node CPU idle / storm | clients and origin CPU idle / storm | storm process CPU | PUTs sent | 201 | 429 |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range results {
		var p50i, p50s, p99i, p99s, ratios, cpui, cpus, selfi, selfs, stormCPU, sent, created, refused []float64
		for i, rd := range r.rounds {
			p := rd.puts
			fmt.Fprintf(&b, "| %s | %d | %s / %s | %s / %s | %.2f | %.0f%% / %.0f%% | %.0f%% / %.0f%% | %.0f%% | %s | %s | %s |\n", r.limit, i+1,
				ms(rd.idle.quantile(0.5)), ms(rd.storm.quantile(0.5)), ms(rd.idle.quantile(0.99)), ms(rd.storm.quantile(0.99)), rd.ratio(),
				100*rd.idle.nodeCPU, 100*rd.storm.nodeCPU, 100*rd.idle.selfCPU, 100*rd.storm.selfCPU, 100*p.cpu,
				thousands(int(p.sent.Load())), thousands(int(p.created.Load())), thousands(int(p.refused.Load())))
			p50i, p50s = append(p50i, float64(rd.idle.quantile(0.5))), append(p50s, float64(rd.storm.quantile(0.5)))
			p99i, p99s = append(p99i, float64(rd.idle.quantile(0.99))), append(p99s, float64(rd.storm.quantile(0.99)))
			ratios = append(ratios, rd.ratio())
			cpui, cpus = append(cpui, rd.idle.nodeCPU), append(cpus, rd.storm.nodeCPU)
			selfi, selfs = append(selfi, rd.idle.selfCPU), append(selfs, rd.storm.selfCPU)
			stormCPU = append(stormCPU, p.cpu)
			sent, created, refused = append(sent, float64(p.sent.Load())), append(created, float64(p.created.Load())), append(refused, float64(p.refused.Load()))
		}
		if len(r.rounds) == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s | **median** | %s / %s | %s / %s | **%.2f** | %.0f%% / %.0f%% | %.0f%% / %.0f%% | %.0f%% | %s | %s | %s |\n", r.limit,
			ms(time.Duration(median(p50i))), ms(time.Duration(median(p50s))), ms(time.Duration(median(p99i))), ms(time.Duration(median(p99s))), median(ratios),
			100*median(cpui), 100*median(cpus), 100*median(selfi), 100*median(selfs), 100*median(stormCPU),
			thousands(int(median(sent))), thousands(int(median(created))), thousands(int(median(refused))))
		storms := make([]clickStats, len(r.rounds))
		for i, rd := range r.rounds {
			storms[i] = rd.storm
		}
		pooled := stormRound{idle: merged(r.idle...), storm: merged(storms...)}
		fmt.Fprintf(&b, "| %s | all clicks | %s / %s | %s / %s | **%.2f** | | | | | | |\n", r.limit,
			ms(pooled.idle.quantile(0.5)), ms(pooled.storm.quantile(0.5)), ms(pooled.idle.quantile(0.99)), ms(pooled.storm.quantile(0.99)), pooled.ratio())
	}
	b.WriteString("\nA round's idle figures pool the idle phases before and after its storm. p99 storm / idle is the ratio within each round; the median row gives the median of those ratios, and all clicks the p99 of every storm's clicks against every idle phase's. CPU is CPU seconds per second of the phase, 100% being one core.\n")
	t.Log(b.String())
}

// median returns the median of vs; it sorts vs.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}
