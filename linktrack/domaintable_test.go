package linktrack

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func tableOfDomains(domains ...string) domainTable {
	ed := newDomainTable().edit()
	for i, d := range domains {
		ed.set(d, entry{source: uint16(i)})
	}
	return ed.done()
}

func TestDomainTableEditLeavesTheOriginal(t *testing.T) {
	old := tableOfDomains("a.example", "b.example", "c.example")
	ed := old.edit()
	ed.set("d.example", entry{source: 9})
	ed.set("a.example", entry{source: 7})
	ed.remove("b.example")
	ed.remove("missing.example")
	next := ed.done()

	for _, tc := range []struct {
		table  domainTable
		domain string
		source int // -1: absent
	}{
		{old, "a.example", 0}, {old, "b.example", 1}, {old, "d.example", -1},
		{next, "a.example", 7}, {next, "b.example", -1}, {next, "c.example", 2}, {next, "d.example", 9},
	} {
		e, ok := tc.table.get(tc.domain)
		if got := -1; ok {
			got = int(e.source)
			if got != tc.source {
				t.Errorf("%s: source %d, want %d", tc.domain, got, tc.source)
			}
		} else if tc.source != -1 {
			t.Errorf("%s: absent, want source %d", tc.domain, tc.source)
		}
	}
	if old.size != 3 || next.size != 3 {
		t.Errorf("sizes %d and %d, want 3 and 3", old.size, next.size)
	}
}

func TestDomainTableAfterIsSortedAndPaged(t *testing.T) {
	var domains []string
	for i := range 5000 {
		domains = append(domains, fmt.Sprintf("t%d.example.com", rand.IntN(1_000_000)*10+i%10))
	}
	table := tableOfDomains(domains...)
	want := slices.Compact(slices.Sorted(slices.Values(domains)))

	var got []string
	cursor := ""
	for {
		page := 0
		table.after(cursor, func(domain string, _ entry) bool {
			got = append(got, domain)
			cursor = domain
			page++
			return page < 700
		})
		if page < 700 {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged listing has %d domains, want %d in order", len(got), len(want))
	}
}

func TestDomainTableEachChangedSkipsSharedShards(t *testing.T) {
	var domains []string
	for i := range 100_000 {
		domains = append(domains, fmt.Sprintf("tenant-%d.example.com", i))
	}
	old := tableOfDomains(domains...)
	ed := old.edit()
	ed.set("new.example.com", entry{})
	ed.set("tenant-5.example.com", entry{source: 99})
	ed.remove("tenant-6.example.com")
	next := ed.done()

	visited, changed := 0, map[string]bool{}
	countVisits := func(from, to domainTable) {
		from.eachChanged(to, func(domain string, _ entry) bool {
			changed[domain] = true
			return true
		})
	}
	// eachChanged visits only changed shards: count what it looked at
	for i, shard := range next.shards {
		if len(shard) > 0 && !sameMap(shard, old.shards[i]) {
			visited += len(shard)
		}
	}
	countVisits(next, old)
	countVisits(old, next)
	want := map[string]bool{"new.example.com": true, "tenant-5.example.com": true, "tenant-6.example.com": true}
	if !maps.Equal(changed, want) {
		t.Errorf("changed %v, want %v", changed, want)
	}
	if visited > 3*2*100_000/domainShards+100 {
		t.Errorf("a change of 3 domains copied shards holding %d domains", visited)
	}
}

func TestSnapshotAfterListsWildcardsFirst(t *testing.T) {
	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "b.example.com", Provider: "sendgrid"},
		{Domain: "*.clicks.example.com", Provider: "sendgrid"},
		{Domain: "a.example.com", Provider: "sendgrid"},
		{Domain: "*.a.example.net", Provider: "sendgrid"},
	}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cursor string
		want   string
	}{
		{"", "*.a.example.net *.clicks.example.com a.example.com b.example.com"},
		{"*.a.example.net", "*.clicks.example.com a.example.com b.example.com"},
		{"*.clicks.example.com", "a.example.com b.example.com"},
		{"a.example.com", "b.example.com"},
		{"b.example.com", ""},
	} {
		var got []string
		s.after(tc.cursor, func(domain string, _ entry) bool {
			got = append(got, domain)
			return true
		})
		if strings.Join(got, " ") != tc.want {
			t.Errorf("after %q: %q, want %q", tc.cursor, strings.Join(got, " "), tc.want)
		}
	}
}

// BenchmarkDomainTableLookup measures a lookup in a table of 1,000,000
// domains; the README's target is at most 100 ns.
func BenchmarkDomainTableLookup(b *testing.B) {
	const n = 1_000_000
	ed := newDomainTable().edit()
	domains := make([]string, n)
	for i := range domains {
		domains[i] = fmt.Sprintf("click.tenant-%d.example.com", i)
		ed.set(domains[i], entry{})
	}
	table := ed.done()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ok := table.get(domains[i%n]); !ok {
			b.Fatal("missing")
		}
	}
}

// BenchmarkDomainTableChange measures one domain added to a table of
// 1,000,000: the copy of one shard.
func BenchmarkDomainTableChange(b *testing.B) {
	const n = 1_000_000
	ed := newDomainTable().edit()
	for i := range n {
		ed.set(fmt.Sprintf("click.tenant-%d.example.com", i), entry{})
	}
	table := ed.done()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ed := table.edit()
		ed.set(fmt.Sprintf("new-%d.example.com", i), entry{})
		ed.done()
	}
}

// BenchmarkPlainMapLookup is the baseline for BenchmarkDomainTableLookup:
// one Go map of 1,000,000 domains.
func BenchmarkPlainMapLookup(b *testing.B) {
	const n = 1_000_000
	m := make(map[string]entry, n)
	domains := make([]string, n)
	for i := range domains {
		domains[i] = fmt.Sprintf("click.tenant-%d.example.com", i)
		m[domains[i]] = entry{}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ok := m[domains[i%n]]; !ok {
			b.Fatal("missing")
		}
	}
}

// TestDomainTableSortedAfterEdits: after edits small and large, adds and
// removals of the same domain in one edit included, each shard's sorted
// domains are exactly its domains, in order, and the table edited keeps
// its own.
func TestDomainTableSortedAfterEdits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	domain := func() string { return fmt.Sprintf("d%d.example", rng.IntN(20000)) }
	check := func(table domainTable, round int) {
		t.Helper()
		size := 0
		for i, shard := range table.shards {
			size += len(shard)
			if want := slices.Sorted(maps.Keys(shard)); !slices.Equal(table.sorted[i], want) {
				t.Fatalf("round %d, shard %d: sorted %q, want %q", round, i, table.sorted[i], want)
			}
		}
		if size != table.size {
			t.Fatalf("round %d: size %d, want %d", round, table.size, size)
		}
	}
	ed := newDomainTable().edit()
	for range 5000 {
		ed.set(domain(), entry{})
	}
	table := ed.done()
	check(table, -1)
	for round := range 100 {
		ops := 1 + rng.IntN(6)
		if round%25 == 0 {
			ops = 20000 // more than maxTouched in many shards
		}
		before := slices.Collect(func(yield func(string) bool) {
			table.after("", func(d string, _ entry) bool { return yield(d) })
		})
		ed := table.edit()
		for range ops {
			d := domain()
			switch rng.IntN(4) {
			case 0:
				ed.set(d, entry{})
				ed.remove(d)
			case 1:
				ed.remove(d)
				ed.set(d, entry{source: 1})
			case 2:
				ed.remove(d)
			default:
				ed.set(d, entry{})
			}
		}
		next := ed.done()
		check(next, round)
		after := slices.Collect(func(yield func(string) bool) {
			table.after("", func(d string, _ entry) bool { return yield(d) })
		})
		if !slices.Equal(before, after) {
			t.Fatalf("round %d: the edited table's listing changed", round)
		}
		table = next
	}
}
