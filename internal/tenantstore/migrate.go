package tenantstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// The legacy document, `linktrack/tenants.json` by default, is what
// releases before this store wrote: `{"tenants":[{...},...]}`, rewritten
// whole on every change. The first node that finds no head but this
// document migrates it into a snapshot at version 1, under the writers'
// lock, after checking head again, so that two nodes starting at once
// migrate once. The document itself is left in place: a rollback to the
// previous release reads it and serves the tenants it held then (changes
// made through this store are not in it).

// legacyExists reports whether the legacy document is stored.
func (s *Store) legacyExists(ctx context.Context) (bool, error) {
	_, err := s.storage.Stat(ctx, s.opts.LegacyKey)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: stat %s: %w", ErrStorage, s.opts.LegacyKey, err)
	}
	return true, nil
}

// migrateLocked makes the first head, from the legacy document if there
// is one; the caller holds the writers' lock and found no head. Without
// a legacy document it returns the empty head and stores nothing.
func (s *Store) migrateLocked(ctx context.Context) (head, error) {
	h := s.emptyHead()
	key := s.opts.LegacyKey
	info, err := s.storage.Stat(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return head{}, fmt.Errorf("%w: stat %s: %w", ErrStorage, key, err)
	}
	raw, err := s.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return head{}, fmt.Errorf("%w: loading %s: %w", ErrStorage, key, err)
	}
	var doc struct {
		Tenants []json.RawMessage `json:"tenants"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return head{}, fmt.Errorf("%w: decoding %s: %v", ErrCorrupt, key, err)
	}
	raw = nil
	records := make([]Record, len(doc.Tenants))
	for i, entry := range doc.Tenants {
		r, err := s.opts.LegacyRecord(entry)
		if err == nil {
			err = checkDomain(r.Domain)
		}
		if err != nil {
			return head{}, fmt.Errorf("%w: %s, entry %d: %v", ErrCorrupt, key, i+1, err)
		}
		records[i] = r
	}
	doc.Tenants = nil
	slices.SortStableFunc(records, func(a, b Record) int { return strings.Compare(a.Domain, b.Domain) })
	for i := 1; i < len(records); i++ {
		if records[i].Domain == records[i-1].Domain {
			return head{}, fmt.Errorf("%w: %s: domain '%s' appears twice", ErrCorrupt, key, records[i].Domain)
		}
	}
	const version = 1
	w := s.newChunkWriter(ctx, version)
	for _, r := range records {
		if err = w.add(r.Domain, r.Value, true); err != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
			break
		}
	}
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		w.discard()
		return head{}, fmt.Errorf("migrating %s: %w", key, err)
	}
	h.Version = version
	h.Snapshot = version
	h.SnapshotID = w.id
	h.Chunks = w.chunks
	h.Records = w.records
	h.SnapshotBytes = w.bytes
	h.Oldest = version + 1
	h.Migrated = &migrated{Key: key, Size: info.Size, Modified: info.Modified, Records: w.records}
	// On a failed head write the snapshot stays: the write may have
	// reached storage all the same, and an orphan snapshot is harmless.
	if err := s.storeHead(ctx, h); err != nil {
		return head{}, fmt.Errorf("migrating %s: %w", key, err)
	}
	return h, nil
}

// legacyRecord is the default Options.LegacyRecord: the entry's
// "domain" as is, and the entry as the value.
func legacyRecord(entry json.RawMessage) (Record, error) {
	var t struct {
		Domain string `json:"domain"`
	}
	if err := json.Unmarshal(entry, &t); err != nil {
		return Record{}, err
	}
	if t.Domain == "" {
		return Record{}, fmt.Errorf("no domain")
	}
	return Record{Domain: t.Domain, Value: entry}, nil
}
