package tenantstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/certmagic"
)

func fileStorage(t testing.TB) *certmagic.FileStorage {
	t.Helper()
	return fileStorageAt(t.TempDir())
}

func fileStorageAt(dir string) *certmagic.FileStorage {
	return &certmagic.FileStorage{Path: dir}
}

// tenant returns a tenant-like value for domain.
func tenant(domain, provider string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"domain":%q,"provider":%q}`, domain, provider))
}

func put(domain, provider string) Record {
	return Record{Domain: domain, Value: tenant(domain, provider)}
}

// model is the state a test expects: domain to compact value.
type model map[string]string

func (m model) apply(c Change) {
	for _, d := range c.Remove {
		delete(m, d)
	}
	for _, r := range c.Put {
		var b bytes.Buffer
		if err := json.Compact(&b, r.Value); err != nil {
			panic(err)
		}
		m[r.Domain] = b.String()
	}
}

// load returns the stored state and checks that Load sends it in
// domain order.
func load(t testing.TB, s *Store) (model, uint64) {
	t.Helper()
	m := model{}
	var prev string
	v, err := s.Load(context.Background(), func(r Record) error {
		if prev != "" && r.Domain <= prev {
			t.Fatalf("load: '%s' after '%s'", r.Domain, prev)
		}
		prev = r.Domain
		m[r.Domain] = string(r.Value)
		return nil
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return m, v
}

func mustApply(t testing.TB, s *Store, c Change) uint64 {
	t.Helper()
	v, err := s.Apply(context.Background(), c)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return v
}

func sameState(t testing.TB, got, want model) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	var diff []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			diff = append(diff, fmt.Sprintf("%s: got %q, want %q", k, got[k], want[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			diff = append(diff, fmt.Sprintf("%s: got %q, want nothing", k, got[k]))
		}
	}
	t.Fatalf("state differs (%d records, want %d):\n%s", len(got), len(want), strings.Join(diff, "\n"))
}

// faultStorage wraps a storage and fails or counts calls.
type faultStorage struct {
	certmagic.Storage

	mu sync.Mutex
	// failStore, when set, may fail a Store before it happens; after,
	// after it happened.
	failStore func(key string) error
	after     bool
	failLock  error
	failLoad  func(key string) error

	stores atomic.Int64
	bytes  atomic.Int64
}

func (f *faultStorage) Store(ctx context.Context, key string, value []byte) error {
	f.mu.Lock()
	fail, after := f.failStore, f.after
	f.mu.Unlock()
	if fail != nil && !after {
		if err := fail(key); err != nil {
			return err
		}
	}
	if err := f.Storage.Store(ctx, key, value); err != nil {
		return err
	}
	f.stores.Add(1)
	f.bytes.Add(int64(len(value)))
	if fail != nil && after {
		return fail(key)
	}
	return nil
}

func (f *faultStorage) Load(ctx context.Context, key string) ([]byte, error) {
	f.mu.Lock()
	fail := f.failLoad
	f.mu.Unlock()
	if fail != nil {
		if err := fail(key); err != nil {
			return nil, err
		}
	}
	return f.Storage.Load(ctx, key)
}

func (f *faultStorage) Lock(ctx context.Context, name string) error {
	f.mu.Lock()
	fail := f.failLock
	f.mu.Unlock()
	if fail != nil {
		return fail
	}
	return f.Storage.Lock(ctx, name)
}

func (f *faultStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	panic("the store must never list storage")
}

func (f *faultStorage) set(fn func(*faultStorage)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}
