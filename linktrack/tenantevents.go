package linktrack

import (
	"time"

	"go.uber.org/zap"
)

// loggedChanges caps the log lines of one registry change; a file edit
// may add thousands of tenants, each still counted and emitted.
const loggedChanges = 100

// reportChanges emits a tenant_added or tenant_removed event and a
// tenant_state event (state added or removed), counts it and logs it,
// for every domain that next adds to or removes from prev.
// The first config's registry reports nothing: it is what the config
// says. A reloaded config reports its changes at Start, against the
// registry of the config it replaces.
func (a *App) reportChanges(prev, next *snapshot, cause string) {
	logged := 0
	report := func(event, domain string, s *snapshot, e entry) {
		change := stateAdded
		if event == "tenant_removed" {
			change = stateRemoved
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
		a.emitTenantState(tenantState{domain: domain, state: change, tenant: &t})
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

// tenantStateEvent is the name of the event emitted at every change of
// a tenant's lifecycle state.
const tenantStateEvent = "tenant_state"

// tenantState is what a tenant_state event tells.
type tenantState struct {
	domain string
	state  string
	cause  error
	// the tenant's configuration, when the caller has it (a removed
	// tenant is no longer in the registry); else it is looked up
	tenant *Tenant
	// the certificate's expiry, when the state is about one
	notAfter time.Time
}

// emitTenantState emits a tenant_state event through the events app,
// with the data: domain, state, error (when there is a cause), metadata
// (when the tenant carries any), provider, region or origin, not_after
// (for a certificate's state) and time. Handlers run in the caller's
// goroutine: the webhook handler only queues. Nothing is built when no
// handler or log could observe the event, so a bulk change of 100,000
// tenants costs nothing more without subscribers.
func (a *App) emitTenantState(st tenantState) {
	if a.events == nil || !a.events.ShouldEmit(tenantStateEvent) {
		return
	}
	now := time.Now()
	data := map[string]any{
		"domain": st.domain,
		"state":  st.state,
		"time":   now,
	}
	if st.cause != nil {
		data["error"] = st.cause.Error()
	}
	t := st.tenant
	if t == nil {
		if s := a.snapshot(); s != nil {
			if key, e, ok := s.match(st.domain); ok {
				domain := key.domain
				if key.wildcard {
					domain = "*." + key.domain
				}
				found := s.tenant(domain, e)
				t = &found
			}
		}
	}
	if t != nil {
		setNonEmpty(data, "provider", t.Provider)
		setNonEmpty(data, "region", t.Region)
		setNonEmpty(data, "origin", t.Origin)
		// a removed tenant's metadata is in the configuration it had
		if len(t.Metadata) > 0 {
			data["metadata"] = t.Metadata
		}
	}
	if !st.notAfter.IsZero() {
		data["not_after"] = st.notAfter
	}
	a.events.Emit(a.ctx, tenantStateEvent, data)
}

// setNonEmpty sets data[key] to value unless value is empty.
func setNonEmpty(data map[string]any, key, value string) {
	if value != "" {
		data[key] = value
	}
}
