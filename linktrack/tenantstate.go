package linktrack

import "encoding/json"

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

// tenantStateChanged reports that a tenant moved to a lifecycle state,
// with the error that caused it, if any.
func (a *App) tenantStateChanged(domain, state string, cause error) {
	a.emitTenantState(tenantState{domain: domain, state: state, cause: cause})
}

// tenantMetadata returns the metadata object a tenant carries, or nil.
func (a *App) tenantMetadata(domain string) json.RawMessage {
	s := a.snapshot()
	if s == nil {
		return nil
	}
	e, ok := s.registered(domain)
	if !ok || e.extra == nil {
		return nil
	}
	return e.extra.metadata
}
