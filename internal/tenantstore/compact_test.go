package tenantstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"
)

// randomChange puts or removes up to five of 60 domains.
func randomChange(rng *rand.Rand) Change {
	var c Change
	seen := map[string]bool{}
	for range 1 + rng.IntN(5) {
		d := fmt.Sprintf("d%03d.example", rng.IntN(60))
		if seen[d] {
			continue
		}
		seen[d] = true
		if rng.IntN(3) == 0 {
			c.Remove = append(c.Remove, d)
		} else {
			c.Put = append(c.Put, put(d, fmt.Sprintf("p%d", rng.IntN(1000))))
		}
	}
	return c
}

func TestCompaction(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000_000, 0)
	dir := t.TempDir()
	opts := Options{ChunkRecords: 7, SnapshotGrace: time.Minute, Now: func() time.Time { return now }}
	s := New(fileStorageAt(dir), opts)
	s.bucket = 4 // so that compaction deletes whole buckets in this test
	follower := New(fileStorageAt(dir), opts)
	rng := rand.New(rand.NewPCG(1, 2))

	want := model{}
	at := map[uint64]model{0: {}} // the state at each version
	var followerState model
	var followerVersion uint64
	for i := 1; i <= 60; i++ {
		c := randomChange(rng)
		v := mustApply(t, s, c)
		want.apply(c)
		at[v] = maps.Clone(want)
		if i == 52 {
			followerState, followerVersion = load(t, follower)
			sameState(t, followerState, want)
		}
		if i%15 != 0 {
			continue
		}
		staleHead, _, err := s.readHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := load(t, s)
		if err := s.Compact(ctx); err != nil {
			t.Fatalf("compact at %d: %v", v, err)
		}
		after, av := load(t, s)
		if av != v {
			t.Fatalf("version %d after compaction, want %d", av, v)
		}
		sameState(t, after, before)
		sameState(t, after, want)
		info, err := s.Info(ctx)
		if err != nil || info.SnapshotVersion != v || info.JournalRecords != 0 || info.SnapshotRecords != int64(len(want)) || info.JournalBytes != 0 {
			t.Fatalf("info after compaction at %d: %+v, %v", v, info, err)
		}
		// A Load that read head before the compaction still finishes.
		m := model{}
		if _, err := s.stream(ctx, staleHead, func(r Record) error { m[r.Domain] = string(r.Value); return nil }); err != nil {
			t.Fatalf("load from the head before compaction: %v", err)
		}
		sameState(t, m, at[staleHead.Version])
	}

	// Four compactions, at 15, 30, 45 and 60: records after 45, the
	// superseded snapshot, are kept.
	info, err := s.Info(ctx)
	if err != nil || info.OldestVersion != 46 {
		t.Fatalf("info: %+v, %v; want oldest version 46", info, err)
	}
	for v := uint64(0); v <= 60; v++ {
		changes, to, err := s.Since(ctx, v)
		if v < 45 {
			if !errors.Is(err, ErrCompacted) {
				t.Fatalf("since %d: %v, want ErrCompacted", v, err)
			}
			continue
		}
		if err != nil || to != 60 || len(changes) != int(60-v) {
			t.Fatalf("since %d: %d changes to %d, %v", v, len(changes), to, err)
		}
		m := maps.Clone(at[v])
		for _, c := range changes {
			m.apply(c)
		}
		sameState(t, m, want)
	}
	// Whole buckets below the oldest version kept are gone; the rest
	// is there.
	h, _, _ := s.readHead(ctx)
	if h.Floor != 44 {
		t.Fatalf("floor %d, want 44", h.Floor)
	}
	for v := uint64(1); v <= 60; v++ {
		if got := s.storage.Exists(ctx, s.journalKey(h, v, 0)); got != (v >= 44) {
			t.Fatalf("journal record %d stored: %v", v, got)
		}
	}

	// The follower, at 52, catches up across the compaction at 60.
	changes, fv, err := follower.Since(ctx, followerVersion)
	if err != nil || fv != 60 {
		t.Fatalf("follower since %d: %v", followerVersion, err)
	}
	for _, c := range changes {
		followerState.apply(c)
	}
	sameState(t, followerState, want)

	// Superseded snapshots stay for the grace period, then go.
	if len(h.Garbage) != 3 {
		t.Fatalf("%d superseded snapshots kept, want 3", len(h.Garbage))
	}
	if due, err := s.CompactIfDue(ctx); err != nil || due {
		t.Fatalf("compact if due: %v, %v", due, err)
	}
	for _, g := range h.Garbage {
		if !s.storage.Exists(ctx, s.snapshotDir(g.SnapshotID)) {
			t.Fatalf("snapshot %s deleted within its grace period", g.SnapshotID)
		}
	}
	now = now.Add(2 * time.Minute)
	if _, err := s.CompactIfDue(ctx); err != nil {
		t.Fatal(err)
	}
	for _, g := range h.Garbage {
		if s.storage.Exists(ctx, s.snapshotDir(g.SnapshotID)) {
			t.Fatalf("snapshot %s kept after its grace period", g.SnapshotID)
		}
	}
	if h2, _, _ := s.readHead(ctx); len(h2.Garbage) != 0 || !s.storage.Exists(ctx, s.snapshotDir(h2.SnapshotID)) {
		t.Fatalf("head after clean-up: %+v", h2)
	}
	got, _ := load(t, s)
	sameState(t, got, want)
}

// CompactIfDue compacts once the journal reaches CompactRecords.
func TestCompactIfDue(t *testing.T) {
	ctx := context.Background()
	s := New(fileStorage(t), Options{CompactRecords: 5})
	for i := range 4 {
		mustApply(t, s, Change{Put: []Record{put(fmt.Sprintf("%d.example", i), "p")}})
	}
	if due, err := s.CompactIfDue(ctx); err != nil || due {
		t.Fatalf("at 4 records: %v, %v", due, err)
	}
	mustApply(t, s, Change{Put: []Record{put("4.example", "p")}})
	if info, _ := s.Info(ctx); !info.CompactionDue || info.JournalRecords != 5 || info.JournalBytes == 0 {
		t.Fatalf("info at 5 records: %+v", info)
	}
	if due, err := s.CompactIfDue(ctx); err != nil || !due {
		t.Fatalf("at 5 records: %v, %v", due, err)
	}
	if info, _ := s.Info(ctx); info.CompactionDue || info.SnapshotRecords != 5 {
		t.Fatalf("info after compaction: %+v", info)
	}
}

// The bytes one change writes do not grow with the records stored.
func TestBytesPerChangeConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 100,000 records")
	}
	measure := func(n int) int64 {
		fs := &faultStorage{Storage: fileStorage(t)}
		s := New(fs, Options{})
		bulk := Change{Put: make([]Record, n)}
		for i := range bulk.Put {
			bulk.Put[i] = put(fmt.Sprintf("t%07d.clicks.example.com", i), "customerio")
		}
		mustApply(t, s, bulk)
		if err := s.Compact(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			mustApply(t, s, Change{Put: []Record{put(fmt.Sprintf("j%07d.clicks.example.com", i), "customerio")}})
		}
		before := fs.bytes.Load()
		mustApply(t, s, Change{Put: []Record{put("new0000.clicks.example.com", "customerio")}})
		return fs.bytes.Load() - before
	}
	small, large := measure(1_000), measure(100_000)
	t.Logf("bytes written by one change: %d at 1,000 records, %d at 100,000", small, large)
	if large-small > 16 || small-large > 16 || large > 1024 {
		t.Fatalf("one change wrote %d bytes at 1,000 records and %d at 100,000", small, large)
	}
}

// A Load that outlives its snapshot's grace period fails with
// ErrCompacted, so that the caller loads again.
func TestLoadAfterGrace(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000_000, 0)
	s := New(fileStorage(t), Options{SnapshotGrace: time.Second, Now: func() time.Time { return now }})
	step := func(d string) {
		mustApply(t, s, Change{Put: []Record{put(d, "p")}})
		if err := s.Compact(ctx); err != nil {
			t.Fatal(err)
		}
	}
	step("a.example")
	stale, _, err := s.readHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	step("b.example")
	now = now.Add(2 * time.Second)
	step("c.example")
	if _, err := s.stream(ctx, stale, func(Record) error { return nil }); !errors.Is(err, ErrCompacted) {
		t.Fatalf("load of a deleted snapshot: %v, want ErrCompacted", err)
	}
	got, _ := load(t, s)
	if len(got) != 3 {
		t.Fatalf("state: %v", got)
	}
}
