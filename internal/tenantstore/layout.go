package tenantstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The storage layout, under the store's prefix (default
// `linktrack/tenants/`):
//
//	head                                  the commit point: a small JSON document
//	journal/<bucket>/<version>            one change: a header line, then one line per record
//	journal/<bucket>/<version>.<part>     further parts of a change of more than ChunkRecords records
//	snapshot/<version>-<nonce>/<chunk>    the whole state at version, ChunkRecords records a chunk
//
// Versions and buckets are zero-padded to 20 digits so that keys sort
// as numbers; a bucket is the first version of a run of head.Bucket
// (1024) versions, so that compaction removes a run of records with one
// Delete of its directory instead of one call a record. Chunk indexes
// are zero-padded to 6 digits.
//
// Journal and snapshot lines share one format, chosen because it
// decodes without a JSON scanner: a snapshot line is
// `domain<TAB>value\n`, a journal line `+domain<TAB>value\n` for a put
// and `-domain\n` for a removal. Values are compact JSON, so they hold
// no raw newline. Snapshot lines are sorted by domain, byte-wise.

const (
	// defaultBucket is how many journal versions share a directory.
	defaultBucket = 1024
	// headFormat is the layout version written in head.
	headFormat = 1
)

// head is the content of the head key. Readers follow head only: a
// record or snapshot that head does not name is not part of the state.
type head struct {
	Format int `json:"format"`
	// Bucket is how many journal versions share a directory.
	Bucket uint64 `json:"bucket"`
	// Version is the version of the last committed change.
	Version uint64 `json:"version"`
	// Snapshot is the version the snapshot holds; SnapshotID names its
	// directory ("" for the empty snapshot at version 0).
	Snapshot      uint64 `json:"snapshot"`
	SnapshotID    string `json:"snapshot_id,omitempty"`
	Chunks        int    `json:"chunks"`
	Records       int64  `json:"records"`
	SnapshotBytes int64  `json:"snapshot_bytes"`
	// JournalBytes is the size of the journal records after Snapshot.
	JournalBytes int64 `json:"journal_bytes"`
	// Oldest is the oldest journal version kept for Since; Floor the
	// first version of the oldest bucket that may still be stored.
	Oldest uint64 `json:"oldest"`
	Floor  uint64 `json:"floor"`
	// Garbage lists superseded snapshots, deleted once they have been
	// superseded for the snapshot grace period.
	Garbage []garbage `json:"garbage,omitempty"`
	// Migrated describes the legacy document this store was made from.
	Migrated *migrated `json:"migrated,omitempty"`
}

// garbage is a superseded snapshot awaiting deletion.
type garbage struct {
	SnapshotID string    `json:"snapshot_id"`
	Since      time.Time `json:"since"`
}

// migrated describes the legacy document at the time of migration.
type migrated struct {
	Key      string    `json:"key"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
	Records  int64     `json:"records"`
}

// emptyHead is the state of a store nothing was written to.
func (s *Store) emptyHead() head {
	return head{Format: headFormat, Bucket: s.bucket, Oldest: 1}
}

func pad20(v uint64) string {
	s := strconv.FormatUint(v, 10)
	return "00000000000000000000"[len(s):] + s
}

func (h head) bucketOf(v uint64) uint64 { return v - v%h.Bucket }

func (s *Store) headKey() string { return s.prefix + "head" }

func (s *Store) bucketKey(bucket uint64) string {
	return s.prefix + "journal/" + pad20(bucket)
}

func (s *Store) journalKey(h head, v uint64, part int) string {
	k := s.bucketKey(h.bucketOf(v)) + "/" + pad20(v)
	if part > 0 {
		k += "." + strconv.Itoa(part)
	}
	return k
}

func (s *Store) snapshotDir(id string) string {
	return s.prefix + "snapshot/" + id
}

func (s *Store) chunkKey(id string, i int) string {
	c := strconv.Itoa(i)
	if len(c) < 6 {
		c = "000000"[len(c):] + c
	}
	return s.snapshotDir(id) + "/" + c
}

// partHeader is the first line of each part of a journal record.
type partHeader struct {
	Version uint64 `json:"version"`
	Part    int    `json:"part"`
	Parts   int    `json:"parts"`
}

// encodeChange validates c and encodes its lines into parts of at most
// perPart records each. Values are compacted, which also checks that
// they are JSON.
func encodeChange(c Change, perPart int) ([][]byte, error) {
	seen := make(map[string]struct{}, len(c.Put)+len(c.Remove))
	check := func(domain, what string, i int) error {
		if err := checkDomain(domain); err != nil {
			return fmt.Errorf("%w: %s %d: %v", ErrInvalid, what, i, err)
		}
		if _, dup := seen[domain]; dup {
			return fmt.Errorf("%w: %s %d: domain '%s' appears twice in one change", ErrInvalid, what, i, domain)
		}
		seen[domain] = struct{}{}
		return nil
	}
	var parts [][]byte
	var buf bytes.Buffer
	n := 0
	next := func() {
		n++
		if n == perPart {
			parts = append(parts, bytes.Clone(buf.Bytes()))
			buf.Reset()
			n = 0
		}
	}
	for i, r := range c.Put {
		if err := check(r.Domain, "put", i); err != nil {
			return nil, err
		}
		buf.WriteByte('+')
		buf.WriteString(r.Domain)
		buf.WriteByte('\t')
		if err := json.Compact(&buf, r.Value); err != nil {
			return nil, fmt.Errorf("%w: put %d: value of '%s' is not JSON: %v", ErrInvalid, i, r.Domain, err)
		}
		buf.WriteByte('\n')
		next()
	}
	for i, d := range c.Remove {
		if err := check(d, "remove", i); err != nil {
			return nil, err
		}
		buf.WriteByte('-')
		buf.WriteString(d)
		buf.WriteByte('\n')
		next()
	}
	if n > 0 || len(parts) == 0 {
		parts = append(parts, buf.Bytes())
	}
	return parts, nil
}

// checkDomain rejects a key the line format cannot hold.
func checkDomain(d string) error {
	if d == "" {
		return fmt.Errorf("empty domain")
	}
	if strings.ContainsAny(d, "\t\n\r") {
		return fmt.Errorf("domain '%s' holds a control character", d)
	}
	return nil
}

// withHeader returns a part as stored: its header line, then its body.
func withHeader(h partHeader, body []byte) []byte {
	hj, _ := json.Marshal(h)
	out := make([]byte, 0, len(hj)+1+len(body))
	out = append(out, hj...)
	out = append(out, '\n')
	return append(out, body...)
}

// decodePart checks a stored part's header and adds its lines to c. The
// values alias data.
func decodePart(data []byte, version uint64, part int, c *Change) (parts int, err error) {
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 {
		return 0, fmt.Errorf("no header line")
	}
	var h partHeader
	if err := json.Unmarshal(data[:nl], &h); err != nil {
		return 0, fmt.Errorf("header: %v", err)
	}
	if h.Version != version || h.Part != part || h.Parts < 1 || part >= h.Parts {
		return 0, fmt.Errorf("header %s does not match version %d, part %d", data[:nl], version, part)
	}
	data = data[nl+1:]
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return 0, fmt.Errorf("unterminated line")
		}
		line := data[:nl]
		data = data[nl+1:]
		if len(line) < 2 {
			return 0, fmt.Errorf("short line %q", line)
		}
		switch line[0] {
		case '+':
			tab := bytes.IndexByte(line, '\t')
			if tab < 2 || tab == len(line)-1 {
				return 0, fmt.Errorf("malformed put line %q", line)
			}
			c.Put = append(c.Put, Record{Domain: string(line[1:tab]), Value: json.RawMessage(line[tab+1:])})
		case '-':
			c.Remove = append(c.Remove, string(line[1:]))
		default:
			return 0, fmt.Errorf("malformed line %q", line)
		}
	}
	return h.Parts, nil
}
