package linktrack

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Limits of the tenant listing and of bulk changes.
const (
	// DefaultPageLimit is how many tenants a page holds when limit is
	// not given; MaxPageLimit, the most it may hold.
	DefaultPageLimit = 1000
	MaxPageLimit     = 10000

	// MaxBulkBody is the largest body of POST /linktrack/tenants: room
	// for 100,000 tenants of a few hundred bytes each.
	MaxBulkBody = 64 << 20

	// MaxPageScan is how many tenants one page examines at most. A
	// filter that matches few tenants gets a page with fewer than
	// limit tenants, maybe none, and a next_cursor to go on from, as
	// DynamoDB's scan does: a page costs at most this many tenants,
	// whatever the registry's size and the filter.
	MaxPageScan = 20_000

	// statusCountsTTL is how long the counts of tenants by certificate
	// status are reused: counting a million tenants takes a while.
	statusCountsTTL = 10 * time.Second
)

// pageQuery is a request for a page of tenants.
type pageQuery struct {
	limit                                            int
	cursor, prefix, provider, origin, source, status string
}

// parsePageQuery reads limit, cursor and the filters prefix, provider,
// origin, source and status.
func parsePageQuery(v url.Values) (pageQuery, error) {
	q := pageQuery{
		limit:    DefaultPageLimit,
		cursor:   v.Get("cursor"),
		prefix:   strings.ToLower(v.Get("prefix")),
		provider: v.Get("provider"),
		origin:   v.Get("origin"),
		source:   v.Get("source"),
		status:   v.Get("status"),
	}
	for name := range v {
		switch name {
		case "limit", "cursor", "prefix", "provider", "origin", "source", "status":
		default:
			return q, fmt.Errorf("unknown query parameter '%s'; use limit, cursor, prefix, provider, origin, source or status", name)
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageLimit {
			return q, fmt.Errorf("limit: '%s' must be a number from 1 to %d", s, MaxPageLimit)
		}
		q.limit = n
	}
	return q, nil
}

// tenantPage is a page of tenants as the admin API shows it.
type tenantPage struct {
	Tenants []listedTenant `json:"tenants"`
	// The cursor of the next page; absent on the last one. A page
	// that examined MaxPageScan tenants has one even when it holds
	// fewer than limit tenants, or none.
	NextCursor string `json:"next_cursor,omitempty"`
	// The number of tenants, and every tenant by certificate status as
	// counted at counted_at: at most 10s before, or for a registry of
	// 100,000 tenants or more, when the last background count ended.
	Total     int            `json:"total"`
	Counts    map[string]int `json:"counts"`
	CountedAt time.Time      `json:"counted_at"`
}

// listedTenant is a tenant in a page, with its certificate status.
type listedTenant struct {
	registeredTenant
	Status string `json:"status"`
}

// page returns the tenants after q.cursor that pass q's filters, in
// domain order. It walks the registry's sorted domains from the cursor,
// so it costs the page, not the registry. It examines at most
// MaxPageScan tenants: past them, it returns what it found with a
// cursor at the last tenant examined.
func (a *App) page(q pageQuery) tenantPage {
	s := a.snapshot()
	now := time.Now()
	p := tenantPage{Tenants: make([]listedTenant, 0, min(q.limit, s.len()))}
	start := q.cursor
	if q.prefix != "" && start < q.prefix {
		start = beforeAll(q.prefix)
	}
	examined, last := 0, ""
	s.after(start, func(domain string, e entry) bool {
		if examined == MaxPageScan {
			p.NextCursor = last
			return false
		}
		examined, last = examined+1, domain
		if q.prefix != "" && !strings.HasPrefix(domain, q.prefix) {
			return domain < q.prefix // before the prefix: go on; past it: done
		}
		t := s.tenant(domain, e)
		source := s.sources[e.source]
		if (q.provider != "" && t.Provider != q.provider) || (q.origin != "" && t.Origin != q.origin) ||
			(q.source != "" && source != q.source) {
			return true
		}
		status := a.certs.status(domain, now)
		if q.status != "" && status != q.status {
			return true
		}
		if len(p.Tenants) == q.limit {
			p.NextCursor = p.Tenants[len(p.Tenants)-1].Domain
			return false
		}
		p.Tenants = append(p.Tenants, listedTenant{registeredTenant{Tenant: t, Source: source}, status})
		return true
	})
	p.Total, p.Counts, p.CountedAt = a.statusCounts.get(a, s, now)
	return p
}

// beforeAll returns a string just below every string that begins with
// prefix, for a walk that starts at prefix.
func beforeAll(prefix string) string {
	last := prefix[len(prefix)-1]
	if last == 0 {
		return prefix[:len(prefix)-1]
	}
	return prefix[:len(prefix)-1] + string(last-1) + "\xff"
}

// statusCounts caches the counts of tenants by certificate status.
type statusCounts struct {
	mu       sync.Mutex
	at       time.Time
	of       *snapshot
	counts   map[string]int
	counting bool // a recount runs in the background
}

// countInBackground is the registry size from which stale counts are
// recounted in the background while pages go on with the last counts:
// counting a million tenants takes about 300 ms.
const countInBackground = 100_000

// get returns the counts of tenants by status and when they were
// counted. Counts older than statusCountsTTL, or of another registry,
// are counted again: at once for a registry smaller than
// countInBackground, else in the background, and the last counts are
// returned meanwhile.
func (c *statusCounts) get(a *App, s *snapshot, now time.Time) (int, map[string]int, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts != nil && c.of == s && now.Sub(c.at) <= statusCountsTTL {
		return s.len(), c.counts, c.at
	}
	if c.counts == nil || s.len() < countInBackground {
		c.counts, c.at, c.of = countStatuses(a, s, now), now, s
		return s.len(), c.counts, c.at
	}
	if !c.counting {
		c.counting = true
		go func() {
			counts := countStatuses(a, s, now)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.counts, c.at, c.of, c.counting = counts, now, s, false
		}()
	}
	return s.len(), c.counts, c.at
}

// countStatuses counts the tenants of s by certificate status.
func countStatuses(a *App, s *snapshot, now time.Time) map[string]int {
	counts := make(map[string]int)
	s.each(func(domain string, _ entry) bool {
		counts[a.certs.status(domain, now)]++
		return true
	})
	return counts
}

// bulkChange is the body of POST /linktrack/tenants: the tenants file's
// shape, plus domains to remove.
type bulkChange struct {
	Tenants []Tenant `json:"tenants"`
	Remove  []string `json:"remove,omitempty"`
}

// entryError names a faulty entry of a bulk change.
type entryError struct {
	Index  int    `json:"index"` // 0-based, in tenants or remove
	List   string `json:"list"`  // tenants or remove
	Domain string `json:"domain"`
	Error  string `json:"error"`
}

// handleBulk adds or replaces every tenant of the body and removes the
// domains of its remove list, as one change: all of it, or nothing when
// any entry is faulty; then every faulty entry is named.
func (api *AdminAPI) handleBulk(w http.ResponseWriter, r *http.Request, c *tenantChange) error {
	var change bulkChange
	if err := decodeBody(w, r, MaxBulkBody, "tenants", &change); err != nil {
		return err
	}
	if len(change.Tenants) == 0 && len(change.Remove) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("tenants and remove are both empty")}
	}

	faults := api.app.checkBulk(&change)
	c.bulk(change)
	if len(faults) > 0 {
		c.err = fmt.Sprintf("%d faulty entries; nothing was changed", len(faults))
		return writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":  c.err,
			"faults": faults,
		})
	}
	created, err := api.app.changeStored(r.Context(), change.Tenants, change.Remove)
	if err != nil {
		return changeError(err)
	}
	c.created = len(created)
	return writeJSON(w, http.StatusOK, map[string]any{
		"put":     len(change.Tenants),
		"created": len(created),
		"removed": len(change.Remove),
	})
}

// checkBulk makes the domains of a bulk change canonical and returns
// every faulty entry: an invalid domain or field, a domain named twice,
// a domain defined in another source than storage.
func (a *App) checkBulk(change *bulkChange) []entryError {
	s := a.snapshot()
	storage := uint16(slices.Index(s.sources, storageSource))
	var faults []entryError
	seen := make(map[string]bool, len(change.Tenants)+len(change.Remove))
	owned := func(domain string) error {
		if err := s.owned(storage, domain, "change"); err != nil {
			return err
		}
		if seen[domain] {
			return fmt.Errorf("domain '%s' is named twice in this change", domain)
		}
		seen[domain] = true
		return nil
	}
	for i := range change.Tenants {
		t := &change.Tenants[i]
		domain, _, err := newEntry(*t, a.resolve)
		if err == nil {
			t.Domain = domain
			if err = checkNotPublicSuffix(domain); err != nil {
				err = fmt.Errorf("domain: %v", err)
			} else {
				err = owned(domain)
			}
		}
		if err != nil {
			faults = append(faults, entryError{Index: i, List: "tenants", Domain: t.Domain, Error: err.Error()})
		}
	}
	for i, d := range change.Remove {
		domain, err := CanonicalDomain(d)
		if err == nil {
			change.Remove[i] = domain
			err = checkNotPublicSuffix(domain)
		}
		if err == nil {
			err = owned(domain)
		} else {
			err = fmt.Errorf("domain: %v", err)
		}
		if err != nil {
			faults = append(faults, entryError{Index: i, List: "remove", Domain: d, Error: err.Error()})
		}
	}
	return faults
}
