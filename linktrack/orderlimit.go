package linktrack

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Let's Encrypt's limits, the defaults of the order limits: new orders
// per account, and new certificates per registered domain.
const (
	DefaultOrderLimit                  = 300
	DefaultOrderLimitWindow            = 3 * time.Hour
	DefaultRegisteredDomainLimit       = 50
	DefaultRegisteredDomainLimitWindow = 7 * 24 * time.Hour
)

// errRegisteredDomainLimit is returned for a name whose registered
// domain had its share of new certificates in the window.
var errRegisteredDomainLimit = errors.New("registered domain limit reached")

// orderLimiter spaces out the background handshakes that may place a new
// order. Across all names it is a token bucket that holds up to limit
// tokens and gains one every window/limit, as Let's Encrypt counts orders
// per account. Per registered domain (example.co.uk for
// a.b.example.co.uk) it allows domainLimit orders per domainWindow.
type orderLimiter struct {
	mu     sync.Mutex
	limit  float64
	every  time.Duration // one token back
	tokens float64
	last   time.Time

	domainLimit  int
	domainWindow time.Duration
	domains      map[string][]time.Time // orders in the window, by registered domain
}

func newOrderLimiter(limit int, window time.Duration, domainLimit int, domainWindow time.Duration) *orderLimiter {
	return &orderLimiter{
		limit:        float64(limit),
		every:        window / time.Duration(limit),
		tokens:       float64(limit),
		last:         time.Now(),
		domainLimit:  domainLimit,
		domainWindow: domainWindow,
		domains:      make(map[string][]time.Time),
	}
}

// sameLimits reports whether o enforces the same limits as l.
func (l *orderLimiter) sameLimits(o *orderLimiter) bool {
	return l.limit == o.limit && l.every == o.every && l.domainLimit == o.domainLimit && l.domainWindow == o.domainWindow
}

// ready reports whether an order for name could be placed now, without
// taking a token: a sweep leaves the others for a later sweep, so that
// no worker waits on the limits while renewals queue behind it.
func (l *orderLimiter) ready(name string) bool {
	registered, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		registered = name
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	recent := 0
	for _, at := range l.domains[registered] {
		if now.Sub(at) < l.domainWindow {
			recent++
		}
	}
	tokens := min(l.limit, l.tokens+float64(now.Sub(l.last))/float64(l.every))
	return recent < l.domainLimit && tokens >= 1
}

// readyAt returns the earliest time an order for name could be placed,
// if no other order takes the tokens first: now, or later when the
// order limits hold it back.
func (l *orderLimiter) readyAt(name string, now time.Time) time.Time {
	registered, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		registered = name
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	at := now
	var recent []time.Time
	for _, t := range l.domains[registered] {
		if now.Sub(t) < l.domainWindow {
			recent = append(recent, t)
		}
	}
	if len(recent) >= l.domainLimit {
		// enough of the oldest leave the window
		at = recent[len(recent)-l.domainLimit].Add(l.domainWindow)
	}
	if tokens := min(l.limit, l.tokens+float64(now.Sub(l.last))/float64(l.every)); tokens < 1 {
		if next := now.Add(time.Duration((1 - tokens) * float64(l.every))); next.After(at) {
			at = next
		}
	}
	return at
}

// wait takes a token for an order for name, waiting for one if there is
// none; waiting is called with the time it waits until. It returns
// errRegisteredDomainLimit at once if name's registered domain has no
// order left in its window, and ctx's error if ctx ends first.
func (l *orderLimiter) wait(ctx context.Context, name string, waiting func(until time.Time)) error {
	registered, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		registered = name
	}
	for {
		l.mu.Lock()
		now := time.Now()
		recent := l.domains[registered]
		for len(recent) > 0 && now.Sub(recent[0]) >= l.domainWindow {
			recent = recent[1:]
		}
		if len(recent) == 0 {
			delete(l.domains, registered)
		} else {
			l.domains[registered] = recent
		}
		if len(recent) >= l.domainLimit {
			l.mu.Unlock()
			return errRegisteredDomainLimit
		}
		l.tokens = min(l.limit, l.tokens+float64(now.Sub(l.last))/float64(l.every))
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			l.domains[registered] = append(recent, now)
			l.mu.Unlock()
			return nil
		}
		delay := time.Duration((1 - l.tokens) * float64(l.every))
		l.mu.Unlock()
		if waiting != nil {
			waiting(now.Add(delay))
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}
