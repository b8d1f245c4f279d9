package linktrack

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/caddy-linktrack/caddy-linktrack/internal/tenantstore"
)

// storedTenant decodes a stored record. Records are stored as
// json.Marshal writes a Tenant, compacted: most are a flat object of
// plain strings, which decodePlainTenant reads without encoding/json's
// reflection, about the half of a start-up's work at 1,000,000
// tenants. Any other value (app links, an escape, an unknown or
// differently cased field) is decoded by encoding/json, with the same
// result.
func storedTenant(r tenantstore.Record) (Tenant, error) {
	t, ok := decodePlainTenant(r.Value)
	if !ok {
		t = Tenant{}
		if err := json.Unmarshal(r.Value, &t); err != nil {
			return Tenant{}, fmt.Errorf("stored tenant '%s': %v", r.Domain, err)
		}
	}
	t.Domain = r.Domain
	return t, nil
}

// decodePlainTenant reads a compact JSON object whose fields are among
// domain, provider, region and origin, each a string without escapes.
// It reports false for anything else.
func decodePlainTenant(v []byte) (Tenant, bool) {
	var t Tenant
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return t, false
	}
	v = v[1 : len(v)-1]
	for len(v) > 0 {
		key, rest, ok := plainString(v)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return t, false
		}
		value, rest, ok := plainString(rest[1:])
		if !ok {
			return t, false
		}
		switch string(key) {
		case "domain":
			// the record's key is the domain
		case "provider":
			t.Provider = string(value)
		case "region":
			t.Region = string(value)
		case "origin":
			t.Origin = string(value)
		default:
			return t, false
		}
		if len(rest) > 0 {
			if rest[0] != ',' || len(rest) == 1 {
				return t, false
			}
			rest = rest[1:]
		}
		v = rest
	}
	return t, true
}

// plainString reads a JSON string at the start of v that holds no
// escape or control character, and returns its content and what
// follows it.
func plainString(v []byte) (s, rest []byte, ok bool) {
	if len(v) == 0 || v[0] != '"' {
		return nil, nil, false
	}
	end := bytes.IndexByte(v[1:], '"')
	if end < 0 {
		return nil, nil, false
	}
	s = v[1 : 1+end]
	for _, c := range s {
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, nil, false
		}
	}
	return s, v[2+end:], true
}
