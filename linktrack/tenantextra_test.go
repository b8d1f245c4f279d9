package linktrack

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"
)

func TestTenantExtra(t *testing.T) {
	if size := unsafe.Sizeof(entry{}); size > 32 {
		t.Errorf("a registry entry takes %d bytes, want at most 32", size)
	}
	yes, no := true, false
	for _, tenant := range []Tenant{
		{Domain: "plain.brand.test", Provider: "sendgrid"},
		{Domain: "enabled.brand.test", Provider: "sendgrid", Enabled: &yes},
		{Domain: "null.brand.test", Provider: "sendgrid", Metadata: json.RawMessage("null")},
	} {
		if x, err := newTenantExtra(tenant); x != nil || err != nil {
			t.Errorf("%s: %+v, %v, want no extra", tenant.Domain, x, err)
		}
	}

	s, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
		{Domain: "off.brand.test", Provider: "sendgrid", Enabled: &no, Metadata: json.RawMessage(` { "plan" : "pro",
			"seats": [1, 2] } `)},
		{Domain: "plain.brand.test", Provider: "sendgrid"},
	}}}, testRoutes())
	if err != nil {
		t.Fatal(err)
	}
	a := &App{registry: new(atomic.Pointer[snapshot])}
	a.registry.Store(s)
	e, _ := s.registered("off.brand.test")
	got := s.tenant("off.brand.test", e)
	if got.Enabled == nil || *got.Enabled || string(got.Metadata) != `{"plan":"pro","seats":[1,2]}` {
		t.Errorf("disabled tenant with metadata rebuilt as %+v", got)
	}
	if e, _ := s.registered("plain.brand.test"); s.tenant("plain.brand.test", e).Metadata != nil {
		t.Errorf("metadata of a tenant without: %s", s.tenant("plain.brand.test", e).Metadata)
	}

	large := `{"note": "` + strings.Repeat("x", MaxMetadataSize-10) + `"}`
	for metadata, wantErr := range map[string]string{
		large[:len(large)-3] + `"}`: "",
		large:                       "at most 4096",
		`[1, 2]`:                    "must be a JSON object",
		`"pro"`:                     "must be a JSON object",
		`7`:                         "must be a JSON object",
		`{"a": }`:                   "not valid JSON",
	} {
		_, err := buildSnapshot([]tenantSource{{name: "config", tenants: []Tenant{
			{Domain: "meta.brand.test", Provider: "sendgrid", Metadata: json.RawMessage(metadata)},
		}}}, testRoutes())
		if wantErr == "" && err != nil {
			t.Errorf("metadata of %d bytes: %v", len(metadata), err)
		}
		if wantErr != "" && (err == nil || !strings.Contains(err.Error(), "metadata: ") || !strings.Contains(err.Error(), wantErr)) {
			t.Errorf("metadata %.20s...: %v, want an error naming metadata: %s", metadata, err, wantErr)
		}
	}
	if _, err := newTenantExtra(Tenant{OwnershipToken: "short"}); err == nil || !strings.Contains(err.Error(), "ownership_token") {
		t.Errorf("a short ownership_token: %v, want an error naming it", err)
	}
}
