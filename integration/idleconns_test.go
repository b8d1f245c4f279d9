package integration

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

var (
	idleConns       = flag.Bool("idleconns", false, "run the idle connection benchmark: Caddy's memory per idle client TLS connection, over HTTP/1.1 and over HTTP/2")
	idleConnsCount  = flag.Int("idleconns-n", 5000, "idle connections TestIdleConnMemory opens to each Caddy")
	idleConnsRounds = flag.Int("idleconns-rounds", 3, "rounds of TestIdleConnMemory, each with a fresh Caddy for HTTP/1.1 and then for HTTP/2")
)

// What TestIdleConnMemory's clients are.
const (
	idleConnsDialers = 32 // connections opened at once
	idleConnsSettle  = 2 * time.Second
)

// TestIdleConnMemory measures what an idle client connection costs
// Caddy with linktrack: on loopback, it opens -idleconns-n TLS
// connections to the tracking domain, sends one click on each, over
// HTTP/1.1 or over HTTP/2, and leaves them open. Before and after, it
// reads Caddy's RSS from /proc and its Go heap and goroutine stacks
// after a collection (the MemStats of /debug/pprof/heap?gc=1&debug=1),
// and reports each delta divided by the connections. Each measurement
// runs on a fresh Caddy (memory freed by a round would blur the next),
// HTTP/1.1 then HTTP/2, for -idleconns-rounds rounds; it prints every
// round and the medians. The test raises its soft limit of open files
// to the hard limit, and Caddy inherits it. The figures are reported,
// not asserted; a click that is not 302 or a connection Caddy closes
// fails the test. Not run in CI:
//
//	go test ./integration -run TestIdleConnMemory -idleconns -v -timeout 20m
func TestIdleConnMemory(t *testing.T) {
	if !*idleConns {
		t.Skip("benchmark; run with -idleconns")
	}
	n := *idleConnsCount
	if n < 1 || *idleConnsRounds < 1 {
		t.Fatal("-idleconns-n and -idleconns-rounds must be positive")
	}
	raiseFileLimit(t, uint64(n)+1024)
	protocols := []string{"http/1.1", "h2"}
	results := map[string][]connMemory{}
	for round := range *idleConnsRounds {
		for _, proto := range protocols {
			t.Run(fmt.Sprintf("round%d/%s", round+1, proto), func(t *testing.T) {
				m := measureIdleConns(t, proto, n)
				results[proto] = append(results[proto], m)
				t.Logf("%s, round %d: per connection RSS %s, heap %s, stacks %s; %s connections open in %s",
					proto, round+1, kib(m.rss), kib(m.heap), kib(m.stack), thousands(n), m.opened.Round(time.Millisecond))
			})
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\nidle client connections: %s TLS connections to one Caddy, one click each, then idle; %d rounds, a fresh Caddy for each measurement\n\n",
		thousands(n), *idleConnsRounds)
	b.WriteString("| protocol | RSS / connection | Go heap / connection | goroutine stacks / connection | rounds (RSS) |\n|---|--:|--:|--:|---|\n")
	for _, proto := range protocols {
		var rss, heap, stack []float64
		var each []string
		for _, m := range results[proto] {
			rss, heap, stack = append(rss, m.rss), append(heap, m.heap), append(stack, m.stack)
			each = append(each, kib(m.rss))
		}
		if len(rss) == 0 {
			continue
		}
		name := map[string]string{"http/1.1": "HTTP/1.1", "h2": "HTTP/2"}[proto]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", name, kib(median(rss)), kib(median(heap)), kib(median(stack)), strings.Join(each, ", "))
	}
	b.WriteString("\nmedians over the rounds; RSS from /proc/<pid>/status VmRSS, heap and stacks from runtime.MemStats after a collection (HeapAlloc, StackInuse).\n")
	t.Log(b.String())
}

// connMemory is what one measurement found, in bytes per connection.
type connMemory struct {
	rss, heap, stack float64
	opened           time.Duration
}

func measureIdleConns(t *testing.T, proto string, n int) connMemory {
	r := newRig(t, rigOptions{})
	pid := r.caddy.cmd.Process.Pid
	addr := fmt.Sprintf("127.0.0.1:%d", r.httpsPort)

	// warm up: the click path, the origin's connections, the TLS caches
	warm := make([]idleConn, idleConnsDialers)
	var wg sync.WaitGroup
	for i := range warm {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := openIdleConn(addr, r.clientTLS(), proto)
			if err != nil {
				t.Error(err)
				return
			}
			warm[i] = c
		}()
	}
	wg.Wait()
	for _, c := range warm {
		if c != nil {
			c.Close()
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	time.Sleep(idleConnsSettle)
	fds0 := openFiles(t, pid)
	heap0, stack0 := goMemory(t, r.adminPort)
	rss0 := procStatusKiB(t, pid, "VmRSS") << 10

	conns := make([]idleConn, n)
	began := time.Now()
	next := make(chan int)
	var failed sync.Once
	for range idleConnsDialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := openIdleConn(addr, r.clientTLS(), proto)
				if err != nil {
					failed.Do(func() { t.Errorf("connection %d: %v", i, err) })
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	opened := time.Since(began)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if t.Failed() {
		t.FailNow()
	}
	time.Sleep(idleConnsSettle)
	heap1, stack1 := goMemory(t, r.adminPort)
	rss1 := procStatusKiB(t, pid, "VmRSS") << 10
	// Caddy's other files (the origin's connections) come and go by a
	// few; far fewer than n means it closed client connections
	if fds := openFiles(t, pid) - fds0; fds < n-n/50 {
		t.Fatalf("Caddy holds %d more files than before, want about %d: it closed connections", fds, n)
	}
	return connMemory{
		rss:    float64(rss1-rss0) / float64(n),
		heap:   float64(heap1-heap0) / float64(n),
		stack:  float64(stack1-stack0) / float64(n),
		opened: opened,
	}
}

// idleConn is an open client connection, kept idle.
type idleConn interface{ Close() error }

// openIdleConn opens a TLS connection to addr, agrees on proto, sends
// one click over it and reads the answer, and returns it open.
func openIdleConn(addr string, config *tls.Config, proto string) (idleConn, error) {
	config = config.Clone()
	config.NextProtos = []string{proto}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr, config)
	if err != nil {
		return nil, err
	}
	if got := conn.ConnectionState().NegotiatedProtocol; got != proto {
		conn.Close()
		return nil, fmt.Errorf("negotiated '%s', want '%s'", got, proto)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var status int
	var c idleConn = conn
	if proto == "h2" {
		cc, err := (&http2.Transport{}).NewClientConn(conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		req, _ := http.NewRequest("GET", "https://"+trackingDomain+"/ls/click", nil)
		res, err := cc.RoundTrip(req)
		if err != nil {
			cc.Close()
			return nil, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		status, c = res.StatusCode, cc
	} else {
		if _, err := io.WriteString(conn, "GET /ls/click HTTP/1.1\r\nHost: "+trackingDomain+"\r\n\r\n"); err != nil {
			conn.Close()
			return nil, err
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			conn.Close()
			return nil, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		status = res.StatusCode
	}
	conn.SetDeadline(time.Time{})
	if status != http.StatusFound {
		c.Close()
		return nil, fmt.Errorf("click answered %d, want 302", status)
	}
	return c, nil
}

// goMemory returns the Go heap in use (HeapAlloc) and the goroutine
// stacks (StackInuse) of the Caddy whose admin endpoint is on port,
// after a collection.
func goMemory(t *testing.T, adminPort int) (heap, stack int) {
	t.Helper()
	res, err := controlClient.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1&debug=1", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	heap, stack = -1, -1
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			heap, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok { // "# Stack = inuse / sys"
			stack, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	if heap < 0 || stack < 0 {
		t.Fatalf("no HeapAlloc or Stack in the heap profile (%v)", sc.Err())
	}
	return heap, stack
}

// openFiles counts pid's open files.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// raiseFileLimit raises this process's soft limit of open files to its
// hard limit, which Caddy inherits; it fails if that is below want.
func raiseFileLimit(t *testing.T, want uint64) {
	t.Helper()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if l.Max < want {
		t.Fatalf("the hard limit of open files is %d; %d connections need %d", l.Max, *idleConnsCount, want)
	}
	if l.Cur < l.Max {
		old := l.Cur
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			l.Cur = old
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		})
	}
}

// kib formats bytes in KiB.
func kib(bytes float64) string {
	return fmt.Sprintf("%.1f KiB", bytes/1024)
}
