package linktrack

import (
	"context"
	"fmt"
	"net"
	"reflect"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// Why a registered tenant is not served: it is disabled, or its
// ownership is not verified yet.
const (
	refusedDisabled         = "disabled"
	refusedPendingOwnership = statePendingOwnership
)

// refusal returns why a registered tenant, as matched in the registry in
// use, is not served, or "" when it is.
func (a *App) refusal(key tenantKey, e entry) string {
	if e.extra == nil && a.ownership == nil {
		return ""
	}
	domain := key.domain
	if key.wildcard {
		domain = "*." + key.domain
	}
	if s := a.snapshot(); s != nil && a.ownershipPending(s, domain, e) {
		return refusedPendingOwnership
	}
	if e.extra.isDisabled() {
		return refusedDisabled
	}
	return ""
}

// tenantAccess refuses the TLS handshakes of the tenants that are not
// served, disabled or pending ownership, as those of unknown names are:
// no certificate is served. It handles the event certmagic emits at
// every handshake before it picks a certificate. The in-process
// handshake of pre-issuance still gets a disabled tenant's certificate,
// so that it is obtained and renewed.
type tenantAccess struct {
	app *App
}

// watchTenantAccess subscribes to tls_get_certificate.
func watchTenantAccess(events *caddyevents.App, a *App) error {
	if err := events.On("tls_get_certificate", &tenantAccess{app: a}); err != nil {
		return fmt.Errorf("subscribing to tls_get_certificate: %v", err)
	}
	return nil
}

// Handle aborts the handshake of a tenant that is not served.
func (t *tenantAccess) Handle(_ context.Context, e caddy.Event) error {
	s := t.app.snapshot()
	if s == nil {
		return nil
	}
	hello := e.Data["client_hello"]
	name, ok := CanonicalHost(helloServerName(hello))
	if !ok {
		return nil
	}
	key, entry, ok := s.match(name)
	if !ok {
		return nil
	}
	why := t.app.refusal(key, entry)
	if why == "" || (why == refusedDisabled && inProcess(hello)) {
		return nil
	}
	return fmt.Errorf("%w: tenant '%s' is %s", caddy.ErrEventAborted, name, why)
}

// inProcess reports whether a client hello came over the in-memory
// pipe of a pre-issuance handshake, not over the network.
func inProcess(hello any) bool {
	v := reflect.ValueOf(hello)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return false
	}
	f := v.FieldByName("RemoteAddr")
	if !f.IsValid() || f.IsNil() {
		return false
	}
	addr, ok := f.Interface().(net.Addr)
	return ok && addr.Network() == "pipe"
}

// Interface guard
var _ caddyevents.Handler = (*tenantAccess)(nil)
