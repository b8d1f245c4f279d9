package linktrack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// DefaultStorageRefreshInterval is how often tenants kept in storage are
// re-read when storage_refresh_interval is not set.
const DefaultStorageRefreshInterval = 10 * time.Second

const (
	// storageKey holds the tenants added through the admin API, in the
	// storage configured for Caddy, so every node that shares the storage
	// serves them.
	storageKey = "linktrack/tenants.json"
	// storageLock serializes writers of storageKey across nodes.
	storageLock = "linktrack_tenants"
)

// storedTenants is the content of storageKey.
type storedTenants struct {
	Tenants []Tenant `json:"tenants"`
}

// storageState is what was last read from storage.
type storageState struct {
	modified time.Time
	size     int64
	tenants  []Tenant
}

// loadStored reads the tenants kept in storage. A missing key is an
// empty list.
func loadStored(ctx context.Context, storage certmagic.Storage) (storageState, error) {
	info, err := storage.Stat(ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return storageState{}, nil
	}
	if err != nil {
		return storageState{}, fmt.Errorf("stat %s: %v", storageKey, err)
	}
	raw, err := storage.Load(ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return storageState{}, nil
	}
	if err != nil {
		return storageState{}, fmt.Errorf("load %s: %v", storageKey, err)
	}
	var doc storedTenants
	if err := json.Unmarshal(raw, &doc); err != nil {
		return storageState{}, fmt.Errorf("decoding %s: %v", storageKey, err)
	}
	return storageState{modified: info.Modified, size: info.Size, tenants: doc.Tenants}, nil
}

// storageChanged reports whether the stored tenants may differ from
// what was last read.
func (a *App) storageChanged(ctx context.Context) bool {
	info, err := a.storage.Stat(ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return len(a.stored.tenants) > 0
	}
	return err != nil || !info.Modified.Equal(a.stored.modified) || info.Size != a.stored.size
}

// reloadStorage rebuilds the registry from the stored tenants. Invalid
// stored tenants keep the registry in use.
func (a *App) reloadStorage() {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	state, err := loadStored(a.ctx, a.storage)
	var s *snapshot
	if err == nil {
		s, err = a.snapshot().withSource(storageSource, state.tenants, a.resolve)
	}
	if err != nil {
		a.metrics.reloads.WithLabelValues("storage", "error").Inc()
		a.logger.Error("stored tenants rejected; keeping the registry in use",
			zap.String("key", storageKey), zap.Error(err))
		return
	}
	a.stored = state
	a.metrics.reloads.WithLabelValues("storage", "ok").Inc()
	a.swap(s, "storage")
}

// errConflict marks a change that collides with a tenant defined in
// another source than storage; errStorage, a failure of the storage.
var (
	errConflict = errors.New("conflict")
	errStorage  = errors.New("storage")
)

// putStored adds or replaces a stored tenant on every node that shares
// the storage, and returns its registered form.
func (a *App) putStored(ctx context.Context, t Tenant) (registeredTenant, bool, error) {
	domain, err := CanonicalDomain(t.Domain)
	if err != nil {
		return registeredTenant{}, false, fmt.Errorf("domain: %v", err)
	}
	t.Domain = domain
	var created bool
	err = a.changeStored(ctx, func(tenants []Tenant) ([]Tenant, error) {
		i := slices.IndexFunc(tenants, func(s Tenant) bool { return s.Domain == domain })
		created = i < 0
		if created {
			if src, ok := a.sourceOf(domain); ok {
				return nil, fmt.Errorf("%w: domain '%s' is defined in %s; change it there", errConflict, domain, src)
			}
			return append(tenants, t), nil
		}
		tenants[i] = t
		return tenants, nil
	})
	if err != nil {
		return registeredTenant{}, false, err
	}
	rt, _ := a.registered(domain)
	return rt, created, nil
}

// deleteStored removes a stored tenant. It reports false if no stored
// tenant has the domain.
func (a *App) deleteStored(ctx context.Context, domain string) (bool, error) {
	domain, err := CanonicalDomain(domain)
	if err != nil {
		return false, fmt.Errorf("domain: %v", err)
	}
	found := false
	err = a.changeStored(ctx, func(tenants []Tenant) ([]Tenant, error) {
		i := slices.IndexFunc(tenants, func(s Tenant) bool { return s.Domain == domain })
		if i < 0 {
			if src, ok := a.sourceOf(domain); ok {
				return nil, fmt.Errorf("%w: domain '%s' is defined in %s; remove it there", errConflict, domain, src)
			}
			return nil, nil
		}
		found = true
		return slices.Delete(tenants, i, i+1), nil
	})
	return found, err
}

// changeStored applies change to the stored tenants under the storage
// lock, checks the result by building a registry from it, and only then
// saves it and swaps the registry in. A nil list from change means no
// change.
func (a *App) changeStored(ctx context.Context, change func([]Tenant) ([]Tenant, error)) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if err := a.storage.Lock(ctx, storageLock); err != nil {
		return fmt.Errorf("%w: locking stored tenants: %v", errStorage, err)
	}
	defer func() {
		if err := a.storage.Unlock(context.WithoutCancel(ctx), storageLock); err != nil {
			a.logger.Error("unlocking stored tenants", zap.Error(err))
		}
	}()

	current, err := loadStored(ctx, a.storage)
	if err != nil {
		return fmt.Errorf("%w: %v", errStorage, err)
	}
	tenants, err := change(slices.Clone(current.tenants))
	if err != nil || tenants == nil {
		return err
	}
	s, err := a.snapshot().withSource(storageSource, tenants, a.resolve)
	if err != nil {
		return err
	}
	raw, err := json.MarshalIndent(storedTenants{Tenants: tenants}, "", "\t")
	if err != nil {
		return err
	}
	if err := a.storage.Store(ctx, storageKey, raw); err != nil {
		return fmt.Errorf("%w: storing tenants: %v", errStorage, err)
	}
	if state, err := loadStored(ctx, a.storage); err == nil {
		a.stored = state
	} else {
		a.stored = storageState{tenants: tenants}
	}
	a.swap(s, "admin_api")
	return nil
}

// sourceOf returns where a domain of the registry in use comes from.
func (a *App) sourceOf(domain string) (string, bool) {
	rt, ok := a.registered(domain)
	return rt.Source, ok
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
