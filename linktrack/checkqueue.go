package linktrack

import (
	"context"
	"sync"
	"time"
)

// maxCheckDelay is the longest delay between two checks of a name.
const maxCheckDelay = time.Hour

// checkQueue runs the checks of a gate that holds back tenants until a
// check passes: a queue of names that workers take in turn, and, for
// each name checked, its last result and the timer of its next check.
// A name is queued once at a time: until its check ends, queuing it
// again does nothing. The delays between the checks of a name start at
// first and double each time, up to maxCheckDelay. Only a name whose
// next check is scheduled has a timer, and no name has a goroutine of
// its own. R is the result of a check.
type checkQueue[R any] struct {
	first time.Duration // first delay between checks

	mu      sync.Mutex
	waits   map[string]*checkWait[R]
	queued  map[string]bool // queued or being checked
	queue   []string
	signal  chan struct{}
	stopped bool
}

// checkWait is a name's last check and its next one.
type checkWait[R any] struct {
	last  *R            // nil until a check ends
	delay time.Duration // before the next check
	next  time.Time
	timer *time.Timer
}

// stopTimer stops w's timer, if one is armed.
func (w *checkWait[R]) stopTimer() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

func newCheckQueue[R any](first time.Duration) *checkQueue[R] {
	return &checkQueue[R]{
		first:  first,
		waits:  make(map[string]*checkWait[R]),
		queued: make(map[string]bool),
		signal: make(chan struct{}, 1),
	}
}

// enqueue queues a check of name, unless one is queued or running.
func (q *checkQueue[R]) enqueue(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.enqueueLocked(name)
}

func (q *checkQueue[R]) enqueueLocked(name string) {
	if q.stopped || q.queued[name] {
		return
	}
	q.queued[name] = true
	q.queue = append(q.queue, name)
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// run calls check for each queued name, workers at once, until stop is
// closed; then it stops every timer, cancels the checks running and
// waits for them. Each check ends with finish, or with drop when it
// keeps no result.
func (q *checkQueue[R]) run(ctx context.Context, stop <-chan struct{}, workers int, check func(ctx context.Context, name string)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				name, ok := q.pop(stop)
				if !ok {
					return
				}
				check(ctx, name)
			}
		})
	}
	<-stop
	cancel()
	q.close()
	wg.Wait()
}

// pop takes the next queued name, waiting for one until stop closes.
func (q *checkQueue[R]) pop(stop <-chan struct{}) (string, bool) {
	for {
		q.mu.Lock()
		if len(q.queue) > 0 {
			name := q.queue[0]
			q.queue[0] = ""
			q.queue = q.queue[1:]
			more := len(q.queue) > 0
			q.mu.Unlock()
			if more { // wake another worker
				select {
				case q.signal <- struct{}{}:
				default:
				}
			}
			return name, true
		}
		q.mu.Unlock()
		select {
		case <-stop:
			return "", false
		case <-q.signal:
		}
	}
}

// lookup calls f with name's wait, or nil when there is none, under the
// lock: f may read and change it, and call the methods whose name ends
// in Locked.
func (q *checkQueue[R]) lookup(name string, f func(w *checkWait[R])) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f(q.waits[name])
}

// finish ends a check of name, which may then be queued again. It stops
// name's timer and calls keep with name's wait, added if need be, under
// the lock: keep stores the result and may schedule the next check.
// After close, it calls nothing and reports false.
func (q *checkQueue[R]) finish(name string, keep func(w *checkWait[R])) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.queued, name)
	if q.stopped {
		return false
	}
	w := q.waitLocked(name)
	w.stopTimer()
	keep(w)
	return true
}

// waitLocked returns name's wait, adding one if there is none.
func (q *checkQueue[R]) waitLocked(name string) *checkWait[R] {
	w, ok := q.waits[name]
	if !ok {
		w = new(checkWait[R])
		q.waits[name] = w
	}
	return w
}

// backoffLocked doubles w's delay, from first up to maxCheckDelay (or
// first, if longer), and returns it.
func (q *checkQueue[R]) backoffLocked(w *checkWait[R]) time.Duration {
	w.delay = min(max(2*w.delay, q.first), max(maxCheckDelay, q.first))
	return w.delay
}

// scheduleLocked queues the next check of name after d; next is when
// that is, as a check's result tells it.
func (q *checkQueue[R]) scheduleLocked(name string, w *checkWait[R], next time.Time, d time.Duration) {
	w.next = next
	w.timer = time.AfterFunc(d, func() { q.enqueue(name) })
}

// last returns a copy of name's last result, or nil before a check ends.
func (q *checkQueue[R]) last(name string) *R {
	q.mu.Lock()
	defer q.mu.Unlock()
	w, ok := q.waits[name]
	if !ok || w.last == nil {
		return nil
	}
	r := *w.last
	return &r
}

// restart forgets name's last result and delay, and stops its timer, but
// keeps name known: its next check is reported as a first one, and its
// delays start over. With check, it queues that check.
func (q *checkQueue[R]) restart(name string, check bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.waitLocked(name)
	w.stopTimer()
	w.last, w.delay = nil, 0
	if check {
		q.enqueueLocked(name)
	}
}

// forget drops name's result and next check; a check of name that is
// queued or running still ends.
func (q *checkQueue[R]) forget(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.forgetLocked(name)
}

func (q *checkQueue[R]) forgetLocked(name string) {
	if w, ok := q.waits[name]; ok {
		w.stopTimer()
		delete(q.waits, name)
	}
}

// drop forgets name, as forget does, and ends a check of it that keeps
// no result: name may be queued again.
func (q *checkQueue[R]) drop(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.forgetLocked(name)
	delete(q.queued, name)
}

// inherit takes over the checks of prev, the queue of the config this
// one replaces, of the names keep reports that have a result: each keeps
// its result and its delay, and its next check comes when it would have.
func (q *checkQueue[R]) inherit(prev *checkQueue[R], keep func(string) bool) {
	prev.mu.Lock()
	defer prev.mu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for name, w := range prev.waits {
		if w.last == nil || !keep(name) {
			continue
		}
		kept := &checkWait[R]{last: w.last, delay: w.delay, next: w.next}
		if w.timer != nil {
			kept.timer = time.AfterFunc(max(w.next.Sub(now), 0), func() { q.enqueue(name) })
		}
		q.waits[name] = kept
	}
}

// close stops every timer; nothing is queued after it.
func (q *checkQueue[R]) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	for _, w := range q.waits {
		if w.timer != nil {
			w.timer.Stop()
		}
	}
	q.queue = nil
}
