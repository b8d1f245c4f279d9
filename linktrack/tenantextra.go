package linktrack

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MaxMetadataSize is the largest metadata object a tenant carries, in
// bytes of compact JSON.
const MaxMetadataSize = 4 << 10

// tenantExtra is what few tenants carry beyond their route: a disabled
// flag, metadata, an ownership token. A registry entry points to it, or
// to nothing for the common tenant, so that a million tenants cost a
// pointer each for it.
type tenantExtra struct {
	disabled          bool
	ownershipVerified bool
	ownershipToken    string
	metadata          json.RawMessage // compact
}

// newTenantExtra checks a tenant's extra fields and returns them, or nil
// when the tenant carries none. An error names the field.
func newTenantExtra(t Tenant) (*tenantExtra, error) {
	x := tenantExtra{
		disabled:          t.Enabled != nil && !*t.Enabled,
		ownershipVerified: t.OwnershipVerified,
		ownershipToken:    t.OwnershipToken,
	}
	if len(t.Metadata) > 0 && !bytes.Equal(t.Metadata, []byte("null")) {
		metadata, err := compactMetadata(t.Metadata)
		if err != nil {
			return nil, fmt.Errorf("metadata: %v", err)
		}
		x.metadata = metadata
	}
	if x.ownershipToken != "" && !validOwnershipToken(x.ownershipToken) {
		return nil, fmt.Errorf("ownership_token: must be 16 to 255 letters, digits, '-' or '_'")
	}
	if !x.disabled && !x.ownershipVerified && x.ownershipToken == "" && x.metadata == nil {
		return nil, nil
	}
	return &x, nil
}

// compactMetadata returns a metadata value in compact form, if it is a
// JSON object of at most MaxMetadataSize bytes so.
func compactMetadata(raw json.RawMessage) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return nil, fmt.Errorf("must be a JSON object")
	}
	if buf.Len() > MaxMetadataSize {
		return nil, fmt.Errorf("%d bytes of compact JSON; at most %d", buf.Len(), MaxMetadataSize)
	}
	return json.RawMessage(bytes.Clone(buf.Bytes())), nil
}

// validOwnershipToken reports whether a token can be a TXT value as is:
// long enough not to be guessed, short enough for one TXT string.
func validOwnershipToken(token string) bool {
	if len(token) < 16 || len(token) > 255 {
		return false
	}
	for _, c := range []byte(token) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// fill sets a tenant's extra fields, as configured, from x.
func (x *tenantExtra) fill(t *Tenant) {
	if x == nil {
		return
	}
	if x.disabled {
		enabled := false
		t.Enabled = &enabled
	}
	t.Metadata = x.metadata
	t.OwnershipVerified = x.ownershipVerified
	t.OwnershipToken = x.ownershipToken
}

// isDisabled reports whether the tenant is disabled.
func (x *tenantExtra) isDisabled() bool {
	return x != nil && x.disabled
}
