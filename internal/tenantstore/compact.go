package tenantstore

import (
	"context"
	"fmt"
	"slices"
)

// Compaction folds the journal into a new snapshot, so that Load reads
// a snapshot and a short journal. Retention:
//   - journal records are kept back to the snapshot that the new one
//     supersedes, so Since serves any version from that snapshot on:
//     at least one compaction interval (CompactRecords changes) behind
//     the newest snapshot. An older version gets ErrCompacted and the
//     caller reloads;
//   - a superseded snapshot is kept for SnapshotGrace, so that a Load
//     that read head before it was superseded can finish;
//   - records are deleted by bucket (a run of 1024 versions, one
//     Delete), once the whole bucket is older than the oldest version
//     kept.
//
// Deletions happen after the head that stops naming their keys is
// committed, and are recorded in head only once done, so a crash in
// between leaves them for the next compaction, never a hole.

// CompactIfDue compacts when Info reports CompactionDue, and otherwise
// deletes what earlier compactions left to delete. It reports whether
// it compacted. The app calls it now and then, e.g. after each refresh.
func (s *Store) CompactIfDue(ctx context.Context) (bool, error) {
	h, found, err := s.readHead(ctx)
	if err != nil || !found {
		return false, err
	}
	if !s.info(h).CompactionDue {
		if s.cleanupDue(h) {
			return false, s.cleanup(ctx)
		}
		return false, nil
	}
	return true, s.Compact(ctx)
}

// Compact writes a snapshot of the current version, commits it, and
// deletes what the retention policy no longer needs. The snapshot is
// written without the writers' lock (it sits under a key of its own),
// which is taken only to advance head; a second lock, held throughout,
// keeps two nodes from compacting at once.
func (s *Store) Compact(ctx context.Context) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	unlock, err := s.lock(ctx, s.opts.LockName+"_compact")
	if err != nil {
		return err
	}
	defer unlock()
	h, found, err := s.ensureHead(ctx)
	if err != nil || !found {
		return err
	}
	if h.Version > h.Snapshot {
		if err := s.compactTo(ctx, h); err != nil {
			return err
		}
	}
	return s.cleanup(ctx)
}

// compactTo writes the state h names as a snapshot and commits it.
func (s *Store) compactTo(ctx context.Context, h head) error {
	w := s.newChunkWriter(ctx, h.Version)
	consumed, err := s.stream(ctx, h, func(r Record) error {
		return w.add(r.Domain, r.Value, false)
	})
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		w.discard()
		return fmt.Errorf("compacting to version %d: %w", h.Version, err)
	}

	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	unlock, err := s.lock(ctx, s.opts.LockName)
	if err != nil {
		w.discard()
		return err
	}
	defer unlock()
	cur, _, err := s.readHead(ctx)
	if err != nil {
		w.discard()
		return err
	}
	if cur.Snapshot >= h.Version {
		w.discard()
		return nil
	}
	if cur.SnapshotID != "" {
		cur.Garbage = append(cur.Garbage, garbage{SnapshotID: cur.SnapshotID, Since: s.opts.Now()})
	}
	if cur.Oldest < cur.Snapshot+1 {
		cur.Oldest = cur.Snapshot + 1
	}
	cur.Snapshot = h.Version
	cur.SnapshotID = w.id
	cur.Chunks = w.chunks
	cur.Records = w.records
	cur.SnapshotBytes = w.bytes
	cur.JournalBytes = max(cur.JournalBytes-consumed, 0)
	if err := s.storeHead(ctx, cur); err != nil {
		// The snapshot stays: the write may have reached storage.
		return fmt.Errorf("compacting to version %d: %w", h.Version, err)
	}
	return nil
}

// cleanupDue reports whether h names something to delete.
func (s *Store) cleanupDue(h head) bool {
	if h.Floor+h.Bucket <= h.Oldest {
		return true
	}
	for _, g := range h.Garbage {
		if s.opts.Now().Sub(g.Since) >= s.opts.SnapshotGrace {
			return true
		}
	}
	return false
}

// cleanup deletes the journal buckets older than head's oldest version
// and the snapshots superseded longer than the grace period, then
// records that in head.
func (s *Store) cleanup(ctx context.Context) error {
	h, found, err := s.readHead(ctx)
	if err != nil || !found || !s.cleanupDue(h) {
		return err
	}
	var failed error
	floor := h.Floor
	for ; floor+h.Bucket <= h.Oldest; floor += h.Bucket {
		if err := s.storage.Delete(ctx, s.bucketKey(floor)); err != nil {
			failed = fmt.Errorf("%w: deleting %s: %w", ErrStorage, s.bucketKey(floor), err)
			break
		}
	}
	var gone []string
	for _, g := range h.Garbage {
		if s.opts.Now().Sub(g.Since) < s.opts.SnapshotGrace {
			continue
		}
		if err := s.storage.Delete(ctx, s.snapshotDir(g.SnapshotID)); err != nil {
			failed = fmt.Errorf("%w: deleting %s: %w", ErrStorage, s.snapshotDir(g.SnapshotID), err)
			continue
		}
		gone = append(gone, g.SnapshotID)
	}
	if floor == h.Floor && len(gone) == 0 {
		return failed
	}

	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	unlock, err := s.lock(ctx, s.opts.LockName)
	if err != nil {
		return err
	}
	defer unlock()
	cur, _, err := s.readHead(ctx)
	if err != nil {
		return err
	}
	cur.Floor = max(cur.Floor, floor)
	cur.Garbage = slices.DeleteFunc(cur.Garbage, func(g garbage) bool { return slices.Contains(gone, g.SnapshotID) })
	if err := s.storeHead(ctx, cur); err != nil {
		return err
	}
	return failed
}
