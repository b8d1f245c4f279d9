package linktrack

import (
	"sync"
	"time"
)

// h1Pool holds the idle connections of one origin for the lean client,
// most recently used last: a request takes the newest, so that under a
// falling load the oldest ones stay unused and reach the idle timeout.
type h1Pool struct {
	// the most idle connections kept: the transport's
	// keepalive_idle_conns_per_host (linktrack's default 128)
	max int
	// how long a connection may stay idle: the transport's
	// keepalive_idle_timeout (linktrack's default 4s); 0 keeps it until
	// the origin closes it
	timeout time.Duration

	mu       sync.Mutex
	idle     []*h1Conn
	sweeper  *time.Timer // closes connections idle too long
	sweeping bool
	closed   bool
}

func newH1Pool(max int, timeout time.Duration) *h1Pool {
	p := &h1Pool{max: max, timeout: timeout}
	if timeout > 0 {
		p.sweeper = time.AfterFunc(timeout, p.sweep)
		p.sweeper.Stop()
	}
	return p
}

// get returns the most recently used idle connection that is still
// open and quiet, or nil.
func (p *h1Pool) get() *h1Conn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if (p.timeout > 0 && time.Since(c.idleSince) >= p.timeout) || !c.peerQuiet() {
			c.close()
			continue
		}
		c.reused = true
		return c
	}
}

// put keeps c for a later request, or closes it when the pool is full
// or closed.
func (p *h1Pool) put(c *h1Conn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.max {
		p.mu.Unlock()
		c.close()
		return
	}
	c.idleSince = time.Now()
	p.idle = append(p.idle, c)
	if p.sweeper != nil && !p.sweeping {
		p.sweeping = true
		p.sweeper.Reset(p.timeout)
	}
	p.mu.Unlock()
}

// sweep closes the connections idle for the timeout or longer, and
// waits for the next one to get there.
func (p *h1Pool) sweep() {
	p.mu.Lock()
	now := time.Now()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleSince) >= p.timeout {
		n++
	}
	expired := make([]*h1Conn, n)
	copy(expired, p.idle[:n])
	rest := copy(p.idle, p.idle[n:])
	clear(p.idle[rest:])
	p.idle = p.idle[:rest]
	if rest > 0 && !p.closed {
		p.sweeper.Reset(p.idle[0].idleSince.Add(p.timeout).Sub(now))
	} else {
		p.sweeping = false
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// closeIdle closes every idle connection, and every connection handed
// back from now on.
func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	if p.sweeper != nil {
		p.sweeper.Stop()
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}
