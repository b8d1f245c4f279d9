package integration

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
	"github.com/caddy-linktrack/caddy-linktrack/linktrack"
)

var (
	storeBench         = flag.Bool("storebench", false, "run the tenant store benchmark: start-up, admin changes, propagation to a second node, bulk import, pages and memory with 1,000, 100,000 and 1,000,000 tenants in storage")
	storeBenchSizes    = flag.String("storebench-sizes", "1000,100000,1000000", "tenant counts TestStoreBenchmark stores before it starts the nodes, comma-separated")
	storeBenchProfiles = flag.String("storebench-profiles", "", "a directory where TestStoreBenchmark saves node A's heap profiles, after start-up and at the end, for go tool pprof")
)

// What TestStoreBenchmark does at each size.
const (
	storeBenchRefresh      = time.Second // storage_refresh_interval of both nodes
	storeBenchChanges      = 50          // sequential PUTs, then as many DELETEs
	storeBenchPropagations = 10          // tenants put on A and waited for on B
	storeBenchBulk         = 100000      // tenants of the one bulk POST
	storeBenchPages        = 20          // requests of each page
	storeBenchScans        = 3           // walks, page after page, of a filter that matches nothing
)

// TestStoreBenchmark measures the tenant store through the real Caddy
// binary, at each size of -storebench-sizes: storage shared by two
// nodes, A and B, is filled with that many tenants before they start
// (one change of the store, compacted into a snapshot, as a node would
// leave it), then it reports each node's start-up, PUT and DELETE
// latency on A with the bytes each change adds to the journal, the time
// from the start of a PUT on A to B answering a plain-HTTP click for
// that tenant, a bulk POST of 100,000 new tenants on A until it returns
// and until B serves the last of them, page times, and both nodes' RSS
// at the end. storage_refresh_interval is 1s. Figures are reported
// beside the goals of the issue, not asserted; a change refused, a
// tenant not served or a wrong total fails the test. Not run in CI:
//
//	go test ./integration -run TestStoreBenchmark -storebench -v -timeout 60m
//
// -storebench-sizes 1000,100000 leaves out the 1,000,000 run.
func TestStoreBenchmark(t *testing.T) {
	if !*storeBench {
		t.Skip("benchmark; run with -storebench")
	}
	var sizes []int
	for f := range strings.SplitSeq(*storeBenchSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 200 {
			t.Fatalf("-storebench-sizes: '%s' must be a number of at least 200", f)
		}
		sizes = append(sizes, n)
	}
	var results []*storeBenchResult
	defer func() { logStoreBenchTable(t, results) }()
	for _, n := range sizes {
		t.Run(fmt.Sprintf("%d_tenants", n), func(t *testing.T) {
			r := &storeBenchResult{tenants: n}
			results = append(results, r)
			measureStoreBench(t, r)
		})
	}
}

// storeBenchResult is what one size measured.
type storeBenchResult struct {
	tenants int

	populate                      time.Duration // storage filled by the test
	snapshotBytes                 int64
	loadedA, clickA, listedA      time.Duration // from the start of node A's process
	loadedB, clickB               time.Duration // from the start of node B's process
	put, del                      []time.Duration
	putBytes, delBytes, headBytes int64 // per change
	propagation                   []time.Duration
	bulkSwappedA                  time.Duration // A's log line: registry with the change in use
	bulkReturned, bulkServedB     time.Duration
	bulkBytes                     int64
	firstPage                     time.Duration // the first page after the bulk change: counts recounted
	page, middlePage, prefixPage  []time.Duration
	scan                          []time.Duration // each page of a filter that matches nothing
	scanWalk                      []time.Duration // every page of it, one walk
	scanPages                     int             // pages of one walk
	rssA, hwmA, rssB, hwmB        int             // KiB, at the end
	rssAStarted                   int             // KiB, after A's start-up
	heapAStarted, heapA, heapB    int             // MiB, Go heap in use
}

// storeBenchDomain is the i-th stored tenant; the names sort as i does.
func storeBenchDomain(i int) string {
	return fmt.Sprintf("t%07d.clicks.bench.test", i)
}

func measureStoreBench(t *testing.T, r *storeBenchResult) {
	rig := newStoreRig(t)
	n := r.tenants

	began := time.Now()
	r.snapshotBytes = populateStore(t, rig.storage, n)
	r.populate = time.Since(began)
	t.Logf("%d tenants stored in %s, snapshot %.1f MB", n, r.populate.Round(time.Millisecond), float64(r.snapshotBytes)/1e6)
	runtime.GC()
	debug.FreeOSMemory()

	last := storeBenchDomain(n - 1)
	a := startBenchNode(t, rig, n, last, &r.loadedA, &r.clickA)
	began = time.Now()
	if p := a.list(t, "?limit=1"); p.Total != n {
		t.Fatalf("node A lists %d tenants after start-up, want %d", p.Total, n)
	}
	r.listedA = r.clickA + time.Since(began)
	r.rssAStarted = procStatusKiB(t, a.caddy.cmd.Process.Pid, "VmRSS")
	r.heapAStarted = heapInUseMiB(t, a)
	saveHeapProfile(t, a, fmt.Sprintf("heap-%d-started.pb.gz", n))
	b := startBenchNode(t, rig, n, last, &r.loadedB, &r.clickB)
	t.Logf("start-up: A loaded %s, clicked %s; B loaded %s, clicked %s",
		r.loadedA.Round(time.Millisecond), r.clickA.Round(time.Millisecond), r.loadedB.Round(time.Millisecond), r.clickB.Round(time.Millisecond))

	// PUT, then DELETE, one new tenant at a time on A
	journal := filepath.Join(rig.storage, "linktrack", "tenants", "journal")
	var changed []string
	before := treeBytes(t, journal)
	for i := range storeBenchChanges {
		d := fmt.Sprintf("put%03d.bench.test", i)
		began := time.Now()
		status, body := adminRequest(t, a.adminPort, "PUT", "/linktrack/tenants/"+d, `{"origin": "esp"}`)
		r.put = append(r.put, time.Since(began))
		if status != 201 {
			t.Fatalf("PUT %s: %d %s", d, status, body)
		}
		changed = append(changed, d)
	}
	after := treeBytes(t, journal)
	r.putBytes = (after - before) / storeBenchChanges
	r.headBytes = fileSize(t, filepath.Join(rig.storage, "linktrack", "tenants", "head"))
	t.Logf("PUT latencies in order: %s", durationList(r.put))
	if s := a.clickHTTP(t, changed[len(changed)-1]); s != 302 {
		t.Fatalf("click on A for %s, just put: status %d", changed[len(changed)-1], s)
	}
	before = after
	for _, d := range changed {
		began := time.Now()
		status, body := adminRequest(t, a.adminPort, "DELETE", "/linktrack/tenants/"+d, "")
		r.del = append(r.del, time.Since(began))
		if status != 204 {
			t.Fatalf("DELETE %s: %d %s", d, status, body)
		}
	}
	r.delBytes = (treeBytes(t, journal) - before) / storeBenchChanges
	t.Logf("DELETE latencies in order: %s", durationList(r.del))
	if s := a.clickHTTP(t, changed[0]); s != 421 {
		t.Fatalf("click on A for %s, deleted: status %d, want 421", changed[0], s)
	}

	// propagation: from the start of a PUT on A to B's first 302. B
	// has just refreshed when it first serves a tenant; the PUTs wait
	// 0, 1/10, 2/10... of the refresh interval after that, so that they
	// fall at every point of B's refresh cycle.
	for i := range storeBenchPropagations {
		d := fmt.Sprintf("prop%02d.bench.test", i)
		time.Sleep(time.Duration(i) * storeBenchRefresh / storeBenchPropagations)
		began := time.Now()
		if status, body := adminRequest(t, a.adminPort, "PUT", "/linktrack/tenants/"+d, `{"origin": "esp"}`); status != 201 {
			t.Fatalf("PUT %s: %d %s", d, status, body)
		}
		r.propagation = append(r.propagation, waitServed(t, b, d, began, 30*time.Second))
	}
	t.Logf("propagation times in order: %s", durationList(r.propagation))
	total := n + storeBenchPropagations

	// one bulk change of 100,000 new tenants on A
	bulk := make([]string, storeBenchBulk)
	for i := range bulk {
		bulk[i] = fmt.Sprintf("bulk%06d.bench.test", i)
	}
	body := bulkBody(bulk)
	before = treeBytes(t, journal)
	type answer struct {
		status int
		body   string
		err    error
		took   time.Duration
	}
	answered := make(chan answer, 1)
	began = time.Now()
	go func() {
		// B is clicked meanwhile: it may serve the change before A answers
		res, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/linktrack/tenants", a.adminPort), "application/json", strings.NewReader(body))
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer res.Body.Close()
		out, err := io.ReadAll(res.Body)
		answered <- answer{res.StatusCode, string(out), err, time.Since(began)}
	}()
	r.bulkServedB = waitServed(t, b, bulk[len(bulk)-1], began, 5*time.Minute)
	var ans answer
	select {
	case ans = <-answered:
	case <-time.After(5 * time.Minute):
		t.Fatal("bulk POST unanswered after 5 minutes")
	}
	r.bulkReturned = ans.took
	if ans.err != nil || ans.status != 200 || !strings.Contains(ans.body, fmt.Sprintf(`"created":%d`, storeBenchBulk)) {
		t.Fatalf("bulk POST of %d tenants: %d %s %v", storeBenchBulk, ans.status, ans.body, ans.err)
	}
	swapped := a.caddy.waitLogFor(t, time.Minute, "tenant registry loaded", func(e map[string]any) bool {
		return e["tenants"] == float64(total+storeBenchBulk) && e["cause"] == "admin_api"
	})
	r.bulkSwappedA = logTime(swapped).Sub(began)
	r.bulkBytes = treeBytes(t, journal) - before
	total += storeBenchBulk
	for name, node := range map[string]*storeNode{"A": a, "B": b} {
		if p := node.list(t, "?limit=1"); p.Total != total {
			t.Fatalf("node %s lists %d tenants after the bulk change, want %d", name, p.Total, total)
		}
		if s := node.clickHTTP(t, bulk[0]); s != 302 {
			t.Fatalf("click on %s for %s: status %d", name, bulk[0], s)
		}
	}
	t.Logf("bulk: A's registry swapped after %s, POST returned after %s, B served the last after %s",
		r.bulkSwappedA.Round(time.Millisecond), r.bulkReturned.Round(time.Millisecond), r.bulkServedB.Round(time.Millisecond))

	// pages, on A: the first one after a change recounts certificate
	// states; the first page, a page from the middle, a prefix
	if status, body := adminRequest(t, a.adminPort, "PUT", "/linktrack/tenants/page.bench.test", `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT page.bench.test: %d %s", status, body)
	}
	total++
	// the registry in domain order: bulk*, page.bench.test, prop*, t*
	middle := total / 2
	cursor := ""
	if middle < storeBenchBulk {
		cursor = bulk[middle]
	} else {
		cursor = storeBenchDomain(middle - storeBenchBulk - 1 - storeBenchPropagations)
	}
	page := func(query string, want int, next bool) time.Duration {
		t.Helper()
		took, p := timedPage(t, a, query)
		if len(p.Tenants) != want || (p.NextCursor != "") != next || p.Total != total {
			t.Fatalf("GET %s: %d tenants, next cursor %q, total %d; want %d, a next cursor %t, total %d",
				query, len(p.Tenants), p.NextCursor, p.Total, want, next, total)
		}
		return took
	}
	r.firstPage = page("?limit=1000", 1000, true)
	for range storeBenchPages {
		r.page = append(r.page, page("?limit=1000", 1000, true))
		r.middlePage = append(r.middlePage, page("?limit=1000&cursor="+url.QueryEscape(cursor), 1000, true))
		r.prefixPage = append(r.prefixPage, page("?limit=1000&prefix=t00001", 100, false))
	}
	// a filter that matches none: pages examine a bounded number of
	// tenants each, so the walk takes pages of bounded time
	for range storeBenchScans {
		var walk time.Duration
		pages, cursor := 0, ""
		for {
			took, p := timedPage(t, a, "?limit=1000&provider=sendgrid&cursor="+url.QueryEscape(cursor))
			r.scan = append(r.scan, took)
			walk += took
			pages++
			if len(p.Tenants) != 0 || p.Total != total {
				t.Fatalf("provider=sendgrid, page %d: %d tenants, total %d; want none, total %d", pages, len(p.Tenants), p.Total, total)
			}
			if p.NextCursor == "" {
				break
			}
			cursor = p.NextCursor
		}
		r.scanWalk, r.scanPages = append(r.scanWalk, walk), pages
	}

	r.rssA = procStatusKiB(t, a.caddy.cmd.Process.Pid, "VmRSS")
	r.hwmA = procStatusKiB(t, a.caddy.cmd.Process.Pid, "VmHWM")
	r.rssB = procStatusKiB(t, b.caddy.cmd.Process.Pid, "VmRSS")
	r.heapA, r.heapB = heapInUseMiB(t, a), heapInUseMiB(t, b)
	saveHeapProfile(t, a, fmt.Sprintf("heap-%d-end.pb.gz", n))
	r.hwmB = procStatusKiB(t, b.caddy.cmd.Process.Pid, "VmHWM")
}

// populateStore stores n tenants, as the app stores them, in one change
// of the tenant store, then compacts it so that a node starts from a
// snapshot. It returns the snapshot's size.
func populateStore(t *testing.T, storage string, n int) int64 {
	t.Helper()
	return populateStoreOn(t, &certmagic.FileStorage{Path: storage}, n)
}

// populateStoreOn is populateStore on any storage.
func populateStoreOn(t *testing.T, storage certmagic.Storage, n int) int64 {
	t.Helper()
	ctx := context.Background()
	store := tenantstore.New(storage, tenantstore.Options{})
	change := tenantstore.Change{Put: make([]tenantstore.Record, n)}
	for i := range n {
		d := storeBenchDomain(i)
		if c, err := linktrack.CanonicalDomain(d); err != nil || c != d {
			t.Fatalf("%s is not canonical: %q %v", d, c, err)
		}
		value, err := json.Marshal(linktrack.Tenant{Domain: d, Origin: "esp"})
		if err != nil {
			t.Fatal(err)
		}
		change.Put[i] = tenantstore.Record{Domain: d, Value: value}
	}
	if _, err := store.Apply(ctx, change); err != nil {
		t.Fatal(err)
	}
	change = tenantstore.Change{}
	if err := store.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := store.Info(ctx)
	if err != nil || info.SnapshotRecords != int64(n) || info.JournalRecords != 0 {
		t.Fatalf("stored: %+v, %v; want a snapshot of %d records", info, err, n)
	}
	return info.SnapshotBytes
}

// startBenchNode starts a node on the rig's storage and returns once it
// answers a click for last with 302. loaded is set to the time from the
// start of its process to its log line "tenant registry loaded" with n
// tenants, clicked to its first 302 for last.
func startBenchNode(t *testing.T, rig *storeRig, n int, last string, loaded, clicked *time.Duration) *storeNode {
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
		change_limit 100000 1s
	}
}

http:// {
	linktrack
}
`, node.adminPort, node.httpPort, node.httpsPort, rig.storage, rig.origin.Port(), rig.caFile, storeBenchRefresh)
	began := time.Now()
	node.caddy = startCaddy(t, "caddyfile", config)
	*clicked = waitServed(t, node, last, began, time.Minute)
	e := node.caddy.waitLogFor(t, time.Minute, "tenant registry loaded", func(e map[string]any) bool {
		return e["tenants"] == float64(n) && e["cause"] == "config"
	})
	*loaded = logTime(e).Sub(began)
	return node
}

// logTime is the time of a log entry.
func logTime(e map[string]any) time.Time {
	ts, _ := e["ts"].(float64)
	sec, frac := math.Modf(ts)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// waitServed clicks domain through node until it answers 302, and
// returns the time since began.
func waitServed(t *testing.T, node *storeNode, domain string, began time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := 0
	for time.Now().Before(deadline) {
		if last = node.clickHTTP(t, domain); last == 302 {
			return time.Since(began)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("node on port %d does not serve %s after %s: last status %d", node.httpPort, domain, timeout, last)
	return 0
}

// timedPage times GET /linktrack/tenants<query> on node, to the last
// byte of the answer, and decodes the answer.
func timedPage(t *testing.T, node *storeNode, query string) (time.Duration, listPage) {
	t.Helper()
	began := time.Now()
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/linktrack/tenants%s", node.adminPort, query))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	took := time.Since(began)
	var p listPage
	if err == nil {
		err = json.Unmarshal(body, &p)
	}
	if res.StatusCode != 200 || err != nil {
		t.Fatalf("GET /linktrack/tenants%s: %d %.300s (%v)", query, res.StatusCode, body, err)
	}
	return took, p
}

// heapInUseMiB reads go_memstats_heap_inuse_bytes from node's metrics.
func heapInUseMiB(t *testing.T, node *storeNode) int {
	t.Helper()
	return max(0, int(metricValue(scrapeMetrics(t, node.adminPort), "go_memstats_heap_inuse_bytes"))>>20)
}

// saveHeapProfile saves node's heap profile, after a collection, as
// name in the -storebench-profiles directory, if one is given.
func saveHeapProfile(t *testing.T, node *storeNode, name string) {
	t.Helper()
	if *storeBenchProfiles == "" {
		return
	}
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", node.adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	profile, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	if err == nil {
		err = os.MkdirAll(*storeBenchProfiles, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(*storeBenchProfiles, name), profile, 0o644)
	}
	if err != nil {
		t.Fatalf("heap profile: %v", err)
	}
}

// treeBytes sums the sizes of the files under dir.
func treeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			total += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// procStatusKiB reads a field in KiB, such as VmRSS, of /proc/<pid>/status.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// logStoreBenchTable prints every size's figures side by side, with the
// issue's goals.
func logStoreBenchTable(t *testing.T, results []*storeBenchResult) {
	if len(results) == 0 {
		return
	}
	ms := func(d time.Duration) string {
		if d >= 10*time.Second {
			return fmt.Sprintf("%.1f s", d.Seconds())
		}
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
	p50max := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "-"
		}
		s := slices.Sorted(slices.Values(ds))
		return ms(s[len(s)/2]) + " / " + ms(s[len(s)-1])
	}
	median := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "-"
		}
		return ms(slices.Sorted(slices.Values(ds))[len(ds)/2])
	}
	mib := func(kib int) string { return fmt.Sprintf("%d MiB", kib>>10) }
	rows := []struct {
		name, goal string
		value      func(*storeBenchResult) string
	}{
		{"storage filled by the test (1 change + compaction)", "", func(r *storeBenchResult) string {
			return fmt.Sprintf("%s, %.1f MB", ms(r.populate), float64(r.snapshotBytes)/1e6)
		}},
		{"start-up A: registry loaded / click on last served", "≤ 5 s at 1M", func(r *storeBenchResult) string { return ms(r.loadedA) + " / " + ms(r.clickA) }},
		{"start-up A: list total N", "", func(r *storeBenchResult) string { return ms(r.listedA) }},
		{"start-up B: registry loaded / click on last served", "≤ 5 s at 1M", func(r *storeBenchResult) string { return ms(r.loadedB) + " / " + ms(r.clickB) }},
		{fmt.Sprintf("PUT of a new tenant on A, p50 / max (%d)", storeBenchChanges), "≤ 10 / 50 ms, ≤ 2x of 1k", func(r *storeBenchResult) string { return p50max(r.put) }},
		{fmt.Sprintf("DELETE on A, p50 / max (%d)", storeBenchChanges), "≤ 10 / 50 ms, ≤ 2x of 1k", func(r *storeBenchResult) string { return p50max(r.del) }},
		{"journal bytes per PUT / DELETE, + head rewritten", "a few KiB", func(r *storeBenchResult) string {
			return fmt.Sprintf("%d / %d B + %d B", r.putBytes, r.delBytes, r.headBytes)
		}},
		{fmt.Sprintf("PUT on A to 302 on B, p50 / max (%d)", storeBenchPropagations), fmt.Sprintf("≤ %s + 1 s", storeBenchRefresh), func(r *storeBenchResult) string { return p50max(r.propagation) }},
		{fmt.Sprintf("bulk POST of %d on A: A serves them / POST returned", storeBenchBulk), "", func(r *storeBenchResult) string {
			return ms(r.bulkSwappedA) + " / " + ms(r.bulkReturned)
		}},
		{fmt.Sprintf("bulk POST of %d: last one served by B", storeBenchBulk), "≤ 30 s", func(r *storeBenchResult) string { return ms(r.bulkServedB) }},
		{"bulk POST: journal bytes", "", func(r *storeBenchResult) string { return fmt.Sprintf("%.1f MB", float64(r.bulkBytes)/1e6) }},
		{"page of 1000, first after a change (counts recounted)", "≤ 50 ms", func(r *storeBenchResult) string { return ms(r.firstPage) }},
		{fmt.Sprintf("page of 1000, first page, p50 / max (%d)", storeBenchPages), "≤ 50 ms", func(r *storeBenchResult) string { return p50max(r.page) }},
		{fmt.Sprintf("page of 1000 from the middle, p50 / max (%d)", storeBenchPages), "≤ 50 ms", func(r *storeBenchResult) string { return p50max(r.middlePage) }},
		{fmt.Sprintf("prefix=t00001 (100 tenants), p50 / max (%d)", storeBenchPages), "≤ 50 ms", func(r *storeBenchResult) string { return p50max(r.prefixPage) }},
		{"provider=sendgrid (matches none): each page, p50 / max", "≤ 50 ms", func(r *storeBenchResult) string { return p50max(r.scan) }},
		{fmt.Sprintf("provider=sendgrid: pages to the end, all of them (median of %d)", storeBenchScans), "", func(r *storeBenchResult) string {
			return fmt.Sprintf("%d, %s", r.scanPages, median(r.scanWalk))
		}},
		{"A after start-up: RSS / Go heap in use", "", func(r *storeBenchResult) string {
			return fmt.Sprintf("%s / %d MiB", mib(r.rssAStarted), r.heapAStarted)
		}},
		{"A at the end: RSS / peak RSS / Go heap in use", "RSS < 512 MiB at 1M", func(r *storeBenchResult) string {
			return fmt.Sprintf("%s / %s / %d MiB", mib(r.rssA), mib(r.hwmA), r.heapA)
		}},
		{"B at the end: RSS / peak RSS / Go heap in use", "RSS < 512 MiB at 1M", func(r *storeBenchResult) string {
			return fmt.Sprintf("%s / %s / %d MiB", mib(r.rssB), mib(r.hwmB), r.heapB)
		}},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nstorage_refresh_interval %s, GOMAXPROCS %d, file_system storage under %s\n", storeBenchRefresh, runtime.GOMAXPROCS(0), os.TempDir())
	fmt.Fprintf(&b, "| measure | goal |")
	for _, r := range results {
		fmt.Fprintf(&b, " %s tenants |", thousands(r.tenants))
	}
	fmt.Fprintf(&b, "\n|---|---|%s\n", strings.Repeat("---:|", len(results)))
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %s |", row.name, row.goal)
		for _, r := range results {
			fmt.Fprintf(&b, " %s |", row.value(r))
		}
		b.WriteString("\n")
	}
	t.Log(b.String())
}

// thousands writes n with commas: 1,000,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// durationList writes durations in milliseconds, in their order.
func durationList(ds []time.Duration) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.1f", float64(d.Microseconds())/1000)
	}
	return b.String() + " ms"
}
