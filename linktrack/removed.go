package linktrack

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// removedTenants refuses TLS handshakes for tenants removed while this
// config runs. certmagic serves a certificate from its cache without
// asking the on-demand permission again, so without this a removed
// tenant's certificate would be served until it is evicted or due for
// renewal (when the permission, asked again, drops it). A name added
// back is served again.
type removedTenants struct {
	mu      sync.RWMutex
	names   map[string]struct{}
	current func() *snapshot // the registry in use
}

// watchRemoved subscribes to the event certmagic emits at every
// handshake before it picks a certificate.
func watchRemoved(events *caddyevents.App, current func() *snapshot) (*removedTenants, error) {
	r := &removedTenants{names: make(map[string]struct{}), current: current}
	if err := events.On("tls_get_certificate", r); err != nil {
		return nil, fmt.Errorf("subscribing to tls_get_certificate: %v", err)
	}
	return r, nil
}

func (r *removedTenants) removed(name string) {
	r.mu.Lock()
	r.names[name] = struct{}{}
	r.mu.Unlock()
}

func (r *removedTenants) added(name string) {
	r.mu.Lock()
	delete(r.names, name)
	r.mu.Unlock()
}

// Handle aborts the handshake of a removed tenant, exact or wildcard.
func (r *removedTenants) Handle(_ context.Context, e caddy.Event) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.names) == 0 {
		return nil
	}
	name, ok := CanonicalHost(helloServerName(e.Data["client_hello"]))
	if !ok {
		return nil
	}
	_, gone := r.names[name]
	if i := strings.IndexByte(name, '.'); !gone && i > 0 {
		_, gone = r.names["*"+name[i:]]
	}
	if !gone {
		return nil
	}
	if s := r.current(); s != nil {
		if _, covered := s.lookup(name); covered {
			return nil // still a tenant, by another entry
		}
	}
	return fmt.Errorf("%w: '%s' is no longer a tenant", caddy.ErrEventAborted, name)
}

// helloServerName reads the server name of the client hello certmagic
// puts in the event, a struct of an unexported type.
func helloServerName(hello any) string {
	v := reflect.ValueOf(hello)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return ""
	}
	if f := v.FieldByName("ServerName"); f.Kind() == reflect.String {
		return f.String()
	}
	return ""
}

// Interface guard
var _ caddyevents.Handler = (*removedTenants)(nil)
