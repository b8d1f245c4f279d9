package linktrack

import (
	"go.uber.org/zap"
)

// loggedChanges caps the log lines of one registry change; a file edit
// may add thousands of tenants, each still counted and emitted.
const loggedChanges = 100

// reportChanges emits a tenant_added or tenant_removed event, counts it
// and logs it, for every domain that next adds to or removes from prev.
// The first config's registry reports nothing: it is what the config
// says. A reloaded config reports its changes at Start, against the
// registry of the config it replaces.
func (a *App) reportChanges(prev, next *snapshot, cause string) {
	logged := 0
	report := func(event, domain string, s *snapshot, e entry) {
		change := "added"
		if event == "tenant_removed" {
			change = "removed"
			if a.certs != nil {
				a.certs.forget(domain)
			}
			if a.dns != nil {
				a.dns.forget(domain)
			}
			if a.pre != nil {
				a.pre.forget(domain)
			}
			a.stalls.forget(domain)
			if a.removed != nil {
				a.removed.removed(domain)
			}
		} else if a.removed != nil {
			a.removed.added(domain)
		}
		a.metrics.tenantChanges.WithLabelValues(change).Inc()
		t := s.tenant(domain, e)
		if a.events == nil {
			return
		}
		a.events.Emit(a.ctx, event, map[string]any{
			"domain":   domain,
			"provider": t.Provider,
			"region":   t.Region,
			"origin":   t.Origin,
			"source":   s.sources[e.source],
			"cause":    cause,
		})
		if logged++; logged <= loggedChanges {
			a.logger.Info("tenant "+change, zap.String("domain", domain), zap.String("source", s.sources[e.source]))
		}
	}
	// tables derived from one another share the shards no change
	// touched, which eachChanged skips
	diff := func(event string, from, to *snapshot) {
		from.exact.eachChanged(to.exact, func(domain string, e entry) bool {
			if _, ok := to.exact.get(domain); !ok {
				report(event, domain, from, e)
			}
			return true
		})
		from.wildcards.eachChanged(to.wildcards, func(parent string, e entry) bool {
			if _, ok := to.wildcards.get(parent); !ok {
				report(event, "*."+parent, from, e)
			}
			return true
		})
	}
	diff("tenant_added", next, prev)
	diff("tenant_removed", prev, next)
	if logged > loggedChanges {
		a.logger.Info("tenants changed", zap.Int("changes", logged), zap.Int("logged", loggedChanges))
	}
}
