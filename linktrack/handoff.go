package linktrack

import (
	"github.com/caddyserver/caddy/v2"
)

// runningApp returns the linktrack app of the config that runs while
// this one loads, if there is one. Like Caddy's TLS app, it uses the
// active context to hand state from one config to the next.
func runningApp() *App {
	mod, err := caddy.ActiveContext().AppIfConfigured("linktrack")
	if err != nil {
		return nil
	}
	prev, ok := mod.(*App)
	if !ok || prev.registry == nil {
		return nil
	}
	return prev
}

// inherit takes over what the running config's app knows, so that a
// config reload neither forgets a cooldown, nor serves a removed
// tenant's certificate that certmagic still caches, nor rescans what is
// already known. It runs at provisioning, after the first registry is
// built; the tenants it adds and removes are reported at Start.
func (a *App) inherit(prev *App) {
	s, old := a.snapshot(), prev.snapshot()
	if old == nil {
		return
	}
	a.inherited = old
	prev.removed.mu.RLock()
	for name := range prev.removed.names {
		a.removed.removed(name) // refused only while no tenant covers it
	}
	prev.removed.mu.RUnlock()
	old.each(func(name string, _ entry) bool {
		if _, ok := s.registered(name); !ok {
			a.removed.removed(name)
		}
		return true
	})

	prev.certs.mu.Lock()
	defer prev.certs.mu.Unlock()
	a.certs.mu.Lock()
	defer a.certs.mu.Unlock()
	for name, f := range prev.certs.failures {
		if _, ok := s.lookup(name); ok {
			a.certs.failures[name] = f
		}
	}
	for name, ic := range prev.certs.issued {
		if _, ok := s.lookup(name); ok {
			a.certs.issued[name] = ic
		}
	}
	if a.dns != nil && prev.dns != nil {
		a.dns.inherit(prev.dns, s.has)
	}
	a.stalls.inherit(prev.stalls, s.has)
	// the CA counts orders per account and domain, not per config
	if a.pre != nil && prev.pre != nil && a.pre.orders.sameLimits(prev.pre.orders) {
		a.pre.orders = prev.pre.orders
	}
}
