package linktrack

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/certmagic"
	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// The scale benchmarks, not run in CI:
//
//	go test ./linktrack -run '^$' -bench Scale -benchtime 1x -timeout 30m
//
// They use the registry, the tenants file reload and the handler as
// Caddy runs them, with a stand-in origin on loopback. Tenants come from
// a tenants file; adding them through the admin API is not measured.
// They fail on a reload that does not put a new registry of every
// tenant in use, a lookup that misses and a request that fails; the
// times, memory and rates they report are measured, never compared
// with a target.

// scaleDomain is the i-th tenant domain of the scale benchmarks.
func scaleDomain(i int) string {
	return fmt.Sprintf("click%d.brand%d.example.com", i, i%50_000)
}

// writeScaleFile writes a tenants file of n tenants spread over three
// providers.
func writeScaleFile(tb testing.TB, path string, n int) {
	tb.Helper()
	providers := []Tenant{{Provider: "sendgrid"}, {Provider: "customerio", Region: "eu"}, {Provider: "sparkpost", Region: "us"}}
	content := tenantsFileContent{Tenants: make([]Tenant, n)}
	for i := range content.Tenants {
		t := providers[i%len(providers)]
		t.Domain = scaleDomain(i)
		content.Tenants[i] = t
	}
	raw, err := json.Marshal(content)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// scaleApp is an App whose every tenant goes to proxy, built without a
// Caddy context.
func scaleApp(tb testing.TB, tenantsFilePath string, proxy *originProxy) *App {
	tb.Helper()
	a := &App{
		TenantsFile: tenantsFilePath,
		logger:      zap.NewNop(),
		registry:    new(atomic.Pointer[snapshot]),
		reloadMu:    new(sync.Mutex),
		file:        &tenantsFile{path: tenantsFilePath},
		routes: newRouteTable(func(*url.URL, string, string) (*originProxy, error) {
			return proxy, nil
		}),
	}
	var err error
	if a.metrics, err = newAppMetrics(prometheus.NewRegistry()); err != nil {
		tb.Fatal(err)
	}
	tenants, err := a.file.read()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := a.build(tenants, nil)
	if err != nil {
		tb.Fatal(err)
	}
	a.swap(s, "bench")
	return a
}

// reloadScaleFile reloads the tenants file as the app's watcher does,
// after making it look changed, and returns how long the reload took. It
// fails unless the reload counted as good, none counted as failed, and a
// new registry of n tenants is in use.
func reloadScaleFile(a *App, n int) (time.Duration, error) {
	ok := a.metrics.reloads.WithLabelValues("tenants_file", "ok")
	okBefore, previous := testutil.ToFloat64(ok), a.snapshot()
	a.file.sum = [32]byte{}
	start := time.Now()
	a.reloadFile()
	took := time.Since(start)
	if failed := testutil.ToFloat64(a.metrics.reloads.WithLabelValues("tenants_file", "error")); failed != 0 {
		return took, fmt.Errorf("%v failed reloads counted", failed)
	}
	if got := testutil.ToFloat64(ok); got != okBefore+1 {
		return took, fmt.Errorf("good reloads counted: %v, want %v", got, okBefore+1)
	}
	if s := a.snapshot(); s == previous || s.len() != n {
		return took, fmt.Errorf("registry in use after the reload: new %v, %d tenants; want a new one of %d", s != previous, s.len(), n)
	}
	return took, nil
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkScaleRegistry loads a tenants file of 1,000,000 tenants and
// reports the time to load it, the time to reload it while the first
// registry is in use, the registry's memory per tenant and the time of
// one lookup, beside one lookup in a plain Go map of the same tenants.
// The load and the reload are each timed 3 times in turn with the way
// they were done before the file was decoded and checked on every core
// (loadFileBefore, reloadFileBefore; the order swapped every second
// round), and reported as medians, with the median of the rounds'
// ratios (before to now).
func BenchmarkScaleRegistry(b *testing.B) {
	const (
		n      = 1_000_000
		rounds = 3
	)
	path := filepath.Join(b.TempDir(), "tenants.json")
	writeScaleFile(b, path, n)
	for b.Loop() {
		before := heapInUse()
		start := time.Now()
		a := scaleApp(b, path, nil)
		firstLoad := time.Since(start)
		perTenant := float64(heapInUse()-before) / n

		if got := a.snapshot().len(); got != n {
			b.Fatalf("loaded %d tenants, want %d", got, n)
		}
		var loads, reloads [2][]time.Duration // now, before
		for round := range rounds {
			for k := range 2 {
				i := k
				if round%2 == 1 {
					i = 1 - k
				}
				runtime.GC()
				var took time.Duration
				var err error
				if i == 0 {
					start = time.Now()
					_ = scaleApp(b, path, nil)
					took = time.Since(start)
				} else {
					took, err = loadFileBefore(a, n)
				}
				if err != nil {
					b.Fatalf("load, round %d: %v", round+1, err)
				}
				loads[i] = append(loads[i], took)
			}
			for k := range 2 {
				i := k
				if round%2 == 1 {
					i = 1 - k
				}
				runtime.GC()
				reload := reloadScaleFile
				if i == 1 {
					reload = reloadFileBefore
				}
				took, err := reload(a, n)
				if err != nil {
					b.Fatalf("reload, round %d: %v", round+1, err)
				}
				reloads[i] = append(reloads[i], took)
			}
		}

		const lookups = 5_000_000
		hosts := make([]string, 4096)
		for i := range hosts {
			hosts[i] = scaleDomain((i * 7919) % n)
		}
		s := a.snapshot()
		start = time.Now()
		for i := range lookups {
			if _, ok := s.lookup(hosts[i%len(hosts)]); !ok {
				b.Fatal("lookup missed")
			}
		}
		lookup := time.Since(start)

		// the same lookups in one plain Go map of the same entries, in
		// the same run: the floor the registry is compared with
		plain := make(map[string]entry, n)
		s.each(func(domain string, e entry) bool {
			plain[domain] = e
			return true
		})
		start = time.Now()
		for i := range lookups {
			if _, ok := plain[hosts[i%len(hosts)]]; !ok {
				b.Fatal("plain map lookup missed")
			}
		}
		plainLookup := time.Since(start)

		b.Logf("first load %v; loads now %v, before %v; reloads now %v, before %v",
			firstLoad, loads[0], loads[1], reloads[0], reloads[1])
		b.ReportMetric(medianDuration(loads[0]).Seconds(), "load-s")
		b.ReportMetric(medianDuration(loads[1]).Seconds(), "load-before-s")
		b.ReportMetric(medianRatio(loads[1], loads[0]), "load-ratio-before-to-now")
		b.ReportMetric(medianDuration(reloads[0]).Seconds(), "reload-s")
		b.ReportMetric(medianDuration(reloads[1]).Seconds(), "reload-before-s")
		b.ReportMetric(medianRatio(reloads[1], reloads[0]), "reload-ratio-before-to-now")
		b.ReportMetric(perTenant, "bytes/tenant")
		b.ReportMetric(float64(lookup.Nanoseconds())/lookups, "ns/lookup")
		b.ReportMetric(float64(plainLookup.Nanoseconds())/lookups, "ns/lookup-plain-map")
	}
}

// medianRatio returns the median of the ratios of num to den, round by
// round.
func medianRatio(num, den []time.Duration) float64 {
	ratios := make([]float64, len(num))
	for i := range num {
		ratios[i] = num[i].Seconds() / den[i].Seconds()
	}
	return medianOf(ratios)
}

// readFileBefore reads a's tenants file as tenantsFile.read did before
// the file was decoded on every core: with encoding/json, entry by
// entry.
func readFileBefore(a *App) ([]Tenant, error) {
	if _, err := os.Stat(a.file.path); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(a.file.path)
	if err != nil {
		return nil, err
	}
	_ = sha256.Sum256(raw)
	return decodeTenantsInOrder(raw)
}

// loadFileBefore builds a first registry from a's tenants file as
// scaleApp did before the file was decoded and checked on every core,
// and returns how long it took: the file decoded by readFileBefore,
// then each tenant checked and added in turn. It fails unless the
// registry holds n tenants.
func loadFileBefore(a *App, n int) (time.Duration, error) {
	start := time.Now()
	tenants, err := readFileBefore(a)
	if err != nil {
		return 0, err
	}
	sources := []tenantSource{{name: "config", tenants: a.Tenants}, {name: a.fileSource(), tenants: tenants}, {name: storageSource}}
	b := newSnapshotBuilder(len(a.Tenants) + len(tenants))
	for _, src := range sources {
		source, err := b.addSource(src.name)
		if err != nil {
			return 0, err
		}
		for i, t := range src.tenants {
			domain, e, err := newEntry(t, a.resolve)
			if err != nil {
				return 0, fmt.Errorf("%s, entry %d: %v", src.name, i+1, err)
			}
			e.source = source
			if _, dup := b.insert(domain, e); dup {
				return 0, fmt.Errorf("domain '%s' is registered twice", domain)
			}
		}
	}
	s := b.done()
	took := time.Since(start)
	if s.len() != n {
		return took, fmt.Errorf("registry of %d tenants, want %d", s.len(), n)
	}
	return took, nil
}

// reloadFileBefore reloads a's tenants file as reloadFile did before
// the file was decoded and checked on every core, and returns how long
// it took: the file decoded by readFileBefore, then withSourceBefore,
// then the new registry put in use. It fails unless a new registry of n
// tenants is in use.
func reloadFileBefore(a *App, n int) (time.Duration, error) {
	previous := a.snapshot()
	start := time.Now()
	tenants, err := readFileBefore(a)
	if err != nil {
		return 0, err
	}
	s, err := withSourceBefore(previous, a.fileSource(), tenants, a.resolve)
	if err != nil {
		return 0, err
	}
	a.swap(s, "tenants_file")
	took := time.Since(start)
	if s := a.snapshot(); s == previous || s.len() != n {
		return took, fmt.Errorf("registry in use after the reload: new %v, %d tenants; want a new one of %d", s != previous, s.len(), n)
	}
	return took, nil
}

// withSourceBefore is snapshot.withSource as it was before the tenants
// were checked on every core: each tenant checked, looked for in a map
// of those before it and in the registry, and set, in turn; then every
// entry of the registry looked for in that map.
func withSourceBefore(s *snapshot, name string, tenants []Tenant, resolve routeResolver) (*snapshot, error) {
	index := slices.Index(s.sources, name)
	if index < 0 {
		return nil, fmt.Errorf("no tenant source '%s'", name)
	}
	source := uint16(index)
	exact, wildcards := s.exact.edit(), s.wildcards.edit()
	seen := make(map[string]int, len(tenants))
	for i, t := range tenants {
		domain, e, err := newEntry(t, resolve)
		if err != nil {
			return nil, fmt.Errorf("%s, entry %d: %v", name, i+1, err)
		}
		e.source = source
		if _, dup := seen[domain]; dup {
			return nil, fmt.Errorf("domain '%s' is registered twice", domain)
		}
		seen[domain] = i + 1
		ed, key := tableOf(exact, wildcards, domain)
		if prior, ok := ed.get(key); ok && prior.source != source {
			return nil, fmt.Errorf("domain '%s' is registered twice", domain)
		}
		ed.set(key, e)
	}
	s.each(func(domain string, e entry) bool {
		if _, kept := seen[domain]; e.source == source && !kept {
			ed, key := tableOf(exact, wildcards, domain)
			ed.remove(key)
		}
		return true
	})
	return &snapshot{exact: exact.done(), wildcards: wildcards.done(), sources: s.sources}, nil
}

// scaleOrigin is a loopback origin answering like a tracking origin, and
// an originProxy that reaches it the way the handler does.
func scaleOrigin(tb testing.TB) *originProxy {
	tb.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://shop.example.com/?utm_source=email")
		w.WriteHeader(http.StatusFound)
	}))
	tb.Cleanup(origin.Close)
	u, _ := url.Parse(origin.URL)
	transport := &reverseproxy.HTTPTransport{Transport: &http.Transport{MaxIdleConnsPerHost: 128, DisableCompression: true}}
	tb.Cleanup(transport.Transport.CloseIdleConnections)
	metrics, err := newProxyMetrics(prometheus.NewRegistry(), "sendgrid", "global")
	if err != nil {
		tb.Fatal(err)
	}
	return &originProxy{
		metrics:   metrics,
		url:       u,
		transport: transport,
		bufPool:   &sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }},
		logger:    zap.NewNop(),
	}
}

// serveClick runs one request for host through the handler.
func serveClick(h *Handler, host string) int {
	req := httptest.NewRequest(http.MethodGet, "http://"+host+"/ls/click?upn=abc", nil)
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, nil); err != nil {
		return 0
	}
	return rec.Code
}

// BenchmarkScaleReloadUnderTraffic reloads a file of 1,000,000 tenants
// three times while four clients send requests for known tenants, each
// time in turn with the way it was reloaded before the file was decoded
// and checked on every core (reloadFileBefore; the order swapped every
// second round), and reports the medians of both, the median of the
// rounds' ratios (before to now) and the requests served. It fails if a
// reload fails or any request does.
func BenchmarkScaleReloadUnderTraffic(b *testing.B) {
	const n = 1_000_000
	path := filepath.Join(b.TempDir(), "tenants.json")
	writeScaleFile(b, path, n)
	a := scaleApp(b, path, scaleOrigin(b))
	h := &Handler{app: a, MaxBodySize: DefaultMaxBodySize}

	for b.Loop() {
		var served, failed atomic.Int64
		stop := make(chan struct{})
		var clients, started sync.WaitGroup
		for c := range 4 {
			clients.Add(1)
			started.Add(1)
			go func() {
				defer clients.Done()
				for i := c; ; i += 4 {
					if i == c+4 {
						started.Done() // one request done: traffic is flowing
					}
					select {
					case <-stop:
						return
					default:
					}
					if serveClick(h, scaleDomain((i*7919)%n)) == http.StatusFound {
						served.Add(1)
					} else {
						failed.Add(1)
					}
				}
			}()
		}
		started.Wait()
		var reloads [2][]time.Duration // now, before
		var reloadErr error
	rounds:
		for round := range 3 {
			for k := range 2 {
				i := k
				if round%2 == 1 {
					i = 1 - k
				}
				reload := reloadScaleFile
				if i == 1 {
					reload = reloadFileBefore
				}
				took, err := reload(a, n)
				if err != nil {
					reloadErr = fmt.Errorf("round %d: %v", round+1, err)
					break rounds
				}
				reloads[i] = append(reloads[i], took)
			}
		}
		close(stop)
		clients.Wait()
		if reloadErr != nil {
			b.Fatalf("reload under traffic: %v", reloadErr)
		}
		if failed.Load() > 0 {
			b.Errorf("%d of %d requests failed during the reloads", failed.Load(), served.Load()+failed.Load())
		}
		b.Logf("reloads now %v, before %v", reloads[0], reloads[1])
		b.ReportMetric(medianDuration(reloads[0]).Seconds(), "reload-s")
		b.ReportMetric(medianDuration(reloads[1]).Seconds(), "reload-before-s")
		b.ReportMetric(medianRatio(reloads[1], reloads[0]), "reload-ratio-before-to-now")
		b.ReportMetric(float64(served.Load()), "served")
		b.ReportMetric(float64(failed.Load()), "failed")
	}
}

// BenchmarkScaleHandler compares the handler's throughput with one
// tenant and with 1,000,000 tenants in the registry, in 5 interleaved
// rounds (one tenant, then a million, and the other way round in every
// second round), so that other work on the machine weighs on both
// alike: four clients send requests for 3 seconds, each for a different
// tenant in turn. Both registries are built, and warmed up for a
// second, before the first round, and share one origin. It logs each
// round's req/s and reports the median of each, and the median of the
// rounds' ratios (1,000,000 tenants to 1), each taken between two
// measurements seconds apart.
func BenchmarkScaleHandler(b *testing.B) {
	const (
		rounds = 5
		period = 3 * time.Second
	)
	sizes := []int{1, 1_000_000}
	origin := scaleOrigin(b)
	handlers := make([]*Handler, len(sizes))
	for i, n := range sizes {
		path := filepath.Join(b.TempDir(), "tenants.json")
		writeScaleFile(b, path, n)
		handlers[i] = &Handler{app: scaleApp(b, path, origin), MaxBodySize: DefaultMaxBodySize}
	}
	for i, n := range sizes { // warm up the origin's connections and the code
		if _, err := handlerRate(handlers[i], n, time.Second); err != nil {
			b.Fatalf("%d tenants, warming up: %v", n, err)
		}
	}
	for b.Loop() {
		rates := make([][]float64, len(sizes))
		for round := range rounds {
			for k := range sizes {
				i := k
				if round%2 == 1 { // the other order, so that a drift weighs on both
					i = len(sizes) - 1 - k
				}
				n := sizes[i]
				rate, err := handlerRate(handlers[i], n, period)
				if err != nil {
					b.Fatalf("%d tenants, round %d: %v", n, round+1, err)
				}
				rates[i] = append(rates[i], rate)
				b.Logf("round %d, %s tenants: %.0f req/s", round+1, humanize.Comma(int64(n)), rate)
			}
		}
		ratios := make([]float64, rounds)
		for round := range rounds {
			ratios[round] = rates[1][round] / rates[0][round]
		}
		for i, n := range sizes {
			b.ReportMetric(medianOf(rates[i]), fmt.Sprintf("req/s-%d-tenants", n))
		}
		b.ReportMetric(medianOf(ratios), "ratio-1M-to-1")
	}
}

// BenchmarkScaleStoredStartup stores 1,000,000 tenants as the admin API
// does, compacted into a snapshot, then builds the first registry from
// storage twice in turn: as start-up does it (records decoded on every
// core straight into a presized registry), and as it did before: one
// record at a time, by encoding/json, into a list of tenants then built
// into a registry. It
// reports the median of each, and fails when a registry misses a
// tenant.
func BenchmarkScaleStoredStartup(b *testing.B) {
	const n = 1_000_000
	ctx := b.Context()
	a := scaleApp(b, writeEmptyScaleFile(b), nil)
	a.storage = &certmagic.FileStorage{Path: b.TempDir()}
	a.store = newTenantStore(a)
	providers := []Tenant{{Provider: "sendgrid"}, {Provider: "customerio", Region: "eu"}, {Provider: "sparkpost", Region: "us"}}
	change := tenantstore.Change{Put: make([]tenantstore.Record, n)}
	for i := range n {
		t := providers[i%len(providers)]
		t.Domain = scaleDomain(i)
		r, err := tenantRecord(t)
		if err != nil {
			b.Fatal(err)
		}
		change.Put[i] = r
	}
	if _, err := a.store.Apply(ctx, change); err != nil {
		b.Fatal(err)
	}
	if err := a.store.Compact(ctx); err != nil {
		b.Fatal(err)
	}
	change = tenantstore.Change{}

	sequential := func() (*snapshot, error) {
		var tenants []Tenant
		_, err := a.store.Load(ctx, func(r tenantstore.Record) error {
			var t Tenant
			err := json.Unmarshal(r.Value, &t)
			t.Domain = r.Domain
			tenants = append(tenants, t)
			return err
		})
		if err != nil {
			return nil, err
		}
		return a.build(nil, tenants)
	}
	parallel := func() (*snapshot, error) {
		s, _, err := a.buildWithStored(ctx, nil)
		return s, err
	}
	for b.Loop() {
		var times [2][]time.Duration
		for range 3 {
			for i, build := range []func() (*snapshot, error){parallel, sequential} {
				runtime.GC()
				start := time.Now()
				s, err := build()
				times[i] = append(times[i], time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if s.len() != n || !s.has(scaleDomain(n-1)) {
					b.Fatalf("registry of %d tenants, want %d", s.len(), n)
				}
			}
		}
		b.ReportMetric(medianDuration(times[0]).Seconds(), "parallel-s")
		b.ReportMetric(medianDuration(times[1]).Seconds(), "sequential-s")
	}
}

// writeEmptyScaleFile writes a tenants file of no tenants.
func writeEmptyScaleFile(tb testing.TB) string {
	path := filepath.Join(tb.TempDir(), "tenants.json")
	writeScaleFile(tb, path, 0)
	return path
}

func medianDuration(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// handlerRate sends requests through h from four clients for d, each
// for a different tenant of n in turn, and returns the requests served
// a second. It fails if a request does.
func handlerRate(h *Handler, n int, d time.Duration) (float64, error) {
	var served, failed atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var clients sync.WaitGroup
	for c := range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := c; time.Now().Before(deadline); i += 4 {
				if serveClick(h, scaleDomain((i*7919)%n)) == http.StatusFound {
					served.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	clients.Wait()
	if failed.Load() > 0 {
		return 0, fmt.Errorf("%d of %d requests failed", failed.Load(), served.Load()+failed.Load())
	}
	return float64(served.Load()) / time.Since(start).Seconds(), nil
}

// medianOf returns the median of vs, which it sorts.
func medianOf(vs []float64) float64 {
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}
