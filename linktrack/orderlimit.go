package linktrack

import (
	"context"
	"sync"
	"time"
)

// DefaultOrderLimit and DefaultOrderLimitWindow are Let's Encrypt's
// limit of new orders per account.
const (
	DefaultOrderLimit       = 300
	DefaultOrderLimitWindow = 3 * time.Hour
)

// orderLimiter spaces out the background handshakes that may place a new
// order: a token bucket that holds up to limit tokens and gains one
// every window/limit, as Let's Encrypt counts orders.
type orderLimiter struct {
	mu     sync.Mutex
	limit  float64
	every  time.Duration // one token back
	tokens float64
	last   time.Time
}

func newOrderLimiter(limit int, window time.Duration) *orderLimiter {
	return &orderLimiter{limit: float64(limit), every: window / time.Duration(limit), tokens: float64(limit), last: time.Now()}
}

// wait takes a token, waiting for one if there is none. It returns
// ctx's error if ctx ends first.
func (l *orderLimiter) wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := time.Now()
		l.tokens = min(l.limit, l.tokens+float64(now.Sub(l.last))/float64(l.every))
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			l.mu.Unlock()
			return nil
		}
		delay := time.Duration((1 - l.tokens) * float64(l.every))
		l.mu.Unlock()
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}
