package linktrack

import (
	"sync/atomic"

	"go.uber.org/zap"
)

// registryFolder folds the registry's overlays of recent changes into
// new bases, in the background and one fold at a time, so that no
// change waits for a fold and lookups stay at one map lookup.
type registryFolder struct {
	running atomic.Bool
}

// foldIfDue starts a fold of s when an overlay of its tables has grown
// past foldAt and no fold runs. The fold copies the tables without a
// lock, then, under reloadMu, rebases the registry in use (s or one
// changed from it since) on the new bases and swaps it in: the same
// tenants, so nothing is reported.
func (a *App) foldIfDue(s *snapshot) {
	f := a.folder
	if f == nil || !(s.exact.foldDue() || s.wildcards.foldDue()) || !f.running.CompareAndSwap(false, true) {
		return
	}
	go func() {
		exact, wildcards := s.exact.folded(), s.wildcards.folded()
		next := a.rebase(s, exact, wildcards)
		f.running.Store(false)
		if next != nil {
			a.foldIfDue(next) // changes made during the fold may be due again
		}
	}()
}

// rebase swaps in the registry in use rebased on the folded tables of
// from, and returns it; nil when the registry in use no longer derives
// from from (a bulk change folded it meanwhile, or the app stopped).
func (a *App) rebase(from *snapshot, exact, wildcards domainTable) *snapshot {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	cur := a.snapshot()
	if cur == nil {
		return nil
	}
	e, ok := cur.exact.rebased(exact, from.exact)
	if !ok {
		return nil
	}
	w, ok := cur.wildcards.rebased(wildcards, from.wildcards)
	if !ok {
		return nil
	}
	next := *cur
	next.exact, next.wildcards = e, w
	if !a.registry.CompareAndSwap(cur, &next) {
		return nil
	}
	a.logger.Debug("tenant registry folded", zap.Int("tenants", next.len()),
		zap.Int("changes_folded", from.exact.changes()+from.wildcards.changes()),
		zap.Int("changes_after", e.changes()+w.changes()))
	return &next
}
