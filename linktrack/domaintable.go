package linktrack

import (
	"container/heap"
	"hash/maphash"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// domainShards is the number of shards of a domainTable. A change
// copies only the shards it touches: at 1,000,000 domains, about 1,000
// entries each.
const domainShards = 1024

// domainTable is an immutable map from a canonical domain to its entry.
// It is split into shards by a hash of the domain, and each shard also
// keeps its domains sorted, for listing in domain order. A change
// returns a new table that shares every shard it did not touch, so it
// costs the size of the change, not of the table. Lookups take no lock.
type domainTable struct {
	seed   maphash.Seed
	shards *[domainShards]map[string]entry // never modified once a table holds them
	sorted *[domainShards][]string         // each shard's domains, sorted
	size   int
}

// newDomainTable returns an empty table.
func newDomainTable() domainTable {
	return domainTable{
		seed:   maphash.MakeSeed(),
		shards: new([domainShards]map[string]entry),
		sorted: new([domainShards][]string),
	}
}

func (t domainTable) shardOf(domain string) int {
	return int(maphash.String(t.seed, domain) % domainShards)
}

// get returns the entry of domain.
func (t domainTable) get(domain string) (entry, bool) {
	e, ok := t.shards[t.shardOf(domain)][domain]
	return e, ok
}

// each calls fn for every domain, in no particular order, until fn
// returns false.
func (t domainTable) each(fn func(domain string, e entry) bool) {
	for _, shard := range t.shards {
		for domain, e := range shard {
			if !fn(domain, e) {
				return
			}
		}
	}
}

// eachChanged calls fn for every domain whose entry in t differs from
// its entry in other, or which other lacks, until fn returns false.
// Shards the two tables share are skipped, so it costs the size of the
// change between two tables derived from one another.
func (t domainTable) eachChanged(other domainTable, fn func(domain string, e entry) bool) {
	shared := t.seed == other.seed
	for i, shard := range t.shards {
		if len(shard) == 0 || (shared && sameMap(shard, other.shards[i])) {
			continue
		}
		for domain, e := range shard {
			if o, ok := other.get(domain); ok && o == e {
				continue
			}
			if !fn(domain, e) {
				return
			}
		}
	}
}

// after calls fn for every domain greater than cursor, in domain order,
// until fn returns false. It merges the shards' sorted domains, so a
// page costs the page, not the table.
func (t domainTable) after(cursor string, fn func(domain string, e entry) bool) {
	var m shardMerge
	for i, sorted := range t.sorted {
		next, found := slices.BinarySearch(sorted, cursor)
		if found {
			next++
		}
		if next < len(sorted) {
			m = append(m, shardCursor{sorted: sorted, entries: t.shards[i], next: next})
		}
	}
	heap.Init(&m)
	for len(m) > 0 {
		c := &m[0]
		domain := c.sorted[c.next]
		if !fn(domain, c.entries[domain]) {
			return
		}
		if c.next++; c.next < len(c.sorted) {
			heap.Fix(&m, 0)
		} else {
			heap.Pop(&m)
		}
	}
}

// shardCursor is a position in a shard's sorted domains.
type shardCursor struct {
	sorted  []string
	entries map[string]entry
	next    int
}

// shardMerge is a min-heap of shard cursors by their next domain.
type shardMerge []shardCursor

func (m shardMerge) Len() int { return len(m) }
func (m shardMerge) Less(i, j int) bool {
	return strings.Compare(m[i].sorted[m[i].next], m[j].sorted[m[j].next]) < 0
}
func (m shardMerge) Swap(i, j int) { m[i], m[j] = m[j], m[i] }
func (m *shardMerge) Push(x any)   { *m = append(*m, x.(shardCursor)) }
func (m *shardMerge) Pop() any {
	old := *m
	c := old[len(old)-1]
	*m = old[:len(old)-1]
	return c
}

// tableEdit builds a new table from an old one, copying each shard the
// first time it changes.
type tableEdit struct {
	t     domainTable
	dirty map[int]*shardChange // shards copied by this edit
}

// maxTouched is how many domains an edit adds to or removes from one
// shard before done sorts the shard's domains afresh rather than merge
// the changes into its sorted domains.
const maxTouched = 256

// shardChange is what an edit did to a shard's set of domains: the
// domains it added or removed (in any order, maybe twice), unless there
// were more than maxTouched (full).
type shardChange struct {
	touched []string
	full    bool
}

// edit starts a change of t; t itself is never modified.
func (t domainTable) edit() *tableEdit {
	shards, sorted := *t.shards, *t.sorted
	t.shards, t.sorted = &shards, &sorted
	return &tableEdit{t: t, dirty: make(map[int]*shardChange)}
}

// writable returns the shard of domain, copied for this edit, and the
// record of its change.
func (ed *tableEdit) writable(domain string) (map[string]entry, *shardChange) {
	i := ed.t.shardOf(domain)
	c := ed.dirty[i]
	if c == nil {
		shard := maps.Clone(ed.t.shards[i])
		if shard == nil {
			shard = make(map[string]entry)
		}
		ed.t.shards[i] = shard
		c = &shardChange{full: len(shard) == 0}
		ed.dirty[i] = c
	}
	return ed.t.shards[i], c
}

// touch records that domain was added to or removed from a shard.
func (c *shardChange) touch(domain string) {
	if c.full {
		return
	}
	if len(c.touched) == maxTouched {
		c.touched, c.full = nil, true
		return
	}
	c.touched = append(c.touched, domain)
}

// set adds or replaces the entry of domain, and returns the entry it
// replaced.
func (ed *tableEdit) set(domain string, e entry) (entry, bool) {
	shard, c := ed.writable(domain)
	prior, existed := shard[domain]
	shard[domain] = e
	if !existed {
		ed.t.size++
		c.touch(domain)
	}
	return prior, existed
}

// get returns the entry of domain as edited so far.
func (ed *tableEdit) get(domain string) (entry, bool) {
	return ed.t.get(domain)
}

// remove deletes domain and returns the entry it had.
func (ed *tableEdit) remove(domain string) (entry, bool) {
	if _, ok := ed.t.get(domain); !ok {
		return entry{}, false
	}
	shard, c := ed.writable(domain)
	prior := shard[domain]
	delete(shard, domain)
	ed.t.size--
	c.touch(domain)
	return prior, true
}

// done returns the edited table. The edit must not be used after. Each
// changed shard's sorted domains are the old ones with the few domains
// added or removed merged in, or, after many changes, sorted afresh.
func (ed *tableEdit) done() domainTable {
	for i, c := range ed.dirty {
		shard := ed.t.shards[i]
		switch {
		case len(shard) == 0:
			ed.t.shards[i], ed.t.sorted[i] = nil, nil
		case c.full:
			ed.t.sorted[i] = slices.Sorted(maps.Keys(shard))
		default:
			ed.t.sorted[i] = mergeTouched(ed.t.sorted[i], c.touched, shard)
		}
	}
	return ed.t
}

// mergeTouched returns the sorted domains of shard, from old, the
// sorted domains of the shard it was copied from, and touched, every
// domain added or removed since: a domain of old that was not touched
// is still there.
func mergeTouched(old, touched []string, shard map[string]entry) []string {
	slices.Sort(touched)
	touched = slices.Compact(touched)
	out := make([]string, 0, len(shard))
	j := 0
	for _, d := range old {
		for ; j < len(touched) && touched[j] < d; j++ {
			if _, ok := shard[touched[j]]; ok {
				out = append(out, touched[j])
			}
		}
		if j < len(touched) && touched[j] == d {
			j++
			if _, ok := shard[d]; !ok {
				continue
			}
		}
		out = append(out, d)
	}
	for ; j < len(touched); j++ {
		if _, ok := shard[touched[j]]; ok {
			out = append(out, touched[j])
		}
	}
	return out
}

// sameMap reports whether a and b are the same map, not just equal ones.
func sameMap(a, b map[string]entry) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
