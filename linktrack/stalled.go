package linktrack

import (
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultGiveUpAfter is how long a tenant with no certificate is tried,
// its DNS checked or its orders retried, before it is stalled.
const DefaultGiveUpAfter = 7 * 24 * time.Hour

// stalledState is what the admin API shows of a stalled tenant.
type stalledState struct {
	// When the tenant stalled.
	Since time.Time `json:"since"`
	// When this node began to try the tenant: its first DNS readiness
	// check or its first failed order, or when it was last revived.
	TryingSince time.Time `json:"trying_since"`
	// Why it stalled: the records its DNS still resolves to, or its
	// last failed order.
	Why string `json:"why"`
}

// stallTracker gives up on tenants that get no certificate: a tenant
// whose DNS never reaches the edge, or whose first orders keep failing,
// for give_up_after since it was first tried, is stalled. A stalled
// tenant gets no DNS check and no order, in the background or on
// demand, until a PUT of it or a check now call revives it. It keeps
// two maps, of the tenants being tried and of those stalled, each
// updated only when a check or an order of the tenant ends: no timer
// and no goroutine per tenant. What it knows is this node's, in memory:
// a restart starts every tenant's time over.
type stallTracker struct {
	after time.Duration

	mu      sync.Mutex
	trying  map[string]time.Time // tenants with no certificate, tried since
	stalled map[string]stalledState
}

func newStallTracker(after time.Duration) *stallTracker {
	return &stallTracker{
		after:   after,
		trying:  make(map[string]time.Time),
		stalled: make(map[string]stalledState),
	}
}

// tried records that name was tried at now, with no certificate, and
// returns since when it has been tried, and when it is given up at.
func (s *stallTracker) tried(name string, now time.Time) (since, giveUpAt time.Time) {
	if s == nil {
		return now, time.Time{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	since, ok := s.trying[name]
	if !ok {
		since = now
		s.trying[name] = since
	}
	return since, since.Add(s.after)
}

// giveUp stalls name if it has been tried for give_up_after at now,
// for why. It reports whether name is stalled, and whether it stalled
// just now.
func (s *stallTracker) giveUp(name string, now time.Time, why string) (st stalledState, stalled, newly bool) {
	if s == nil {
		return stalledState{}, false, false
	}
	since, giveUpAt := s.tried(name, now)
	if now.Before(giveUpAt) {
		return stalledState{}, false, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stalled[name]
	if !ok {
		st = stalledState{Since: now, TryingSince: since, Why: why}
		s.stalled[name] = st
	}
	return st, true, !ok
}

// isStalled returns name's stalled state, if it is stalled.
func (s *stallTracker) isStalled(name string) (stalledState, bool) {
	if s == nil {
		return stalledState{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stalled[name]
	return st, ok
}

// revive ends name's stall, if it is stalled, and starts its time over
// at now; it reports whether it was stalled.
func (s *stallTracker) revive(name string, now time.Time) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.stalled[name]; !ok {
		return false
	}
	delete(s.stalled, name)
	s.trying[name] = now
	return true
}

// obtained forgets name's tries: it has a certificate.
func (s *stallTracker) obtained(name string) {
	s.forget(name)
}

// forget drops a removed tenant.
func (s *stallTracker) forget(name string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.trying, name)
	delete(s.stalled, name)
}

// inherit takes over the tries and stalls of the config this one
// replaces, for the tenants keep reports: a reload neither revives a
// stalled tenant nor starts a tenant's time over.
func (s *stallTracker) inherit(prev *stallTracker, keep func(string) bool) {
	if s == nil || prev == nil {
		return
	}
	prev.mu.Lock()
	defer prev.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, since := range prev.trying {
		if keep(name) {
			s.trying[name] = since
		}
	}
	for name, st := range prev.stalled {
		if keep(name) {
			s.stalled[name] = st
		}
	}
}

// stall reports that name stalled: logged, and a tenant state change.
func (a *App) stall(name string, st stalledState) {
	a.logger.Warn("tenant stalled",
		zap.String("domain", name), zap.String("why", st.Why),
		zap.Time("trying_since", st.TryingSince), zap.Duration("give_up_after", time.Duration(a.GiveUpAfter)))
	if a.pre != nil {
		a.pre.rateLimited(name, time.Time{}) // waits on no order limit
	}
	a.tenantStateChanged(name, stateStalled, errors.New(st.Why))
}

// revive ends the stall of name, if it is stalled: its time starts over,
// its cooldown ends, and its DNS is checked and its order placed as for
// a new tenant. cause is put (a PUT or bulk POST that puts it, read
// back from storage by every node) or check_now. It reports whether
// name was stalled.
func (a *App) revive(name, cause string) bool {
	if !a.stalls.revive(name, time.Now()) {
		return false
	}
	a.certs.endCooldown(name)
	if a.dns != nil {
		a.dns.revive(name, cause != "check_now") // a check now call checks it itself
	}
	if a.pre != nil {
		a.pre.recheck(name)
	}
	a.logger.Info("tenant revived", zap.String("domain", name), zap.String("cause", cause))
	return true
}
