package linktrack

import (
	"encoding/json"
	"time"
)

// Tenant lifecycle states, as tenant_state events and webhooks carry
// them.
const (
	stateAdded            = "added"
	stateRemoved          = "removed"
	stateAwaitingDNS      = "awaiting_dns"
	statePendingOwnership = "pending_ownership"
	stateValid            = "valid"
	stateRenewed          = "renewed"
	stateFailed           = "failed"
	stateStalled          = "stalled"
	stateExpiring         = "expiring"
)

// tenantStateEvent is the name of the event emitted at every change of
// a tenant's lifecycle state.
const tenantStateEvent = "tenant_state"

// tenantStateChanged reports that a tenant moved to a lifecycle state,
// with the error that caused it, if any.
func (a *App) tenantStateChanged(domain, state string, cause error) {
	a.emitTenantState(tenantState{domain: domain, state: state, cause: cause})
}

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
	if md := a.tenantMetadata(st.domain); len(md) > 0 {
		data["metadata"] = md
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

// tenantMetadata returns the metadata object a tenant carries, or nil.
func (a *App) tenantMetadata(domain string) json.RawMessage { return nil }
