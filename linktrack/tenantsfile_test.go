package linktrack

import (
	"strings"
	"testing"
)

func TestDecodeTenants(t *testing.T) {
	got, err := decodeTenants([]byte(`{"tenants": [{"domain": "a.example.com", "provider": "sendgrid"}, {"domain": "b.example.com", "origin": "esp", "app_links": {"assetlinks": "x.json"}}]}`))
	if err != nil || len(got) != 2 || got[1].Origin != "esp" || got[1].AppLinks.AssetLinks != "x.json" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if got, err := decodeTenants([]byte(`{"tenants": []}`)); err != nil || got == nil || len(got) != 0 {
		t.Errorf("empty list: %v, %v", got, err)
	}
	for input, wantErr := range map[string]string{
		``:                                   "EOF",
		`[]`:                                 `expected "{"`,
		`{}`:                                 `no "tenants" list`,
		`{"tenant": []}`:                     `unknown field "tenant"`,
		`{"tenants": {}}`:                    `tenants: expected "["`,
		`{"tenants": [], "tenants": []}`:     `"tenants" given twice`,
		`{"tenants": [{"domain": 1}]}`:       "tenants entry 1",
		`{"tenants": [{}, {"colour": "x"}]}`: `tenants entry 2: json: unknown field "colour"`,
		`{"tenants": []} {}`:                 "data after the tenants object",
		`{"tenants": [{"domain": "a.b"}`:     "EOF",
	} {
		_, err := decodeTenants([]byte(input))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: error %v, want one containing %q", input, err, wantErr)
		}
	}
}
