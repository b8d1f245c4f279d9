// Package redisstorage is a Caddy storage module over Redis, for the
// tests only: the integration tests build it into a second Caddy to run
// clusters on a real distributed store. It is never part of the shipped
// build.
//
// It has the semantics of the Redis storage modules Caddy users run
// (pberkel/caddy-storage-redis): every key is a Redis string holding the
// value and its metadata (size, modified); each directory has a sorted
// set of its children, a directory's name ending in "/", which List
// walks; Stat reads the stored metadata; a lock is a key set with
// SET NX and a TTL that the holder refreshes while it holds it, and only
// the holder's token can delete it.
package redisstorage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

func init() {
	caddy.RegisterModule(Storage{})
}

// Defaults of Storage's fields.
const (
	DefaultAddress     = "127.0.0.1:6379"
	DefaultKeyPrefix   = "caddy"
	DefaultTimeout     = time.Second
	DefaultLockTTL     = 5 * time.Second
	DefaultLockRefresh = 2 * time.Second
	DefaultLockPoll    = 100 * time.Millisecond
)

// Storage is certmagic.Storage over one Redis server.
type Storage struct {
	// The Redis server, host:port. Default: `127.0.0.1:6379`.
	Address string `json:"address,omitempty"`

	// The Redis database number. Default: `0`.
	DB int `json:"db,omitempty"`

	// Prefix of every Redis key. Default: `caddy`.
	KeyPrefix string `json:"key_prefix,omitempty"`

	// Timeout of a dial, a read and a write. Default: `1s`.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// How long a lock lives unless its holder refreshes it.
	// Default: `5s`.
	LockTTL caddy.Duration `json:"lock_ttl,omitempty"`

	// How often a holder refreshes its locks. Default: `2s`.
	LockRefresh caddy.Duration `json:"lock_refresh,omitempty"`

	// How often Lock tries again a lock held by another. Default:
	// `100ms`.
	LockPoll caddy.Duration `json:"lock_poll,omitempty"`

	client *redis.Client
	locks  *lockTable
}

// lockTable is the locks this process holds, by name.
type lockTable struct {
	mu   sync.Mutex
	held map[string]*heldLock
}

// heldLock is a lock this process holds: its token and the stop of its
// refresher.
type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}
}

// CaddyModule returns the Caddy module information.
func (Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.linktrack_test_redis",
		New: func() caddy.Module { return new(Storage) },
	}
}

// clients are the Redis clients in use, one per address and database,
// shared by every config load: certmagic keeps using the storage of the
// config it started with while a new one loads.
var (
	clientsMu sync.Mutex
	clients   = map[string]*redis.Client{}
)

// Provision sets defaults and connects, lazily, to Redis.
func (s *Storage) Provision(caddy.Context) error {
	s.setDefaults()
	key := fmt.Sprintf("%s/%d/%d", s.Address, s.DB, s.Timeout)
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if c, ok := clients[key]; ok {
		s.client = c
		return nil
	}
	s.client = newClient(s)
	clients[key] = s.client
	return nil
}

func (s *Storage) setDefaults() {
	if s.Address == "" {
		s.Address = DefaultAddress
	}
	if s.KeyPrefix == "" {
		s.KeyPrefix = DefaultKeyPrefix
	}
	if s.Timeout <= 0 {
		s.Timeout = caddy.Duration(DefaultTimeout)
	}
	if s.LockTTL <= 0 {
		s.LockTTL = caddy.Duration(DefaultLockTTL)
	}
	if s.LockRefresh <= 0 {
		s.LockRefresh = caddy.Duration(DefaultLockRefresh)
	}
	if s.LockPoll <= 0 {
		s.LockPoll = caddy.Duration(DefaultLockPoll)
	}
	if s.locks == nil {
		s.locks = &lockTable{held: make(map[string]*heldLock)}
	}
}

func newClient(s *Storage) *redis.Client {
	t := time.Duration(s.Timeout)
	return redis.NewClient(&redis.Options{
		Addr:         s.Address,
		DB:           s.DB,
		DialTimeout:  t,
		ReadTimeout:  t,
		WriteTimeout: t,
		MaxRetries:   1,
	})
}

// New provisions s outside Caddy, with a client of its own, and
// returns it.
func New(s *Storage) *Storage {
	s.setDefaults()
	s.client = newClient(s)
	return s
}

// Close closes the client of a storage made by New.
func (s *Storage) Close() error { return s.client.Close() }

// Validate checks the durations.
func (s *Storage) Validate() error {
	if s.LockRefresh >= s.LockTTL {
		return fmt.Errorf("lock_refresh %v must be shorter than lock_ttl %v", time.Duration(s.LockRefresh), time.Duration(s.LockTTL))
	}
	return nil
}

// CertMagicStorage returns the storage itself.
func (s *Storage) CertMagicStorage() (certmagic.Storage, error) { return s, nil }

// envelope is the string stored at a key: the value and its metadata.
type envelope struct {
	Value    []byte    `json:"value"`
	Modified time.Time `json:"modified"`
	Size     int64     `json:"size"`
}

func (s *Storage) dataKey(key string) string { return s.KeyPrefix + "/" + key }

// indexKey is the sorted set of the children of dir ("" for the root).
func (s *Storage) indexKey(dir string) string { return s.KeyPrefix + ":index:" + dir }

func (s *Storage) lockKey(name string) string { return s.KeyPrefix + ":lock:" + name }

// clean returns key without leading, trailing or doubled slashes.
func clean(key string) string {
	key = path.Clean("/" + key)
	return strings.TrimPrefix(key, "/")
}

// parent returns the directory of key and key's name in it.
func parent(key string) (dir, name string) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", key
	}
	return key[:i], key[i+1:]
}

// Store puts value at key and indexes key and its directories.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	key = clean(key)
	raw, err := json.Marshal(envelope{Value: value, Modified: time.Now(), Size: int64(len(value))})
	if err != nil {
		return err
	}
	_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.dataKey(key), raw, 0)
		child := key
		for {
			dir, name := parent(child)
			member := name
			if child != key {
				member += "/"
			}
			p.ZAdd(ctx, s.indexKey(dir), redis.Z{Member: member})
			if dir == "" {
				break
			}
			child = dir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: storing '%s': %v", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	e, err := s.load(ctx, clean(key))
	if err != nil {
		return nil, err
	}
	return e.Value, nil
}

func (s *Storage) load(ctx context.Context, key string) (envelope, error) {
	raw, err := s.client.Get(ctx, s.dataKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return envelope{}, fmt.Errorf("redis: '%s': %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return envelope{}, fmt.Errorf("redis: loading '%s': %v", key, err)
	}
	var e envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return envelope{}, fmt.Errorf("redis: decoding '%s': %v", key, err)
	}
	return e, nil
}

// Delete deletes key, or every key under it when it is a directory,
// and removes emptied directories from the index.
func (s *Storage) Delete(ctx context.Context, key string) error {
	key = clean(key)
	keys, err := s.List(ctx, key, true)
	if err != nil {
		return err
	}
	keys = append(keys, key)
	_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, s.dataKey(k), s.indexKey(k))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: deleting '%s': %v", key, err)
	}
	// unindex key, then each directory it left empty
	child, dirMember := key, false
	for child != "" {
		dir, name := parent(child)
		member := name
		if dirMember {
			member += "/"
		}
		if err := s.client.ZRem(ctx, s.indexKey(dir), name, name+"/").Err(); err != nil {
			return fmt.Errorf("redis: unindexing '%s': %v", member, err)
		}
		n, err := s.client.ZCard(ctx, s.indexKey(dir)).Result()
		if err != nil {
			return fmt.Errorf("redis: unindexing '%s': %v", key, err)
		}
		if n > 0 || dir == "" {
			break
		}
		child, dirMember = dir, true
	}
	return nil
}

// Exists reports whether key is stored or is a directory.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	key = clean(key)
	n, err := s.client.Exists(ctx, s.dataKey(key), s.indexKey(key)).Result()
	return err == nil && n > 0
}

// List returns the keys in dir, from its sorted set, and when recursive
// the keys of its directories too.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = clean(dir)
	members, err := s.client.ZRange(ctx, s.indexKey(dir), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: listing '%s': %v", dir, err)
	}
	var keys []string
	for _, m := range members {
		name, isDir := strings.CutSuffix(m, "/")
		full := path.Join(dir, name)
		keys = append(keys, full)
		if isDir && recursive {
			sub, err := s.List(ctx, full, true)
			if err != nil {
				return nil, err
			}
			keys = append(keys, sub...)
		}
	}
	return keys, nil
}

// Stat returns key's stored size and modification time; a directory is
// not terminal.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = clean(key)
	e, err := s.load(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: e.Modified, Size: e.Size, IsTerminal: true}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return certmagic.KeyInfo{}, err
	}
	n, err2 := s.client.Exists(ctx, s.indexKey(key)).Result()
	if err2 != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("redis: stat '%s': %v", key, err2)
	}
	if n == 0 {
		return certmagic.KeyInfo{}, err
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// unlockScript deletes a lock only if it still holds the caller's token.
var unlockScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// refreshScript extends a lock only if it still holds the caller's
// token.
var refreshScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// Lock takes the lock name, waiting while another holds it, until ctx
// is done. The lock expires LockTTL after its last refresh; its holder
// refreshes it every LockRefresh until Unlock.
func (s *Storage) Lock(ctx context.Context, name string) error {
	tick := time.NewTicker(time.Duration(s.LockPoll))
	defer tick.Stop()
	for {
		ok, err := s.TryLock(ctx, name)
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis: waiting for lock '%s': %w", name, ctx.Err())
		case <-tick.C:
		}
	}
}

// TryLock takes the lock name if no one holds it.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	ok, err := s.client.SetNX(ctx, s.lockKey(name), token, time.Duration(s.LockTTL)).Result()
	if err != nil {
		return false, fmt.Errorf("redis: taking lock '%s': %w", name, err) // ctx's errors match
	}
	if !ok {
		return false, nil
	}
	l := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.locks.mu.Lock()
	if old := s.locks.held[name]; old != nil {
		// the lock this process held expired and was taken again
		close(old.stop)
	}
	s.locks.held[name] = l
	s.locks.mu.Unlock()
	go s.refresh(name, l)
	return true, nil
}

// refresh extends the lock every LockRefresh until it is released or
// lost.
func (s *Storage) refresh(name string, l *heldLock) {
	defer close(l.done)
	tick := time.NewTicker(time.Duration(s.LockRefresh))
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.Timeout))
		n, err := refreshScript.Run(ctx, s.client, []string{s.lockKey(name)}, l.token, time.Duration(s.LockTTL).Milliseconds()).Int()
		cancel()
		if err == nil && n == 0 {
			return // lost: expired and maybe taken by another
		}
	}
}

// Unlock releases the lock name if this process holds it; a lock that
// expired and was taken by another is left to its new holder.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.locks.mu.Lock()
	l := s.locks.held[name]
	delete(s.locks.held, name)
	s.locks.mu.Unlock()
	if l == nil {
		return fmt.Errorf("redis: unlocking '%s': not held", name)
	}
	close(l.stop)
	n, err := unlockScript.Run(ctx, s.client, []string{s.lockKey(name)}, l.token).Int()
	if err != nil {
		return fmt.Errorf("redis: unlocking '%s': %v", name, err)
	}
	if n == 0 {
		return fmt.Errorf("redis: unlocking '%s': the lock expired and is no longer this holder's", name)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*Storage)(nil)
	_ caddy.Validator        = (*Storage)(nil)
	_ caddy.StorageConverter = (*Storage)(nil)
	_ certmagic.Storage      = (*Storage)(nil)
	_ certmagic.TryLocker    = (*Storage)(nil)
)
