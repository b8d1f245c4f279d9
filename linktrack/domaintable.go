package linktrack

import (
	"hash/maphash"
	"maps"
	"slices"
	"weak"
)

// When a table's overlay of changes is folded into a new base: past
// foldAt changes (or a quarter of a small base), in the background;
// past foldNowAt, by the change itself. A change copies the overlay,
// so foldAt bounds the cost of one PUT; foldNowAt is only reached by a
// bulk change, which costs the registry anyway.
const (
	foldAt     = 4096
	foldAtMin  = 256
	foldNowAt  = 65536
	maxLineage = 8
)

// overlayFilterBits is the size of an overlay's filter: with foldAt
// domains, about 3 % of the lookups of a domain it does not name still
// probe its map.
const overlayFilterBits = 1 << 17

// domainTable is an immutable map from a canonical domain to its entry,
// with its domains in order for listing. It is a base, one Go map built
// once with its domains sorted, plus an overlay of the changes made
// since, copied on write. A lookup costs one map lookup when the
// overlay is empty and two otherwise; a change costs the overlay, not
// the table. A table whose overlay grew past foldAt is folded into a
// new base in the background (see registryfold.go). Lookups take no
// lock.
type domainTable struct {
	base *tableBase
	over *tableOverlay // nil when nothing changed since base
	size int
}

// tableBase is the bulk of a table; never modified once built.
type tableBase struct {
	entries map[string]entry
	sorted  []string     // the domains of entries, sorted
	lineage *baseLineage // nil for a base built afresh
}

// baseLineage records that a base was folded from its parent, so that
// the changes between tables on the two bases are found among the
// domains folded, not the whole table. It holds the parent weakly: a
// lineage keeps no old base in memory.
type baseLineage struct {
	parent weak.Pointer[tableBase]
	folded []string     // domains whose entry may differ from the parent's
	prev   *baseLineage // the parent's lineage
	depth  int
}

// tableOverlay is the changes of a table since its base: a domain
// added, replaced or removed. It never names a domain whose entry is
// the base's. A filter of one bit per domain, by a hash of it, lets
// most lookups skip its map: a map lookup that misses, in front of the
// base's, cost lookups three times a plain map's in a benchmark, the
// filter about nothing.
type tableOverlay struct {
	changes map[string]overlayChange
	sorted  []string // the domains of changes, sorted
	seed    maphash.Seed
	filter  []uint64 // overlayFilterBits bits; set for every domain named, maybe more
}

// mayName reports whether the overlay may name domain; false is sure.
func (o *tableOverlay) mayName(domain string) bool {
	h := maphash.String(o.seed, domain) % overlayFilterBits
	return o.filter[h/64]&(1<<(h%64)) != 0
}

// mark sets the filter's bit of domain.
func (o *tableOverlay) mark(domain string) {
	h := maphash.String(o.seed, domain) % overlayFilterBits
	o.filter[h/64] |= 1 << (h % 64)
}

// overlayChange is a domain's entry, or its removal.
type overlayChange struct {
	e       entry
	removed bool
}

// newDomainTable returns an empty table.
func newDomainTable() domainTable {
	return domainTable{base: &tableBase{entries: map[string]entry{}}}
}

// get returns the entry of domain.
func (t domainTable) get(domain string) (entry, bool) {
	if t.over != nil && t.over.mayName(domain) {
		if c, ok := t.over.changes[domain]; ok {
			return c.e, !c.removed
		}
	}
	e, ok := t.base.entries[domain]
	return e, ok
}

// changes is the number of domains the overlay names.
func (t domainTable) changes() int {
	if t.over == nil {
		return 0
	}
	return len(t.over.changes)
}

// foldDue reports whether the overlay is large enough to be folded
// into a new base.
func (t domainTable) foldDue() bool {
	n := t.changes()
	return n >= foldAt || (n >= foldAtMin && n*4 >= len(t.base.entries))
}

// each calls fn for every domain, in no particular order, until fn
// returns false.
func (t domainTable) each(fn func(domain string, e entry) bool) {
	if t.over != nil {
		for domain, c := range t.over.changes {
			if !c.removed && !fn(domain, c.e) {
				return
			}
		}
	}
	for domain, e := range t.base.entries {
		if t.over != nil {
			if _, changed := t.over.changes[domain]; changed {
				continue
			}
		}
		if !fn(domain, e) {
			return
		}
	}
}

// after calls fn for every domain greater than cursor, in domain order,
// until fn returns false. It merges the base's sorted domains with the
// overlay's, so a page costs the page, not the table.
func (t domainTable) after(cursor string, fn func(domain string, e entry) bool) {
	base := t.base.sorted
	b := upperBound(base, cursor)
	var over []string
	if t.over != nil {
		over = t.over.sorted
	}
	o := upperBound(over, cursor)
	for b < len(base) || o < len(over) {
		if o < len(over) && (b == len(base) || over[o] <= base[b]) {
			domain := over[o]
			if b < len(base) && base[b] == domain {
				b++ // the overlay's word on it replaces the base's
			}
			o++
			if c := t.over.changes[domain]; !c.removed && !fn(domain, c.e) {
				return
			}
			continue
		}
		domain := base[b]
		b++
		if !fn(domain, t.base.entries[domain]) {
			return
		}
	}
}

// upperBound returns the index of the first domain of sorted greater
// than cursor.
func upperBound(sorted []string, cursor string) int {
	i, found := slices.BinarySearch(sorted, cursor)
	if found {
		i++
	}
	return i
}

// eachChanged calls fn for every domain whose entry in t differs from
// its entry in other, or which other lacks, until fn returns false.
// Between tables derived from one another it looks only at their
// overlays and at what was folded between their bases, so it costs the
// size of the change; between unrelated tables, the whole of t.
func (t domainTable) eachChanged(other domainTable, fn func(domain string, e entry) bool) {
	candidates, related := changedBetween(t, other)
	if !related {
		t.each(func(domain string, e entry) bool {
			if o, ok := other.get(domain); ok && o == e {
				return true
			}
			return fn(domain, e)
		})
		return
	}
	// the lists are sorted: merge them, visiting each domain once
	next := make([]int, len(candidates))
	for {
		domain, found := "", false
		for i, list := range candidates {
			if next[i] < len(list) && (!found || list[next[i]] < domain) {
				domain, found = list[next[i]], true
			}
		}
		if !found {
			return
		}
		for i, list := range candidates {
			if next[i] < len(list) && list[next[i]] == domain {
				next[i]++
			}
		}
		e, ok := t.get(domain)
		if !ok {
			continue
		}
		if o, ok := other.get(domain); ok && o == e {
			continue
		}
		if !fn(domain, e) {
			return
		}
	}
}

// changedBetween returns lists of domains that hold every domain whose
// entry differs between a and b, when one's base is the other's or was
// folded from it; related is false otherwise.
func changedBetween(a, b domainTable) (candidates [][]string, related bool) {
	for _, t := range []domainTable{a, b} {
		if t.over != nil {
			candidates = append(candidates, t.over.sorted)
		}
	}
	if a.base == b.base {
		return candidates, true
	}
	for _, pair := range [][2]*tableBase{{a.base, b.base}, {b.base, a.base}} {
		ancestor := weak.Make(pair[1])
		folded := slices.Clip(candidates)
		for l := pair[0].lineage; l != nil; l = l.prev {
			folded = append(folded, l.folded)
			if l.parent == ancestor {
				return folded, true
			}
		}
	}
	return nil, false
}

// folded returns t with its overlay folded into a new base: the base's
// map copied and changed, its sorted domains merged with the overlay's.
// It costs the table; the registry runs it in the background.
func (t domainTable) folded() domainTable {
	if t.over == nil {
		return t
	}
	entries := maps.Clone(t.base.entries)
	for domain, c := range t.over.changes {
		if c.removed {
			delete(entries, domain)
		} else {
			entries[domain] = c.e
		}
	}
	// the sorted domains: the base's and the overlay's merged, without
	// reading an entry
	sorted := make([]string, 0, t.size)
	base, over := t.base.sorted, t.over.sorted
	b, o := 0, 0
	for b < len(base) || o < len(over) {
		if o < len(over) && (b == len(base) || over[o] <= base[b]) {
			if b < len(base) && base[b] == over[o] {
				b++
			}
			if !t.over.changes[over[o]].removed {
				sorted = append(sorted, over[o])
			}
			o++
			continue
		}
		sorted = append(sorted, base[b])
		b++
	}
	lineage := &baseLineage{parent: weak.Make(t.base), folded: t.over.sorted, prev: t.base.lineage, depth: 1}
	if prev := t.base.lineage; prev != nil {
		lineage.depth = prev.depth + 1
	}
	if lineage.depth > maxLineage {
		lineage = trimLineage(lineage, maxLineage)
	}
	return domainTable{base: &tableBase{entries: entries, sorted: sorted, lineage: lineage}, size: t.size}
}

// trimLineage returns the first n links of l, copied.
func trimLineage(l *baseLineage, n int) *baseLineage {
	if l == nil || n == 0 {
		return nil
	}
	c := *l
	c.prev = trimLineage(l.prev, n-1)
	c.depth = n
	return &c
}

// rebased returns t on the base of folded, which was folded from from:
// t must be from or a table derived from it by edits, or ok is false.
// Its overlay keeps only what changed since from.
func (t domainTable) rebased(folded, from domainTable) (domainTable, bool) {
	if t.base != from.base {
		return t, false
	}
	ed := folded.edit()
	for _, list := range [][]string{from.overlaySorted(), t.overlaySorted()} {
		for _, domain := range list {
			if e, ok := t.get(domain); ok {
				ed.set(domain, e)
			} else {
				ed.remove(domain)
			}
		}
	}
	return ed.done(), true
}

func (t domainTable) overlaySorted() []string {
	if t.over == nil {
		return nil
	}
	return t.over.sorted
}

// tableBuilder builds a table afresh, as a base with no overlay.
type tableBuilder struct {
	entries map[string]entry
	keys    []string
}

// newTableBuilder returns a builder with room for n domains.
func newTableBuilder(n int) *tableBuilder {
	return &tableBuilder{entries: make(map[string]entry, n), keys: make([]string, 0, n)}
}

// get returns the entry of domain added so far.
func (b *tableBuilder) get(domain string) (entry, bool) {
	e, ok := b.entries[domain]
	return e, ok
}

// set adds or replaces the entry of domain, and returns the entry it
// replaced.
func (b *tableBuilder) set(domain string, e entry) (entry, bool) {
	prior, existed := b.entries[domain]
	b.entries[domain] = e
	if !existed {
		b.keys = append(b.keys, domain)
	}
	return prior, existed
}

// done returns the table built. Domains added in order, as the tenant
// store loads them, are not sorted again.
func (b *tableBuilder) done() domainTable {
	if !slices.IsSorted(b.keys) {
		slices.Sort(b.keys)
	}
	return domainTable{base: &tableBase{entries: b.entries, sorted: b.keys}, size: len(b.entries)}
}

// tableEdit builds a new table from an old one by adding to a copy of
// its overlay.
type tableEdit struct {
	from    domainTable
	changes map[string]overlayChange // nil until the first change
	fresh   []string                 // domains this edit added to the overlay, maybe twice
	dropped bool                     // a domain left the overlay
	size    int
}

// edit starts a change of t; t itself is never modified.
func (t domainTable) edit() *tableEdit {
	return &tableEdit{from: t, size: t.size}
}

// reserve makes room for n more domains in the edited overlay.
func (ed *tableEdit) reserve(n int) {
	if ed.changes == nil && n > 0 {
		ed.changes = make(map[string]overlayChange, ed.from.changes()+n)
		if ed.from.over != nil {
			maps.Copy(ed.changes, ed.from.over.changes)
		}
	}
}

// get returns the entry of domain as edited so far.
func (ed *tableEdit) get(domain string) (entry, bool) {
	if ed.changes == nil {
		return ed.from.get(domain)
	}
	if c, ok := ed.changes[domain]; ok {
		return c.e, !c.removed
	}
	e, ok := ed.from.base.entries[domain]
	return e, ok
}

// record puts a domain's new state in the overlay, or takes it out when
// the state is the base's.
func (ed *tableEdit) record(domain string, c overlayChange) {
	if ed.changes == nil {
		if ed.from.over != nil {
			ed.changes = maps.Clone(ed.from.over.changes)
		} else {
			ed.changes = make(map[string]overlayChange)
		}
	}
	base, inBase := ed.from.base.entries[domain]
	if c.removed && !inBase || !c.removed && inBase && base == c.e {
		if _, named := ed.changes[domain]; named {
			delete(ed.changes, domain)
			ed.dropped = true
		}
		return
	}
	if _, named := ed.changes[domain]; !named {
		ed.fresh = append(ed.fresh, domain)
	}
	ed.changes[domain] = c
}

// set adds or replaces the entry of domain, and returns the entry it
// replaced.
func (ed *tableEdit) set(domain string, e entry) (entry, bool) {
	prior, existed := ed.get(domain)
	ed.record(domain, overlayChange{e: e})
	if !existed {
		ed.size++
	}
	return prior, existed
}

// remove deletes domain and returns the entry it had.
func (ed *tableEdit) remove(domain string) (entry, bool) {
	prior, existed := ed.get(domain)
	if !existed {
		return entry{}, false
	}
	ed.record(domain, overlayChange{removed: true})
	ed.size--
	return prior, true
}

// done returns the edited table. The edit must not be used after. The
// overlay's sorted domains are the old ones merged with those the edit
// added; an overlay past foldNowAt is folded at once.
func (ed *tableEdit) done() domainTable {
	if ed.changes == nil {
		return ed.from
	}
	t := domainTable{base: ed.from.base, size: ed.size}
	if len(ed.changes) > 0 {
		t.over = ed.overlay()
	}
	if t.changes() >= foldNowAt {
		t = t.folded()
	}
	return t
}

// overlay returns the edited overlay, its filter the old one's with the
// domains the edit added.
func (ed *tableEdit) overlay() *tableOverlay {
	o := &tableOverlay{changes: ed.changes, sorted: ed.mergedSorted()}
	if old := ed.from.over; old != nil {
		o.seed, o.filter = old.seed, slices.Clone(old.filter)
	} else {
		o.seed, o.filter = maphash.MakeSeed(), make([]uint64, overlayFilterBits/64)
	}
	for _, domain := range ed.fresh {
		o.mark(domain)
	}
	return o
}

// mergedSorted returns the sorted domains of the edited overlay, from
// the old overlay's and those the edit added.
func (ed *tableEdit) mergedSorted() []string {
	var old []string
	if ed.from.over != nil {
		old = ed.from.over.sorted
	}
	slices.Sort(ed.fresh)
	ed.fresh = slices.Compact(ed.fresh)
	fresh := ed.fresh
	if len(fresh) == 0 && !ed.dropped {
		return old
	}
	out := make([]string, 0, len(ed.changes))
	keep := func(domain string) {
		if !ed.dropped {
			out = append(out, domain) // every domain named is still there
			return
		}
		if _, ok := ed.changes[domain]; ok {
			out = append(out, domain)
		}
	}
	i, j := 0, 0
	for i < len(old) || j < len(fresh) {
		switch {
		case j == len(fresh) || i < len(old) && old[i] < fresh[j]:
			keep(old[i])
			i++
		case i == len(old) || fresh[j] < old[i]:
			keep(fresh[j])
			j++
		default: // in both: removed and added again
			keep(old[i])
			i, j = i+1, j+1
		}
	}
	return out
}
