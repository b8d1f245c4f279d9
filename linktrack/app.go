package linktrack

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
}

// DefaultIssuanceCooldown is the first delay before a new order for a
// name whose issuance failed.
const DefaultIssuanceCooldown = 5 * time.Minute

// DefaultFileCheckInterval is how often the tenants file is checked for
// changes when file_check_interval is not set.
const DefaultFileCheckInterval = 2 * time.Second

// App is the linktrack app. It owns the tenant registry that the
// linktrack handler (without a provider), the tls.permission.linktrack
// module and the admin API all see. Tenants come from inline config and
// from a tenants file that is reloaded when it changes; an invalid file
// never replaces the registry in use.
type App struct {
	// Named custom origins, usable wherever a provider name can be.
	Origins map[string]*NamedOrigin `json:"origins,omitempty"`

	// Tenants configured inline.
	Tenants []Tenant `json:"tenants,omitempty"`

	// A JSON file of tenants: `{"tenants": [{"domain": ..., "provider":
	// ..., "region": ..., "origin": ..., "app_links": {...}}]}`. It is
	// reloaded when it changes. Default: none.
	TenantsFile string `json:"tenants_file,omitempty"`

	// How often the tenants file is checked for changes. Default: `2s`.
	FileCheckInterval caddy.Duration `json:"file_check_interval,omitempty"`

	// After a tenant's certificate fails to be issued, no new order is
	// placed for its name until this delay has passed; the delay doubles
	// with each further failure, up to 1h. certmagic itself would retry
	// at every click, burning the CA's failed-validation allowance (5 per
	// name per hour at Let's Encrypt). A longer first delay than
	// certmagic's first retry (1m) lets the cooldown end that retry too.
	// Default: `5m`.
	IssuanceCooldown caddy.Duration `json:"issuance_cooldown,omitempty"`

	// Turns off obtaining tenants' certificates in the background. By
	// default each tenant's certificate is obtained as soon as the
	// tenant is added, through Caddy's TLS automation (the configured
	// issuers, storage and on-demand permission), so that no click waits
	// for an ACME order; dormant tenants' certificates are renewed the
	// same way before they expire. When off, certificates are obtained
	// and renewed on demand, in the handshake of a click. Default: false.
	DisablePreIssuance bool `json:"disable_pre_issuance,omitempty"`

	// How many certificates are obtained at once in the background.
	// Default: 4.
	PreIssuanceWorkers int `json:"pre_issuance_workers,omitempty"`

	// At most this many background handshakes that may place a new
	// order, for tenants with no certificate known, run per
	// order_limit_window; the rest wait. Renewals and clicks are not
	// counted. Default: 300, Let's Encrypt's limit of new orders per
	// account per 3 hours.
	OrderLimit int `json:"order_limit,omitempty"`

	// The window of order_limit: one more order may be placed every
	// order_limit_window / order_limit. Default: `3h`.
	OrderLimitWindow caddy.Duration `json:"order_limit_window,omitempty"`

	// At most this many background handshakes that may place a new
	// order run per registered domain (example.co.uk for
	// a.b.example.co.uk) per registered_domain_limit_window; the others
	// wait for the next check. Default: 50, Let's Encrypt's limit of new
	// certificates per registered domain per week.
	RegisteredDomainLimit int `json:"registered_domain_limit,omitempty"`

	// The window of registered_domain_limit. Default: `168h`.
	RegisteredDomainLimitWindow caddy.Duration `json:"registered_domain_limit_window,omitempty"`

	// At most this many changes through the admin API (a PUT, a DELETE
	// or a bulk POST, whatever its size) per change_limit_window, in
	// bursts of up to this many; the rest are answered 429 with
	// Retry-After, before their body is read and a second later, so that
	// a client looping on changes is slowed down. Default: 50.
	ChangeLimit int `json:"change_limit,omitempty"`

	// The window of change_limit. Default: `1s`.
	ChangeLimitWindow caddy.Duration `json:"change_limit_window,omitempty"`

	// How often every tenant is checked, in the background, for a
	// missing certificate or one due for renewal (when a third of its
	// lifetime is left). A change to the registry is checked at once.
	// Default: `1m`.
	RenewalCheckInterval caddy.Duration `json:"renewal_check_interval,omitempty"`

	// The CNAME targets and the IPv4/IPv6 addresses of this edge, the
	// names and addresses a tenant's domain must resolve to. When set, a
	// tenant's first certificate is ordered (in the background or on
	// demand) only once its domain resolves here, as checked with DNS
	// queries, without the CA: its CNAME chain reaches one of the names,
	// or it has A/AAAA records and all of them are among the addresses.
	// Until then the tenant is awaiting_dns, and uses none of the order
	// limits. Renewals are not held back, only logged. Default: none;
	// every tenant's certificate is ordered at once.
	DNSTargets []string `json:"dns_targets,omitempty"`

	// The DNS servers (host:port) that the checks of dns_targets and
	// the check now calls of the admin API and ownership_txt ask, in turn;
	// for split DNS, and for tests. Default: the system's, from
	// /etc/resolv.conf.
	DNSResolvers []string `json:"dns_resolvers,omitempty"`

	// Turns on ownership verification. A tenant added through the admin
	// API gets a random ownership_token, and is pending_ownership until
	// the TXT record `_linktrack-verify.<domain>` holds it: no
	// certificate is ordered for it, its TLS handshakes are refused and
	// plain HTTP gets 421. It is checked on the schedule of
	// dns_check_interval, and at once on a change or a check now call;
	// once found, it is verified for good, in storage. Tenants of the
	// config and the tenants file are pending too unless they carry
	// ownership_verified; they verify with the ownership_token they
	// carry. Tenants stored before it was turned on, without a token, are
	// served. Default: false.
	OwnershipTXT bool `json:"ownership_txt,omitempty"`

	// How long after its first check a tenant awaiting DNS is checked
	// again; the delay doubles at each check, up to 1h. A change of the
	// tenant in the registry, and a check now call, check it at once.
	// Default: `1m`.
	DNSCheckInterval caddy.Duration `json:"dns_check_interval,omitempty"`

	// How long a tenant with no certificate is tried before it is
	// stalled: its DNS checked while dns_targets holds its first order
	// back, or its first order retried after each cooldown. Counted from
	// the tenant's first DNS check or first failed order on this node,
	// or from when it was last revived. A stalled tenant gets no more DNS
	// checks or orders, in the background or on demand, and uses none of
	// the order limits, until a PUT of it or a check now call revives it.
	// Renewals are never given up. Default: `168h` (7 days).
	GiveUpAfter caddy.Duration `json:"give_up_after,omitempty"`

	// How often the tenants kept in Caddy's storage are re-read. Tenants
	// added through the admin API are kept there, so that every node
	// sharing the storage serves them within this interval. Default:
	// `10s`.
	StorageRefreshInterval caddy.Duration `json:"storage_refresh_interval,omitempty"`

	ctx      caddy.Context
	logger   *zap.Logger
	registry *atomic.Pointer[snapshot]
	metrics  *appMetrics

	routes *routeTable

	file         *tenantsFile
	storage      certmagic.Storage
	store        *tenantstore.Store
	statusCounts *statusCounts
	folder       *registryFolder
	changes      *changeLimiter
	followed     uint64 // the version of the stored tenants the registry holds
	certs        *certStates
	pre          *preIssuer     // nil when pre-issuance is off
	dns          *dnsGate       // nil without dns_targets
	ownership    *ownershipGate // nil without ownership_txt
	stalls       *stallTracker
	checks       *checkRuns // check now calls running
	removed      *removedTenants
	// the registry of the config this one replaced, whose changes are
	// reported at Start
	inherited *snapshot
	events    *caddyevents.App
	stop      chan struct{}
	stopped   *sync.WaitGroup
	reloadMu  *sync.Mutex // serializes registry rebuilds
}

// NamedOrigin is a custom tracking origin defined once and used by name.
type NamedOrigin struct {
	// The origin's URL: a scheme (https or http), a host and an optional
	// port. REQUIRED.
	Upstream string `json:"upstream"`

	// How to reach the origin, as for the handler's transport.
	// Default: linktrack's transport defaults.
	Transport *reverseproxy.HTTPTransport `json:"transport,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "linktrack",
		New: func() caddy.Module { return new(App) },
	}
}

// originName is the form of an origin's name: it must not be mistaken
// for anything else in a tenant entry.
var originName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Provision sets up the named origins and builds the first registry.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.registry = new(atomic.Pointer[snapshot])
	a.reloadMu, a.stopped = new(sync.Mutex), new(sync.WaitGroup)
	a.routes = newRouteTable(func(origin *url.URL, provider, region string) (*originProxy, error) {
		return newOriginProxy(ctx, origin, provider, region, nil)
	})
	a.stop = make(chan struct{})
	if err := defaultDuration(&a.FileCheckInterval, DefaultFileCheckInterval, "file_check_interval"); err != nil {
		return err
	}
	if err := defaultDuration(&a.IssuanceCooldown, DefaultIssuanceCooldown, "issuance_cooldown"); err != nil {
		return err
	}
	if err := defaultDuration(&a.StorageRefreshInterval, DefaultStorageRefreshInterval, "storage_refresh_interval"); err != nil {
		return err
	}
	if err := defaultDuration(&a.RenewalCheckInterval, DefaultRenewalCheckInterval, "renewal_check_interval"); err != nil {
		return err
	}
	if a.OrderLimit == 0 {
		a.OrderLimit = DefaultOrderLimit
	}
	if a.OrderLimitWindow == 0 {
		a.OrderLimitWindow = caddy.Duration(DefaultOrderLimitWindow)
	}
	if a.OrderLimit < 0 || a.OrderLimitWindow < 0 {
		return fmt.Errorf("order_limit and order_limit_window must be positive")
	}
	if a.RegisteredDomainLimit == 0 {
		a.RegisteredDomainLimit = DefaultRegisteredDomainLimit
	}
	if a.RegisteredDomainLimitWindow == 0 {
		a.RegisteredDomainLimitWindow = caddy.Duration(DefaultRegisteredDomainLimitWindow)
	}
	if a.RegisteredDomainLimit < 0 || a.RegisteredDomainLimitWindow < 0 {
		return fmt.Errorf("registered_domain_limit and registered_domain_limit_window must be positive")
	}
	if a.ChangeLimit == 0 {
		a.ChangeLimit = DefaultChangeLimit
	}
	if a.ChangeLimitWindow == 0 {
		a.ChangeLimitWindow = caddy.Duration(DefaultChangeLimitWindow)
	}
	if a.ChangeLimit < 0 || a.ChangeLimitWindow < 0 {
		return fmt.Errorf("change_limit and change_limit_window must be positive")
	}
	if a.PreIssuanceWorkers == 0 {
		a.PreIssuanceWorkers = DefaultPreIssuanceWorkers
	}
	if a.PreIssuanceWorkers < 0 {
		return fmt.Errorf("pre_issuance_workers must be positive")
	}
	a.storage = ctx.Storage()
	mod, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading events app: %v", err)
	}
	a.events = mod.(*caddyevents.App)
	if a.metrics, err = newAppMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if a.changes, err = newChangeLimiter(a.ChangeLimit, time.Duration(a.ChangeLimitWindow), ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if a.certs, err = watchCertificates(a.events, a); err != nil {
		return err
	}
	if _, err := register(ctx.GetMetricsRegistry(), a.certs); err != nil {
		return fmt.Errorf("registering certificate metrics: %v", err)
	}
	if a.removed, err = watchRemoved(a.events, a.snapshot); err != nil {
		return err
	}
	if !a.DisablePreIssuance {
		a.pre = newPreIssuer(a)
	}
	if err := defaultDuration(&a.DNSCheckInterval, DefaultDNSCheckInterval, "dns_check_interval"); err != nil {
		return err
	}
	if err := defaultDuration(&a.GiveUpAfter, DefaultGiveUpAfter, "give_up_after"); err != nil {
		return err
	}
	a.stalls = newStallTracker(time.Duration(a.GiveUpAfter))
	a.checks = newCheckRuns()
	if a.dns, err = newAppDNSGate(a); err != nil {
		return err
	}
	if a.ownership, err = newOwnershipGate(a); err != nil {
		return err
	}
	if err := watchTenantAccess(a.events, a); err != nil {
		return err
	}

	for name, o := range a.Origins {
		if !originName.MatchString(name) {
			return fmt.Errorf("origins: name '%s' must be lowercase letters, digits, '-' and '_'", name)
		}
		if _, isProvider := LookupProvider(name); isProvider {
			return fmt.Errorf("origins: name '%s' is a provider's name; choose another", name)
		}
		if o == nil {
			return fmt.Errorf("origins: '%s' is empty", name)
		}
		u, err := ParseUpstream(o.Upstream)
		if err != nil {
			return fmt.Errorf("origins: '%s': %v", name, err)
		}
		proxy, err := newOriginProxy(ctx, u, "origin:"+name, "", o.Transport)
		if err != nil {
			return fmt.Errorf("origins: '%s': %v", name, err)
		}
		a.routes.addOrigin(name, proxy)
	}

	var fileTenants []Tenant
	if a.TenantsFile != "" {
		a.file = &tenantsFile{path: a.TenantsFile}
		if fileTenants, err = a.file.read(); err != nil {
			return fmt.Errorf("tenants_file: %v", err)
		}
	}
	a.store = newTenantStore(a)
	a.statusCounts = new(statusCounts)
	a.folder = new(registryFolder)
	s, version, err := a.buildWithStored(ctx, fileTenants)
	if err != nil {
		return err
	}
	a.followed = version
	a.swap(s, "config")
	if prev := runningApp(); prev != nil {
		a.inherit(prev)
	}
	return nil
}

// Start reports the tenants a config reload added and removed, and
// starts watching the tenants file and storage.
func (a *App) Start() error {
	if a.inherited != nil {
		a.reportChanges(a.inherited, a.snapshot(), "config")
		a.inherited = nil
	}
	if a.file != nil {
		// an invalid file keeps the registry in use; reloadFile logs
		// why, with the path, the entry and the field, and counts it
		a.watch(a.FileCheckInterval, a.file.changed, a.reloadFile)
	}
	// tenants added on another node sharing the storage
	a.watch(a.StorageRefreshInterval, func() bool { return true }, a.followStorage)
	a.watch(caddy.Duration(compactCheckInterval), func() bool { return true }, a.compactStorage)
	// tenants whose certificate is now expiring, once the storage scan
	// has found the certificates
	a.watch(a.RenewalCheckInterval, a.certs.scanned.Load, a.certs.reportExpiring)
	if a.dns != nil {
		a.stopped.Go(func() { a.dns.run(a.ctx, a.stop, a.certs.known) })
	}
	if a.ownership != nil {
		a.stopped.Go(func() { a.ownership.run(a.ctx, a.stop) })
	}
	a.stopped.Go(func() {
		// know which tenants have certificates before obtaining any
		a.certs.scanStorage(a.ctx, a.stop)
		if a.pre != nil {
			a.pre.run(a.stop)
		}
	})
	return nil
}

// watch calls reload every interval in which changed reports a change,
// until the app stops.
func (a *App) watch(interval caddy.Duration, changed func() bool, reload func()) {
	a.stopped.Add(1)
	go func() {
		defer a.stopped.Done()
		ticker := time.NewTicker(time.Duration(interval))
		defer ticker.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-ticker.C:
			}
			if changed() {
				reload()
			}
		}
	}()
}

// Stop stops the watchers and waits for them.
func (a *App) Stop() error {
	close(a.stop)
	a.stopped.Wait()
	return nil
}

// Cleanup releases the registry, and stops the timers of DNS readiness
// checks. The origins' transports are modules loaded through the Caddy
// context, which cleans them up itself.
func (a *App) Cleanup() error {
	if a.registry != nil {
		a.registry.Store(nil)
	}
	if a.dns != nil {
		a.dns.close()
	}
	if a.ownership != nil {
		a.ownership.close()
	}
	return nil
}

// snapshot returns the registry in use.
func (a *App) snapshot() *snapshot {
	return a.registry.Load()
}

// build builds a registry from the inline tenants, the tenants file's
// and the stored ones.
func (a *App) build(fileTenants, stored []Tenant) (*snapshot, error) {
	sources := []tenantSource{{name: "config", tenants: a.Tenants}}
	if a.file != nil {
		sources = append(sources, tenantSource{name: a.fileSource(), tenants: fileTenants})
	}
	sources = append(sources, tenantSource{name: storageSource, tenants: stored})
	return buildSnapshot(sources, a.resolve)
}

// fileSource names the tenants of the tenants file.
func (a *App) fileSource() string {
	return "tenants_file " + a.file.path
}

// storageSource names the tenants kept in storage.
const storageSource = "storage"

// swap makes s the registry in use, and reports the tenants it adds and
// removes.
func (a *App) swap(s *snapshot, cause string) {
	old := a.registry.Swap(s)
	a.metrics.tenants.WithLabelValues().Set(float64(s.len()))
	a.logger.Info("tenant registry loaded", zap.Int("tenants", s.len()), zap.String("cause", cause))
	if old != nil {
		a.reportChanges(old, s, cause)
		if a.ownership != nil {
			a.ownership.changed(old, s)
		}
	}
	if a.pre != nil {
		a.pre.changed()
	}
	a.foldIfDue(s)
}

// resolve returns the shared route of a tenant; see routeTable.resolve.
func (a *App) resolve(t Tenant) (*route, error) {
	return a.routes.resolve(t)
}

// routeTable holds an app's routes: one per named origin, and one per
// provider and region, whose origin proxy is made on first use.
type routeTable struct {
	mu       sync.Mutex
	routes   map[routeKey]*route
	newProxy func(origin *url.URL, provider, region string) (*originProxy, error)
}

// newRouteTable returns an empty route table whose provider routes get
// their origin proxies from newProxy.
func newRouteTable(newProxy func(origin *url.URL, provider, region string) (*originProxy, error)) *routeTable {
	return &routeTable{routes: make(map[routeKey]*route), newProxy: newProxy}
}

// addOrigin adds the route of a named origin.
func (rt *routeTable) addOrigin(name string, proxy *originProxy) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.routes[routeKey{origin: name}] = &route{origin: name, proxy: proxy}
}

// resolve returns the shared route of a tenant, creating the origin
// proxy of a provider and region on first use.
func (rt *routeTable) resolve(t Tenant) (*route, error) {
	switch {
	case t.Provider != "" && t.Origin != "":
		return nil, errors.New("provider and origin are mutually exclusive; set one")
	case t.Origin != "":
		if t.Region != "" {
			return nil, fmt.Errorf("region: origin '%s' takes no region", t.Origin)
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		r, ok := rt.routes[routeKey{origin: t.Origin}]
		if !ok {
			return nil, fmt.Errorf("origin: no origin named '%s' in the linktrack app's origins", t.Origin)
		}
		return r, nil
	case t.Provider != "":
		// tenants name few distinct routes: find them without parsing
		// the origin URL or allocating a key
		key := routeKey{provider: t.Provider, region: t.Region}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if r, ok := rt.routes[key]; ok {
			return r, nil
		}
		origin, region, err := LookupOrigin(t.Provider, t.Region)
		if err != nil {
			return nil, fmt.Errorf("provider: %v", err)
		}
		canonical := routeKey{provider: t.Provider, region: region}
		r, ok := rt.routes[canonical]
		if !ok {
			proxy, err := rt.newProxy(origin, t.Provider, region)
			if err != nil {
				return nil, fmt.Errorf("provider: %v", err)
			}
			r = &route{provider: t.Provider, region: region, proxy: proxy}
			rt.routes[canonical] = r
		}
		rt.routes[key] = r
		return r, nil
	default:
		return nil, errors.New("provider or origin is required")
	}
}

// routeKey names a route: a provider and region as a tenant wrote them,
// or a named origin.
type routeKey struct {
	provider, region, origin string
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

// defaultDuration sets *d to def when it is unset, and refuses a
// negative value, naming the field.
func defaultDuration(d *caddy.Duration, def time.Duration, field string) error {
	if *d == 0 {
		*d = caddy.Duration(def)
	}
	if *d < 0 {
		return fmt.Errorf("%s must be positive", field)
	}
	return nil
}
