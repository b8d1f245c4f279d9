package linktrack

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
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
}

func newChangeLimiter(limit int, window time.Duration) *changeLimiter {
	return &changeLimiter{
		limit:  float64(limit),
		perSec: float64(limit) / window.Seconds(),
		tokens: float64(limit),
	}
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
	wait = time.Duration((1 - l.tokens) / l.perSec * float64(time.Second))
	if now.Sub(l.warned) >= time.Second {
		refused, l.refused, l.warned = l.refused, 0, now
	}
	return false, wait, refused
}

// admitChange answers 429, with Retry-After in whole seconds, when the
// app's change_limit is spent.
func (api *AdminAPI) admitChange(w http.ResponseWriter) error {
	l := api.app.changes
	if l == nil {
		return nil
	}
	ok, wait, refused := l.take(time.Now())
	if ok {
		return nil
	}
	if refused > 0 {
		api.logger.Warn("tenant changes refused over change_limit", zap.Int("refused", refused),
			zap.Int("change_limit", api.app.ChangeLimit), zap.Duration("change_limit_window", time.Duration(api.app.ChangeLimitWindow)))
	}
	seconds := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
	return caddy.APIError{HTTPStatus: http.StatusTooManyRequests,
		Err: fmt.Errorf("too many tenant changes, over change_limit; retry after %ds, or send many in one POST /linktrack/tenants", seconds)}
}
