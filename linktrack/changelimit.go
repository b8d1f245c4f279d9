package linktrack

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults of change_limit: at most 50 changes through the admin API
// per second, in bursts of up to 50.
const (
	DefaultChangeLimit       = 50
	DefaultChangeLimitWindow = time.Second
)

// changeLimiter bounds the rate of changes through the admin API: a
// token bucket of limit tokens, refilled at limit per window. A change
// it refuses costs no decoding, no storage write and no registry swap,
// so a control plane that loops on PUT cannot take the cores clicks
// need.
type changeLimiter struct {
	mu      sync.Mutex
	limit   float64
	perSec  float64
	tokens  float64
	last    time.Time
	refused int       // since the last warning
	warned  time.Time // when refusals were last logged

	refusedTotal prometheus.Counter
	hold         time.Duration // how long a refusal is held before it is answered
	held         atomic.Int64  // refusals held now
}

// newChangeLimiter returns a limiter of limit changes per window, whose
// refusals are counted in registry (none: not counted).
func newChangeLimiter(limit int, window time.Duration, registry *prometheus.Registry) (*changeLimiter, error) {
	refusedTotal, err := register(registry, prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "tenant_changes_refused_total",
		Help:      "Changes through the admin API answered 429 over change_limit.",
	}))
	if err != nil {
		return nil, fmt.Errorf("registering the change_limit counter: %v", err)
	}
	return &changeLimiter{
		limit:        float64(limit),
		perSec:       float64(limit) / window.Seconds(),
		tokens:       float64(limit),
		refusedTotal: refusedTotal,
		hold:         refusalHold,
	}, nil
}

// take takes a token at now. When none is left it returns false and
// how long until one is, and, at most once a second, the number of
// changes refused since it last did (0 otherwise).
func (l *changeLimiter) take(now time.Time) (ok bool, wait time.Duration, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.limit, l.tokens+now.Sub(l.last).Seconds()*l.perSec)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true, 0, 0
	}
	l.refused++
	l.refusedTotal.Inc()
	wait = time.Duration((1 - l.tokens) / l.perSec * float64(time.Second))
	if now.Sub(l.warned) >= time.Second {
		refused, l.refused, l.warned = l.refused, 0, now
	}
	return false, wait, refused
}

// How long a refusal is held before it is answered, and how many may be
// held at once; past that many, refusals are answered at once.
const (
	refusalHold     = time.Second
	maxHeldRefusals = 1024
)

// refuseChange answers 429, with Retry-After in whole seconds, when the
// app's change_limit is spent, and reports whether it did. A refused
// change costs little more than its request line and headers: its body
// is not read, it has no log line or event of its own, and it is
// answered here rather than returned as an error, which Caddy's admin
// handler would log. A counter counts refusals, and a warning at most
// once a second sums them up.
//
// The answer is held for refusalHold first, on a parked goroutine, so
// that a client that loops on changes, from however many connections
// it keeps, is slowed to that many refusals a second instead of
// costing the node one request each as fast as it can send them.
func (api *AdminAPI) refuseChange(w http.ResponseWriter, r *http.Request) bool {
	l := api.app.changes
	if l == nil {
		return false
	}
	now := time.Now()
	ok, wait, refused := l.take(now)
	if ok {
		return false
	}
	if refused > 0 {
		api.logger.Warn("tenant changes refused over change_limit", zap.Int("refused", refused),
			zap.Int("change_limit", api.app.ChangeLimit), zap.Duration("change_limit_window", time.Duration(api.app.ChangeLimitWindow)))
	}
	if l.hold > 0 && l.held.Add(1) <= maxHeldRefusals {
		t := time.NewTimer(l.hold)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
		wait -= time.Since(now)
	}
	if l.hold > 0 {
		l.held.Add(-1)
	}
	seconds := strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
	h := w.Header()
	h.Set("Retry-After", seconds)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	// the shape of caddy.APIError's answer
	_, _ = io.WriteString(w, `{"error":"too many tenant changes, over change_limit; retry after `+seconds+
		`s, or send many in one POST /linktrack/tenants"}`+"\n")
	return true
}
