package linktrack

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	"go.uber.org/zap"
)

// tenantsFileContent is the schema of a tenants file.
type tenantsFileContent struct {
	Tenants []Tenant `json:"tenants"`
}

// decodeTenants decodes a tenants file: {"tenants": [...]}, nothing
// else. A file of the usual shape is decoded on every core (see
// decodeTenantsParallel); any other, or one with an error, by
// decodeTenantsInOrder, which names the entry at fault.
func decodeTenants(raw []byte) ([]Tenant, error) {
	if tenants, ok := decodeTenantsParallel(raw, runtime.GOMAXPROCS(0)); ok {
		return tenants, nil
	}
	return decodeTenantsInOrder(raw)
}

// decodeTenantsInOrder decodes a tenants file with encoding/json, entry
// by entry, which for a million tenants is faster than decoding it
// whole.
func decodeTenantsInOrder(raw []byte) ([]Tenant, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	expect := func(want json.Delim) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if tok != want {
			return fmt.Errorf("expected %q, found %v", want, tok)
		}
		return nil
	}
	if err := expect('{'); err != nil {
		return nil, err
	}
	var tenants []Tenant
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if tok != "tenants" {
			return nil, fmt.Errorf("unknown field %q; a tenants file holds only \"tenants\"", tok)
		}
		if tenants != nil {
			return nil, fmt.Errorf("\"tenants\" given twice")
		}
		if err := expect('['); err != nil {
			return nil, fmt.Errorf("tenants: %v", err)
		}
		tenants = make([]Tenant, 0, len(raw)/80)
		for dec.More() {
			var t Tenant
			if err := dec.Decode(&t); err != nil {
				return nil, fmt.Errorf("tenants entry %d: %v", len(tenants)+1, err)
			}
			tenants = append(tenants, t)
		}
		if err := expect(']'); err != nil {
			return nil, err
		}
	}
	if err := expect('}'); err != nil {
		return nil, err
	}
	if tenants == nil {
		return nil, fmt.Errorf("no \"tenants\" list")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the tenants object")
	}
	return slices.Clip(tenants), nil
}

// tenantsFile is the state of the tenants file as last read
// successfully. The tenants themselves live only in the registry.
type tenantsFile struct {
	path    string
	modTime time.Time
	size    int64
	sum     [sha256.Size]byte
	read1   bool // read successfully at least once
	missing bool // the file was missing at the last check
}

// changed reports whether the file may differ from what was last read.
func (f *tenantsFile) changed() bool {
	info, err := os.Stat(f.path)
	if err != nil {
		return !f.missing // report a missing file once
	}
	return f.missing || !info.ModTime().Equal(f.modTime) || info.Size() != f.size
}

// read reads and decodes the file. It returns nil tenants if the
// content is the same as before; on error f is left unchanged.
func (f *tenantsFile) read() ([]Tenant, error) {
	info, err := os.Stat(f.path)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	if sum == f.sum && f.read1 {
		f.modTime, f.size = info.ModTime(), info.Size()
		return nil, nil
	}
	tenants, err := decodeTenants(raw)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %v", f.path, err)
	}
	f.modTime, f.size, f.sum, f.read1, f.missing = info.ModTime(), info.Size(), sum, true, false
	return tenants, nil
}

// reloadFile rebuilds the registry from the tenants file.
func (a *App) reloadFile() {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	previous := *a.file
	tenants, err := a.file.read()
	if err == nil && tenants == nil {
		return // same content
	}
	var s *snapshot
	if err == nil {
		s, err = a.snapshot().withSource(a.fileSource(), tenants, a.resolve)
	}
	if err != nil {
		*a.file = previous
		// remember the broken version, or the file's absence, so that it
		// is not re-read and reported every tick
		if info, statErr := os.Stat(a.file.path); statErr == nil {
			a.file.modTime, a.file.size, a.file.missing = info.ModTime(), info.Size(), false
		} else {
			a.file.missing = true
		}
		a.metrics.reloads.WithLabelValues("tenants_file", "error").Inc()
		a.logger.Error("tenants file rejected; keeping the registry in use",
			zap.String("path", a.file.path),
			zap.Int("tenants_in_use", a.snapshot().len()),
			zap.Error(err))
		return
	}
	a.metrics.reloads.WithLabelValues("tenants_file", "ok").Inc()
	a.swap(s, "tenants_file")
}
