package linktrack

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
)

// tenantsFileContent is the schema of a tenants file.
type tenantsFileContent struct {
	Tenants []Tenant `json:"tenants"`
}

// tenantsFile is the tenants file as last read successfully.
type tenantsFile struct {
	path    string
	modTime time.Time
	size    int64
	sum     [sha256.Size]byte
	tenants []Tenant
}

// changed reports whether the file may differ from what was last read.
func (f *tenantsFile) changed() bool {
	info, err := os.Stat(f.path)
	if err != nil {
		return true // let read report it
	}
	return !info.ModTime().Equal(f.modTime) || info.Size() != f.size
}

// read reads and decodes the file. It reports whether the content
// differs from what was read before; on error f is left unchanged.
func (f *tenantsFile) read() (bool, error) {
	info, err := os.Stat(f.path)
	if err != nil {
		return false, err
	}
	raw, err := os.ReadFile(f.path)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(raw)
	if sum == f.sum && f.tenants != nil {
		f.modTime, f.size = info.ModTime(), info.Size()
		return false, nil
	}
	var content tenantsFileContent
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&content); err != nil {
		return false, fmt.Errorf("decoding %s: %v", f.path, err)
	}
	if content.Tenants == nil {
		return false, fmt.Errorf("decoding %s: no \"tenants\" list", f.path)
	}
	f.modTime, f.size, f.sum, f.tenants = info.ModTime(), info.Size(), sum, content.Tenants
	return true, nil
}

// watchFile checks the tenants file every FileCheckInterval and swaps
// in a new registry when its content changed and is valid. An invalid
// file keeps the registry in use; the failure is logged with the path,
// the entry and the field, and counted.
func (a *App) watchFile() {
	defer a.stopped.Done()
	ticker := time.NewTicker(time.Duration(a.FileCheckInterval))
	defer ticker.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-ticker.C:
		}
		if !a.file.changed() {
			continue
		}
		a.reloadFile()
	}
}

// reloadFile rebuilds the registry from the tenants file.
func (a *App) reloadFile() {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	previous := *a.file
	changed, err := a.file.read()
	if err == nil && !changed {
		return
	}
	var s *snapshot
	if err == nil {
		s, err = a.build()
	}
	if err != nil {
		*a.file = previous
		// remember the broken version so it is not re-read every tick
		if info, statErr := os.Stat(a.file.path); statErr == nil {
			a.file.modTime, a.file.size = info.ModTime(), info.Size()
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
