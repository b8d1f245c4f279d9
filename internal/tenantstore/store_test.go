package tenantstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	// Three records a part, so that a change of more spans parts.
	s := New(fileStorage(t), Options{ChunkRecords: 3})
	if m, v := load(t, s); len(m) != 0 || v != 0 {
		t.Fatalf("empty store: %d records at version %d", len(m), v)
	}
	changes := []Change{
		{Put: []Record{put("b.example", "p1"), put("a.example", "p1"), put("c.example", "p1")}},
		{Put: []Record{{Domain: "b.example", Value: json.RawMessage("{\n\t\"domain\": \"b.example\",\n\t\"provider\": \"p2\"\n}")}}, Remove: []string{"a.example"}},
		{Remove: []string{"missing.example"}},
		{Put: []Record{put("d.example", "p1"), put("e.example", "p1"), put("f.example", "p1"), put("g.example", "p1"), put("h.example", "p1")}, Remove: []string{"c.example", "x.example"}},
	}
	want := model{}
	for i, c := range changes {
		v := mustApply(t, s, c)
		if v != uint64(i+1) {
			t.Fatalf("change %d got version %d", i, v)
		}
		want.apply(c)
	}
	// Values are stored compacted.
	if want["b.example"] != `{"domain":"b.example","provider":"p2"}` {
		t.Fatalf("model keeps %q", want["b.example"])
	}
	got, v := load(t, s)
	if v != 4 {
		t.Fatalf("load version %d, want 4", v)
	}
	sameState(t, got, want)

	// Since returns exactly the changes after a version.
	for from := uint64(0); from <= 4; from++ {
		since, to, err := s.Since(ctx, from)
		if err != nil || to != 4 || len(since) != int(4-from) {
			t.Fatalf("since %d: %d changes to %d, %v", from, len(since), to, err)
		}
		m := model{}
		for _, c := range changes[:from] {
			m.apply(c)
		}
		for i, c := range since {
			if len(c.Put) != len(changes[int(from)+i].Put) || len(c.Remove) != len(changes[int(from)+i].Remove) {
				t.Fatalf("since %d, change %d: %+v", from, i, c)
			}
			m.apply(c)
		}
		sameState(t, m, want)
	}
	if _, _, err := s.Since(ctx, 5); !errors.Is(err, ErrCompacted) {
		t.Fatalf("since a version ahead of storage: %v, want ErrCompacted", err)
	}

	// An invalid change writes nothing.
	for _, c := range []Change{
		{Put: []Record{put("a.example", "p"), put("a.example", "q")}},
		{Put: []Record{put("a.example", "p")}, Remove: []string{"a.example"}},
		{Put: []Record{{Domain: "a.example", Value: json.RawMessage(`{"domain":`)}}},
		{Put: []Record{{Domain: "a\t.example", Value: json.RawMessage(`{}`)}}},
		{Remove: []string{""}},
	} {
		if _, err := s.Apply(ctx, c); !errors.Is(err, ErrInvalid) {
			t.Fatalf("apply %+v: %v, want ErrInvalid", c, err)
		}
	}
	if v, err := s.Apply(ctx, Change{}); err != nil || v != 4 {
		t.Fatalf("empty change: version %d, %v", v, err)
	}
	got, v = load(t, s)
	if v != 4 {
		t.Fatalf("version %d after invalid changes, want 4", v)
	}
	sameState(t, got, want)
}

func TestLoadStops(t *testing.T) {
	s := New(fileStorage(t), Options{})
	mustApply(t, s, Change{Put: []Record{put("a.example", "p"), put("b.example", "p")}})
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	n := 0
	_, err := s.Load(context.Background(), func(Record) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("load: %d records, %v", n, err)
	}
}

// Two nodes share one storage directory and write at once: nothing is
// lost, and both load the same state.
func TestTwoNodesConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 400 changes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	nodes := []*Store{
		New(&faultStorage{Storage: fileStorageAt(dir)}, Options{}),
		New(&faultStorage{Storage: fileStorageAt(dir)}, Options{}),
	}
	const perNode = 200
	want := model{}
	var wantMu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for n, s := range nodes {
		// Two writers a node, so that a node's writers also meet.
		for w := range 2 {
			wg.Go(func() {
				for i := range perNode / 2 {
					d := fmt.Sprintf("n%d-w%d-%03d.example", n, w, i)
					c := Change{Put: []Record{put(d, "p")}}
					if i%10 == 9 {
						// Remove one of this writer's own earlier domains.
						c.Remove = []string{fmt.Sprintf("n%d-w%d-%03d.example", n, w, i-5)}
					}
					if _, err := s.Apply(ctx, c); err != nil {
						errs <- err
						return
					}
					wantMu.Lock()
					want.apply(c)
					wantMu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m0, v0 := load(t, nodes[0])
	m1, v1 := load(t, nodes[1])
	if v0 != 2*perNode || v1 != v0 {
		t.Fatalf("versions %d and %d, want %d", v0, v1, 2*perNode)
	}
	sameState(t, m0, want)
	sameState(t, m1, want)

	// A third node that follows from nothing replays every change.
	changes, v, err := New(fileStorageAt(dir), Options{}).Since(ctx, 0)
	if err != nil || v != v0 {
		t.Fatalf("since 0: version %d, %v", v, err)
	}
	m := model{}
	for _, c := range changes {
		m.apply(c)
	}
	sameState(t, m, want)
}

// A crash after the journal record but before head leaves the state as
// it was; the next change overwrites the orphan record.
func TestCrashBeforeHead(t *testing.T) {
	crash := errors.New("crash")
	for _, tc := range []struct {
		name  string
		after bool
		fail  func(s *Store, key string) bool
	}{
		{"head write fails", false, func(s *Store, key string) bool { return key == s.headKey() }},
		{"stops after the journal write", true, func(s *Store, key string) bool { return strings.Contains(key, "/journal/") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fs := &faultStorage{Storage: fileStorage(t)}
			s := New(fs, Options{})
			mustApply(t, s, Change{Put: []Record{put("a.example", "p")}})
			before, _ := load(t, s)

			fs.set(func(f *faultStorage) {
				f.after = tc.after
				f.failStore = func(key string) error {
					if tc.fail(s, key) {
						return crash
					}
					return nil
				}
			})
			_, err := s.Apply(ctx, Change{Put: []Record{put("orphan.example", "p")}, Remove: []string{"a.example"}})
			if !errors.Is(err, crash) || !errors.Is(err, ErrStorage) {
				t.Fatalf("apply: %v, want the crash and ErrStorage", err)
			}
			fs.set(func(f *faultStorage) { f.failStore = nil })
			h, _, _ := s.readHead(ctx)
			if !fs.Exists(ctx, s.journalKey(h, 2, 0)) {
				t.Fatal("no orphan record")
			}
			got, v := load(t, s)
			if v != 1 {
				t.Fatalf("version %d after the crash, want 1", v)
			}
			sameState(t, got, before)
			if changes, v, err := s.Since(ctx, 1); err != nil || v != 1 || len(changes) != 0 {
				t.Fatalf("since 1 after the crash: %d changes to %d, %v", len(changes), v, err)
			}

			// The next change takes the orphan's version and key; the
			// orphan's content is gone.
			c := Change{Put: []Record{put("b.example", "p")}}
			if v := mustApply(t, s, c); v != 2 {
				t.Fatalf("next change got version %d, want 2", v)
			}
			before.apply(c)
			got, _ = load(t, s)
			sameState(t, got, before)
			changes, _, err := s.Since(ctx, 1)
			if err != nil || len(changes) != 1 || len(changes[0].Put) != 1 || changes[0].Put[0].Domain != "b.example" || len(changes[0].Remove) != 0 {
				t.Fatalf("since 1: %+v, %v", changes, err)
			}
		})
	}
}

// A storage that fails a write or a lock gets an error that wraps the
// cause and ErrStorage; the state is unchanged.
func TestStorageFailure(t *testing.T) {
	ctx := context.Background()
	fs := &faultStorage{Storage: fileStorage(t)}
	s := New(fs, Options{})
	mustApply(t, s, Change{Put: []Record{put("a.example", "p")}})
	before, _ := load(t, s)
	cause := errors.New("disk full")
	change := Change{Put: []Record{put("b.example", "p")}}

	fs.set(func(f *faultStorage) { f.failStore = func(string) error { return cause } })
	if _, err := s.Apply(ctx, change); !errors.Is(err, cause) || !errors.Is(err, ErrStorage) {
		t.Fatalf("apply with failing writes: %v", err)
	}
	fs.set(func(f *faultStorage) { f.failStore = nil; f.failLock = cause })
	if _, err := s.Apply(ctx, change); !errors.Is(err, cause) || !errors.Is(err, ErrStorage) {
		t.Fatalf("apply with a failing lock: %v", err)
	}
	fs.set(func(f *faultStorage) { f.failLock = nil; f.failLoad = func(string) error { return cause } })
	if _, err := s.Apply(ctx, change); !errors.Is(err, cause) || !errors.Is(err, ErrStorage) {
		t.Fatalf("apply with failing reads: %v", err)
	}
	if _, err := s.Load(ctx, func(Record) error { return nil }); !errors.Is(err, cause) || !errors.Is(err, ErrStorage) {
		t.Fatalf("load with failing reads: %v", err)
	}
	if _, _, err := s.Since(ctx, 0); !errors.Is(err, cause) || !errors.Is(err, ErrStorage) {
		t.Fatalf("since with failing reads: %v", err)
	}
	fs.set(func(f *faultStorage) { f.failLoad = nil })
	got, v := load(t, s)
	if v != 1 {
		t.Fatalf("version %d, want 1", v)
	}
	sameState(t, got, before)
}
