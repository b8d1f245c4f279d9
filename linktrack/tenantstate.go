package linktrack

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
