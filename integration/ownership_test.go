package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// ownershipTenantView is a tenant in the admin API with ownership_txt.
type ownershipTenantView struct {
	Domain            string          `json:"domain"`
	Enabled           *bool           `json:"enabled"`
	Metadata          json.RawMessage `json:"metadata"`
	OwnershipVerified bool            `json:"ownership_verified"`
	OwnershipToken    string          `json:"ownership_token"`
	Ownership         *struct {
		Status      string     `json:"status"`
		RecordName  string     `json:"record_name"`
		RecordValue string     `json:"record_value"`
		RecordsSeen []string   `json:"records_seen"`
		NextCheck   *time.Time `json:"next_check"`
	} `json:"ownership"`
	Certificate struct {
		Status string `json:"status"`
	} `json:"certificate"`
}

// tenantOf decodes an admin API answer holding one tenant.
func tenantOf(t *testing.T, status int, body string) ownershipTenantView {
	t.Helper()
	var v ownershipTenantView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("answer %d %s: %v", status, body, err)
	}
	return v
}

// refusedAtHandshake reports whether a TLS handshake for name fails.
func refusedAtHandshake(t *testing.T, httpsPort int, name string) bool {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", httpsPort), &tls.Config{InsecureSkipVerify: true, ServerName: name}) //nolint:gosec
	if err == nil {
		conn.Close()
		return false
	}
	return true
}

// plainGet sends GET / for host over plain HTTP.
func plainGet(t *testing.T, httpPort int, host string) *standin.RawResponse {
	t.Helper()
	c, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", httpPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Do(standin.RawRequest{Method: "GET", Target: "/ls/click?upn=" + host, Host: host}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestOwnershipTXT: with ownership_txt, a tenant added through the admin
// API gets a token, is checked at once, and stays pending_ownership, with
// no order, its handshakes refused and plain HTTP answered 421, over
// several checks; once _linktrack-verify.<domain> holds the token, a
// check now call verifies it, long before its next scheduled check, and
// it gets exactly one order and serves clicks; the verification is
// stored, so a restart with the TXT record gone still serves it.
func TestOwnershipTXT(t *testing.T) {
	t.Parallel() // mostly waits on checks and Pebble
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	clicks, countClicks := clickCounter()
	origin := startOrigin(t, ca, []string{"localhost"}, countClicks)
	ports := multiTenantPorts{freePort(t), freePort(t), freePort(t)}
	acme := startPebble(t, ports.http, ports.https)
	tenantsFile := filepath.Join(dir, "tenants.json")
	writeTenantsFile(t, tenantsFile)
	app := fmt.Sprintf(`ownership_txt
		dns_resolvers %s
		dns_check_interval 1h
		tenants_file %s`, acme.dnsAddr, tenantsFile)
	config := multiTenantConfig(ports, filepath.Join(dir, "storage"), acme, origin.Port(), caFile, app)
	// one debug line per ownership check is the marker of the checks
	config = strings.Replace(config, "\tskip_install_trust", "\tdebug\n\tskip_install_trust", 1)
	p := startCaddy(t, "caddyfile", config)

	const domain = "link.owned.test"
	status, body := adminRequest(t, ports.admin, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp"}`)
	put := tenantOf(t, status, body)
	if status != 201 || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(put.OwnershipToken) || put.OwnershipVerified ||
		put.Ownership == nil || put.Ownership.Status != "pending" || put.Ownership.RecordName != "_linktrack-verify."+domain ||
		put.Ownership.RecordValue != put.OwnershipToken || put.Certificate.Status != "pending_ownership" {
		t.Fatalf("PUT %s: %d %s, want 201 with a token, pending_ownership and the record to set", domain, status, body)
	}
	token := put.OwnershipToken

	// checked at once, then at each check now call: three checks, each
	// logged, and no order, no handshake, no click
	checked := func(e map[string]any) bool { return e["domain"] == domain }
	p.waitLogFor(t, time.Minute, "tenant ownership checked", checked)
	dnsRecord(t, acme.dnsControl, "/set-txt", fmt.Sprintf(`{"host": "_linktrack-verify.%s.", "value": "someone-else"}`, domain))
	for range 2 {
		status, body := adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+domain+"/check", "")
		var answer struct {
			Ownership *struct {
				Status      string     `json:"status"`
				RecordsSeen []string   `json:"records_seen"`
				NextCheck   *time.Time `json:"next_check"`
			} `json:"ownership"`
			Certificate struct{ Status string } `json:"certificate"`
		}
		if err := json.Unmarshal([]byte(body), &answer); err != nil || status != 200 || answer.Ownership == nil ||
			answer.Ownership.Status != "pending" || len(answer.Ownership.RecordsSeen) != 1 || answer.Ownership.RecordsSeen[0] != "TXT someone-else" ||
			answer.Ownership.NextCheck == nil || time.Until(*answer.Ownership.NextCheck) < 30*time.Minute ||
			answer.Certificate.Status != "pending_ownership" {
			t.Fatalf("POST check %s while pending: %d %s, want pending having seen the other TXT, the next check an hour away", domain, status, body)
		}
	}
	p.waitLogCount(t, time.Minute, "tenant ownership checked", 3, checked)
	if refusedAtHandshake(t, ports.https, domain) == false {
		t.Errorf("a tenant pending ownership completed a TLS handshake")
	}
	if res := plainGet(t, ports.http, domain); res.Status != 421 {
		t.Errorf("plain HTTP to a tenant pending ownership: %d, want 421", res.Status)
	}
	acme.settle(t)
	p.settle(t, ports.admin)
	if n := acme.orders(); n != 0 {
		t.Errorf("pebble received %d orders for a tenant pending ownership", n)
	}
	if n := clicks.Load(); n != 0 {
		t.Errorf("origin got %d requests for a tenant pending ownership", n)
	}
	// nor is it tried in the background: its verification wakes it
	if n := countLog(p, "background handshake failed", "domain", domain); n != 0 {
		t.Errorf("%d background handshakes for a tenant pending ownership", n)
	}
	status, body = adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+domain, "")
	if v := tenantOf(t, status, body); v.OwnershipToken != token || v.Ownership == nil || v.Ownership.Status != "pending" ||
		v.Ownership.RecordsSeen == nil || v.Ownership.NextCheck == nil || v.Certificate.Status != "pending_ownership" {
		t.Errorf("GET %s while pending: %d %s, want pending with the records seen and the next check", domain, status, body)
	}
	status, body = adminRequest(t, ports.admin, "GET", "/linktrack/tenants?status=pending_ownership", "")
	if status != 200 || !strings.Contains(body, `"domain":"`+domain+`"`) || !strings.Contains(body, `"pending_ownership":1`) {
		t.Errorf("listing of tenants pending ownership: %d %s", status, body)
	}
	// a replacement keeps the token, whatever else changes
	status, body = adminRequest(t, ports.admin, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp", "metadata": {"plan": "pro"}}`)
	if v := tenantOf(t, status, body); status != 200 || v.OwnershipToken != token {
		t.Errorf("PUT replacing %s: %d %s, want 200 with the same token %s", domain, status, body, token)
	}
	// a token linktrack did not give is refused
	status, body = adminRequest(t, ports.admin, "PUT", "/linktrack/tenants/other.owned.test", `{"origin": "esp", "ownership_token": "chosen-by-the-client-0001"}`)
	if status != 400 || !strings.Contains(body, "ownership_token") {
		t.Errorf("PUT with a token of its own: %d %s, want 400 naming ownership_token", status, body)
	}

	// the TXT record holds the token: a check now call verifies the tenant
	dnsRecord(t, acme.dnsControl, "/set-txt", fmt.Sprintf(`{"host": "_linktrack-verify.%s.", "value": %q}`, domain, token))
	status, body = adminRequest(t, ports.admin, "POST", "/linktrack/tenants/"+domain+"/check", "")
	if status != 200 || !strings.Contains(body, `"ownership":{"status":"verified"`) {
		t.Fatalf("POST check %s with its record set: %d %s, want ownership verified", domain, status, body)
	}
	if e := p.waitLog(t, "tenant ownership verified", checked); e["cause"] != "check_now" {
		t.Errorf("%s verified by %v, want check_now", domain, e["cause"])
	}
	p.waitLogFor(t, 2*time.Minute, "tenant certificate obtained", checked)
	acme.settle(t)
	if n := acme.orders(); n != 1 {
		t.Errorf("pebble received %d orders, want exactly 1, for %s", n, domain)
	}
	status, body = adminRequest(t, ports.admin, "GET", "/linktrack/tenants/"+domain, "")
	if v := tenantOf(t, status, body); !v.OwnershipVerified || v.Ownership == nil || v.Ownership.Status != "verified" || v.Certificate.Status != "valid" {
		t.Errorf("GET %s once verified: %d %s, want ownership_verified and a valid certificate", domain, status, body)
	}
	roots := acme.issuingRoots(t)
	r := &tenantRig{httpPort: ports.http, httpsPort: ports.https}
	if res, err := r.get(domain, domain, roots); err != nil || res.Status != 302 {
		t.Fatalf("click on %s once verified: %v %v", domain, err, res)
	}

	// stored: a restart with the TXT record gone serves it at once
	dnsRecord(t, acme.dnsControl, "/clear-txt", fmt.Sprintf(`{"host": "_linktrack-verify.%s."}`, domain))
	p.stop()
	p = startCaddy(t, "caddyfile", config)
	if res, err := r.get(domain, domain, roots); err != nil || res.Status != 302 {
		t.Fatalf("click on %s after a restart: %v %v", domain, err, res)
	}
	acme.settle(t)
	if n := acme.orders(); n != 1 {
		t.Errorf("pebble received %d orders after the restart, want still 1", n)
	}
	if n := len(p.logEntriesNamed("tenant ownership checked")); n != 0 {
		t.Errorf("%d ownership checks after the restart of a verified tenant", n)
	}
	if n := clicks.Load(); n != 2 {
		t.Errorf("origin got %d clicks, want 2", n)
	}
}

// TestDisabledTenant: a tenant with "enabled": false keeps its
// certificate, obtained and renewed in the background, but its TLS
// handshakes are refused and plain HTTP gets 421, and its origin gets
// nothing; enabled again, it serves clicks.
func TestDisabledTenant(t *testing.T) {
	t.Parallel() // mostly waits for certificates to age
	const disabled, served = "off.shop.test", "on.shop.test"
	// certificates valid for a minute are due for renewal after 40s
	r := newTenantRigValidity(t, time.Minute, "renewal_check_interval 2s", served)
	status, body := adminRequest(t, r.adminPort, "PUT", "/linktrack/tenants/"+disabled, `{"origin": "esp", "enabled": false}`)
	if v := tenantOf(t, status, body); status != 201 || v.Enabled == nil || *v.Enabled {
		t.Fatalf("PUT %s disabled: %d %s", disabled, status, body)
	}
	for _, d := range []string{disabled, served} {
		r.caddy.waitLogFor(t, time.Minute, "tenant certificate obtained", func(e map[string]any) bool { return e["domain"] == d })
	}
	roots := r.acme.issuingRoots(t)
	if res, err := r.get(served, served, roots); err != nil || res.Status != 302 {
		t.Fatalf("click on the enabled %s: %v %v", served, err, res)
	}
	if !refusedAtHandshake(t, r.httpsPort, disabled) {
		t.Errorf("a disabled tenant completed a TLS handshake")
	}
	if res := plainGet(t, r.httpPort, disabled); res.Status != 421 {
		t.Errorf("plain HTTP to a disabled tenant: %d, want 421", res.Status)
	}
	r.caddy.waitLogFor(t, 2*time.Minute, "tenant certificate renewed", func(e map[string]any) bool { return e["domain"] == disabled })
	if !refusedAtHandshake(t, r.httpsPort, disabled) {
		t.Errorf("a disabled tenant completed a TLS handshake after its renewal")
	}
	if c := r.certificate(t, disabled); c.Status != "valid" {
		t.Errorf("disabled tenant's certificate after its renewal: %+v, want valid", c)
	}
	if n := r.origin.Count(); n != 1 {
		t.Errorf("origin got %d requests, want only the enabled tenant's click", n)
	}

	status, body = adminRequest(t, r.adminPort, "PUT", "/linktrack/tenants/"+disabled, `{"origin": "esp"}`)
	if v := tenantOf(t, status, body); status != 200 || v.Enabled != nil {
		t.Fatalf("PUT %s enabled: %d %s", disabled, status, body)
	}
	if res, err := r.get(disabled, disabled, roots); err != nil || res.Status != 302 {
		t.Errorf("click on %s enabled again: %v %v", disabled, err, res)
	}
}

// TestTenantMetadata: metadata round-trips through PUT, GET and a bulk
// POST, compacted; metadata too large or not an object, and enabled not
// a bool, get 400 naming the field and change nothing.
func TestTenantMetadata(t *testing.T) {
	r := newTenantRig(t, "pre_issuance off")
	const domain = "meta.brand.test"
	metadata := `{"customer": "c-42", "plan": {"tier": "pro", "seats": 5}}`
	compact := `{"customer":"c-42","plan":{"tier":"pro","seats":5}}`
	status, body := adminRequest(t, r.adminPort, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp", "metadata": `+metadata+`}`)
	if v := tenantOf(t, status, body); status != 201 || string(v.Metadata) != compact {
		t.Fatalf("PUT with metadata: %d %s, want 201 with %s", status, body, compact)
	}
	status, body = adminRequest(t, r.adminPort, "GET", "/linktrack/tenants/"+domain, "")
	if v := tenantOf(t, status, body); status != 200 || string(v.Metadata) != compact {
		t.Errorf("GET: %d %s, want metadata %s", status, body, compact)
	}

	status, body = adminRequest(t, r.adminPort, "POST", "/linktrack/tenants", `{"tenants": [
		{"domain": "bulk1.brand.test", "origin": "esp", "metadata": {"n": 1}},
		{"domain": "bulk2.brand.test", "origin": "esp", "metadata": {"n": 2}, "enabled": false}]}`)
	if status != 200 {
		t.Fatalf("bulk POST with metadata: %d %s", status, body)
	}
	for i, d := range []string{"bulk1.brand.test", "bulk2.brand.test"} {
		status, body := adminRequest(t, r.adminPort, "GET", "/linktrack/tenants/"+d, "")
		if v := tenantOf(t, status, body); status != 200 || string(v.Metadata) != fmt.Sprintf(`{"n":%d}`, i+1) || (i == 1) != (v.Enabled != nil && !*v.Enabled) {
			t.Errorf("GET %s after the bulk POST: %d %s", d, status, body)
		}
	}

	large := fmt.Sprintf(`{"note": %q}`, strings.Repeat("x", 4096))
	for _, c := range []struct{ name, method, path, body, field string }{
		{"too large", "PUT", "/linktrack/tenants/" + domain, `{"origin": "esp", "metadata": ` + large + `}`, "metadata"},
		{"an array", "PUT", "/linktrack/tenants/" + domain, `{"origin": "esp", "metadata": [1, 2]}`, "metadata"},
		{"a string", "PUT", "/linktrack/tenants/" + domain, `{"origin": "esp", "metadata": "plan pro"}`, "metadata"},
		{"enabled a string", "PUT", "/linktrack/tenants/" + domain, `{"origin": "esp", "enabled": "no"}`, "enabled"},
		{"bulk too large", "POST", "/linktrack/tenants", `{"tenants": [{"domain": "` + domain + `", "origin": "esp", "metadata": ` + large + `}]}`, "metadata"},
		{"bulk not an object", "POST", "/linktrack/tenants", `{"tenants": [{"domain": "new.brand.test", "origin": "esp", "metadata": 7}]}`, "metadata"},
	} {
		status, body := adminRequest(t, r.adminPort, c.method, c.path, c.body)
		if status != 400 || !strings.Contains(body, c.field) {
			t.Errorf("%s: %d %s, want 400 naming %s", c.name, status, body, c.field)
		}
	}
	status, body = adminRequest(t, r.adminPort, "GET", "/linktrack/tenants/"+domain, "")
	if v := tenantOf(t, status, body); status != 200 || string(v.Metadata) != compact || v.Enabled != nil {
		t.Errorf("GET after the refused changes: %d %s, want the metadata %s unchanged", status, body, compact)
	}
	if status, body := adminRequest(t, r.adminPort, "GET", "/linktrack/tenants/new.brand.test", ""); status != 404 {
		t.Errorf("a refused bulk POST added a tenant: %d %s", status, body)
	}
}
