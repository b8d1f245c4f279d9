package tenantstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
)

// Load streams the whole state to fn in domain order (byte-wise) and
// returns its version, from which Since follows changes. It reads the
// snapshot a chunk at a time, the next chunk while fn handles this
// one, and holds only the journal after the snapshot besides: never
// the whole state. When nothing is stored but the legacy document is,
// Load migrates it first.
//
// A record's Value aliases a buffer of the store and is valid only
// during fn; copy it to keep it. An error of fn stops Load and is
// returned as is. Load fails with ErrCompacted in the rare case that
// two compactions removed what it was reading: the caller discards
// what it got and loads again.
func (s *Store) Load(ctx context.Context, fn func(Record) error) (uint64, error) {
	h, _, err := s.ensureHead(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := s.stream(ctx, h, fn); err != nil {
		return 0, err
	}
	return h.Version, nil
}

// ensureHead reads head; when there is none, it migrates the legacy
// document if there is one. found reports whether head is stored.
func (s *Store) ensureHead(ctx context.Context) (h head, found bool, err error) {
	h, found, err = s.readHead(ctx)
	if err != nil || found {
		return h, found, err
	}
	if exists, err := s.legacyExists(ctx); err != nil || !exists {
		return h, false, err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	unlock, err := s.lock(ctx, s.opts.LockName)
	if err != nil {
		return head{}, false, err
	}
	defer unlock()
	// Another node may have migrated while we waited for the lock.
	if h, found, err = s.readHead(ctx); err != nil || found {
		return h, found, err
	}
	h, err = s.migrateLocked(ctx)
	return h, err == nil && h.Version > 0, err
}

// stream sends the state h names to fn: the snapshot merged with the
// journal after it. It returns the size of that journal.
func (s *Store) stream(ctx context.Context, h head, fn func(Record) error) (int64, error) {
	changes, journalBytes, err := s.loadChanges(ctx, h, h.Snapshot+1, h.Version)
	if err != nil {
		return 0, err
	}
	// overlay holds the journal's last word on each domain it names:
	// a value, or nil for a removal.
	overlay := make(map[string]json.RawMessage)
	for _, c := range changes {
		for _, d := range c.Remove {
			overlay[d] = nil
		}
		for _, r := range c.Put {
			overlay[r.Domain] = r.Value
		}
	}
	keys := make([]string, 0, len(overlay))
	for k := range overlay {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	next := 0
	// emitUpTo sends the overlay's records ordered before domain, and
	// reports whether the overlay names domain itself.
	emitUpTo := func(domain []byte, last bool) (bool, error) {
		for next < len(keys) && (last || keys[next] < string(domain)) {
			if v := overlay[keys[next]]; v != nil {
				if err := fn(Record{Domain: keys[next], Value: v}); err != nil {
					return false, err
				}
			}
			next++
		}
		if !last && next < len(keys) && keys[next] == string(domain) {
			if v := overlay[keys[next]]; v != nil {
				if err := fn(Record{Domain: keys[next], Value: v}); err != nil {
					return false, err
				}
			}
			next++
			return true, nil
		}
		return false, nil
	}

	var records int64
	var prev []byte
	err = s.readChunks(ctx, h, func(key string, data []byte) error {
		for len(data) > 0 {
			nl := bytes.IndexByte(data, '\n')
			if nl < 0 {
				return fmt.Errorf("%w: %s: unterminated line", ErrCorrupt, key)
			}
			line := data[:nl]
			data = data[nl+1:]
			tab := bytes.IndexByte(line, '\t')
			if tab < 1 || tab == len(line)-1 {
				return fmt.Errorf("%w: %s: malformed line %q", ErrCorrupt, key, line)
			}
			domain, value := line[:tab], line[tab+1:]
			if prev != nil && bytes.Compare(prev, domain) >= 0 {
				return fmt.Errorf("%w: %s: '%s' out of order", ErrCorrupt, key, domain)
			}
			prev = domain
			records++
			named, err := emitUpTo(domain, false)
			if err != nil {
				return err
			}
			if !named {
				if err := fn(Record{Domain: string(domain), Value: value}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if records != h.Records {
		return 0, fmt.Errorf("%w: snapshot %s holds %d records; head says %d", ErrCorrupt, h.SnapshotID, records, h.Records)
	}
	if _, err := emitUpTo(nil, true); err != nil {
		return 0, err
	}
	return journalBytes, nil
}

// readChunks calls fn with each chunk of h's snapshot in order,
// loading the next chunk while fn runs.
func (s *Store) readChunks(ctx context.Context, h head, fn func(key string, data []byte) error) error {
	type loaded struct {
		key  string
		data []byte
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan loaded, 1)
	go func() {
		defer close(ch)
		for i := range h.Chunks {
			key := s.chunkKey(h.SnapshotID, i)
			data, err := s.storage.Load(ctx, key)
			select {
			case ch <- loaded{key, data, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for l := range ch {
		if errors.Is(l.err, fs.ErrNotExist) {
			return fmt.Errorf("%w: snapshot chunk %s is gone: %w", ErrCompacted, l.key, l.err)
		}
		if l.err != nil {
			return fmt.Errorf("%w: loading %s: %w", ErrStorage, l.key, l.err)
		}
		if err := fn(l.key, l.data); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// chunkWriter writes a snapshot chunk by chunk. Records must come in
// domain order.
type chunkWriter struct {
	s       *Store
	ctx     context.Context
	id      string
	buf     bytes.Buffer
	n       int
	chunks  int
	records int64
	bytes   int64
}

func (s *Store) newChunkWriter(ctx context.Context, version uint64) *chunkWriter {
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	return &chunkWriter{s: s, ctx: ctx, id: pad20(version) + "-" + hex.EncodeToString(nonce)}
}

// add appends a record; compact compacts its value on the way.
func (w *chunkWriter) add(domain string, value []byte, compact bool) error {
	w.buf.WriteString(domain)
	w.buf.WriteByte('\t')
	if compact {
		if err := json.Compact(&w.buf, value); err != nil {
			return fmt.Errorf("value of '%s' is not JSON: %v", domain, err)
		}
	} else {
		w.buf.Write(value)
	}
	w.buf.WriteByte('\n')
	w.n++
	w.records++
	if w.n == w.s.opts.ChunkRecords {
		return w.flush()
	}
	return nil
}

// flush stores the chunk in progress, if any.
func (w *chunkWriter) flush() error {
	if w.n == 0 {
		return nil
	}
	if err := w.s.store(w.ctx, w.s.chunkKey(w.id, w.chunks), w.buf.Bytes()); err != nil {
		return err
	}
	w.bytes += int64(w.buf.Len())
	w.chunks++
	w.n = 0
	w.buf.Reset()
	return nil
}

// discard deletes what was written, as well as it can.
func (w *chunkWriter) discard() {
	_ = w.s.storage.Delete(context.WithoutCancel(w.ctx), w.s.snapshotDir(w.id))
}
