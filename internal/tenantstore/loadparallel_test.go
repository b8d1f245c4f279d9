package tenantstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// parallelStore returns a store of n records in a snapshot of several
// chunks, then a journal that adds, replaces and removes some, and the
// domains Load sends, in order.
func parallelStore(t *testing.T, n int) (*Store, []string) {
	t.Helper()
	s := New(fileStorage(t), Options{ChunkRecords: 5000})
	c := Change{}
	for i := range n {
		c.Put = append(c.Put, put(fmt.Sprintf("t%06d.example", i*2), "p"))
	}
	mustApply(t, s, c)
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, Change{
		Put:    []Record{put("t000001.example", "q"), put("t000004.example", "q"), put("zz.example", "q")},
		Remove: []string{"t000010.example"},
	})
	var want []string
	if _, err := s.Load(context.Background(), func(r Record) error {
		want = append(want, r.Domain)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s, want
}

// TestLoadParallelKeepsOrder: every record reaches use once, in Load's
// order, while two batches are decoded at once.
func TestLoadParallelKeepsOrder(t *testing.T) {
	s, want := parallelStore(t, 5*loadBatch+100)
	started := make(chan int, 64)
	overlapped := make(chan struct{})
	decode := func(records []Record) ([]string, error) {
		started <- len(records)
		if records[0].Domain == want[0] {
			// the first batch waits until a second one is being decoded
			select {
			case <-overlapped:
			case <-time.After(30 * time.Second):
				return nil, errors.New("no second batch decoded while the first was")
			}
		} else {
			select {
			case <-overlapped:
			default:
				close(overlapped)
			}
		}
		domains := make([]string, len(records))
		for i, r := range records {
			domains[i] = r.Domain
		}
		return domains, nil
	}
	var got []string
	version, err := LoadParallel(context.Background(), s, 2, decode, func(domains []string) error {
		got = append(got, domains...)
		return nil
	})
	if err != nil || version != 2 {
		t.Fatalf("version %d, %v", version, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("use saw %d records, want %d in Load's order", len(got), len(want))
	}
}

// TestLoadParallelStops: the first error of decode or use is returned,
// and use sees no batch after it.
func TestLoadParallelStops(t *testing.T) {
	s, want := parallelStore(t, 5*loadBatch)
	stop := errors.New("stop")
	for _, failIn := range []string{"decode", "use"} {
		batches := 0
		_, err := LoadParallel(context.Background(), s, 2, func(records []Record) (string, error) {
			if failIn == "decode" && records[0].Domain == want[2*loadBatch] {
				return "", stop
			}
			return records[0].Domain, nil
		}, func(first string) error {
			batches++
			if failIn == "use" && first == want[2*loadBatch] {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Errorf("failing in %s: %v, want the error of %s", failIn, err, failIn)
		}
		if wantBatches := map[string]int{"decode": 2, "use": 3}[failIn]; batches != wantBatches {
			t.Errorf("failing in %s: use saw %d batches, want %d", failIn, batches, wantBatches)
		}
	}
}
