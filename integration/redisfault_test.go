package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/redisstorage"
	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
	"github.com/caddyserver/certmagic"
)

// lockHolderEnv names the Redis server a child of the test binary
// takes the tenant-store lock on; see runLockHolder.
const lockHolderEnv = "LINKTRACK_TEST_LOCK_HOLDER"

// stallAtHead is storage whose write of the tenant store's head never
// returns, after it says so on stdout: a node stopped in the middle of
// a change, holding the lock, its journal record written and not yet
// committed.
type stallAtHead struct{ certmagic.Storage }

func (s stallAtHead) Store(ctx context.Context, key string, value []byte) error {
	if key == tenantstore.DefaultPrefix+"head" {
		fmt.Println("holding the lock, head not written")
		select {}
	}
	return s.Storage.Store(ctx, key, value)
}

// runLockHolder runs in a child process: it makes a change through the
// tenant store and the Redis storage module, as a node does, and stalls
// holding the lock until it is killed.
func runLockHolder(addr string) int {
	st := redisstorage.New(&redisstorage.Storage{Address: addr})
	store := tenantstore.New(stallAtHead{st}, tenantstore.Options{})
	_, err := store.Apply(context.Background(), tenantstore.Change{Put: []tenantstore.Record{
		{Domain: "orphan.brand.test", Value: json.RawMessage(`{"domain":"orphan.brand.test","origin":"esp"}`)},
	}})
	fmt.Fprintln(os.Stderr, "lock holder: the change returned:", err)
	return 1
}

// adminAnswer is an admin request's outcome, for requests sent from
// other goroutines than the test's.
type adminAnswer struct {
	status int
	body   string
	err    error
	at     time.Time
}

func adminAsync(port int, method, path, body string) <-chan adminAnswer {
	ch := make(chan adminAnswer, 1)
	go func() {
		req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(body))
		if err != nil {
			ch <- adminAnswer{err: err}
			return
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := controlClient.Do(req)
		if err != nil {
			ch <- adminAnswer{err: err, at: time.Now()}
			return
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		ch <- adminAnswer{status: res.StatusCode, body: string(out), at: time.Now()}
	}()
	return ch
}

// journalKeys returns the keys of the journal records stored in Redis.
func journalKeys(t *testing.T, rig *storeRig) []string {
	t.Helper()
	c := rig.be.redis.Client()
	defer c.Close()
	keys, err := c.Keys(context.Background(), "caddy/"+tenantstore.DefaultPrefix+"journal/*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// TestRedisLockHolderKilled: a node killed (SIGKILL) in the middle of a
// change, holding the tenant-store lock, its journal record written and
// head not: another node's change waits for the lock to expire, then
// completes; the dead node's change is not applied, nothing is lost or
// applied twice.
func TestRedisLockHolderKilled(t *testing.T) {
	rig := newStoreRigOn(t, "redis")
	a, b := startStoreNode(t, rig), startStoreNode(t, rig)
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/before.brand.test", `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT before: %d %s", status, body)
	}
	b.waitTenants(t, 2)

	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), lockHolderEnv+"="+rig.be.redis.Addr())
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	holding := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "holding the lock") {
				close(holding)
			}
		}
	}()
	select {
	case <-holding:
	case <-time.After(30 * time.Second):
		t.Fatal("the lock holder did not take the lock in 30s")
	}
	if keys := journalKeys(t, rig); len(keys) != 2 {
		t.Fatalf("journal before the kill: %q, want the first change and the holder's uncommitted one", keys)
	}

	// b's change waits for the lock; then the holder dies
	answer := adminAsync(b.adminPort, "PUT", "/linktrack/tenants/after.brand.test", `{"origin": "esp"}`)
	select {
	case r := <-answer:
		t.Fatalf("a change completed while another node held the lock: %+v", r)
	case <-time.After(time.Second): // a change takes milliseconds when the lock is free
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()
	killed := time.Now()
	var r adminAnswer
	select {
	case r = <-answer:
	case <-time.After(20 * time.Second):
		t.Fatal("b's change did not complete within 20s of the holder's death")
	}
	waited := r.at.Sub(killed)
	t.Logf("b's change completed %v after the lock holder was killed (lock TTL 5s, refreshed every 2s)", waited)
	if r.err != nil || r.status != 201 {
		t.Fatalf("b's change: %v %d %s", r.err, r.status, r.body)
	}
	if waited < 2*time.Second || waited > 7*time.Second {
		t.Errorf("b's change waited %v after the kill, want the lock's remaining TTL, 3s to 5s", waited)
	}

	a.caddy.waitLog(t, "tenant added", func(e map[string]any) bool { return e["domain"] == "after.brand.test" })
	for _, n := range []*storeNode{a, b} {
		if got := n.listAll(t, "source=storage"); !slices.Equal(got, []string{"after.brand.test", "before.brand.test"}) {
			t.Errorf("node on port %d: stored tenants %q, want after and before, not the dead node's", n.adminPort, got)
		}
		if s := n.clickHTTP(t, "orphan.brand.test"); s != 421 {
			t.Errorf("the dead node's uncommitted tenant: status %d, want 421", s)
		}
	}
	// version 2 is b's change, written over the dead node's record
	keys := journalKeys(t, rig)
	if len(keys) != 2 {
		t.Fatalf("journal: %q, want 2 records", keys)
	}
	st := redisstorage.New(&redisstorage.Storage{Address: rig.be.redis.Addr()})
	defer st.Close()
	v2, err := st.Load(context.Background(), strings.TrimPrefix(keys[1], "caddy/"))
	if err != nil || !strings.Contains(string(v2), "after.brand.test") || strings.Contains(string(v2), "orphan") {
		t.Errorf("journal record 2: %v\n%s", err, v2)
	}
	start := time.Now()
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/third.brand.test", `{"origin": "esp"}`); status != 201 || time.Since(start) > 2*time.Second {
		t.Errorf("a change once the lock is free: %d %s after %v", status, body, time.Since(start))
	}
}

// clicker sends clicks for known tenants through nodes until stopped,
// counting answers: plain-HTTP clicks, and HTTPS clicks through the nodes
// it has roots for, verified against those roots.
type clicker struct {
	// ok counts the clicks answered over either; okTLS those over HTTPS.
	ok, okTLS, failed atomic.Int64
	mu                sync.Mutex
	failures          []string
	stop              chan struct{}
	stopOnce          sync.Once
	wg                sync.WaitGroup
}

func startClicks(nodes []*storeNode, domains []string, roots map[*storeNode]*x509.CertPool) *clicker {
	c := &clicker{stop: make(chan struct{})}
	for _, n := range nodes {
		c.wg.Go(func() { c.run(n, domains, nil) })
		if pool := roots[n]; pool != nil {
			c.wg.Go(func() { c.run(n, domains, pool) })
		}
	}
	return c
}

// run clicks through n until stopped, over HTTPS verified against roots,
// or over plain HTTP when roots is nil; each click on a new connection,
// so each HTTPS click completes a handshake.
func (c *clicker) run(n *storeNode, domains []string, roots *x509.CertPool) {
	for i := 0; ; i++ {
		select {
		case <-c.stop:
			return
		default:
		}
		host := domains[i%len(domains)]
		port := n.httpPort
		if roots != nil {
			port = n.httpsPort
		}
		status, err := clickOnce(port, host, roots)
		if err == nil && status == 302 {
			c.ok.Add(1)
			if roots != nil {
				c.okTLS.Add(1)
			}
			continue
		}
		c.failed.Add(1)
		c.mu.Lock()
		if len(c.failures) < 10 {
			c.failures = append(c.failures, fmt.Sprintf("%s via port %d: %d %v", host, port, status, err))
		}
		c.mu.Unlock()
	}
}

// clickOnce sends one click for host to port: over HTTPS with SNI host,
// verified against roots, or over plain HTTP when roots is nil.
func clickOnce(port int, host string, roots *x509.CertPool) (int, error) {
	var cfg *tls.Config
	if roots != nil {
		cfg = &tls.Config{RootCAs: roots, ServerName: host}
	}
	conn, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", port), cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	res, err := conn.Do(standin.RawRequest{Method: "GET", Target: "/ls/click", Host: host}, 10*time.Second)
	if err != nil {
		return 0, err
	}
	return res.Status, nil
}

// internalRoot returns the root certificate of node n's internal CA,
// from the admin API: with Redis storage there is no file to read it
// from.
func internalRoot(t *testing.T, n *storeNode) *x509.CertPool {
	t.Helper()
	status, body := n.admin(t, "GET", "/pki/ca/local", "")
	var ca struct {
		Root string `json:"root_certificate"`
	}
	if err := json.Unmarshal([]byte(body), &ca); status != 200 || err != nil {
		t.Fatalf("GET /pki/ca/local, node on port %d: %d %s (%v)", n.adminPort, status, body, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ca.Root)) {
		t.Fatalf("node on port %d: no root certificate in %s", n.adminPort, body)
	}
	return pool
}

func (c *clicker) halt() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// waitClicks waits until count more clicks have succeeded.
func (c *clicker) waitClicks(t *testing.T, count int64) {
	t.Helper()
	target := c.ok.Load() + count
	deadline := time.Now().Add(30 * time.Second)
	for c.ok.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("%d clicks succeeded, want %d", c.ok.Load(), target)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter the clickers raise
	}
}

// redisOutage is how long TestRedisDownUnderClicks keeps Redis down.
const redisOutage = 30 * time.Second

// TestRedisDownUnderClicks: with Redis down, every node keeps serving
// its tenants and their certificates from memory (no failed click over
// HTTP or HTTPS), admin changes get 503 naming the storage, and once
// Redis is back the nodes follow changes again without a restart.
func TestRedisDownUnderClicks(t *testing.T) {
	rig := newStoreRigOn(t, "redis")
	a, b := startStoreNodeTLS(t, rig, true), startStoreNodeTLS(t, rig, true)
	var domains []string
	for i := range 20 {
		domains = append(domains, fmt.Sprintf("known-%02d.brand.test", i))
	}
	if status, body := a.admin(t, "POST", "/linktrack/tenants", bulkBody(domains)); status != 200 {
		t.Fatalf("bulk POST: %d %s", status, body)
	}
	b.waitTenants(t, 21)
	known := append(domains, "click.config.test")
	// every node holds every tenant's certificate before the outage: a
	// verified HTTPS click through each node, for each tenant, answered
	// (pre-issuance obtains them in the background; a click not yet
	// answered is retried for a bounded time)
	roots := map[*storeNode]*x509.CertPool{}
	for _, n := range []*storeNode{a, b} {
		roots[n] = internalRoot(t, n)
		for _, d := range known {
			deadline := time.Now().Add(time.Minute)
			for {
				status, err := clickOnce(n.httpsPort, d, roots[n])
				if err == nil && status == 302 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("HTTPS click for %s, node on port %d, before the outage: %d %v", d, n.adminPort, status, err)
				}
				time.Sleep(200 * time.Millisecond) // the pace of the retries
			}
		}
	}
	obtained := 0
	for _, n := range []*storeNode{a, b} {
		obtained += len(n.caddy.logEntriesNamed("tenant certificate obtained"))
	}
	t.Logf("before the outage: every tenant answered over HTTPS on both nodes; %d certificates obtained in all", obtained)
	clicks := startClicks([]*storeNode{a, b}, known, roots)
	defer clicks.halt()
	clicks.waitClicks(t, 50)

	rig.be.redis.Stop(true) // saved: it comes back with its data
	down := time.Now()
	okBefore, okTLSBefore := clicks.ok.Load(), clicks.okTLS.Load()
	for _, n := range []*storeNode{a, b} {
		n.caddy.waitLog(t, "reading stored tenant changes; keeping the registry in use", nil)
	}
	for _, n := range []*storeNode{a, b} {
		status, body := n.admin(t, "PUT", "/linktrack/tenants/during.brand.test", `{"origin": "esp"}`)
		if status != 503 || !strings.Contains(body, "tenant storage unavailable") || !strings.Contains(body, "redis") {
			t.Errorf("PUT with Redis down, node on port %d: %d %s; want 503 naming the storage", n.adminPort, status, body)
		}
	}
	if status, body := b.admin(t, "DELETE", "/linktrack/tenants/"+domains[0], ""); status != 503 {
		t.Errorf("DELETE with Redis down: %d %s, want 503", status, body)
	}
	<-time.After(time.Until(down.Add(redisOutage))) // the outage itself, under traffic
	okDown, okTLSDown := clicks.ok.Load()-okBefore, clicks.okTLS.Load()-okTLSBefore
	rig.be.redis.Start()

	// back: a change made now reaches the other node, no restart
	// go-redis answers with its last dial error, without dialing, for
	// up to a second after a run of failed dials: retry a 503 for a
	// bounded time
	back := time.Now()
	var status int
	var body string
	for {
		status, body = a.admin(t, "PUT", "/linktrack/tenants/after.brand.test", `{"origin": "esp"}`)
		if status != 503 || time.Since(back) > 10*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond) // the pace of the retries
	}
	if status != 201 {
		t.Fatalf("PUT once Redis is back: %d %s", status, body)
	}
	t.Logf("the first change once Redis was back succeeded after %v", time.Since(back))
	b.caddy.waitLog(t, "tenant added", func(e map[string]any) bool { return e["domain"] == "after.brand.test" })
	if s := b.clickHTTP(t, "after.brand.test"); s != 302 {
		t.Errorf("click on node b for the tenant added after the outage: %d", s)
	}
	if got := b.listAll(t, "source=storage"); len(got) != 21 {
		t.Errorf("node b lists %d stored tenants after the outage, want 21", len(got))
	}
	clicks.waitClicks(t, 50)
	clicks.halt()
	t.Logf("clicks: %d answered, %d of them during the %v outage (%d over HTTP, %d over HTTPS), %d failed",
		clicks.ok.Load(), okDown, redisOutage, okDown-okTLSDown, okTLSDown, clicks.failed.Load())
	if clicks.failed.Load() != 0 || okDown-okTLSDown == 0 || okTLSDown == 0 {
		t.Errorf("%d clicks failed (%q), %d answered during the outage over HTTP and %d over HTTPS; want 0 failed and some answered over each",
			clicks.failed.Load(), clicks.failures, okDown-okTLSDown, okTLSDown)
	}
}

// TestRedisRestartedEmpty: Redis loses every key. Nodes keep serving
// every tenant they hold, log it and count it, and follow what is
// stored from then on.
func TestRedisRestartedEmpty(t *testing.T) {
	rig := newStoreRigOn(t, "redis")
	a, b := startStoreNode(t, rig), startStoreNode(t, rig)
	domains := []string{"kept-1.brand.test", "kept-2.brand.test", "kept-3.brand.test"}
	if status, body := a.admin(t, "POST", "/linktrack/tenants", bulkBody(domains)); status != 200 {
		t.Fatalf("bulk POST: %d %s", status, body)
	}
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/kept-4.brand.test", `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT: %d %s", status, body)
	}
	b.waitTenants(t, 5)

	rig.be.redis.Stop(false)
	rig.be.redis.Start() // empty
	for _, n := range []*storeNode{a, b} {
		e := n.caddy.waitLog(t, "tenant storage lost changes: it is behind the registry in use; keeping every tenant and following storage from its version", nil)
		if e["level"] != "error" || e["storage_version"] != 0.0 || e["registry_version"] != 2.0 {
			t.Errorf("node on port %d logged %v", n.adminPort, e)
		}
	}
	for _, n := range []*storeNode{a, b} {
		if got := n.listAll(t, "source=storage"); len(got) != 4 {
			t.Errorf("node on port %d lists %q after Redis lost its data, want the 4 it held", n.adminPort, got)
		}
		if s := n.clickHTTP(t, "kept-2.brand.test"); s != 302 {
			t.Errorf("click on a tenant Redis forgot, node on port %d: %d", n.adminPort, s)
		}
		metrics := n.metricsText(t)
		if !strings.Contains(metrics, `caddy_linktrack_registry_reloads_total{result="behind",source="storage"} 1`) {
			t.Errorf("node on port %d: no count of storage behind:\n%s", n.adminPort, grepLines(metrics, "reloads"))
		}
	}
	// a change made now is stored and followed by both nodes, which
	// still hold what Redis forgot
	if status, body := b.admin(t, "PUT", "/linktrack/tenants/new.brand.test", `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT on emptied Redis: %d %s", status, body)
	}
	a.caddy.waitLog(t, "tenant added", func(e map[string]any) bool { return e["domain"] == "new.brand.test" })
	for _, n := range []*storeNode{a, b} {
		if got := n.listAll(t, "source=storage"); len(got) != 5 {
			t.Errorf("node on port %d lists %q, want the 4 kept and the new one", n.adminPort, got)
		}
	}
}

// metricsText returns the node's /metrics from its admin endpoint.
func (n *storeNode) metricsText(t *testing.T) string {
	t.Helper()
	status, body := n.admin(t, "GET", "/metrics", "")
	if status != 200 {
		t.Fatalf("GET /metrics: %d", status)
	}
	return body
}
