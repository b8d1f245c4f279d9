package linktrack

import (
	"fmt"
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

// entry is a registered domain: 24 bytes, so that a million tenants fit
// in little memory.
type entry struct {
	route    *route
	appLinks *appLinkFiles
	source   uint16 // index into snapshot.sources
}

// snapshot is an immutable registry. A change builds a new snapshot and
// swaps it in atomically; lookups take no lock.
type snapshot struct {
	exact     map[string]entry
	wildcards map[string]entry // keyed by the domain below "*."
	sources   []string         // where entries came from, e.g. "tenants_file /etc/t.json"
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
	size := 0
	for _, src := range sources {
		size += len(src.tenants)
	}
	s := &snapshot{
		exact:     make(map[string]entry, size),
		wildcards: make(map[string]entry),
	}
	for _, src := range sources {
		if len(s.sources) == 1<<16-1 {
			return nil, fmt.Errorf("too many tenant sources")
		}
		s.sources = append(s.sources, src.name)
		sourceIndex := uint16(len(s.sources) - 1)
		for i, t := range src.tenants {
			domain, e, err := newEntry(t, resolve)
			if err != nil {
				return nil, fmt.Errorf("%s, entry %d: %v", src.name, i+1, err)
			}
			e.source = sourceIndex
			if _, dup := s.insert(domain, e); dup {
				return nil, fmt.Errorf("domain '%s' is registered twice: in %s and in %s, entry %d",
					domain, firstPlace(sources, domain), src.name, i+1)
			}
		}
	}
	return s, nil
}

// withSource returns a copy of s in which the entries of the source
// named name are replaced by tenants. It spares a full rebuild when only
// a small source, such as storage, changed.
func (s *snapshot) withSource(name string, tenants []Tenant, resolve routeResolver) (*snapshot, error) {
	index := slices.Index(s.sources, name)
	if index < 0 {
		return nil, fmt.Errorf("no tenant source '%s'", name)
	}
	source := uint16(index)
	n := &snapshot{
		exact:     make(map[string]entry, len(s.exact)+len(tenants)),
		wildcards: make(map[string]entry, len(s.wildcards)),
		sources:   s.sources,
	}
	for k, e := range s.exact {
		if e.source != source {
			n.exact[k] = e
		}
	}
	for k, e := range s.wildcards {
		if e.source != source {
			n.wildcards[k] = e
		}
	}
	for i, t := range tenants {
		domain, e, err := newEntry(t, resolve)
		if err != nil {
			return nil, fmt.Errorf("%s, entry %d: %v", name, i+1, err)
		}
		e.source = source
		if prior, dup := n.insert(domain, e); dup {
			return nil, fmt.Errorf("domain '%s' is registered twice: in %s and in %s, entry %d",
				domain, n.sources[prior.source], name, i+1)
		}
	}
	return n, nil
}

// insert adds a canonical domain unless it is already registered, in
// which case it returns the entry registered.
func (s *snapshot) insert(domain string, e entry) (entry, bool) {
	table, key := s.exact, domain
	if parent, ok := strings.CutPrefix(domain, "*."); ok {
		table, key = s.wildcards, parent
	}
	if prior, dup := table[key]; dup {
		return prior, true
	}
	table[key] = e
	return entry{}, false
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
	if e, ok := s.exact[host]; ok {
		return tenantKey{domain: host}, e, true
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if e, ok := s.wildcards[host[i+1:]]; ok {
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
	_, ok := s.exact[domain]
	return ok
}

// len returns the number of registered domains.
func (s *snapshot) len() int {
	return len(s.exact) + len(s.wildcards)
}

// tenant rebuilds the configuration of a registered domain.
func (s *snapshot) tenant(domain string, e entry) Tenant {
	t := Tenant{Domain: domain, Provider: e.route.provider, Region: e.route.region, Origin: e.route.origin}
	if e.appLinks != nil {
		t.AppLinks = e.appLinks.config
	}
	return t
}

// tenants lists every registered domain, sorted, with its source.
func (s *snapshot) tenants() []registeredTenant {
	list := make([]registeredTenant, 0, s.len())
	for domain, e := range s.exact {
		list = append(list, registeredTenant{Tenant: s.tenant(domain, e), Source: s.sources[e.source]})
	}
	for parent, e := range s.wildcards {
		domain := "*." + parent
		list = append(list, registeredTenant{Tenant: s.tenant(domain, e), Source: s.sources[e.source]})
	}
	slices.SortFunc(list, func(a, b registeredTenant) int { return strings.Compare(a.Domain, b.Domain) })
	return list
}

// registeredTenant is a tenant with the source it was registered from.
type registeredTenant struct {
	Tenant
	Source string `json:"source"`
}
