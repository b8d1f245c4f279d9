package linktrack

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
)

// editBuckets is how many buckets editSource counts a partition's
// entries in.
const editBuckets = 256

// fileBatch is how many tenants of a tenants file one worker decodes or
// checks at a time.
const fileBatch = 4096

// decodeTenantsParallel decodes a tenants file of the usual shape on
// workers goroutines: the file's tenants list is split into its entries
// by a scan of the brackets and strings, and the entries are decoded at
// once, an entry of plain strings without encoding/json's reflection
// (see decodePlainFileTenant), any other by encoding/json as
// decodeTenantsInOrder decodes it. It reports false, and decodes
// nothing, for any file it cannot decode so: another shape, an invalid
// entry or an error, which decodeTenantsInOrder then reads and explains.
// So it returns the tenants decodeTenantsInOrder returns, or nothing.
func decodeTenantsParallel(raw []byte, workers int) ([]Tenant, bool) {
	entries, ok := splitTenantsFile(raw)
	if !ok {
		return nil, false
	}
	tenants := make([]Tenant, len(entries))
	var failed atomic.Bool
	inBatches(len(entries), workers, func(from, to int) {
		names := make(map[string]string) // provider, region and origin names, shared
		for i := from; i < to && !failed.Load(); i++ {
			t, ok := decodePlainFileTenant(entries[i], names)
			if !ok {
				t = Tenant{}
				dec := json.NewDecoder(bytes.NewReader(entries[i]))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&t); err != nil {
					failed.Store(true)
					return
				}
			}
			tenants[i] = t
		}
	})
	if failed.Load() {
		return nil, false
	}
	return tenants, true
}

// inBatches calls fn for every batch [from, to) of n items, fileBatch
// at a time, on up to workers goroutines, and returns when all are
// done.
func inBatches(n, workers int, fn func(from, to int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(workers, 1), (n+fileBatch-1)/fileBatch) {
		wg.Go(func() {
			for {
				from := int(next.Add(fileBatch)) - fileBatch
				if from >= n {
					return
				}
				fn(from, min(from+fileBatch, n))
			}
		})
	}
	wg.Wait()
}

// splitTenantsFile returns the entries of a tenants file of the usual
// shape: {"tenants": [{...}, ...]}, with JSON whitespace anywhere
// between tokens, and each entry an object. An entry is found by its
// brackets and strings, not checked; decoding it does. It reports false
// for anything else.
func splitTenantsFile(raw []byte) ([][]byte, bool) {
	p := skipSpace(raw, 0)
	for _, want := range []string{"{", `"tenants"`, ":", "["} {
		if !bytes.HasPrefix(raw[p:], []byte(want)) {
			return nil, false
		}
		p = skipSpace(raw, p+len(want))
	}
	entries := make([][]byte, 0, len(raw)/64)
	if p < len(raw) && raw[p] == ']' {
		p++
	} else {
		for {
			end, ok := objectEnd(raw, p)
			if !ok {
				return nil, false
			}
			entries = append(entries, raw[p:end])
			p = skipSpace(raw, end)
			if p == len(raw) {
				return nil, false
			}
			if raw[p] == ']' {
				p++
				break
			}
			if raw[p] != ',' {
				return nil, false
			}
			p = skipSpace(raw, p+1)
		}
	}
	p = skipSpace(raw, p)
	if p == len(raw) || raw[p] != '}' {
		return nil, false
	}
	return entries, skipSpace(raw, p+1) == len(raw)
}

// objectEnd returns the offset just past the object that starts at
// raw[p], found by counting brackets outside strings.
func objectEnd(raw []byte, p int) (int, bool) {
	if p == len(raw) || raw[p] != '{' {
		return 0, false
	}
	depth := 0
	for p < len(raw) {
		switch raw[p] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return p + 1, true
			}
		case '"':
			end, ok := stringEnd(raw, p)
			if !ok {
				return 0, false
			}
			p = end
			continue
		}
		p++
	}
	return 0, false
}

// stringEnd returns the offset just past the string that starts at
// raw[p]: past the next quote not escaped by a backslash.
func stringEnd(raw []byte, p int) (int, bool) {
	for q := p + 1; ; {
		i := bytes.IndexByte(raw[q:], '"')
		if i < 0 {
			return 0, false
		}
		q += i
		backslashes := 0
		for raw[q-1-backslashes] == '\\' {
			backslashes++
		}
		if backslashes%2 == 0 {
			return q + 1, true
		}
		q++
	}
}

// skipSpace returns the offset of the first byte from p on that is not
// JSON whitespace.
func skipSpace(raw []byte, p int) int {
	for p < len(raw) {
		switch raw[p] {
		case ' ', '\t', '\n', '\r':
			p++
		default:
			return p
		}
	}
	return p
}

// decodePlainFileTenant reads an entry of a tenants file that is a JSON
// object whose fields are among domain, provider, region and origin,
// each a string without escapes (see plainString), with JSON whitespace
// between tokens. names holds the provider, region and origin names
// read so far, which tenants share. It reports false for anything
// else, which encoding/json decodes.
func decodePlainFileTenant(v []byte, names map[string]string) (Tenant, bool) {
	var t Tenant
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return t, false
	}
	v = v[1 : len(v)-1]
	p := skipSpace(v, 0)
	for p < len(v) {
		key, rest, ok := plainString(v[p:])
		if !ok {
			return t, false
		}
		rest = rest[skipSpace(rest, 0):]
		if len(rest) == 0 || rest[0] != ':' {
			return t, false
		}
		rest = rest[1:]
		value, rest, ok := plainString(rest[skipSpace(rest, 0):])
		if !ok {
			return t, false
		}
		switch string(key) {
		case "domain":
			t.Domain = string(value)
		case "provider":
			t.Provider = sharedName(names, value)
		case "region":
			t.Region = sharedName(names, value)
		case "origin":
			t.Origin = sharedName(names, value)
		default:
			return t, false
		}
		rest = rest[skipSpace(rest, 0):]
		if len(rest) > 0 {
			if rest[0] != ',' {
				return t, false
			}
			rest = rest[1:]
			if q := skipSpace(rest, 0); q == len(rest) {
				return t, false // a comma before the end
			}
		}
		v, p = rest, skipSpace(rest, 0)
	}
	return t, true
}

// sharedName returns name as a string, the one names already holds if
// any: a million tenants name a few providers.
func sharedName(names map[string]string, name []byte) string {
	if s, ok := names[string(name)]; ok {
		return s
	}
	s := string(name)
	names[s] = s
	return s
}

// checkedTenant is a tenant checked by newEntry: its canonical domain
// and entry, or why it cannot be one.
type checkedTenant struct {
	domain string
	e      entry
	err    error
}

// checkTenants checks tenants by newEntry on up to workers goroutines.
// Routes already resolved by a goroutine are reused without taking the
// route table's lock.
func checkTenants(tenants []Tenant, resolve routeResolver, workers int) []checkedTenant {
	out := make([]checkedTenant, len(tenants))
	inBatches(len(tenants), workers, func(from, to int) {
		routes := make(map[routeKey]*route)
		cached := func(t Tenant) (*route, error) {
			key := routeKey{provider: t.Provider, region: t.Region, origin: t.Origin}
			if r, ok := routes[key]; ok {
				return r, nil
			}
			r, err := resolve(t)
			if err == nil {
				routes[key] = r
			}
			return r, err
		}
		for i := from; i < to; i++ {
			c := &out[i]
			c.domain, c.e, c.err = newEntry(tenants[i], cached)
		}
	})
	return out
}

// sourceEdit is what withSource learns of a source's new tenants on
// every core before it edits the registry: each tenant's entry in the
// registry being replaced, the first duplicate, and the source's
// domains the new tenants no longer hold.
type sourceEdit struct {
	prior   []priorEntry // by tenant: its domain's entry in s
	dup     int          // index of the first tenant whose domain an earlier one has, or -1
	dupOf   int          // index of that earlier tenant
	removed []string
}

// priorEntry is what a tenant of withSource finds in the registry it
// edits: its domain's entry from another source, or from the same
// source and the same as the tenant's, or neither (the zero value).
type priorEntry struct {
	other  bool   // registered by another source: source
	same   bool   // registered by the source, with the same entry
	source uint16 // with other
}

// editSource finds, for the tenants checked that replace the entries of
// source in s, what sourceEdit holds. Each of workers goroutines takes
// the domains of one hash partition, so that no domain is looked at by
// two. It costs a lookup per tenant and a pass over s, spread over the
// workers; invalid tenants are left out. The source's entries of s are
// only looked for among the tenants in the buckets of a partition
// (by the same hash) that hold fewer of them than s: a reload that
// removes nothing looks up no entry of s.
func editSource(s *snapshot, source uint16, checked []checkedTenant, workers int) sourceEdit {
	workers = max(workers, 1)
	se := sourceEdit{prior: make([]priorEntry, len(checked)), dup: -1}
	seed := maphash.MakeSeed()
	// where returns the partition and the bucket of a domain
	where := func(domain string) (int, int) {
		h := maphash.String(seed, domain)
		return int(h % uint64(workers)), int(h / uint64(workers) % editBuckets)
	}
	dups := make([][2]int, workers) // by part: its first duplicate and the tenant before
	removed := make([][]string, workers)
	var wg sync.WaitGroup
	for part := range workers {
		wg.Go(func() {
			dups[part] = [2]int{-1, -1}
			seen := make(map[string]int, len(checked)/workers+1) // domain: its index
			var kept, had [editBuckets]int                       // the source's entries of s: kept, and all
			for i, c := range checked {
				if c.err != nil {
					continue
				}
				p, bucket := where(c.domain)
				if p != part {
					continue
				}
				if first, dup := seen[c.domain]; dup {
					if dups[part][0] < 0 {
						dups[part] = [2]int{i, first}
					}
					continue
				}
				seen[c.domain] = i
				prior, known := s.registered(c.domain)
				switch e := c.e; {
				case !known:
				case prior.source != source:
					se.prior[i] = priorEntry{other: true, source: prior.source}
				default:
					e.source = source
					se.prior[i].same = prior == e
					kept[bucket]++
				}
			}
			s.each(func(domain string, e entry) bool {
				if e.source == source {
					if p, bucket := where(domain); p == part {
						had[bucket]++
					}
				}
				return true
			})
			if kept == had {
				return
			}
			s.each(func(domain string, e entry) bool {
				if e.source == source {
					if p, bucket := where(domain); p == part && kept[bucket] != had[bucket] {
						if _, ok := seen[domain]; !ok {
							removed[part] = append(removed[part], domain)
						}
					}
				}
				return true
			})
		})
	}
	wg.Wait()
	for _, d := range dups {
		if d[0] >= 0 && (se.dup < 0 || d[0] < se.dup) {
			se.dup, se.dupOf = d[0], d[1]
		}
	}
	se.removed = slices.Concat(removed...)
	return se
}
