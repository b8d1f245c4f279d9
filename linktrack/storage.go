package linktrack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
	"go.uber.org/zap"
)

// DefaultStorageRefreshInterval is how often the changes other nodes
// made to the tenants kept in storage are read, when
// storage_refresh_interval is not set.
const DefaultStorageRefreshInterval = 10 * time.Second

// compactCheckInterval is how often a node checks whether the journal
// of stored tenant changes is due to be folded into a new snapshot.
const compactCheckInterval = time.Minute

// errConflict marks a change that collides with a tenant defined in
// another source than storage; errStorage, a failure of the storage.
var (
	errConflict = errors.New("conflict")
	errStorage  = errors.New("storage")
)

// newTenantStore returns the store of the tenants added through the
// admin API, in the storage configured for Caddy, so that every node
// that shares the storage serves them. A document written by an earlier
// release, linktrack/tenants.json, is migrated into it once.
func newTenantStore(a *App) *tenantstore.Store {
	return tenantstore.New(a.storage, tenantstore.Options{LegacyRecord: legacyTenant})
}

// legacyTenant reads one tenant of the document earlier releases kept,
// with its domain made canonical.
func legacyTenant(raw json.RawMessage) (tenantstore.Record, error) {
	var t Tenant
	if err := json.Unmarshal(raw, &t); err != nil {
		return tenantstore.Record{}, fmt.Errorf("decoding tenant: %v", err)
	}
	return tenantRecord(t)
}

// tenantRecord returns the stored form of a tenant, keyed by its
// canonical domain.
func tenantRecord(t Tenant) (tenantstore.Record, error) {
	domain, err := CanonicalDomain(t.Domain)
	if err != nil {
		return tenantstore.Record{}, fmt.Errorf("domain: %v", err)
	}
	t.Domain = domain
	value, err := json.Marshal(t)
	return tenantstore.Record{Domain: domain, Value: value}, err
}

// buildWithStored builds the first registry: the inline tenants, the
// tenants file's and every tenant kept in storage, which are decoded on
// every core straight into the registry. It returns the version of
// storage the registry holds.
func (a *App) buildWithStored(ctx context.Context, fileTenants []Tenant) (*snapshot, uint64, error) {
	sources := []tenantSource{{name: "config", tenants: a.Tenants}}
	if a.file != nil {
		sources = append(sources, tenantSource{name: a.fileSource(), tenants: fileTenants})
	}
	for {
		n := len(a.Tenants) + len(fileTenants) + a.storedCount(ctx)
		b := newSnapshotBuilder(n)
		if err := b.addSources(sources, a.resolve); err != nil {
			return nil, 0, err
		}
		source, err := b.addSource(storageSource)
		if err != nil {
			return nil, 0, err
		}
		version, err := a.loadStoredInto(ctx, b, source)
		if errors.Is(err, tenantstore.ErrCompacted) {
			continue // compacted while being read: read the new snapshot
		}
		if err != nil {
			return nil, 0, fmt.Errorf("tenants in storage: %v", err)
		}
		return b.done(), version, nil
	}
}

// storedCount is about how many tenants storage holds, to size the
// registry; 0 when unknown.
func (a *App) storedCount(ctx context.Context) int {
	info, err := a.store.Info(ctx)
	if err != nil {
		return 0
	}
	return int(info.SnapshotRecords) + int(info.JournalRecords)
}

// loadStoredInto adds every tenant kept in storage to b, as entries of
// source, and returns the version read. Records are decoded on every
// core; b receives them one batch at a time in domain order, so its
// sorted domains need no sort. An invalid stored tenant, or one whose
// domain b holds from another source, fails it.
func (a *App) loadStoredInto(ctx context.Context, b *snapshotBuilder, source uint16) (uint64, error) {
	i := 0
	return tenantstore.LoadParallel(ctx, a.store, runtime.GOMAXPROCS(0), a.decodeStored, func(batch []storedEntry) error {
		for _, se := range batch {
			i++
			if se.err != nil {
				return fmt.Errorf("%s, entry %d: %v", storageSource, i, se.err)
			}
			se.e.source = source
			if prior, dup := b.insert(se.domain, se.e); dup {
				return fmt.Errorf("domain '%s' is registered twice: in %s and in %s, entry %d",
					se.domain, b.sources[prior.source], storageSource, i)
			}
		}
		return nil
	})
}

// storedEntry is a stored tenant as a registry entry, or why it cannot
// be one.
type storedEntry struct {
	domain string
	e      entry
	err    error
}

// decodeStored turns a batch of stored records into registry entries.
// Several batches are decoded at once; routes already resolved in the
// batch are reused without taking the route table's lock.
func (a *App) decodeStored(records []tenantstore.Record) ([]storedEntry, error) {
	routes := make(map[routeKey]*route)
	resolve := func(t Tenant) (*route, error) {
		key := routeKey{provider: t.Provider, region: t.Region, origin: t.Origin}
		if r, ok := routes[key]; ok {
			return r, nil
		}
		r, err := a.resolve(t)
		if err == nil {
			routes[key] = r
		}
		return r, err
	}
	out := make([]storedEntry, len(records))
	for i, r := range records {
		t, err := storedTenant(r)
		if err == nil {
			out[i].domain, out[i].e, err = newEntry(t, resolve)
		}
		out[i].err = err
	}
	return out, nil
}

// followStorage applies to the registry the changes made to the stored
// tenants, by any node, since the version it holds. It reads only what
// changed. Invalid stored tenants keep the registry in use.
func (a *App) followStorage() {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if err := a.followStorageLocked(a.ctx, "storage"); err != nil {
		a.metrics.reloads.WithLabelValues("storage", "error").Inc()
		a.logger.Error("reading stored tenant changes; keeping the registry in use", zap.Error(err))
	}
}

func (a *App) followStorageLocked(ctx context.Context, cause string) error {
	changes, version, err := a.store.Since(ctx, a.followed)
	if errors.Is(err, tenantstore.ErrCompacted) && a.followed > 0 {
		// Storage behind the registry lost changes (a store restarted
		// empty, a restored backup): its tenants are not removed for
		// that. The registry is kept and follows storage from scratch,
		// applying whatever storage holds on top of it.
		if info, ierr := a.store.Info(ctx); ierr == nil && info.Version < a.followed {
			a.metrics.reloads.WithLabelValues("storage", "behind").Inc()
			a.logger.Error("tenant storage lost changes: it is behind the registry in use; keeping every tenant and following storage from its version",
				zap.Uint64("storage_version", info.Version), zap.Uint64("registry_version", a.followed))
			a.followed = 0
			return a.followStorageLocked(ctx, cause)
		}
	}
	if errors.Is(err, tenantstore.ErrCompacted) {
		return a.reloadStorageLocked(ctx, cause)
	}
	if err != nil || version == a.followed {
		return err
	}
	s := a.snapshot()
	skip := func(domain string, err error) {
		a.logger.Error("stored tenant not served", zap.String("domain", domain), zap.Error(err))
	}
	for _, c := range changes {
		put := make([]Tenant, 0, len(c.Put))
		for _, r := range c.Put {
			t, err := storedTenant(r)
			if err != nil {
				skip(r.Domain, err)
				continue
			}
			put = append(put, t)
		}
		if s, err = s.withChanges(storageSource, put, c.Remove, a.resolve, skip); err != nil {
			return err
		}
	}
	a.followed = version
	a.metrics.reloads.WithLabelValues("storage", "ok").Inc()
	a.swap(s, cause)
	// a tenant put again, through any node, is revived if it stalled
	for _, c := range changes {
		for _, r := range c.Put {
			a.revive(r.Domain, "put")
		}
	}
	return nil
}

// reloadStorageLocked replaces the stored tenants of the registry with
// all of storage's, when the changes since the version it holds are no
// longer kept.
func (a *App) reloadStorageLocked(ctx context.Context, cause string) error {
	for {
		s := a.snapshot()
		source := uint16(slices.Index(s.sources, storageSource))
		b := newSnapshotBuilder(s.len())
		b.sources = s.sources
		s.each(func(domain string, e entry) bool {
			if e.source != source {
				b.insert(domain, e)
			}
			return true
		})
		version, err := a.loadStoredInto(ctx, b, source)
		if errors.Is(err, tenantstore.ErrCompacted) {
			continue // compacted while being read: read the new snapshot
		}
		if err != nil {
			return err
		}
		a.followed = version
		a.metrics.reloads.WithLabelValues("storage", "ok").Inc()
		a.swap(b.done(), cause)
		return nil
	}
}

// compactStorage folds the journal of stored tenant changes into a new
// snapshot when it has grown enough; one node at a time does it.
func (a *App) compactStorage() {
	if _, err := a.store.CompactIfDue(a.ctx); err != nil {
		a.logger.Error("compacting stored tenants", zap.Error(err))
	}
}

// changeStored adds or replaces the tenants put and removes the domains
// remove, in storage and so on every node that shares it, as one
// change: all of it or, when any entry is invalid, none of it. It
// returns the domains that were not stored before. The change is
// checked against the registry in use first: an entry that is invalid
// fails it, and so does a domain defined in another source (an error
// wrapping errConflict). The registry then follows storage, which holds
// this change and any other node's.
func (a *App) changeStored(ctx context.Context, put []Tenant, remove []string) (map[string]bool, error) {
	s := a.snapshot()
	if err := s.checkChanges(storageSource, put, remove, a.resolve); err != nil {
		return nil, err
	}
	put, err := a.withOwnership(s, put)
	if err != nil {
		return nil, err
	}
	created := make(map[string]bool)
	change := tenantstore.Change{Put: make([]tenantstore.Record, 0, len(put)), Remove: remove}
	for _, t := range put {
		r, err := tenantRecord(t)
		if err != nil {
			return nil, err
		}
		if _, ok := s.registered(r.Domain); !ok {
			created[r.Domain] = true
		}
		change.Put = append(change.Put, r)
	}
	if _, err := a.store.Apply(ctx, change); err != nil {
		if errors.Is(err, tenantstore.ErrInvalid) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errStorage, err)
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if err := a.followStorageLocked(ctx, "admin_api"); err != nil {
		return nil, fmt.Errorf("%w: the change is stored, but reading it back failed: %v", errStorage, err)
	}
	return created, nil
}

// putStored adds or replaces a stored tenant on every node that shares
// the storage, and returns its registered form.
func (a *App) putStored(ctx context.Context, t Tenant) (registeredTenant, bool, error) {
	domain, err := CanonicalDomain(t.Domain)
	if err != nil {
		return registeredTenant{}, false, fmt.Errorf("domain: %v", err)
	}
	t.Domain = domain
	created, err := a.changeStored(ctx, []Tenant{t}, nil)
	if err != nil {
		return registeredTenant{}, false, err
	}
	rt, _ := a.registered(domain)
	return rt, created[domain], nil
}

// deleteStored removes a stored tenant. It reports false if no stored
// tenant has the domain.
func (a *App) deleteStored(ctx context.Context, domain string) (bool, error) {
	domain, err := CanonicalDomain(domain)
	if err != nil {
		return false, fmt.Errorf("domain: %v", err)
	}
	if _, ok := a.snapshot().registered(domain); !ok {
		return false, nil
	}
	_, err = a.changeStored(ctx, nil, []string{domain})
	return err == nil, err
}

// registered returns a domain of the registry in use, by its canonical
// name (a wildcard as "*.example.com").
func (a *App) registered(domain string) (registeredTenant, bool) {
	s := a.snapshot()
	e, ok := s.registered(domain)
	if !ok {
		return registeredTenant{}, false
	}
	return registeredTenant{Tenant: s.tenant(domain, e), Source: s.sources[e.source]}, true
}
