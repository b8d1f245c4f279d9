package linktrack

import (
	"fmt"
	"reflect"
	"slices"
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

// TestDecodeTenantsOnEveryCoreSameAsInOrder: a file decoded on every
// core gives the tenants, or the error, of encoding/json entry by entry;
// files of the usual shape take the fast path, whatever the whitespace.
func TestDecodeTenantsOnEveryCoreSameAsInOrder(t *testing.T) {
	fast := []string{
		`{"tenants":[]}`,
		" {\n \"tenants\" : [ ] } \n",
		`{"tenants":[{"domain":"a.example.com","provider":"sendgrid"},{"domain":"b.example.com","origin":"esp"}]}`,
		"{\"tenants\": [\n\t{ \"domain\" : \"a.example.com\" , \"provider\": \"customerio\", \"region\": \"eu\" },\r\n\t{\"domain\": \"b.example.com\"}\n]}\n",
		`{"tenants":[{},{ },{"provider":"a","provider":"sendgrid","domain":"x.example.com"}]}`,
		// entries encoding/json decodes, within the fast path
		`{"tenants":[{"Domain":"a.example.com","PROVIDER":"sendgrid"},{"domain":"a\u002eexample.com"}]}`,
		`{"tenants":[{"domain":"bücher.example.com","enabled":false,"ownership_verified":true}]}`,
		`{"tenants":[{"domain":"a.example.com","metadata":{"k":"x\"}]{y","l":["\\"]}},{"domain":"b.example.com","app_links":{"assetlinks":"x.json"}}]}`,
		"{\"tenants\":[{\"domain\":\"\xff.example.com\"}]}",
	}
	other := []string{
		`{"tenants":[null]}`,
		`{"tenant\u0073":[{"domain":"a.example.com"}]}`,
		`{"tenants":["a.example.com"]}`,
		`{"tenants":[{"domain":"a.example.com","provider":"sendgrid",}]}`,
		`{"tenants":[{"domain":"a.example.com"},]}`,
		`{"tenants":[{"domain":"a.example.com"} {"domain":"b.example.com"}]}`,
		`{"tenants":[{"domain":"a.example.com","colour":"x"}]}`,
		`{"tenants":[{"domain":"a.example.com","enabled":"no"}]}`,
		`{"tenants":[{"domain":"a.example.com}]}`,
		`{"tenants":[{"domain":"a.example.com","metadata":[}]}]}`,
		`{"tenants":[{"domain":"a.example.com"}]}}`,
		`{"tenants":[{"domain":"a.example.com"}]`,
		`{"tenants":[], "tenants":[]}`,
		`{"tenants":[{"domain" "a.example.com"}]}`,
		`{"tenants":[{"domain":"a.example.com" "provider":"sendgrid"}]}`,
		``,
	}
	for _, input := range append(fast, other...) {
		want, wantErr := decodeTenantsInOrder([]byte(input))
		got, err := decodeTenants([]byte(input))
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) || (got == nil) != (want == nil) {
			t.Errorf("%q: decoded %+v, %v; in order %+v, %v", input, got, err, want, wantErr)
		}
		if parallel, ok := decodeTenantsParallel([]byte(input), 3); ok && (wantErr != nil || !reflect.DeepEqual(parallel, want)) {
			t.Errorf("%q: on every core %+v; in order %+v, %v", input, parallel, want, wantErr)
		}
	}
	for _, input := range fast {
		if _, ok := decodeTenantsParallel([]byte(input), 3); !ok {
			t.Errorf("%q: not decoded on every core", input)
		}
	}

	// many batches, on more goroutines than batches
	var b strings.Builder
	b.WriteString(`{"tenants": [`)
	for i := range 5*fileBatch + 7 {
		if i > 0 {
			b.WriteString(",\n")
		}
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, `{"domain":"t%d.example.com","provider":"sendgrid"}`, i)
		case 1:
			fmt.Fprintf(&b, `{ "domain": "t%d.example.com", "provider": "customerio", "region": "eu" }`, i)
		case 2:
			fmt.Fprintf(&b, `{"domain":"t%d.example.com","origin":"esp","metadata":{"n":%d}}`, i, i)
		default:
			fmt.Fprintf(&b, `{"domain":"t%d.example.com","provider":"sparkpost","enabled":false}`, i)
		}
	}
	b.WriteString("]}")
	want, err := decodeTenantsInOrder([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 2, 8} {
		got, ok := decodeTenantsParallel([]byte(b.String()), workers)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%d workers: %d tenants, decoded %v, the same as in order %v", workers, len(got), ok, reflect.DeepEqual(got, want))
		}
	}
}

// TestWithSourceFirstErrorInEntryOrder: the tenants of a reload are
// checked on every core, in hash partitions, but the error is the one
// of the first entry at fault, as when they were checked in turn: an
// invalid entry, a duplicate (naming both entries) or a domain of
// another source, whichever comes first, over many batches. Removed
// tenants are removed, whatever their partition and bucket.
func TestWithSourceFirstErrorInEntryOrder(t *testing.T) {
	const n = 3*fileBatch + 100
	resolve := testRoutes("esp")
	file := make([]Tenant, n)
	for i := range file {
		file[i] = Tenant{Domain: fmt.Sprintf("f%d.example.com", i), Provider: "sendgrid"}
	}
	s, err := buildSnapshot([]tenantSource{
		{name: "config", tenants: []Tenant{{Domain: "c.example.com", Origin: "esp"}}},
		{name: "tenants_file t.json", tenants: file},
	}, resolve)
	if err != nil {
		t.Fatal(err)
	}
	with := func(changes map[int]string) []Tenant {
		tenants := slices.Clone(file)
		for i, domain := range changes {
			tenants[i].Domain = domain
		}
		return tenants
	}
	// every 25th tenant removed, in most buckets of the partitions
	var kept []Tenant
	for i, t := range file {
		if i%25 != 0 {
			kept = append(kept, t)
		}
	}
	next, err := s.withSource("tenants_file t.json", kept, resolve)
	if err != nil {
		t.Fatal(err)
	}
	if next.len() != len(kept)+1 {
		t.Errorf("%d tenants after removing every 25th, want %d", next.len(), len(kept)+1)
	}
	for i := range file {
		if _, ok := next.lookup(file[i].Domain); ok != (i%25 != 0) {
			t.Errorf("%s registered: %v", file[i].Domain, ok)
		}
	}

	for _, tc := range []struct {
		changes map[int]string
		wantErr string
	}{
		{map[int]string{9000: "f100.example.com", 9500: "f200.example.com", 10000: "bad..example.com", 11000: "c.example.com"},
			"domain 'f100.example.com' is registered twice: in tenants_file t.json, entry 101 and in tenants_file t.json, entry 9001"},
		{map[int]string{9000: "f9100.example.com", 9500: "f200.example.com"},
			"domain 'f9100.example.com' is registered twice: in tenants_file t.json, entry 9001 and in tenants_file t.json, entry 9101"},
		{map[int]string{9000: "f100.example.com", 8000: "bad..example.com"},
			"tenants_file t.json, entry 8001: domain: 'bad..example.com' is not a valid domain name: idna: invalid label \"bad..example.com\""},
		{map[int]string{9000: "f100.example.com", 7000: "C.example.com"},
			"domain 'c.example.com' is registered twice: in config and in tenants_file t.json, entry 7001"},
	} {
		for range 5 { // the partitions are by a random hash
			if _, err := s.withSource("tenants_file t.json", with(tc.changes), resolve); err == nil || err.Error() != tc.wantErr {
				t.Errorf("%v: %v, want %q", tc.changes, err, tc.wantErr)
				break
			}
		}
	}
}
