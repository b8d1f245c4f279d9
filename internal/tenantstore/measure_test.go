package tenantstore

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	measure      = flag.Bool("measure", false, "run TestMeasure, the store's figures at several sizes (not in CI)")
	measureSizes = flag.String("measure-sizes", "1000,100000,1000000", "record counts TestMeasure stores, comma-separated")
)

// TestMeasure prints, for each size, on a FileStorage in a temporary
// directory: the migration of a legacy document of that size, Apply
// latency and bytes written, Since for one change, Load, compaction and
// the snapshot's size. Run:
//
//	go test ./internal/tenantstore -run TestMeasure -measure -v -timeout 30m
func TestMeasure(t *testing.T) {
	if !*measure {
		t.Skip("run with -measure")
	}
	var sizes []int
	for f := range strings.SplitSeq(*measureSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			t.Fatalf("-measure-sizes: %v", err)
		}
		sizes = append(sizes, n)
	}
	type row struct {
		n                                 int
		migrate, applyP50, applyMax       time.Duration
		applyBytes                        int64
		since1, load, loadDecode, compact time.Duration
		loadAfter                         time.Duration
		snapshotBytes, legacyBytes        int64
		loadAllocMB                       float64
		migrateCPU, loadCPU               time.Duration
		decodeCPU, loadDecode2            time.Duration
	}
	var rows []row
	for _, n := range sizes {
		ctx := context.Background()
		dir := t.TempDir()
		fs := &faultStorage{Storage: fileStorageAt(dir)}
		s := New(fs, Options{})
		r := row{n: n}

		// The legacy document, as the previous release wrote it.
		var doc bytes.Buffer
		doc.WriteString("{\n\t\"tenants\": [\n")
		for i := range n {
			if i > 0 {
				doc.WriteString(",\n")
			}
			fmt.Fprintf(&doc, "\t\t{\n\t\t\t\"domain\": \"t%07d.clicks.brand-example.com\",\n\t\t\t\"provider\": \"customerio\",\n\t\t\t\"region\": \"us\"\n\t\t}", i)
		}
		doc.WriteString("\n\t]\n}")
		r.legacyBytes = int64(doc.Len())
		if err := fs.Store(ctx, DefaultLegacyKey, doc.Bytes()); err != nil {
			t.Fatal(err)
		}
		doc = bytes.Buffer{}
		runtime.GC()
		start, cpu := time.Now(), cpuTime()
		if _, err := s.Load(ctx, func(Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
		r.migrate, r.migrateCPU = time.Since(start), cpuTime()-cpu

		// Apply: one new tenant a change.
		const changes = 200
		lat := make([]time.Duration, changes)
		before := fs.bytes.Load()
		var v uint64
		for i := range changes {
			d := fmt.Sprintf("n%07d.clicks.brand-example.com", i)
			value := fmt.Sprintf(`{"domain":%q,"provider":"customerio","region":"us"}`, d)
			start := time.Now()
			var err error
			v, err = s.Apply(ctx, Change{Put: []Record{{Domain: d, Value: json.RawMessage(value)}}})
			lat[i] = time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
		}
		r.applyBytes = (fs.bytes.Load() - before) / changes
		slices.Sort(lat)
		r.applyP50, r.applyMax = lat[changes/2], lat[changes-1]

		// Since, for a follower one change behind, as another node.
		follower := New(fileStorageAt(dir), Options{})
		var sl []time.Duration
		for range 21 {
			start := time.Now()
			c, _, err := follower.Since(ctx, v-1)
			sl = append(sl, time.Since(start))
			if err != nil || len(c) != 1 {
				t.Fatalf("since: %d changes, %v", len(c), err)
			}
		}
		slices.Sort(sl)
		r.since1 = sl[len(sl)/2]

		// Load, as a node starting: the snapshot and 200 changes.
		runtime.GC()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		start, cpu = time.Now(), cpuTime()
		count := 0
		if _, err := follower.Load(ctx, func(Record) error { count++; return nil }); err != nil {
			t.Fatal(err)
		}
		r.load, r.loadCPU = time.Since(start), cpuTime()-cpu
		runtime.ReadMemStats(&ms1)
		r.loadAllocMB = float64(ms1.TotalAlloc-ms0.TotalAlloc) / (1 << 20)
		if count != n+changes {
			t.Fatalf("loaded %d records, want %d", count, n+changes)
		}
		// The same, decoding each value as the app would: on this
		// goroutine, then on every core.
		runtime.GC()
		start, cpu = time.Now(), cpuTime()
		if _, err := follower.Load(ctx, func(r Record) error {
			var t measuredTenant
			return json.Unmarshal(r.Value, &t)
		}); err != nil {
			t.Fatal(err)
		}
		r.loadDecode, r.decodeCPU = time.Since(start), cpuTime()-cpu
		runtime.GC()
		start = time.Now()
		if err := parallelDecode(ctx, follower); err != nil {
			t.Fatal(err)
		}
		r.loadDecode2 = time.Since(start)

		runtime.GC()
		start = time.Now()
		if err := s.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		r.compact = time.Since(start)
		info, _ := s.Info(ctx)
		r.snapshotBytes = info.SnapshotBytes
		runtime.GC()
		start = time.Now()
		if _, err := follower.Load(ctx, func(Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
		r.loadAfter = time.Since(start)
		rows = append(rows, r)
		os.RemoveAll(dir)
	}

	ms := func(d time.Duration) string {
		if d < time.Millisecond {
			return fmt.Sprintf("%d µs", d.Microseconds())
		}
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	var out strings.Builder
	fmt.Fprintf(&out, "\nGOMAXPROCS %d, FileStorage in %s\n", runtime.GOMAXPROCS(0), os.TempDir())
	fmt.Fprintln(&out, "| records | legacy doc | migrate (CPU) | Apply p50 | Apply max | bytes/Apply | Since 1 change | Load +200 changes (CPU) | Load alloc | Load + json.Unmarshal each (CPU) | same, decoded on 2 cores | Compact | snapshot | Load after compact |")
	fmt.Fprintln(&out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(&out, "| %d | %s | %s (%s) | %s | %s | %d | %s | %s (%s) | %.0f MB | %s (%s) | %s | %s | %s | %s |\n",
			r.n, mb(r.legacyBytes), ms(r.migrate), ms(r.migrateCPU), ms(r.applyP50), ms(r.applyMax), r.applyBytes,
			ms(r.since1), ms(r.load), ms(r.loadCPU), r.loadAllocMB, ms(r.loadDecode), ms(r.decodeCPU), ms(r.loadDecode2), ms(r.compact), mb(r.snapshotBytes), ms(r.loadAfter))
	}
	fmt.Print(out.String())
}

// cpuTime is the process's user and system CPU time so far: on a
// machine shared with other work, a steadier figure than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measuredTenant is the shape of the values TestMeasure stores.
type measuredTenant struct {
	Domain   string `json:"domain"`
	Provider string `json:"provider"`
	Region   string `json:"region"`
}

// parallelDecode loads s and decodes every value on GOMAXPROCS
// goroutines, handing them batches of values copied out of Load: a way
// for an app to use every core at start-up.
func parallelDecode(ctx context.Context, s *Store) error {
	type batch struct {
		values []byte
		ends   []int
	}
	work := make(chan batch, 4)
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for range runtime.GOMAXPROCS(0) {
		go func() {
			var err error
			for b := range work {
				start := 0
				for _, end := range b.ends {
					var t measuredTenant
					if e := json.Unmarshal(b.values[start:end], &t); e != nil && err == nil {
						err = e
					}
					start = end
				}
			}
			errs <- err
		}()
	}
	var b batch
	_, err := s.Load(ctx, func(r Record) error {
		b.values = append(b.values, r.Value...)
		b.ends = append(b.ends, len(b.values))
		if len(b.ends) == 4096 {
			work <- b
			b = batch{}
		}
		return nil
	})
	if len(b.ends) > 0 {
		work <- b
	}
	close(work)
	for range runtime.GOMAXPROCS(0) {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return err
}
