package integration

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
	"github.com/caddyserver/certmagic"
)

// TestAdminAPIConflictAndCertificateStates checks the admin API's
// promises about tenants it does not own and about certificates not
// there yet: a tenant of the config or of the tenants file can be
// neither replaced nor removed (409, naming where it is defined), and
// leaves storage untouched; a certificate in storage that has expired
// shows `expired` with its not_after; with pre_issuance off, a tenant
// with no certificate shows `none`.
func TestAdminAPIConflictAndCertificateStates(t *testing.T) {
	const (
		configTenant = "click.brand-a.test"
		fileTenant   = "go.brand-b.test"
		apiTenant    = "links.brand-c.test"
	)
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	tenantsFile := filepath.Join(dir, "tenants.json")
	if err := os.WriteFile(tenantsFile, []byte(`{"tenants": [{"domain": "`+fileTenant+`", "provider": "sendgrid"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	// an expired certificate for the file's tenant, where an ACME issuer
	// stores one
	ca, err := standin.NewCA("linktrack test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueExpired(fileTenant)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(leaf.CertPEM)
	expired, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(storage, filepath.FromSlash(certmagic.StorageKeys.SiteCert("acme-v02.api.letsencrypt.org-directory", fileTenant)))
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, leaf.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	adminPort := freePort(t)
	config, err := json.Marshal(map[string]any{
		"admin":   map[string]any{"listen": "127.0.0.1:" + strconv.Itoa(adminPort)},
		"storage": map[string]any{"module": "file_system", "root": storage},
		"apps": map[string]any{"linktrack": map[string]any{
			"tenants":              []map[string]string{{"domain": configTenant, "provider": "customerio", "region": "eu"}},
			"tenants_file":         tenantsFile,
			"disable_pre_issuance": true,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	startCaddy(t, "json", string(config))

	for _, tc := range []struct{ domain, definedIn string }{
		{configTenant, "config"},
		{strings.ToUpper(configTenant), "config"},
		{fileTenant, "tenants_file " + tenantsFile},
	} {
		canonical := strings.ToLower(tc.domain)
		for _, change := range []struct{ method, body, verb string }{
			{"PUT", `{"provider": "sendgrid"}`, "change"},
			{"DELETE", "", "remove"},
		} {
			status, body := adminRequest(t, adminPort, change.method, "/linktrack/tenants/"+tc.domain, change.body)
			body = strings.TrimSpace(body)
			want := "domain '" + canonical + "' is defined in " + tc.definedIn + "; " + change.verb + " it there"
			if status != 409 || !strings.Contains(body, want) {
				t.Errorf("%s %s: %d %s; want 409 with %q", change.method, tc.domain, status, body, want)
			}
		}
	}

	// the registry and storage are as before
	status, body := adminRequest(t, adminPort, "GET", "/linktrack/tenants", "")
	var list struct {
		Tenants []struct{ Domain, Provider, Region, Source string }
	}
	if err := json.Unmarshal([]byte(body), &list); status != 200 || err != nil {
		t.Fatalf("list: %d %s (%v)", status, body, err)
	}
	if len(list.Tenants) != 2 ||
		list.Tenants[0].Domain != configTenant || list.Tenants[0].Provider != "customerio" || list.Tenants[0].Source != "config" ||
		list.Tenants[1].Domain != fileTenant || list.Tenants[1].Provider != "sendgrid" || list.Tenants[1].Source != "tenants_file "+tenantsFile {
		t.Errorf("tenants after the refused changes: %s", body)
	}
	if _, err := os.Stat(filepath.Join(storage, "linktrack", "tenants", "journal")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused change wrote the stored tenants: %v", err)
	}

	// certificate states
	state := func(status int, body string) (string, *time.Time) {
		t.Helper()
		var view struct {
			Certificate struct {
				Status   string     `json:"status"`
				NotAfter *time.Time `json:"not_after"`
			} `json:"certificate"`
		}
		if err := json.Unmarshal([]byte(body), &view); err != nil {
			t.Fatalf("%d %s: %v", status, body, err)
		}
		return view.Certificate.Status, view.Certificate.NotAfter
	}
	status, body = adminRequest(t, adminPort, "GET", "/linktrack/tenants/"+fileTenant, "")
	if got, notAfter := state(status, body); status != 200 || got != "expired" || notAfter == nil || !notAfter.Equal(expired.NotAfter) {
		t.Errorf("tenant with an expired certificate: %d %s; want expired, not_after %s", status, body, expired.NotAfter.Format(time.RFC3339))
	}
	status, body = adminRequest(t, adminPort, "GET", "/linktrack/tenants/"+configTenant, "")
	if got, notAfter := state(status, body); status != 200 || got != "none" || notAfter != nil {
		t.Errorf("config tenant with no certificate: %d %s; want none", status, body)
	}
	status, body = adminRequest(t, adminPort, "PUT", "/linktrack/tenants/"+apiTenant, `{"provider": "sparkpost", "region": "eu"}`)
	if got, _ := state(status, body); status != 201 || got != "none" {
		t.Errorf("PUT a new tenant: %d %s; want 201, none", status, body)
	}
	status, body = adminRequest(t, adminPort, "GET", "/linktrack/tenants/"+apiTenant, "")
	if got, _ := state(status, body); status != 200 || got != "none" || !strings.Contains(body, `"source":"storage"`) {
		t.Errorf("tenant added through the API: %d %s; want none, source storage", status, body)
	}
	if status, body := adminRequest(t, adminPort, "GET", "/linktrack/tenants/unknown.brand-d.test", ""); status != 404 {
		t.Errorf("unknown tenant: %d %s; want 404", status, body)
	}
}
