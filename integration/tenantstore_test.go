package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// storeNode is a Caddy serving the tenant registry over plain HTTP, with
// no certificates unless started by startStoreNodeTLS, on storage it may
// share with other nodes.
type storeNode struct {
	node
	storage string
}

// startStoreNode starts a node on the rig's storage that proxies to
// its origin.
func startStoreNode(t *testing.T, rig *storeRig) *storeNode {
	t.Helper()
	return startStoreNodeTLS(t, rig, false)
}

// startStoreNodeTLS is startStoreNode; with withHTTPS, the node also
// serves HTTPS, with certificates from Caddy's internal CA obtained on
// demand and in the background (pre-issuance).
func startStoreNodeTLS(t *testing.T, rig *storeRig, withHTTPS bool) *storeNode {
	t.Helper()
	onDemand, preIssuance, httpsSite := "", "pre_issuance off", ""
	if withHTTPS {
		onDemand = "on_demand_tls {\n\t\tpermission linktrack\n\t}"
		preIssuance = "pre_issuance on"
		httpsSite = "https:// {\n\ttls {\n\t\ton_demand\n\t\tissuer internal\n\t}\n\tlinktrack\n}\n"
	}
	n := &storeNode{storage: rig.storage}
	n.httpPort, n.httpsPort, n.adminPort = freePort(t), freePort(t), freePort(t)
	n.caddy = startCaddyOf(t, rig.be.bin, "caddyfile", fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	%s
	%s
	servers {
		protocols h1
	}
	linktrack {
		origin esp https://localhost:%d {
			tls_trust_pool file %s
		}
		tenant click.config.test esp
		%s
		storage_refresh_interval 200ms
	}
}

%shttp:// {
	linktrack
}
`, n.adminPort, n.httpPort, n.httpsPort, rig.be.option, onDemand, rig.origin.Port(), rig.caFile, preIssuance, httpsSite))
	return n
}

// storeRig is an origin and the storage that nodes share.
type storeRig struct {
	origin *standin.Origin
	caFile string
	be     *backend
	// storage is the file_system storage's directory.
	storage string
}

// newStoreRig returns a rig on file_system storage.
func newStoreRig(t *testing.T) *storeRig { return newStoreRigOn(t, "file_system") }

// newStoreRigOn returns a rig on a backend of the kind named.
func newStoreRigOn(t *testing.T, kind string) *storeRig {
	dir := t.TempDir()
	be := newBackend(t, kind, dir)
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	return &storeRig{origin: origin, caFile: caFile, be: be, storage: be.dir}
}

// listPage is GET /linktrack/tenants's answer.
type listPage struct {
	Tenants []struct {
		Domain, Provider, Region, Origin, Source, Status string
	}
	NextCursor string `json:"next_cursor"`
	Total      int
	Counts     map[string]int
}

func (n *storeNode) list(t *testing.T, query string) listPage {
	t.Helper()
	status, body := n.admin(t, "GET", "/linktrack/tenants"+query, "")
	var p listPage
	if err := json.Unmarshal([]byte(body), &p); status != 200 || err != nil {
		t.Fatalf("GET /linktrack/tenants%s: %d %s (%v)", query, status, body, err)
	}
	return p
}

// listAll pages through every tenant matching query and returns their
// domains in the order listed.
func (n *storeNode) listAll(t *testing.T, query string) []string {
	t.Helper()
	var domains []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("more than 1000 pages")
		}
		q := "?cursor=" + url.QueryEscape(cursor)
		if query != "" {
			q += "&" + query
		}
		p := n.list(t, q)
		for _, tn := range p.Tenants {
			domains = append(domains, tn.Domain)
		}
		if p.NextCursor == "" {
			return domains
		}
		cursor = p.NextCursor
	}
}

// clickHTTP sends a plain-HTTP click for host through node n.
func (n *storeNode) clickHTTP(t *testing.T, host string) int {
	t.Helper()
	c, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", n.httpPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Do(standin.RawRequest{Method: "GET", Target: "/ls/click", Host: host}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

func bulkBody(domains []string, remove ...string) string {
	var b strings.Builder
	b.WriteString(`{"tenants": [`)
	for i, d := range domains {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"domain": %q, "origin": "esp"}`, d)
	}
	b.WriteString("]")
	if len(remove) > 0 {
		r, _ := json.Marshal(remove)
		fmt.Fprintf(&b, `, "remove": %s`, r)
	}
	b.WriteString("}")
	return b.String()
}

// TestBulkChangesAndPages: a bulk change is stored as one change and
// served by every node; a faulty one is refused whole, naming every
// faulty entry; the listing pages in domain order and filters.
func TestBulkChangesAndPages(t *testing.T) { forEachBackend(t, testBulkChangesAndPages) }

func testBulkChangesAndPages(t *testing.T, kind string) {
	rig := newStoreRigOn(t, kind)
	a := startStoreNode(t, rig)
	b := startStoreNode(t, rig)

	var domains []string
	for i := range 250 {
		domains = append(domains, fmt.Sprintf("c%03d.brand-%d.test", i, i%7))
	}
	status, body := a.admin(t, "POST", "/linktrack/tenants", bulkBody(domains))
	if status != 200 || !strings.Contains(body, `"put":250`) || !strings.Contains(body, `"created":250`) {
		t.Fatalf("bulk POST: %d %s", status, body)
	}
	b.waitTenants(t, 251) // with the config tenant
	if s := b.clickHTTP(t, "c123.brand-4.test"); s != 302 {
		t.Errorf("click on node b: status %d", s)
	}
	if rec, err := rig.origin.Next(10 * time.Second); err != nil || rec.Values("Host")[0] != "c123.brand-4.test" {
		t.Errorf("origin: %v %v", err, rec)
	}

	// a faulty bulk change: every faulty entry named, nothing stored
	faulty := `{"tenants": [
		{"domain": "ok-1.brand.test", "origin": "esp"},
		{"domain": "bad-region.brand.test", "provider": "customerio", "region": "ap"},
		{"domain": "ok-2.brand.test", "origin": "esp"},
		{"domain": "203.0.113.7", "origin": "esp"},
		{"domain": "OK-1.brand.test", "origin": "esp"},
		{"domain": "click.config.test", "origin": "esp"}
	], "remove": ["c001.brand-1.test", "a..b"]}`
	status, body = a.admin(t, "POST", "/linktrack/tenants", faulty)
	var refused struct {
		Error  string
		Faults []struct {
			Index        int
			List, Domain string
			Error        string
		}
	}
	if err := json.Unmarshal([]byte(body), &refused); status != 400 || err != nil {
		t.Fatalf("faulty bulk POST: %d %s", status, body)
	}
	var named []string
	for _, f := range refused.Faults {
		named = append(named, fmt.Sprintf("%s[%d] %s", f.List, f.Index, f.Domain))
	}
	want := []string{"tenants[1] bad-region.brand.test", "tenants[3] 203.0.113.7", "tenants[4] ok-1.brand.test", "tenants[5] click.config.test", "remove[1] a..b"}
	if !slices.Equal(named, want) {
		t.Errorf("faults named %q, want %q (%s)", named, want, body)
	}
	for i, field := range []string{"region 'ap'", "IP address", "named twice", "defined in config"} {
		if i < len(refused.Faults) && !strings.Contains(refused.Faults[i].Error, field) {
			t.Errorf("fault %d: %q does not name %q", i, refused.Faults[i].Error, field)
		}
	}
	if p := a.list(t, "?limit=1"); p.Total != 251 {
		t.Errorf("after a refused change: %d tenants, want 251", p.Total)
	}

	// paging in domain order
	all := append(slices.Clone(domains), "click.config.test")
	slices.Sort(all)
	for _, n := range []*storeNode{a, b} {
		if got := n.listAll(t, "limit=64"); !slices.Equal(got, all) {
			t.Errorf("node on port %d pages %d domains, want %d in order", n.adminPort, len(got), len(all))
		}
	}
	p := a.list(t, "?limit=10")
	if len(p.Tenants) != 10 || p.NextCursor != all[9] || p.Counts["none"] != 251 {
		t.Errorf("first page: %d tenants, next %q, counts %v; want 10, %q, 251 none", len(p.Tenants), p.NextCursor, p.Counts, all[9])
	}
	if last := a.list(t, "?cursor="+all[len(all)-2]); len(last.Tenants) != 1 || last.NextCursor != "" {
		t.Errorf("last page: %+v", last)
	}
	for query, count := range map[string]int{
		"prefix=c1":         100,
		"prefix=C00":        10,
		"source=storage":    250,
		"source=config":     1,
		"origin=esp":        251,
		"provider=sendgrid": 0,
		"status=none":       251,
		"status=valid":      0,
		"prefix=c2&limit=7": 50,
	} {
		if got := a.listAll(t, query); len(got) != count {
			t.Errorf("%s: %d tenants, want %d", query, len(got), count)
		}
	}
	for _, query := range []string{"?limit=0", "?limit=10001", "?limit=x", "?colour=red"} {
		if status, body := a.admin(t, "GET", "/linktrack/tenants"+query, ""); status != 400 {
			t.Errorf("GET %s: %d %s, want 400", query, status, body)
		}
	}

	// a bulk change that also removes
	status, body = b.admin(t, "POST", "/linktrack/tenants", bulkBody([]string{"new.brand.test"}, domains[:50]...))
	if status != 200 || !strings.Contains(body, `"removed":50`) {
		t.Fatalf("bulk POST with remove: %d %s", status, body)
	}
	a.waitTenants(t, 202)
	if s := a.clickHTTP(t, domains[0]); s != 421 {
		t.Errorf("click on a removed tenant: status %d, want 421", s)
	}
}

// TestConcurrentChangesOnTwoNodes: changes made at once through two
// nodes are all kept, and both nodes end with all of them; a change
// made on one node reaches the other within a few refresh intervals.
func TestConcurrentChangesOnTwoNodes(t *testing.T) {
	forEachBackend(t, testConcurrentChangesOnTwoNodes)
}

func testConcurrentChangesOnTwoNodes(t *testing.T, kind string) {
	rig := newStoreRigOn(t, kind)
	nodes := []*storeNode{startStoreNode(t, rig), startStoreNode(t, rig)}
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i, n := range nodes {
		wg.Go(func() {
			for j := range 20 {
				domain := fmt.Sprintf("t%d-%d.brand.test", i, j)
				if status, body := n.admin(t, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp"}`); status != 201 {
					errs <- fmt.Sprintf("PUT %s: %d %s", domain, status, body)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for _, n := range nodes {
		n.waitTenants(t, 41)
		if got := n.listAll(t, "source=storage"); len(got) != 40 {
			t.Errorf("node on port %d lists %d stored tenants, want 40", n.adminPort, len(got))
		}
	}

	// propagation: from a change's answer on one node to the other
	// node's registry holding it, with a refresh interval of 200ms
	var worst time.Duration
	for i := range 5 {
		domain := fmt.Sprintf("late-%d.brand.test", i)
		if status, body := nodes[0].admin(t, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp"}`); status != 201 {
			t.Fatalf("PUT %s: %d %s", domain, status, body)
		}
		answered := time.Now()
		e := nodes[1].caddy.waitLog(t, "tenant added", func(e map[string]any) bool { return e["domain"] == domain })
		ts, ok := e["ts"].(float64)
		if !ok {
			t.Fatalf("tenant added: ts %v is not a Unix time", e["ts"])
		}
		worst = max(worst, time.Unix(0, int64(ts*1e9)).Sub(answered))
	}
	t.Logf("%s: a change reached the other node within %v (worst of 5; refresh interval 200ms)", kind, worst)
	if worst > 2*time.Second {
		t.Errorf("%s: propagation took %v, want under 2s with a 200ms refresh", kind, worst)
	}
}

// TestStoredDocumentMigrated: storage written by the previous release,
// one linktrack/tenants.json document, is served and migrated; the
// document itself is left as it was.
func TestStoredDocumentMigrated(t *testing.T) {
	rig := newStoreRig(t)
	legacy := []byte(`{
	"tenants": [
		{"domain": "Old-1.Brand.test", "origin": "esp"},
		{"domain": "old-2.brand.test.", "provider": "sendgrid"}
	]
}`)
	path := filepath.Join(rig.storage, "linktrack", "tenants.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	a := startStoreNode(t, rig)
	if got := a.listAll(t, "source=storage"); !slices.Equal(got, []string{"old-1.brand.test", "old-2.brand.test"}) {
		t.Fatalf("migrated tenants %q", got)
	}
	if s := a.clickHTTP(t, "old-1.brand.test"); s != 302 {
		t.Errorf("click on a migrated tenant: status %d", s)
	}
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/new.brand.test", `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT after migration: %d %s", status, body)
	}
	// a second node starting on the migrated storage sees all three
	b := startStoreNode(t, rig)
	if got := b.listAll(t, "source=storage"); len(got) != 3 {
		t.Errorf("second node: %q", got)
	}
	if now, err := os.ReadFile(path); err != nil || !bytes.Equal(now, legacy) {
		t.Errorf("the old document changed: %v\n%s", err, now)
	}
}

// TestStorageFailureIs503: a change that storage fails to write gets
// 503 with the cause, and the registry in use is kept.
func TestStorageFailureIs503(t *testing.T) {
	rig := newStoreRig(t)
	a := startStoreNode(t, rig)
	// a file where the journal's directory must go makes every write of
	// a change fail
	journal := filepath.Join(rig.storage, "linktrack", "tenants", "journal")
	if err := os.MkdirAll(filepath.Dir(journal), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(journal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	status, body := a.admin(t, "PUT", "/linktrack/tenants/new.brand.test", `{"origin": "esp"}`)
	if status != 503 || !strings.Contains(body, "not a directory") {
		t.Errorf("PUT on failing storage: %d %s; want 503 with the cause", status, body)
	}
	a.caddy.waitLog(t, "tenant change", func(e map[string]any) bool {
		return e["level"] == "error" && e["status"] == 503.0 && strings.Contains(fmt.Sprint(e["error"]), "not a directory")
	})
	if got := a.listAll(t, ""); !slices.Equal(got, []string{"click.config.test"}) {
		t.Errorf("registry after a failed change: %q", got)
	}
	if s := a.clickHTTP(t, "new.brand.test"); s != 421 {
		t.Errorf("click on the tenant not stored: %d, want 421", s)
	}
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	if status, body := a.admin(t, "PUT", "/linktrack/tenants/new.brand.test", `{"origin": "esp"}`); status != 201 {
		t.Errorf("PUT once storage works: %d %s", status, body)
	}
}
