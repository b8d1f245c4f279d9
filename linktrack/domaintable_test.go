package linktrack

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
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
	for _, folded := range []bool{false, true} {
		if folded {
			old = old.folded()
		}
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
					t.Errorf("folded %v, %s: source %d, want %d", folded, tc.domain, got, tc.source)
				}
			} else if tc.source != -1 {
				t.Errorf("folded %v, %s: absent, want source %d", folded, tc.domain, tc.source)
			}
		}
		if old.size != 3 || next.size != 3 {
			t.Errorf("folded %v: sizes %d and %d, want 3 and 3", folded, old.size, next.size)
		}
	}
}

func TestDomainTableAfterIsSortedAndPaged(t *testing.T) {
	var domains []string
	for i := range 5000 {
		domains = append(domains, fmt.Sprintf("t%d.example.com", rand.IntN(1_000_000)*10+i%10))
	}
	// most in the base, the rest in the overlay, a few of the base removed
	ed := tableOfDomains(domains[:4000]...).folded().edit()
	for _, d := range domains[4000:] {
		ed.set(d, entry{})
	}
	for i := 0; i < 4000; i += 50 {
		ed.remove(domains[i])
	}
	table := ed.done()
	if table.changes() == 0 || len(table.base.entries) == 0 {
		t.Fatalf("the table has %d changes over a base of %d; want both", table.changes(), len(table.base.entries))
	}
	var want []string
	for _, d := range slices.Compact(slices.Sorted(slices.Values(domains))) {
		if _, ok := table.get(d); ok {
			want = append(want, d)
		}
	}

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

// TestDomainTableEachChangedLooksAtTheChange: between tables derived
// from one another, through edits and folds, eachChanged names exactly
// the changed domains and looks at no more than the overlays and the
// domains folded; between unrelated tables it compares everything.
func TestDomainTableEachChangedLooksAtTheChange(t *testing.T) {
	var domains []string
	for i := range 100_000 {
		domains = append(domains, fmt.Sprintf("tenant-%d.example.com", i))
	}
	old := tableOfDomains(domains...)
	change := func(table domainTable, i int) domainTable {
		ed := table.edit()
		ed.set(fmt.Sprintf("new-%d.example.com", i), entry{})
		ed.set(domains[5+i], entry{source: 9999})
		ed.remove(domains[50_000+i])
		return ed.done()
	}
	next := change(old, 0)
	oneFold := change(next.folded(), 1)
	twoFolds := change(change(oneFold, 2).folded(), 3)
	rebuilt := tableOfDomains(domains...)

	for _, tc := range []struct {
		name       string
		from, to   domainTable
		changed    int
		candidates int // at most; -1: unrelated
	}{
		{"same base", old, next, 3, 3},
		{"one fold", old, oneFold, 6, 9},
		{"two folds", next, twoFolds, 9, 15},
		{"unrelated", old, rebuilt, 0, -1},
	} {
		changed := map[string]bool{}
		for _, pair := range [][2]domainTable{{tc.from, tc.to}, {tc.to, tc.from}} {
			pair[0].eachChanged(pair[1], func(domain string, _ entry) bool {
				changed[domain] = true
				return true
			})
		}
		want := map[string]bool{}
		for _, d := range append(slices.Clone(domains), "new-0.example.com", "new-1.example.com", "new-2.example.com", "new-3.example.com") {
			a, aok := tc.from.get(d)
			b, bok := tc.to.get(d)
			if aok != bok || a != b {
				want[d] = true
			}
		}
		if !maps.Equal(changed, want) || len(want) != tc.changed {
			t.Errorf("%s: changed %v, want %v (%d)", tc.name, slices.Sorted(maps.Keys(changed)), slices.Sorted(maps.Keys(want)), tc.changed)
		}
		candidates, related := changedBetween(tc.from, tc.to)
		looked := 0
		for _, list := range candidates {
			looked += len(list)
		}
		if tc.candidates < 0 {
			if related {
				t.Errorf("%s: tables found related", tc.name)
			}
		} else if !related || looked > tc.candidates {
			t.Errorf("%s: related %v, %d domains looked at; want related, at most %d", tc.name, related, looked, tc.candidates)
		}
	}
}

// TestDomainTableMatchesAMap runs random edits, folds and rebases
// against a plain map and checks every way of reading a table.
func TestDomainTableMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	domain := func() string { return fmt.Sprintf("d%d.example", rng.IntN(3000)) }
	check := func(table domainTable, model map[string]entry, round int) {
		t.Helper()
		if table.size != len(model) {
			t.Fatalf("round %d: size %d, want %d", round, table.size, len(model))
		}
		for d, want := range model {
			if got, ok := table.get(d); !ok || got != want {
				t.Fatalf("round %d: %s is %v %v, want %v", round, d, got, ok, want)
			}
		}
		var listed []string
		table.after("", func(d string, e entry) bool {
			if model[d] != e {
				t.Fatalf("round %d: after lists %s with %v, want %v", round, d, e, model[d])
			}
			listed = append(listed, d)
			return true
		})
		if want := slices.Sorted(maps.Keys(model)); !slices.Equal(listed, want) {
			t.Fatalf("round %d: after lists %d domains, want %d in order", round, len(listed), len(want))
		}
		each := map[string]entry{}
		table.each(func(d string, e entry) bool {
			each[d] = e
			return true
		})
		if !maps.Equal(each, model) {
			t.Fatalf("round %d: each visits %d domains, want %d", round, len(each), len(model))
		}
		if table.over != nil {
			for d, c := range table.over.changes {
				if b, ok := table.base.entries[d]; c.removed && !ok || !c.removed && ok && b == c.e {
					t.Fatalf("round %d: the overlay names %s, whose entry is the base's", round, d)
				}
			}
			if want := slices.Sorted(maps.Keys(table.over.changes)); !slices.Equal(table.over.sorted, want) {
				t.Fatalf("round %d: overlay sorted %q, want %q", round, table.over.sorted, want)
			}
		}
	}
	model := map[string]entry{}
	table := newDomainTable()
	var folding domainTable // a fold started on this table, rebased later
	for round := range 400 {
		prevModel, prev := maps.Clone(model), table
		ops := 1 + rng.IntN(8)
		if round%50 == 0 {
			ops = 3000
		}
		ed := table.edit()
		for range ops {
			d := domain()
			e := entry{source: uint16(rng.IntN(3))}
			switch rng.IntN(4) {
			case 0:
				ed.set(d, e)
				ed.remove(d)
				delete(model, d)
			case 1:
				ed.remove(d)
				ed.set(d, e)
				model[d] = e
			case 2:
				ed.remove(d)
				delete(model, d)
			default:
				ed.set(d, e)
				model[d] = e
			}
		}
		table = ed.done()
		switch rng.IntN(5) {
		case 0:
			folding = table
		case 1:
			if folding.base != nil {
				if rebased, ok := table.rebased(folding.folded(), folding); ok {
					table = rebased
				}
				folding = domainTable{}
			}
		}
		check(table, model, round)
		check(prev, prevModel, round)
		changed := map[string]bool{}
		table.eachChanged(prev, func(d string, _ entry) bool { changed[d] = true; return true })
		prev.eachChanged(table, func(d string, _ entry) bool { changed[d] = true; return true })
		for d := range changed {
			a, aok := model[d]
			b, bok := prevModel[d]
			if aok == bok && a == b {
				t.Fatalf("round %d: eachChanged names %s, which did not change", round, d)
			}
		}
		for d := range model {
			if prevModel[d] != model[d] && !changed[d] {
				t.Fatalf("round %d: eachChanged misses %s", round, d)
			}
		}
		for d := range prevModel {
			if _, ok := model[d]; !ok && !changed[d] {
				t.Fatalf("round %d: eachChanged misses the removal of %s", round, d)
			}
		}
	}
}

// lookupTable is a table of n domains; with changes, that many of its
// domains are in the overlay, the rest in the base.
func lookupTable(n, changes int) (domainTable, []string) {
	b := newTableBuilder(n)
	domains := make([]string, n)
	for i := range domains {
		domains[i] = fmt.Sprintf("click.tenant-%d.example.com", i)
		if i >= changes {
			b.set(domains[i], entry{})
		}
	}
	ed := b.done().edit()
	for _, d := range domains[:changes] {
		ed.set(d, entry{})
	}
	return ed.done(), domains
}

// BenchmarkDomainTableLookup measures a lookup in a table of 1,000,000
// domains, all in the base and with 1,000 changes in the overlay; the
// README's target is at most 100 ns. BenchmarkPlainMapLookup is one Go
// map of the same domains, for comparison in the same run.
func BenchmarkDomainTableLookup(b *testing.B) {
	const n = 1_000_000
	for _, changes := range []int{0, 1000} {
		b.Run(fmt.Sprintf("changes=%d", changes), func(b *testing.B) {
			table, domains := lookupTable(n, changes)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, ok := table.get(domains[i%n]); !ok {
					b.Fatal("missing")
				}
			}
		})
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

// BenchmarkDomainTableChange measures one domain added to a table of
// 1,000,000 whose overlay holds 0, 1,000 or foldAt-1 changes: a copy of
// the overlay.
func BenchmarkDomainTableChange(b *testing.B) {
	const n = 1_000_000
	for _, changes := range []int{0, 1000, foldAt - 1} {
		b.Run(fmt.Sprintf("changes=%d", changes), func(b *testing.B) {
			table, _ := lookupTable(n, changes)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				ed := table.edit()
				ed.set(fmt.Sprintf("new-%d.example.com", i), entry{})
				ed.done()
			}
		})
	}
}

// BenchmarkDomainTableFold measures folding foldAt changes into a new
// base of 1,000,000 domains, as the registry does in the background.
func BenchmarkDomainTableFold(b *testing.B) {
	table, _ := lookupTable(1_000_000, foldAt)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		table.folded()
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/fold")
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
