package main

import (
	"slices"
	"testing"
)

// Each BENCH_GOGC value gives both linktracks and both Go floors a
// contender of their own, keyed by their letter so that BENCH_ONLY
// selects them.
func TestContenderKeys(t *testing.T) {
	var keys []string
	for _, c := range contenders([]string{"200", "off@512MiB"}) {
		keys = append(keys, c.key)
	}
	want := []string{"a", "a200", "aoff@512MiB", "g", "g200", "goff@512MiB", "b", "c", "d",
		"e", "e200", "eoff@512MiB", "f", "f200", "foff@512MiB"}
	if !slices.Equal(keys, want) {
		t.Errorf("contender keys = %v, want %v", keys, want)
	}
}

// A round runs linktrack next to its yardsticks and every even round
// backwards, so that a ratio's two sides run seconds apart and a drift
// falls on each side alike.
func TestRunOrder(t *testing.T) {
	gogc := []string{"400"}
	var cs []*contender
	for _, c := range contenders(gogc) {
		if c.key != "c" { // as BENCH_ONLY leaves one out
			cs = append(cs, c)
		}
	}
	keys := func(r int) []string {
		var ks []string
		for _, c := range runOrder(cs, gogc, r) {
			ks = append(ks, c.key)
		}
		return ks
	}
	forward := []string{"a", "g", "e", "f", "a400", "g400", "e400", "f400", "b", "d"}
	if got := keys(1); !slices.Equal(got, forward) {
		t.Errorf("round 1 order = %v, want %v", got, forward)
	}
	backward := slices.Clone(forward)
	slices.Reverse(backward)
	if got := keys(2); !slices.Equal(got, backward) {
		t.Errorf("round 2 order = %v, want %v", got, backward)
	}
	if got := keys(3); !slices.Equal(got, forward) {
		t.Errorf("round 3 order = %v, want %v", got, forward)
	}
}
