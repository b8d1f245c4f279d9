package linktrack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// ownershipRecordPrefix is the label before a tenant's domain that
// names its ownership TXT record.
const ownershipRecordPrefix = "_linktrack-verify."

// ownershipCheckWorkers is how many ownership checks run at once.
const ownershipCheckWorkers = 4

// ownershipState is a tenant's ownership as the admin API shows it.
type ownershipState struct {
	// pending (no order, no traffic until the TXT record is found) or
	// verified.
	Status string `json:"status"`
	// The TXT record to set: its name, and the value it must hold.
	RecordName  string `json:"record_name"`
	RecordValue string `json:"record_value,omitempty"`
	// The TXT values the last check saw (empty before the first), when
	// it ended, and when the next one runs.
	RecordsSeen []string   `json:"records_seen"`
	Error       string     `json:"error,omitempty"`
	CheckedAt   *time.Time `json:"checked_at,omitempty"`
	NextCheck   *time.Time `json:"next_check,omitempty"`
}

// ownershipRecord returns the name of the TXT record that proves a
// tenant owns its domain; a wildcard tenant's is that of the domain
// below "*.".
func ownershipRecord(domain string) string {
	return ownershipRecordPrefix + strings.TrimPrefix(domain, "*.")
}

// newOwnershipToken returns a random token: 128 bits, as hex.
func newOwnershipToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails, per its documentation
	return hex.EncodeToString(b)
}

// ownershipGate holds back the tenants whose domain is not proven
// theirs: no certificate order and no traffic until the TXT record
// _linktrack-verify.<domain> holds the tenant's token. A pending tenant
// is checked on the same schedule as the DNS readiness checks: after
// dns_check_interval, then twice as long each time, up to an hour; a
// registry change of the tenant, or a check now call, checks it at
// once. Once found, the tenant is verified for good: the verification
// is stored, so that no node, and no restart, locks it again.
type ownershipGate struct {
	app      *App
	resolver dnsResolver
	logger   *zap.Logger
	checks   *checkQueue[ownershipState] // each pending tenant's last check

	mu       sync.Mutex        // guards verified
	verified map[string]string // domain: token verified here, before the registry shows it
}

// newOwnershipGate sets up the checks of ownership_txt, or returns nil
// when ownership_txt is off.
func newOwnershipGate(a *App) (*ownershipGate, error) {
	if !a.OwnershipTXT {
		return nil, nil
	}
	servers := a.DNSResolvers
	for _, s := range servers {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			return nil, fmt.Errorf("dns_resolvers: '%s' must be host:port", s)
		}
	}
	if len(servers) == 0 {
		var err error
		if servers, err = systemResolvers(); err != nil {
			return nil, fmt.Errorf("ownership_txt: no system DNS resolver; set dns_resolvers: %v", err)
		}
	}
	return &ownershipGate{
		app:      a,
		resolver: dnsResolver{servers: servers, timeout: dnsCheckTimeout},
		logger:   a.logger.Named("ownership"),
		checks:   newCheckQueue[ownershipState](time.Duration(a.DNSCheckInterval)),
		verified: make(map[string]string),
	}, nil
}

// ownershipPending reports whether a registered tenant waits for its
// ownership TXT record. A tenant stored through the admin API with no
// token was added before ownership_txt was set, and is not held back; a
// tenant of the config or the tenants file is, unless it carries
// ownership_verified.
func (a *App) ownershipPending(s *snapshot, domain string, e entry) bool {
	g := a.ownership
	if g == nil || (e.extra != nil && e.extra.ownershipVerified) {
		return false
	}
	if s.sources[e.source] == storageSource && (e.extra == nil || e.extra.ownershipToken == "") {
		return false
	}
	var token string
	if e.extra != nil {
		token = e.extra.ownershipToken
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return token == "" || g.verified[domain] != token
}

// ownershipPendingNow is ownershipPending for a canonical domain of the
// registry in use.
func (a *App) ownershipPendingNow(domain string) bool {
	if a.ownership == nil {
		return false
	}
	s := a.snapshot()
	e, ok := s.registered(domain)
	return ok && a.ownershipPending(s, domain, e)
}

// withOwnership returns the tenants a change puts, with their ownership
// carried over from the stored tenants they replace, and a new token for
// each new tenant when ownership_txt is on. A token in the change other
// than the one linktrack gave is an error naming the field.
func (a *App) withOwnership(s *snapshot, put []Tenant) ([]Tenant, error) {
	storage := uint16(len(s.sources))
	for i, name := range s.sources {
		if name == storageSource {
			storage = uint16(i)
		}
	}
	out := make([]Tenant, len(put))
	for i, t := range put {
		domain, err := CanonicalDomain(t.Domain)
		if err != nil {
			return nil, fmt.Errorf("domain: %v", err)
		}
		prior, exists := s.registered(domain)
		exists = exists && prior.source == storage
		var token string
		if exists && prior.extra != nil {
			token = prior.extra.ownershipToken
			t.OwnershipVerified = t.OwnershipVerified || prior.extra.ownershipVerified
		}
		if t.OwnershipToken != "" && t.OwnershipToken != token {
			return nil, fmt.Errorf("domain '%s': ownership_token: linktrack sets it; leave it out", domain)
		}
		t.OwnershipToken = token
		if a.ownership != nil && !exists && !t.OwnershipVerified {
			t.OwnershipToken = newOwnershipToken()
		}
		out[i] = t
	}
	return out, nil
}

// changed checks at once the tenants a registry change adds or changes
// that are pending, and reports those that enter pending_ownership.
func (g *ownershipGate) changed(prev, next *snapshot) {
	check := func(domain string, e entry) {
		if old, ok := prev.registered(domain); ok && old == e {
			return
		}
		if !g.app.ownershipPending(next, domain, e) {
			return
		}
		if old, ok := prev.registered(domain); !ok || !g.app.ownershipPending(prev, domain, old) {
			g.app.tenantStateChanged(domain, statePendingOwnership, nil)
		}
		g.checks.enqueue(domain)
	}
	next.exact.eachChanged(prev.exact, func(domain string, e entry) bool {
		check(domain, e)
		return true
	})
	next.wildcards.eachChanged(prev.wildcards, func(parent string, e entry) bool {
		check("*."+parent, e)
		return true
	})
	// a tenant removed and added back proves its ownership again
	prev.exact.eachChanged(next.exact, func(domain string, _ entry) bool {
		if _, ok := next.exact.get(domain); !ok {
			g.forget(domain)
		}
		return true
	})
	prev.wildcards.eachChanged(next.wildcards, func(parent string, _ entry) bool {
		if _, ok := next.wildcards.get(parent); !ok {
			g.forget("*." + parent)
		}
		return true
	})
}

// run checks every pending tenant at once, then the queued ones, until
// stop is closed; then it stops every timer.
func (g *ownershipGate) run(ctx context.Context, stop <-chan struct{}) {
	if s := g.app.snapshot(); s != nil {
		s.each(func(domain string, e entry) bool {
			if g.app.ownershipPending(s, domain, e) {
				g.checks.enqueue(domain)
			}
			return true
		})
	}
	g.checks.run(ctx, stop, ownershipCheckWorkers, func(ctx context.Context, name string) {
		g.checkPending(ctx, name, "")
	})
}

// checkPending checks a tenant's ownership if it is still pending,
// records the result and, when the record is found, verifies the tenant
// for good. It returns the tenant's ownership state, and false when the
// tenant is not registered or not pending.
func (g *ownershipGate) checkPending(ctx context.Context, name, cause string) (ownershipState, bool) {
	s := g.app.snapshot()
	e, ok := s.registered(name)
	if !ok {
		g.forget(name)
		return ownershipState{}, false
	}
	if !g.app.ownershipPending(s, name, e) {
		g.checks.drop(name)
		return ownershipState{}, false
	}
	var token string
	if e.extra != nil {
		token = e.extra.ownershipToken
	}
	st := ownershipState{Status: "pending", RecordName: ownershipRecord(name), RecordValue: token, RecordsSeen: []string{}}
	now := time.Now()
	st.CheckedAt = &now
	switch {
	case token == "":
		// a config or tenants file tenant with neither flag: only its
		// source can tell
		st.Error = fmt.Sprintf("no ownership_token: set ownership_verified or ownership_token in %s", s.sources[e.source])
		g.record(name, st, false)
		return st, true
	case g.storedVerification(ctx, name, token):
		g.mu.Lock()
		g.verified[name] = token
		g.mu.Unlock()
		g.checks.drop(name)
		if g.app.pre != nil {
			g.app.pre.recheck(name)
		}
		st.Status, st.CheckedAt = "verified", nil
		return st, true
	default:
		seen, err := g.txt(ctx, st.RecordName)
		if err != nil {
			st.Error = err.Error()
		}
		for _, v := range seen {
			st.RecordsSeen = append(st.RecordsSeen, "TXT "+v)
			if v == token {
				st.Status = "verified"
			}
		}
	}
	if st.Status != "verified" {
		st = g.record(name, st, true)
		g.logger.Debug("tenant ownership checked", zap.String("domain", name), zap.String("record_name", st.RecordName),
			zap.Strings("records_seen", st.RecordsSeen), zap.String("error", st.Error), zap.Timep("next_check", st.NextCheck), zap.String("cause", cause))
		return st, true
	}
	g.verify(ctx, s, name, e, token, cause)
	return st, true
}

// txt returns the values of the TXT records of name, each record's
// strings joined.
func (g *ownershipGate) txt(ctx context.Context, name string) ([]string, error) {
	answers, err := g.resolver.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, fmt.Errorf("TXT query for %s failed: %v", name, err)
	}
	values := []string{}
	for _, rr := range answers {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}
	return values, nil
}

// record keeps the last check of a pending tenant and, with again,
// schedules the next one: after the first delay, then twice as long each
// time, up to an hour.
func (g *ownershipGate) record(name string, st ownershipState, again bool) ownershipState {
	g.checks.finish(name, func(w *checkWait[ownershipState]) {
		if again {
			delay := g.checks.backoffLocked(w)
			next := st.CheckedAt.Add(delay)
			st.NextCheck = &next
			g.checks.scheduleLocked(name, w, next, delay)
		}
		w.last = &st
	})
	return st
}

// verify makes a tenant verified here at once, and for good in storage:
// a stored tenant is stored again with ownership_verified, any other
// gets a marker that every node reads before asking DNS. Then its first
// order is woken.
func (g *ownershipGate) verify(ctx context.Context, s *snapshot, name string, e entry, token, cause string) {
	g.mu.Lock()
	g.verified[name] = token
	g.mu.Unlock()
	g.checks.drop(name)
	g.logger.Info("tenant ownership verified", zap.String("domain", name), zap.String("cause", cause))
	if s.sources[e.source] == storageSource {
		t := s.tenant(name, e)
		t.OwnershipVerified = true
		if _, err := g.app.changeStored(ctx, []Tenant{t}, nil); err != nil {
			g.logger.Error("storing the tenant's verified ownership; it is verified on this node only", zap.String("domain", name), zap.Error(err))
		}
	} else if err := g.app.storage.Store(ctx, ownershipMarker(name), []byte(token)); err != nil {
		g.logger.Error("storing the tenant's verified ownership; it is verified on this node only", zap.String("domain", name), zap.Error(err))
	}
	if g.app.pre != nil {
		g.app.pre.recheck(name)
	}
}

// storedVerification reports whether another node, or an earlier run,
// verified a tenant of the config or the tenants file with this token.
func (g *ownershipGate) storedVerification(ctx context.Context, name, token string) bool {
	if s := g.app.snapshot(); s != nil {
		if e, ok := s.registered(name); ok && s.sources[e.source] == storageSource {
			return false // its record says it
		}
	}
	value, err := g.app.storage.Load(ctx, ownershipMarker(name))
	return err == nil && string(value) == token
}

// ownershipMarker is the storage key of the verified ownership of a
// tenant of the config or the tenants file.
func ownershipMarker(name string) string {
	return "linktrack/ownership/" + certmagic.StorageKeys.Safe(name)
}

// status returns what is known of a pending tenant's ownership: its last
// check, if one ended.
func (g *ownershipGate) status(name string) *ownershipState {
	return g.checks.last(name)
}

// forget drops what is known of a tenant's ownership: it is removed,
// or no longer pending.
func (g *ownershipGate) forget(name string) {
	g.checks.drop(name)
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.verified, name)
}

// close stops every timer; nothing is queued after it.
func (g *ownershipGate) close() {
	g.checks.close()
}

// checkOwnershipNow checks a tenant pending ownership at once, as a
// check now call does, and returns the check; nil when the tenant is
// not pending.
func (a *App) checkOwnershipNow(ctx context.Context, domain string) *ownershipState {
	if !a.ownershipPendingNow(domain) {
		return nil
	}
	if st, ok := a.ownership.checkPending(ctx, domain, "check_now"); ok {
		return &st
	}
	return nil
}

// ownershipView returns a tenant's ownership for the admin API: nil
// without ownership_txt, or for a tenant that has nothing to verify.
func (a *App) ownershipView(domain string) *ownershipState {
	if a.ownership == nil {
		return nil
	}
	s := a.snapshot()
	e, ok := s.registered(domain)
	if !ok {
		return nil
	}
	var token string
	if e.extra != nil {
		token = e.extra.ownershipToken
	}
	if !a.ownershipPending(s, domain, e) {
		if token == "" {
			return nil
		}
		return &ownershipState{Status: "verified", RecordName: ownershipRecord(domain), RecordValue: token, RecordsSeen: []string{}}
	}
	if st := a.ownership.status(domain); st != nil {
		return st
	}
	return &ownershipState{Status: "pending", RecordName: ownershipRecord(domain), RecordValue: token, RecordsSeen: []string{}}
}
