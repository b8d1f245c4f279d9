package redisstorage

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/redistest"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func newStorage(t *testing.T, srv *redistest.Server, s Storage) *Storage {
	t.Helper()
	s.Address = srv.Addr()
	st := New(&s)
	t.Cleanup(func() { st.Close() })
	return st
}

// TestKeysIndexAndStat: values are Redis strings, each directory a
// sorted set of its children; List walks them, recursive or not; Stat
// reads the stored size and time; Delete removes keys and directories
// and unindexes what it emptied.
func TestKeysIndexAndStat(t *testing.T) {
	srv := redistest.Start(t)
	s := newStorage(t, srv, Storage{KeyPrefix: "pfx"})
	ctx := context.Background()
	before := time.Now()
	for _, k := range []string{"a/b/c", "a/b/d", "a/e", "f", "/a//g/"} {
		if err := s.Store(ctx, k, []byte("value of "+k)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.Load(ctx, "a/b/c"); err != nil || string(v) != "value of a/b/c" {
		t.Errorf("Load a/b/c: %q %v", v, err)
	}
	if v, err := s.Load(ctx, "a/g"); err != nil || string(v) != "value of /a//g/" {
		t.Errorf("Load a/g: %q %v", v, err)
	}
	if _, err := s.Load(ctx, "a/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	raw := srv.Client()
	defer raw.Close()
	for key, want := range map[string]string{"pfx/a/b/c": "string", "pfx:index:a/b": "zset", "pfx:index:": "zset"} {
		if typ, err := raw.Type(ctx, key).Result(); err != nil || typ != want {
			t.Errorf("redis key %s: type %q %v, want %s", key, typ, err, want)
		}
	}

	info, err := s.Stat(ctx, "a/e")
	if err != nil || !info.IsTerminal || info.Size != int64(len("value of a/e")) || info.Modified.Before(before.Add(-time.Second)) || info.Key != "a/e" {
		t.Errorf("Stat a/e: %+v %v", info, err)
	}
	if info, err := s.Stat(ctx, "a/b"); err != nil || info.IsTerminal {
		t.Errorf("Stat of a directory: %+v %v", info, err)
	}
	if _, err := s.Stat(ctx, "zz"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing key: %v", err)
	}

	for _, tc := range []struct {
		dir       string
		recursive bool
		want      []string
	}{
		{"a", false, []string{"a/b", "a/e", "a/g"}},
		{"a", true, []string{"a/b", "a/b/c", "a/b/d", "a/e", "a/g"}},
		{"", false, []string{"a", "f"}},
		{"a/b/", false, []string{"a/b/c", "a/b/d"}},
		{"nothing", true, nil},
	} {
		got, err := s.List(ctx, tc.dir, tc.recursive)
		slices.Sort(got)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("List(%q, %v) = %q %v, want %q", tc.dir, tc.recursive, got, err, tc.want)
		}
	}
	if !s.Exists(ctx, "a/b") || !s.Exists(ctx, "f") || s.Exists(ctx, "a/x") {
		t.Error("Exists: a directory and a key exist, a missing key does not")
	}

	if err := s.Delete(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.List(ctx, "a/b", false); !slices.Equal(got, []string{"a/b/d"}) {
		t.Errorf("after deleting a/b/c: %q", got)
	}
	if err := s.Delete(ctx, "a/b"); err != nil { // a directory: all under it
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "a/b/d"); !errors.Is(err, fs.ErrNotExist) || s.Exists(ctx, "a/b") {
		t.Errorf("after deleting directory a/b: a/b/d %v, a/b exists %v", err, s.Exists(ctx, "a/b"))
	}
	if err := s.Delete(ctx, "a/missing"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	for _, k := range []string{"a/e", "a/g"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.List(ctx, "", true); !slices.Equal(got, []string{"f"}) || s.Exists(ctx, "a") {
		t.Errorf("after emptying a: root lists %q, a exists %v", got, s.Exists(ctx, "a"))
	}
}

// TestLocks: a lock excludes every other holder while its holder
// refreshes it past its TTL, expires when its holder stops refreshing,
// and only its holder can release it.
func TestLocks(t *testing.T) {
	srv := redistest.Start(t)
	opts := Storage{LockTTL: caddy.Duration(1500 * time.Millisecond), LockRefresh: caddy.Duration(300 * time.Millisecond), LockPoll: caddy.Duration(20 * time.Millisecond)}
	a, b := newStorage(t, srv, opts), newStorage(t, srv, opts)
	ctx := context.Background()
	raw := srv.Client()
	defer raw.Close()

	if err := a.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	// held past two TTLs: refreshed, never taken by b
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if ok, err := b.TryLock(ctx, "job"); ok || err != nil {
			t.Fatalf("b took a's lock: %v %v", ok, err)
		}
		time.Sleep(100 * time.Millisecond) // the pace of the probe, not a wait for readiness
	}
	if ttl, err := raw.PTTL(ctx, "caddy:lock:job").Result(); err != nil || ttl <= 0 || ttl > 1500*time.Millisecond {
		t.Errorf("lock TTL %v %v, want within (0, 1.5s]", ttl, err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if err := b.Lock(short, "job"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("b.Lock while a holds it: %v, want the context's deadline", err)
	}
	cancel()
	// not the holder: refused, and the lock stays
	if err := b.Unlock(ctx, "job"); err == nil {
		t.Error("b released a lock it does not hold")
	}
	if n, _ := raw.Exists(ctx, "caddy:lock:job").Result(); n != 1 {
		t.Error("the lock is gone after b's Unlock")
	}
	if err := a.Unlock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "job"); !ok || err != nil {
		t.Fatalf("b after a's Unlock: %v %v", ok, err)
	}

	// a holder that died (its token set, nobody refreshing): taken once
	// the TTL runs out
	if err := raw.Set(ctx, "caddy:lock:dead", "a dead holder", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Lock(ctx, "dead"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond || waited > 3*time.Second {
		t.Errorf("took a dead holder's lock after %v, want about its 1s TTL", waited)
	}
	// a's lock expired and taken by another: a's Unlock leaves it
	if err := raw.Set(ctx, "caddy:lock:dead", "the next holder", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, "dead"); err == nil || !strings.Contains(err.Error(), "no longer") {
		t.Errorf("a's Unlock of a lock taken over: %v", err)
	}
	if v, _ := raw.Get(ctx, "caddy:lock:dead").Result(); v != "the next holder" {
		t.Errorf("a's Unlock removed the next holder's lock: %q", v)
	}
}

// TestRedisDown: with Redis gone, calls fail within the timeout, and
// not as a missing key.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	s := newStorage(t, srv, Storage{})
	ctx := context.Background()
	if err := s.Store(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	srv.Stop(true)
	start := time.Now()
	if _, err := s.Load(ctx, "k"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load with Redis down: %v", err)
	}
	if ok, err := s.TryLock(ctx, "l"); ok || err == nil {
		t.Errorf("TryLock with Redis down: %v %v", ok, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failing took %v", d)
	}
	srv.Start()
	if v, err := s.Load(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("Load after Redis returned with its data: %q %v", v, err)
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`linktrack_test_redis {
		address 127.0.0.1:7000
		db 2
		key_prefix edge
		lock_ttl 5s
		lock_refresh 2s
	}`)
	var s Storage
	if err := s.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if s.Address != "127.0.0.1:7000" || s.DB != 2 || s.KeyPrefix != "edge" || s.LockTTL != caddy.Duration(5*time.Second) || s.LockRefresh != caddy.Duration(2*time.Second) {
		t.Errorf("parsed %+v", s)
	}
	for _, bad := range []string{"linktrack_test_redis extra", "linktrack_test_redis {\n colour red\n}", "linktrack_test_redis {\n lock_ttl -1s\n}", "linktrack_test_redis {\n address\n}"} {
		var s Storage
		if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	s.setDefaults()
	s.LockRefresh = s.LockTTL
	if err := s.Validate(); err == nil {
		t.Error("a refresh as long as the TTL is valid")
	}
}
