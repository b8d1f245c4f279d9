package linktrack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// storedTenant decodes a stored record.
func storedTenant(r tenantstore.Record) (Tenant, error) {
	var t Tenant
	if err := json.Unmarshal(r.Value, &t); err != nil {
		return Tenant{}, fmt.Errorf("stored tenant '%s': %v", r.Domain, err)
	}
	t.Domain = r.Domain
	return t, nil
}

// loadStored reads every tenant kept in storage and the version read.
func (a *App) loadStored(ctx context.Context) ([]Tenant, uint64, error) {
	for {
		// room for the snapshot's tenants, so that a million are not
		// copied again and again as the list grows
		var tenants []Tenant
		if info, err := a.store.Info(ctx); err == nil && info.SnapshotRecords > 0 {
			tenants = make([]Tenant, 0, info.SnapshotRecords+int64(info.JournalRecords))
		}
		version, err := a.store.Load(ctx, func(r tenantstore.Record) error {
			t, err := storedTenant(r)
			tenants = append(tenants, t)
			return err
		})
		if errors.Is(err, tenantstore.ErrCompacted) {
			continue // compacted while being read: read the new snapshot
		}
		return tenants, version, err
	}
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
	tenants, version, err := a.loadStored(ctx)
	if err != nil {
		return err
	}
	s, err := a.snapshot().withSource(storageSource, tenants, a.resolve)
	if err != nil {
		return err
	}
	a.followed = version
	a.metrics.reloads.WithLabelValues("storage", "ok").Inc()
	a.swap(s, cause)
	return nil
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
