package linktrack

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
)

// Tenant is one tracking domain of the registry and where its requests
// go: a provider of the catalog, or a named origin of the linktrack app.
type Tenant struct {
	// The tracking domain, or a one-label wildcard such as
	// `*.clicks.example.com`. IDNA input is accepted and stored as
	// punycode; the stored form is lowercase without trailing dot.
	// REQUIRED.
	Domain string `json:"domain"`

	// A provider of the catalog, e.g. `customerio`. Exactly one of
	// provider and origin is required.
	Provider string `json:"provider,omitempty"`

	// The provider's region. Default: the provider's default region,
	// where it has one.
	Region string `json:"region,omitempty"`

	// The name of an origin defined in the linktrack app's `origins`.
	Origin string `json:"origin,omitempty"`

	// Local app-link files for this tenant. Default: none; every path
	// goes to the origin.
	AppLinks *AppLinks `json:"app_links,omitempty"`

	// Whether the tenant is served. A disabled tenant keeps its
	// certificate, which is still obtained and renewed, but its TLS
	// handshakes are refused and plain HTTP requests are answered 421;
	// nothing reaches its origin. Default: true.
	Enabled *bool `json:"enabled,omitempty"`

	// Any JSON object of up to 4 KiB (compact), kept with the tenant,
	// shown by the admin API and carried in the tenant's events; linktrack
	// never reads it. Default: none.
	Metadata json.RawMessage `json:"metadata,omitempty"`

	// With the app's ownership_txt, the tenant's domain is known to
	// belong to the tenant: no TXT record is asked for. linktrack sets it
	// once the TXT record is found. Default: false.
	OwnershipVerified bool `json:"ownership_verified,omitempty"`

	// With the app's ownership_txt, the value the TXT record
	// `_linktrack-verify.<domain>` must hold before the tenant is served.
	// The admin API sets a random one for a new tenant; in the config or
	// the tenants file, the operator sets it. Default: none.
	OwnershipToken string `json:"ownership_token,omitempty"`
}

// route is where a set of tenants' requests go. Tenants with the same
// provider and region, or the same named origin, share one route and so
// one origin proxy.
type route struct {
	provider string // catalog provider, or "" for a named origin
	region   string
	origin   string // named origin, or ""
	proxy    *originProxy
}

// routeResolver returns the shared route for a tenant's provider and
// region or named origin, or an error naming the faulty field.
type routeResolver func(Tenant) (*route, error)

// entry is a registered domain: 32 bytes, so that a million tenants fit
// in little memory. What few tenants carry (disabled, metadata,
// ownership) is in extra, nil for the common tenant.
type entry struct {
	route    *route
	appLinks *appLinkFiles
	extra    *tenantExtra
	source   uint16 // index into snapshot.sources
}

// snapshot is an immutable registry. A change builds a new snapshot,
// sharing what it did not change, and swaps it in atomically; lookups
// take no lock.
type snapshot struct {
	exact     domainTable
	wildcards domainTable // keyed by the domain below "*."
	sources   []string    // where entries came from, e.g. "tenants_file /etc/t.json"
}

// tenantSource is one origin of tenants: inline config, a file, storage.
type tenantSource struct {
	name    string // e.g. "config", "tenants_file /etc/linktrack/tenants.json"
	tenants []Tenant
}

// buildSnapshot builds a registry from sources, checking every entry.
// It fails on the first invalid entry with an error that names the
// source, the entry and the field, and on a duplicate domain with an
// error that names both sources.
func buildSnapshot(sources []tenantSource, resolve routeResolver) (*snapshot, error) {
	n := 0
	for _, src := range sources {
		n += len(src.tenants)
	}
	b := newSnapshotBuilder(n)
	if err := b.addSources(sources, resolve); err != nil {
		return nil, err
	}
	return b.done(), nil
}

// addSources adds sources and their entries to b, as buildSnapshot
// describes. A source's tenants are checked on every core (see
// checkTenants), then added in order, so that the error is the first
// entry's at fault. After an error, b holds part of the entries and is
// to be dropped.
func (b *snapshotBuilder) addSources(sources []tenantSource, resolve routeResolver) error {
	for _, src := range sources {
		sourceIndex, err := b.addSource(src.name)
		if err != nil {
			return err
		}
		for i, c := range checkTenants(src.tenants, resolve, runtime.GOMAXPROCS(0)) {
			if c.err != nil {
				return fmt.Errorf("%s, entry %d: %v", src.name, i+1, c.err)
			}
			c.e.source = sourceIndex
			// set, not insert: on a duplicate the builder is dropped
			table, key := tableOf(b.exact, b.wildcards, c.domain)
			if _, dup := table.set(key, c.e); dup {
				return fmt.Errorf("domain '%s' is registered twice: in %s and in %s, entry %d",
					c.domain, firstPlace(sources, c.domain), src.name, i+1)
			}
		}
	}
	return nil
}

// snapshotBuilder builds a registry afresh.
type snapshotBuilder struct {
	exact, wildcards *tableBuilder
	sources          []string
}

// newSnapshotBuilder returns a builder with room for n domains.
func newSnapshotBuilder(n int) *snapshotBuilder {
	return &snapshotBuilder{exact: newTableBuilder(n), wildcards: newTableBuilder(0)}
}

// addSource adds a source of entries and returns its index.
func (b *snapshotBuilder) addSource(name string) (uint16, error) {
	if len(b.sources) == 1<<16-1 {
		return 0, fmt.Errorf("too many tenant sources")
	}
	b.sources = append(b.sources, name)
	return uint16(len(b.sources) - 1), nil
}

// insert adds a canonical domain unless it is already registered, in
// which case it returns the entry registered.
func (b *snapshotBuilder) insert(domain string, e entry) (entry, bool) {
	table, key := tableOf(b.exact, b.wildcards, domain)
	if prior, dup := table.get(key); dup {
		return prior, true
	}
	table.set(key, e)
	return entry{}, false
}

// done returns the registry built.
func (b *snapshotBuilder) done() *snapshot {
	return &snapshot{exact: b.exact.done(), wildcards: b.wildcards.done(), sources: b.sources}
}

// withSource returns a copy of s in which the entries of the source
// named name are replaced by tenants. It edits s like a change: an
// entry the same as before leaves nothing in the overlay, so reloading
// a file of a million tenants of which a few changed costs lookups,
// not a new registry, and reports only what changed. The tenants are
// checked, and looked up in s, on every core (see editSource); then
// each is taken in order, so that the error is the first entry's at
// fault, as if they were checked one by one.
func (s *snapshot) withSource(name string, tenants []Tenant, resolve routeResolver) (*snapshot, error) {
	index := slices.Index(s.sources, name)
	if index < 0 {
		return nil, fmt.Errorf("no tenant source '%s'", name)
	}
	source := uint16(index)
	workers := runtime.GOMAXPROCS(0)
	checked := checkTenants(tenants, resolve, workers)
	se := editSource(s, source, checked, workers)
	exact, wildcards := s.exact.edit(), s.wildcards.edit()
	for i, c := range checked {
		if c.err != nil {
			return nil, fmt.Errorf("%s, entry %d: %v", name, i+1, c.err)
		}
		c.e.source = source
		if i == se.dup {
			return nil, fmt.Errorf("domain '%s' is registered twice: in %s, entry %d and in %s, entry %d",
				c.domain, name, se.dupOf+1, name, i+1)
		}
		prior := se.prior[i]
		if prior.other {
			return nil, fmt.Errorf("domain '%s' is registered twice: in %s and in %s, entry %d",
				c.domain, s.sources[prior.source], name, i+1)
		}
		if !prior.same { // the same entry changes nothing
			ed, key := tableOf(exact, wildcards, c.domain)
			ed.set(key, c.e)
		}
	}
	// the source's entries its new tenants no longer hold
	for _, domain := range se.removed {
		ed, key := tableOf(exact, wildcards, domain)
		ed.remove(key)
	}
	return &snapshot{exact: exact.done(), wildcards: wildcards.done(), sources: s.sources}, nil
}

// withChanges returns a copy of s in which the source named name has
// the tenants put added or replaced and the domains remove removed. It
// costs the size of the change, not of the registry. An invalid tenant
// fails the change with an error naming it and the field; so does a
// domain registered by another source, with an error wrapping
// errConflict that names that source. With skip set, such an entry is
// handed to skip and left out instead, and the rest applies. Removing a
// domain that is not registered is no error.
func (s *snapshot) withChanges(name string, put []Tenant, remove []string, resolve routeResolver, skip func(domain string, err error)) (*snapshot, error) {
	index := slices.Index(s.sources, name)
	if index < 0 {
		return nil, fmt.Errorf("no tenant source '%s'", name)
	}
	source := uint16(index)
	exact, wildcards := s.exact.edit(), s.wildcards.edit()
	if n := len(put) + len(remove); n > 1 {
		exact.reserve(n)
	}
	fail := func(domain string, err error) error {
		if skip == nil {
			return err
		}
		skip(domain, err)
		return nil
	}
	for _, domain := range remove {
		if err := s.owned(source, domain, "remove"); err != nil {
			if err = fail(domain, err); err != nil {
				return nil, err
			}
			continue
		}
		ed, key := tableOf(exact, wildcards, domain)
		ed.remove(key)
	}
	for i, t := range put {
		domain, e, err := s.changedEntry(source, i, len(put), t, resolve)
		if err != nil {
			if err = fail(t.Domain, err); err != nil {
				return nil, err
			}
			continue
		}
		ed, key := tableOf(exact, wildcards, domain)
		ed.set(key, e)
	}
	return &snapshot{exact: exact.done(), wildcards: wildcards.done(), sources: s.sources}, nil
}

// checkChanges returns the error withChanges, without skip, returns for
// the same change, without building a registry: it costs the entries
// of the change, not a copy of the shards they touch.
func (s *snapshot) checkChanges(name string, put []Tenant, remove []string, resolve routeResolver) error {
	index := slices.Index(s.sources, name)
	if index < 0 {
		return fmt.Errorf("no tenant source '%s'", name)
	}
	source := uint16(index)
	for _, domain := range remove {
		if err := s.owned(source, domain, "remove"); err != nil {
			return err
		}
	}
	for i, t := range put {
		if _, _, err := s.changedEntry(source, i, len(put), t, resolve); err != nil {
			return err
		}
	}
	return nil
}

// owned fails, with an error wrapping errConflict, when a canonical
// domain is registered by another source than source. A change only
// edits source's entries, so s answers for the registry being edited.
func (s *snapshot) owned(source uint16, domain, verb string) error {
	if prior, ok := s.registered(domain); ok && prior.source != source {
		return fmt.Errorf("%w: domain '%s' is defined in %s; %s it there", errConflict, domain, s.sources[prior.source], verb)
	}
	return nil
}

// changedEntry checks the i-th of n tenants a change puts into source,
// and returns its canonical domain and entry.
func (s *snapshot) changedEntry(source uint16, i, n int, t Tenant, resolve routeResolver) (string, entry, error) {
	domain, e, err := newEntry(t, resolve)
	if err != nil {
		if n > 1 {
			err = fmt.Errorf("entry %d: %w", i+1, err)
		}
		return "", entry{}, err
	}
	if err := s.owned(source, domain, "change"); err != nil {
		return "", entry{}, err
	}
	e.source = source
	return domain, e, nil
}

// tableOf returns the table that holds a canonical domain, and its key
// there: the domain below "*." for a wildcard.
func tableOf[T any](exact, wildcards T, domain string) (T, string) {
	if parent, ok := strings.CutPrefix(domain, "*."); ok {
		return wildcards, parent
	}
	return exact, domain
}

// firstPlace names the first source entry that registers domain; it is
// only called to explain a duplicate.
func firstPlace(sources []tenantSource, domain string) string {
	for _, src := range sources {
		for i, t := range src.tenants {
			if d, err := CanonicalDomain(t.Domain); err == nil && d == domain {
				return fmt.Sprintf("%s, entry %d", src.name, i+1)
			}
		}
	}
	return "an earlier entry"
}

// newEntry checks a tenant and returns its canonical domain and entry.
func newEntry(t Tenant, resolve routeResolver) (string, entry, error) {
	domain, err := CanonicalDomain(t.Domain)
	if err != nil {
		return "", entry{}, fmt.Errorf("domain: %v", err)
	}
	r, err := resolve(t)
	if err != nil {
		return "", entry{}, fmt.Errorf("domain '%s': %v", domain, err)
	}
	e := entry{route: r}
	if t.AppLinks != nil {
		if e.appLinks, err = t.AppLinks.load(); err != nil {
			return "", entry{}, fmt.Errorf("domain '%s': app_links.%v", domain, err)
		}
	}
	if e.extra, err = newTenantExtra(t); err != nil {
		return "", entry{}, fmt.Errorf("domain '%s': %v", domain, err)
	}
	return domain, e, nil
}

// lookup finds the entry for a canonical host: an exact domain first,
// then a wildcard one label above it.
func (s *snapshot) lookup(host string) (entry, bool) {
	_, e, ok := s.match(host)
	return e, ok
}

// match is lookup that also returns the tenant matched: the exact domain,
// or "*." and the domain below the wildcard.
func (s *snapshot) match(host string) (tenantKey, entry, bool) {
	if e, ok := s.exact.get(host); ok {
		return tenantKey{domain: host}, e, true
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if e, ok := s.wildcards.get(host[i+1:]); ok {
			return tenantKey{domain: host[i+1:], wildcard: true}, e, true
		}
	}
	return tenantKey{}, entry{}, false
}

// tenantKey identifies a registered tenant without allocating.
type tenantKey struct {
	domain   string
	wildcard bool
}

// has reports whether domain is registered exactly, not by a wildcard.
func (s *snapshot) has(domain string) bool {
	_, ok := s.exact.get(domain)
	return ok
}

// registered returns the entry of a canonical domain, a wildcard as
// "*.example.com", without matching a host against wildcards.
func (s *snapshot) registered(domain string) (entry, bool) {
	if parent, ok := strings.CutPrefix(domain, "*."); ok {
		return s.wildcards.get(parent)
	}
	return s.exact.get(domain)
}

// len returns the number of registered domains.
func (s *snapshot) len() int {
	return s.exact.size + s.wildcards.size
}

// each calls fn for every registered domain, a wildcard as
// "*.example.com", in no particular order, until fn returns false.
func (s *snapshot) each(fn func(domain string, e entry) bool) {
	more := true
	s.wildcards.each(func(parent string, e entry) bool {
		more = fn("*."+parent, e)
		return more
	})
	if more {
		s.exact.each(fn)
	}
}

// after calls fn for every registered domain greater than cursor, in
// domain order, until fn returns false. Wildcards ("*." sorts before
// any letter or digit) come first.
func (s *snapshot) after(cursor string, fn func(domain string, e entry) bool) {
	more := true
	if parent, ok := strings.CutPrefix(cursor, "*."); ok || cursor < "*." {
		if !ok {
			parent = ""
		}
		s.wildcards.after(parent, func(parent string, e entry) bool {
			more = fn("*."+parent, e)
			return more
		})
		cursor = ""
	}
	if more {
		s.exact.after(cursor, fn)
	}
}

// tenant rebuilds the configuration of a registered domain.
func (s *snapshot) tenant(domain string, e entry) Tenant {
	t := Tenant{Domain: domain, Provider: e.route.provider, Region: e.route.region, Origin: e.route.origin}
	if e.appLinks != nil {
		t.AppLinks = e.appLinks.config
	}
	e.extra.fill(&t)
	return t
}

// tenants lists every registered domain, sorted, with its source.
func (s *snapshot) tenants() []registeredTenant {
	list := make([]registeredTenant, 0, s.len())
	s.after("", func(domain string, e entry) bool {
		list = append(list, registeredTenant{Tenant: s.tenant(domain, e), Source: s.sources[e.source]})
		return true
	})
	return list
}

// registeredTenant is a tenant with the source it was registered from.
type registeredTenant struct {
	Tenant
	Source string `json:"source"`
}
