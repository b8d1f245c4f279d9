package tenantstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// legacyDoc is a document as the previous release wrote it.
func legacyDoc(t testing.TB, domains ...string) []byte {
	t.Helper()
	type tenant struct {
		Domain   string `json:"domain"`
		Provider string `json:"provider"`
	}
	var doc struct {
		Tenants []tenant `json:"tenants"`
	}
	for _, d := range domains {
		doc.Tenants = append(doc.Tenants, tenant{d, "customerio"})
	}
	raw, err := json.MarshalIndent(doc, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// lowerDomain canonicalises the way a caller would.
func lowerDomain(entry json.RawMessage) (Record, error) {
	r, err := legacyRecord(entry)
	r.Domain = strings.ToLower(r.Domain)
	return r, err
}

func TestMigration(t *testing.T) {
	ctx := context.Background()
	st := fileStorage(t)
	doc := legacyDoc(t, "b.example", "A.example", "c.example")
	if err := st.Store(ctx, DefaultLegacyKey, doc); err != nil {
		t.Fatal(err)
	}
	s := New(st, Options{LegacyRecord: lowerDomain})
	got, v := load(t, s)
	if v != 1 {
		t.Fatalf("version %d after migration, want 1", v)
	}
	sameState(t, got, model{
		"a.example": `{"domain":"A.example","provider":"customerio"}`,
		"b.example": `{"domain":"b.example","provider":"customerio"}`,
		"c.example": `{"domain":"c.example","provider":"customerio"}`,
	})
	// The legacy document stays for a rollback.
	if raw, err := st.Load(ctx, DefaultLegacyKey); err != nil || !bytes.Equal(raw, doc) {
		t.Fatalf("legacy document changed: %v", err)
	}
	// A follower from nothing reloads; the store goes on from 1.
	if _, _, err := s.Since(ctx, 0); !errors.Is(err, ErrCompacted) {
		t.Fatalf("since 0 after migration: %v, want ErrCompacted", err)
	}
	if v := mustApply(t, s, Change{Remove: []string{"b.example"}}); v != 2 {
		t.Fatalf("first change after migration got version %d", v)
	}
	// A later change to the legacy document is not migrated again.
	if err := st.Store(ctx, DefaultLegacyKey, legacyDoc(t, "z.example")); err != nil {
		t.Fatal(err)
	}
	got, _ = load(t, New(st, Options{}))
	if len(got) != 2 || got["z.example"] != "" {
		t.Fatalf("state after a second start: %v", got)
	}
}

// An Apply on storage that holds only the legacy document migrates it
// first: nothing of it is lost.
func TestMigrationOnApply(t *testing.T) {
	ctx := context.Background()
	st := fileStorage(t)
	if err := st.Store(ctx, DefaultLegacyKey, legacyDoc(t, "a.example", "b.example")); err != nil {
		t.Fatal(err)
	}
	s := New(st, Options{})
	if v := mustApply(t, s, Change{Put: []Record{put("c.example", "p")}}); v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	got, _ := load(t, s)
	if len(got) != 3 {
		t.Fatalf("state: %v", got)
	}
}

// Two nodes start at once on storage of the previous release, one
// loading and one changing: the document is migrated once and nothing
// is lost.
func TestMigrationTwoNodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var domains []string
	for i := range 1000 {
		domains = append(domains, fmt.Sprintf("t%04d.example", i))
	}
	if err := fileStorageAt(dir).Store(ctx, DefaultLegacyKey, legacyDoc(t, domains...)); err != nil {
		t.Fatal(err)
	}
	a := New(fileStorageAt(dir), Options{ChunkRecords: 100})
	b := New(fileStorageAt(dir), Options{ChunkRecords: 100})
	c := New(fileStorageAt(dir), Options{ChunkRecords: 100})
	var wg sync.WaitGroup
	counts := make([]int, 2)
	versions := make([]uint64, 2)
	errs := make([]error, 3)
	for i, s := range []*Store{a, b} {
		wg.Go(func() {
			versions[i], errs[i] = s.Load(ctx, func(Record) error { counts[i]++; return nil })
		})
	}
	wg.Go(func() {
		_, errs[2] = c.Apply(ctx, Change{Put: []Record{put("new.example", "p")}, Remove: []string{"t0000.example"}})
	})
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	snapshots, err := os.ReadDir(filepath.Join(dir, "linktrack", "tenants", "snapshot"))
	if err != nil || len(snapshots) != 1 {
		t.Fatalf("%d snapshots after two migrations at once, want 1: %v", len(snapshots), err)
	}
	// Each loader saw version 1 (migrated) or 2 (migrated, then
	// changed: one put, one removal).
	for i := range counts {
		if counts[i] != 1000 || (versions[i] != 1 && versions[i] != 2) {
			t.Fatalf("a loader saw %d records at version %d", counts[i], versions[i])
		}
	}
	got, v := load(t, a)
	if v != 2 || len(got) != 1000 || got["new.example"] == "" || got["t0000.example"] != "" || got["t0999.example"] == "" {
		t.Fatalf("final state: %d records at version %d", len(got), v)
	}
}

func TestMigrationRejects(t *testing.T) {
	ctx := context.Background()
	for name, doc := range map[string][]byte{
		"no domain":      []byte(`{"tenants":[{"domain":"a.example"},{"provider":"x"}]}`),
		"duplicate":      legacyDoc(t, "a.example", "A.example"),
		"not a document": []byte(`{"tenants":`),
	} {
		t.Run(name, func(t *testing.T) {
			st := fileStorage(t)
			if err := st.Store(ctx, DefaultLegacyKey, doc); err != nil {
				t.Fatal(err)
			}
			s := New(st, Options{LegacyRecord: lowerDomain})
			if _, err := s.Load(ctx, func(Record) error { return nil }); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("load: %v, want ErrCorrupt", err)
			}
			if st.Exists(ctx, s.headKey()) {
				t.Fatal("head stored after a failed migration")
			}
		})
	}
}
