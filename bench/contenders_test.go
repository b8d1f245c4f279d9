package main

import (
	"slices"
	"testing"
)

// Each BENCH_GOGC value gives linktrack and both Go floors a contender of
// their own, keyed by their letter so that BENCH_ONLY selects them.
func TestContenderKeys(t *testing.T) {
	var keys []string
	for _, c := range contenders([]string{"200", "off@512MiB"}) {
		keys = append(keys, c.key)
	}
	want := []string{"a", "a200", "aoff@512MiB", "g", "b", "c", "d",
		"e", "e200", "eoff@512MiB", "f", "f200", "foff@512MiB"}
	if !slices.Equal(keys, want) {
		t.Errorf("contender keys = %v, want %v", keys, want)
	}
}
