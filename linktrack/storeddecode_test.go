package linktrack

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
)

// storedValues are stored tenant values: as the admin API stores them,
// and others that only encoding/json reads right.
var storedValues = []string{
	`{"domain":"a.example","provider":"sendgrid"}`,
	`{"domain":"a.example","provider":"customerio","region":"eu"}`,
	`{"domain":"a.example","origin":"esp"}`,
	`{}`,
	`{"provider":"sendgrid","provider":"ses"}`,
	`{"domain":"a.example","provider":"send\u0067rid"}`,
	`{"domain":"a.example","Provider":"sendgrid"}`,
	`{"domain":"a.example","provider":"sendgrid","app_links":{"apple_app_site_association":"{}"}}`,
	`{"domain":"a.example","provider":"sëndgrid"}`,
	`{"domain":"a.example", "provider":"sendgrid"}`,
	`{"domain":"a.example","provider":"sendgrid",}`,
	`{"domain":"a.example","provider":1}`,
	`{"domain":"a.example","provider":"sendgrid"`,
	`{"domain":"a.example","provider"}`,
	`{"domain":"a.example","region":null}`,
	`[]`,
	``,
}

// TestStoredTenantDecodesAsJSON: every stored value decodes to what
// encoding/json makes of it, and an invalid one fails.
func TestStoredTenantDecodesAsJSON(t *testing.T) {
	plain := 0
	for _, v := range storedValues {
		if _, ok := decodePlainTenant([]byte(v)); ok {
			plain++
		}
		checkStoredTenant(t, v)
	}
	if plain != 5 {
		t.Errorf("%d values read without encoding/json, want 5", plain)
	}
}

func FuzzStoredTenant(f *testing.F) {
	for _, v := range storedValues {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) { checkStoredTenant(t, v) })
}

func checkStoredTenant(t *testing.T, v string) {
	t.Helper()
	got, err := storedTenant(tenantstore.Record{Domain: "stored.example", Value: json.RawMessage(v)})
	var want Tenant
	jsonErr := json.Unmarshal([]byte(v), &want)
	want.Domain = "stored.example"
	if (err != nil) != (jsonErr != nil) {
		t.Fatalf("%s: error %v, encoding/json's %v", v, err, jsonErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: %+v, encoding/json makes %+v", v, got, want)
	}
}
