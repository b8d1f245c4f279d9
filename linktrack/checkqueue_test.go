package linktrack

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestCheckQueue: a name is queued once until its check ends, unless
// the check keeps no result; every queued name is checked, by the
// workers, until stop; nothing is queued or kept after that.
func TestCheckQueue(t *testing.T) {
	q := newCheckQueue[string](time.Minute)
	q.enqueue("a.test")
	q.enqueue("a.test")
	q.enqueue("b.test")
	if !slices.Equal(q.queue, []string{"a.test", "b.test"}) {
		t.Fatalf("queue %q, want each name once", q.queue)
	}

	var mu sync.Mutex
	var checked []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.run(context.Background(), stop, 2, func(_ context.Context, name string) {
			mu.Lock()
			checked = append(checked, name)
			mu.Unlock()
			if name == "b.test" {
				q.drop(name) // keeps no result
				return
			}
			q.finish(name, func(w *checkWait[string]) {
				r := "seen " + name
				w.last = &r
			})
		})
	}()
	waitChecked := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			mu.Lock()
			got := len(checked)
			mu.Unlock()
			if got >= n {
				return
			}
		}
		t.Fatalf("%d checks ran, want %d", len(checked), n)
	}
	waitChecked(2)
	q.enqueue("b.test") // dropped: it may be queued again
	waitChecked(3)
	if r := q.last("a.test"); r == nil || *r != "seen a.test" {
		t.Errorf("last result of a.test: %v", r)
	}
	if r := q.last("b.test"); r != nil {
		t.Errorf("a check that kept no result left %q", *r)
	}
	close(stop)
	<-done
	q.enqueue("c.test")
	if len(q.queue) != 0 {
		t.Errorf("queued after stop: %q", q.queue)
	}
	if q.finish("a.test", func(*checkWait[string]) { t.Error("a result kept after stop") }) {
		t.Error("finish reported a result kept after stop")
	}
}

// TestCheckQueueBackoff: delays start at first and double up to
// maxCheckDelay, or stay at first when it is longer; a restart starts
// them over, and a reload keeps them and the next check.
func TestCheckQueueBackoff(t *testing.T) {
	q := newCheckQueue[string](20 * time.Minute)
	defer q.close()
	var delays []time.Duration
	now := time.Now()
	for range 4 {
		q.finish("a.test", func(w *checkWait[string]) {
			d := q.backoffLocked(w)
			q.scheduleLocked("a.test", w, now.Add(d), d)
			r := "not yet"
			w.last = &r
			delays = append(delays, d)
		})
	}
	if want := []time.Duration{20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}; !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
	long := newCheckQueue[string](2 * time.Hour)
	if d := long.backoffLocked(new(checkWait[string])); d != 2*time.Hour {
		t.Errorf("first delay of two hours: %v", d)
	}

	next := newCheckQueue[string](20 * time.Minute)
	defer next.close()
	next.inherit(q, func(string) bool { return true })
	if w := next.waits["a.test"]; w == nil || w.timer == nil || w.delay != time.Hour || !w.next.Equal(q.waits["a.test"].next) {
		t.Errorf("after a reload: %+v", w)
	}

	q.restart("a.test", true)
	if w := q.waits["a.test"]; w == nil || w.last != nil || w.delay != 0 || w.timer != nil || len(q.queue) != 1 {
		t.Errorf("after a restart: %+v, queue %q", w, q.queue)
	}
	q.forget("a.test")
	if _, ok := q.waits["a.test"]; ok || !q.queued["a.test"] {
		t.Error("forget dropped the queued check, or kept the name")
	}
}
