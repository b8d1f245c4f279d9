package linktrack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestDecodeBody(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		wantErr                 string
	}{
		{name: "json", contentType: "application/json", body: `{"origin": "esp"}`},
		{name: "json with charset", contentType: "application/json; charset=utf-8", body: `{"origin": "esp"}`},
		{name: "no content type", body: `{"origin": "esp"}`},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: `{"origin": "esp"}`, status: 415, wantErr: "content type 'application/x-www-form-urlencoded': send application/json"},
		{name: "text", contentType: "text/plain", body: `{"origin": "esp"}`, status: 415, wantErr: "send application/json"},
		{name: "bad content type", contentType: "application/", body: `{}`, status: 415, wantErr: "send application/json"},
		{name: "over the limit", body: `{"origin": "` + strings.Repeat("e", 64) + `"}`, status: 413, wantErr: "decoding tenant: the body exceeds the limit of 64 bytes"},
		{name: "at the limit", body: `{"origin": "` + strings.Repeat("e", 64-14) + `"}`},
		{name: "empty", body: ``, status: 400, wantErr: "decoding tenant: the body is empty"},
		{name: "unknown field", body: `{"origin": "esp", "colour": "red"}`, status: 400, wantErr: `unknown field "colour"`},
		{name: "not json", body: `origin=esp`, status: 400, wantErr: "decoding tenant: invalid character"},
		{name: "trailing value", body: `{"origin": "esp"} {}`, status: 400, wantErr: "data after the JSON value"},
		{name: "trailing junk", body: `{"origin": "esp"} x`, status: 400, wantErr: "decoding tenant: invalid character 'x'"},
		{name: "array", body: `[]`, status: 400, wantErr: "cannot unmarshal array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/linktrack/tenants/click.brand.test", strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			var tenant Tenant
			err := decodeBody(httptest.NewRecorder(), r, 64, "tenant", &tenant)
			if tc.status == 0 {
				if err != nil || !strings.HasPrefix(tenant.Origin, "e") {
					t.Errorf("decodeBody: %v, %+v", err, tenant)
				}
				return
			}
			apiErr, ok := err.(caddy.APIError)
			if !ok || apiErr.HTTPStatus != tc.status || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("decodeBody: %#v; want %d with %q", err, tc.status, tc.wantErr)
			}
		})
	}
}

func TestRecordChange(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	api := &AdminAPI{logger: zap.New(core)}
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "control-plane", Organization: []string{"Platform Example"}}}

	for _, tc := range []struct {
		name        string
		tls         *tls.ConnectionState
		handle      func(http.ResponseWriter, *http.Request, *tenantChange) error
		wantStatus  int
		wantClient  string
		wantAuth    string
		wantDomains int
	}{
		{
			name: "put over mutual tls",
			tls:  &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}},
			handle: func(w http.ResponseWriter, _ *http.Request, c *tenantChange) error {
				c.name("click.brand.test")
				c.created = 1
				return writeJSON(w, http.StatusCreated, map[string]string{})
			},
			wantStatus: 201, wantClient: "CN=control-plane,O=Platform Example", wantAuth: "client_certificate", wantDomains: 1,
		},
		{
			name: "refused locally",
			handle: func(_ http.ResponseWriter, _ *http.Request, c *tenantChange) error {
				c.name("co.uk")
				return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: checkNotPublicSuffix("co.uk")}
			},
			wantStatus: 400, wantClient: "192.0.2.1:1234", wantAuth: "none", wantDomains: 1,
		},
		{
			name: "a bulk change of many domains",
			handle: func(w http.ResponseWriter, _ *http.Request, c *tenantChange) error {
				b := bulkChange{Tenants: make([]Tenant, 150), Remove: []string{"gone.brand.test"}}
				for i := range b.Tenants {
					b.Tenants[i].Domain = "t.brand.test"
				}
				c.bulk(b)
				return writeJSON(w, http.StatusOK, map[string]int{})
			},
			wantStatus: 200, wantClient: "192.0.2.1:1234", wantAuth: "none", wantDomains: loggedDomains,
		},
		{
			name: "storage failure",
			handle: func(http.ResponseWriter, *http.Request, *tenantChange) error {
				return changeError(errStorage)
			},
			wantStatus: 503, wantClient: "192.0.2.1:1234", wantAuth: "none",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/linktrack/tenants/x", nil)
			r.RemoteAddr = "192.0.2.1:1234"
			r.TLS = tc.tls
			w := httptest.NewRecorder()
			_ = api.recordChange(w, r, "put", tc.handle)
			entries := logs.TakeAll()
			if len(entries) != 1 {
				t.Fatalf("%d log entries, want 1", len(entries))
			}
			e := entries[0]
			fields := e.ContextMap()
			if e.Message != "tenant change" || fields["operation"] != "put" || fields["status"] != int64(tc.wantStatus) ||
				fields["client"] != tc.wantClient || fields["client_auth"] != tc.wantAuth || fields["remote_addr"] != "192.0.2.1:1234" {
				t.Errorf("log entry %q %v", e.Message, fields)
			}
			if domains, _ := fields["domains"].([]any); len(domains) != tc.wantDomains {
				t.Errorf("%d domains logged, want %d", len(domains), tc.wantDomains)
			}
			if (tc.wantStatus >= 400) != (fields["error"] != nil) {
				t.Errorf("error field %v for status %d", fields["error"], tc.wantStatus)
			}
			if tc.wantStatus >= 500 && e.Level != zap.ErrorLevel {
				t.Errorf("level %v for status %d", e.Level, tc.wantStatus)
			}
		})
	}
}

func TestChangeLimiter(t *testing.T) {
	l, err := newChangeLimiter(3, time.Minute, nil) // a token every 20s
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	for i := range 3 {
		if ok, _, _ := l.take(now); !ok {
			t.Fatalf("change %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait, refused := l.take(now)
	if ok || wait != 20*time.Second || refused != 1 {
		t.Errorf("4th change: %v, wait %v, %d refused; want refused, 20s, 1", ok, wait, refused)
	}
	if ok, wait, refused = l.take(now.Add(5 * time.Second)); ok || wait != 15*time.Second || refused != 1 {
		t.Errorf("5s later: %v, wait %v, %d refused; want refused, 15s, 1 (a warning a second)", ok, wait, refused)
	}
	if _, _, refused = l.take(now.Add(5*time.Second + time.Millisecond)); refused != 0 {
		t.Errorf("within the second: %d refused reported, want 0", refused)
	}
	if ok, _, _ = l.take(now.Add(20 * time.Second)); !ok {
		t.Error("a change once a token is back refused")
	}
	if ok, _, _ = l.take(now.Add(20 * time.Second)); ok {
		t.Error("a second change with one token back admitted")
	}
	if ok, _, _ = l.take(now.Add(time.Hour)); !ok {
		t.Error("a change after an hour refused")
	}
	for range 2 {
		if ok, _, _ = l.take(now.Add(time.Hour)); !ok {
			t.Error("the bucket refills to its burst, no more")
		}
	}
	if ok, _, _ = l.take(now.Add(time.Hour)); ok {
		t.Error("the bucket refilled beyond its burst of 3")
	}
}

func TestRefuseChange(t *testing.T) {
	registry := prometheus.NewRegistry()
	l, err := newChangeLimiter(1, time.Minute, registry)
	if err != nil {
		t.Fatal(err)
	}
	l.hold = 20 * time.Millisecond
	core, logs := observer.New(zap.InfoLevel)
	api := &AdminAPI{logger: zap.New(core), app: &App{ChangeLimit: 1, ChangeLimitWindow: caddy.Duration(time.Minute), changes: l}}
	if w := httptest.NewRecorder(); api.refuseChange(w, httptest.NewRequest(http.MethodPut, "/linktrack/tenants/a.brand.test", nil)) || w.Code != 200 || len(w.Header()) != 0 {
		t.Fatalf("within the limit: refused, %d %v", w.Code, w.Header())
	}
	for i := range 3 {
		w := httptest.NewRecorder()
		began := time.Now()
		if !api.refuseChange(w, httptest.NewRequest(http.MethodPut, "/linktrack/tenants/a.brand.test", nil)) {
			t.Fatalf("change %d over the limit admitted", i+2)
		}
		var answer struct{ Error string }
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil || w.Code != 429 || w.Header().Get("Retry-After") != "60" ||
			w.Header().Get("Content-Type") != "application/json" || !strings.Contains(answer.Error, "over change_limit; retry after 60s") {
			t.Errorf("over the limit: %d, Retry-After %q, Content-Type %q, %q (%v)", w.Code, w.Header().Get("Retry-After"), w.Header().Get("Content-Type"), w.Body, err)
		}
		if took := time.Since(began); took < l.hold {
			t.Errorf("refusal %d answered after %v, before its hold of %v", i+1, took, l.hold)
		}
	}
	if held := l.held.Load(); held != 0 {
		t.Errorf("%d refusals still counted as held", held)
	}

	// a client that goes away ends the hold
	l.hold = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	began := time.Now()
	if !api.refuseChange(httptest.NewRecorder(), httptest.NewRequestWithContext(ctx, http.MethodPut, "/linktrack/tenants/a.brand.test", nil)) {
		t.Fatal("change over the limit admitted")
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("a refusal held %v after its client went away", took)
	}
	// past maxHeldRefusals, a refusal is answered at once
	l.held.Store(maxHeldRefusals)
	began = time.Now()
	if !api.refuseChange(httptest.NewRecorder(), httptest.NewRequest(http.MethodPut, "/linktrack/tenants/a.brand.test", nil)) || time.Since(began) > 10*time.Second {
		t.Errorf("a refusal past %d held ones was held", maxHeldRefusals)
	}
	if held := l.held.Load(); held != maxHeldRefusals {
		t.Errorf("held %d after a refusal answered at once, want %d", held, maxHeldRefusals)
	}
	if got := testutil.ToFloat64(l.refusedTotal); got != 5 {
		t.Errorf("caddy_linktrack_tenant_changes_refused_total %v, want 5", got)
	}
	if n := testutil.CollectAndCount(registry, "caddy_linktrack_tenant_changes_refused_total"); n != 1 {
		t.Errorf("the counter is registered %d times, want once", n)
	}
	// one warning for the five, within the second
	if warnings := logs.FilterMessage("tenant changes refused over change_limit").All(); len(warnings) != 1 || logs.Len() != 1 {
		t.Errorf("%d warnings, %d lines; want one warning and nothing else", len(warnings), logs.Len())
	}
}
