// Package tenantstore keeps a set of records, domain to JSON value, in
// Caddy's storage so that every node sharing the storage sees the same
// set, at a cost per change that does not grow with the set.
//
// A change is a journal record; head, a small document, names the
// version of the last committed change and the snapshot the journal
// starts from. Compaction folds the journal into a new snapshot now and
// then. Nodes follow changes with Since, reading only what changed.
//
// The package knows nothing of tenants beyond the domain that keys a
// record: values are opaque JSON, and canonical domains are the
// caller's business.
package tenantstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Defaults of Options.
const (
	DefaultPrefix         = "linktrack/tenants/"
	DefaultLockName       = "linktrack_tenants"
	DefaultLegacyKey      = "linktrack/tenants.json"
	DefaultChunkRecords   = 65536
	DefaultCompactRecords = 10000
	DefaultCompactBytes   = 16 << 20
	DefaultSnapshotGrace  = 5 * time.Minute
)

// Errors callers tell apart with errors.Is.
var (
	// ErrStorage marks a failure of the storage itself (lock, load,
	// store); the cause is wrapped too. An admin API answers 503.
	ErrStorage = errors.New("tenant storage unavailable")
	// ErrCorrupt marks stored data this release cannot read.
	ErrCorrupt = errors.New("tenant storage damaged")
	// ErrInvalid marks a change the store cannot hold: an empty domain
	// or one with a control character, a value that is not JSON, a
	// domain named twice in one change.
	ErrInvalid = errors.New("invalid change")
	// ErrCompacted is returned by Since when the changes after the
	// version asked for are no longer all stored (compacted away, or
	// the version is ahead of storage's): the caller reloads with Load.
	ErrCompacted = errors.New("changes no longer available; reload")
)

// Record is one stored domain and its value.
type Record struct {
	Domain string
	Value  json.RawMessage
}

// Change is one atomic change: records added or replaced, and domains
// removed. A domain appears at most once in a change. Removing a domain
// that is not stored is not an error.
type Change struct {
	Put    []Record
	Remove []string
}

// Options configures a Store. Zero values take the defaults.
type Options struct {
	// Prefix of every key the store writes. Default:
	// `linktrack/tenants/`.
	Prefix string

	// Name of the storage lock writers take. Compaction takes this
	// name with `_compact` appended, for its whole run. Default:
	// `linktrack_tenants`.
	LockName string

	// Key of the legacy document, `{"tenants":[...]}`, migrated when
	// no head exists. Default: `linktrack/tenants.json`.
	LegacyKey string

	// LegacyRecord turns one entry of the legacy document into a
	// record, canonicalising its domain. Default: the entry's "domain"
	// field as is, and the entry as the value.
	LegacyRecord func(entry json.RawMessage) (Record, error)

	// Records in one snapshot chunk or one journal part. Default:
	// 65536.
	ChunkRecords int

	// CompactIfDue compacts once the journal after the snapshot holds
	// this many records or bytes. Default: 10000 records, 16 MiB.
	CompactRecords int
	CompactBytes   int64

	// How long a superseded snapshot is kept for a Load that started
	// before it was superseded. Default: 5m.
	SnapshotGrace time.Duration

	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Store is the tenant store on one node. It is safe for concurrent use;
// Apply calls of one Store are serialised in process so that they do
// not contend for the storage lock.
type Store struct {
	storage certmagic.Storage
	opts    Options
	prefix  string
	bucket  uint64 // head.Bucket of a head this store creates

	applyMu   sync.Mutex
	compactMu sync.Mutex
}

// New returns a store over storage. It does no I/O.
func New(storage certmagic.Storage, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Prefix[len(opts.Prefix)-1] != '/' {
		opts.Prefix += "/"
	}
	if opts.LockName == "" {
		opts.LockName = DefaultLockName
	}
	if opts.LegacyKey == "" {
		opts.LegacyKey = DefaultLegacyKey
	}
	if opts.LegacyRecord == nil {
		opts.LegacyRecord = legacyRecord
	}
	if opts.ChunkRecords <= 0 {
		opts.ChunkRecords = DefaultChunkRecords
	}
	if opts.CompactRecords <= 0 {
		opts.CompactRecords = DefaultCompactRecords
	}
	if opts.CompactBytes <= 0 {
		opts.CompactBytes = DefaultCompactBytes
	}
	if opts.SnapshotGrace <= 0 {
		opts.SnapshotGrace = DefaultSnapshotGrace
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{storage: storage, opts: opts, prefix: opts.Prefix, bucket: defaultBucket}
}

// Apply commits c and returns its version. It holds the storage lock
// only to read head, store the journal record and store head; the
// bytes it writes depend on c, not on the records stored. An empty
// change writes nothing and returns the current version.
//
// Head is the commit point: if Apply fails before head is stored, the
// state is unchanged, and the next Apply overwrites the orphan record.
// An error from the head write itself is ambiguous, as with any
// storage (the write may have landed before the error): callers learn
// the outcome from their next Since, never by assuming.
func (s *Store) Apply(ctx context.Context, c Change) (uint64, error) {
	if len(c.Put) == 0 && len(c.Remove) == 0 {
		h, _, err := s.ensureHead(ctx)
		return h.Version, err
	}
	parts, err := encodeChange(c, s.opts.ChunkRecords)
	if err != nil {
		return 0, err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	unlock, err := s.lock(ctx, s.opts.LockName)
	if err != nil {
		return 0, err
	}
	defer unlock()
	h, found, err := s.readHead(ctx)
	if err != nil {
		return 0, err
	}
	if !found {
		if h, err = s.migrateLocked(ctx); err != nil {
			return 0, err
		}
	}
	v := h.Version + 1
	var written int64
	for i := range parts {
		data := withHeader(partHeader{Version: v, Part: i, Parts: len(parts)}, parts[i])
		if err := s.store(ctx, s.journalKey(h, v, i), data); err != nil {
			return 0, fmt.Errorf("storing change %d: %w", v, err)
		}
		written += int64(len(data))
	}
	h.Version = v
	h.JournalBytes += written
	if err := s.storeHead(ctx, h); err != nil {
		return 0, fmt.Errorf("committing change %d: %w", v, err)
	}
	return v, nil
}

// Since returns the changes committed after version, oldest first, and
// the version they lead to. It reads head and the journal records
// after version, nothing else. It fails with ErrCompacted when those
// records are no longer all stored.
func (s *Store) Since(ctx context.Context, version uint64) ([]Change, uint64, error) {
	h, found, err := s.readHead(ctx)
	if err != nil {
		return nil, 0, err
	}
	if !found {
		if version == 0 {
			return nil, 0, nil
		}
		return nil, 0, fmt.Errorf("%w: version %d, and nothing stored", ErrCompacted, version)
	}
	switch {
	case version > h.Version:
		return nil, 0, fmt.Errorf("%w: version %d is ahead of storage's %d", ErrCompacted, version, h.Version)
	case version == h.Version:
		return nil, version, nil
	case version+1 < h.Oldest:
		return nil, 0, fmt.Errorf("%w: version %d is older than the oldest change kept, %d", ErrCompacted, version, h.Oldest)
	}
	changes, _, err := s.loadChanges(ctx, h, version+1, h.Version)
	if err != nil {
		return nil, 0, err
	}
	return changes, h.Version, nil
}

// Info describes the stored state, for the decision to compact and for
// metrics.
type Info struct {
	// Version of the last committed change; 0 when nothing is stored.
	Version uint64
	// The snapshot: its version, records and bytes.
	SnapshotVersion uint64
	SnapshotRecords int64
	SnapshotBytes   int64
	// The journal after the snapshot: records and bytes.
	JournalRecords uint64
	JournalBytes   int64
	// Since accepts versions from OldestVersion-1 on.
	OldestVersion uint64
	// CompactionDue reports whether the journal reached the
	// thresholds of Options.
	CompactionDue bool
}

// Info reads head.
func (s *Store) Info(ctx context.Context) (Info, error) {
	h, _, err := s.readHead(ctx)
	if err != nil {
		return Info{}, err
	}
	return s.info(h), nil
}

func (s *Store) info(h head) Info {
	i := Info{
		Version:         h.Version,
		SnapshotVersion: h.Snapshot,
		SnapshotRecords: h.Records,
		SnapshotBytes:   h.SnapshotBytes,
		JournalRecords:  h.Version - h.Snapshot,
		JournalBytes:    h.JournalBytes,
		OldestVersion:   h.Oldest,
	}
	i.CompactionDue = i.JournalRecords >= uint64(s.opts.CompactRecords) || i.JournalBytes >= s.opts.CompactBytes
	return i
}

// lock takes the storage lock name and returns its release.
func (s *Store) lock(ctx context.Context, name string) (func(), error) {
	if err := s.storage.Lock(ctx, name); err != nil {
		return nil, fmt.Errorf("%w: taking lock '%s': %w", ErrStorage, name, err)
	}
	return func() {
		// A failed unlock leaves a lock that goes stale; nothing the
		// caller could do about it.
		_ = s.storage.Unlock(context.WithoutCancel(ctx), name)
	}, nil
}

// readHead loads head. A missing head is found false, with the empty
// head.
func (s *Store) readHead(ctx context.Context) (head, bool, error) {
	raw, err := s.storage.Load(ctx, s.headKey())
	if errors.Is(err, fs.ErrNotExist) {
		return s.emptyHead(), false, nil
	}
	if err != nil {
		return head{}, false, fmt.Errorf("%w: loading %s: %w", ErrStorage, s.headKey(), err)
	}
	var h head
	if err := json.Unmarshal(raw, &h); err != nil {
		return head{}, false, fmt.Errorf("%w: decoding %s: %v", ErrCorrupt, s.headKey(), err)
	}
	if h.Format != headFormat {
		return head{}, false, fmt.Errorf("%w: %s has format %d; this release reads %d", ErrCorrupt, s.headKey(), h.Format, headFormat)
	}
	if h.Bucket == 0 || h.Oldest == 0 || h.Snapshot > h.Version {
		return head{}, false, fmt.Errorf("%w: %s is inconsistent: %s", ErrCorrupt, s.headKey(), raw)
	}
	return h, true, nil
}

func (s *Store) storeHead(ctx context.Context, h head) error {
	raw, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return s.store(ctx, s.headKey(), raw)
}

func (s *Store) store(ctx context.Context, key string, data []byte) error {
	if err := s.storage.Store(ctx, key, data); err != nil {
		return fmt.Errorf("%w: storing %s: %w", ErrStorage, key, err)
	}
	return nil
}

// loadChanges reads the journal records from..to, a few at a time, and
// returns them in order with their stored size. A missing record is
// ErrCompacted: compaction removed it after head was read.
func (s *Store) loadChanges(ctx context.Context, h head, from, to uint64) ([]Change, int64, error) {
	if from > to {
		return nil, 0, nil
	}
	if from == to {
		c, size, err := s.loadChange(ctx, h, from)
		if err != nil {
			return nil, 0, err
		}
		return []Change{c}, size, nil
	}
	n := int(to - from + 1)
	changes := make([]Change, n)
	sizes := make([]int64, n)
	errs := make([]error, n)
	const parallel = 8
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			changes[i], sizes[i], errs[i] = s.loadChange(ctx, h, from+uint64(i))
		})
	}
	wg.Wait()
	var total int64
	for i, err := range errs {
		if err != nil {
			return nil, 0, err
		}
		total += sizes[i]
	}
	return changes, total, nil
}

// loadChange reads the journal record of version v, all its parts.
func (s *Store) loadChange(ctx context.Context, h head, v uint64) (Change, int64, error) {
	var c Change
	var size int64
	parts := 1
	for part := 0; part < parts; part++ {
		key := s.journalKey(h, v, part)
		data, err := s.storage.Load(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			return Change{}, 0, fmt.Errorf("%w: change %d is gone: %w", ErrCompacted, v, err)
		}
		if err != nil {
			return Change{}, 0, fmt.Errorf("%w: loading %s: %w", ErrStorage, key, err)
		}
		size += int64(len(data))
		n, err := decodePart(data, v, part, &c)
		if err != nil {
			return Change{}, 0, fmt.Errorf("%w: decoding %s: %v", ErrCorrupt, key, err)
		}
		if part == 0 {
			parts = n
		}
	}
	return c, size, nil
}
