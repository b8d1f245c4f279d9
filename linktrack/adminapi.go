package linktrack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// MaxTenantBody is the largest body of PUT /linktrack/tenants/<domain>,
// one tenant; a larger one is answered 413.
const MaxTenantBody = 1 << 20

// AdminAPI manages the tenant registry at runtime through Caddy's admin
// endpoint:
//
//	GET    /linktrack/tenants           a page of tenants in domain order, with their source and certificate status
//	POST   /linktrack/tenants           add, replace and remove many tenants in one change
//	GET    /linktrack/tenants/<domain>  one tenant and its certificate state
//	PUT    /linktrack/tenants/<domain>  add or replace a tenant (JSON body)
//	DELETE /linktrack/tenants/<domain>  remove a tenant
//	POST   /linktrack/tenants/<domain>/check  check the tenant now: ownership, DNS readiness and `caddy linktrack check`; revives a stalled tenant
//
// Changes are kept in Caddy's storage, so every node that shares the
// storage serves them; each costs the same whatever the number of
// tenants. Tenants defined in the config or the tenants file are
// read-only here. Every change is logged and emitted as a tenant_change
// event (changelog.go); past change_limit, changes get 429
// (changelimit.go).
type AdminAPI struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.linktrack",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision finds the linktrack app, if the config has one.
func (api *AdminAPI) Provision(ctx caddy.Context) error {
	// core provisions admin routers outside any module's context, where
	// ctx.Logger() would give the unnamed default logger
	api.logger = ctx.Logger(api)
	app, err := ctx.AppIfConfigured("linktrack")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return err
	}
	api.app = app.(*App)
	return nil
}

// Routes returns the admin routes.
func (api *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/linktrack/tenants", Handler: caddy.AdminHandlerFunc(api.handleList)},
		{Pattern: "/linktrack/tenants/", Handler: caddy.AdminHandlerFunc(api.handleTenant)},
	}
}

// tenantView is a tenant as the admin API shows it.
type tenantView struct {
	registeredTenant
	// With ownership_txt: the TXT record that verifies the tenant, and
	// its last check while it is pending.
	Ownership   *ownershipState   `json:"ownership,omitempty"`
	Certificate *certificateState `json:"certificate,omitempty"`
}

// view returns a registered tenant as the admin API shows it: a tenant
// pending ownership has the certificate status pending_ownership.
func (a *App) view(ctx context.Context, rt registeredTenant) tenantView {
	state := a.certs.state(ctx, rt.Domain)
	v := tenantView{registeredTenant: rt, Ownership: a.ownershipView(rt.Domain), Certificate: &state}
	if v.Ownership != nil && v.Ownership.Status == "pending" && state.Status != "valid" && state.Status != "expired" {
		state.Status, state.DNS = statePendingOwnership, nil
	}
	return v
}

func (api *AdminAPI) handleList(w http.ResponseWriter, r *http.Request) error {
	if api.app == nil {
		return errNoApp
	}
	switch r.Method {
	case http.MethodGet:
		q, err := parsePageQuery(r.URL.Query())
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		return writeJSON(w, http.StatusOK, api.app.page(q))
	case http.MethodPost:
		if api.refuseChange(w, r) {
			return nil
		}
		return api.recordChange(w, r, "bulk", api.handleBulk)
	default:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
}

func (api *AdminAPI) handleTenant(w http.ResponseWriter, r *http.Request) error {
	if api.app == nil {
		return errNoApp
	}
	if rest, ok := strings.CutSuffix(r.URL.Path, "/check"); ok && strings.HasPrefix(rest, "/linktrack/tenants/") {
		return api.handleCheck(w, r, strings.TrimPrefix(rest, "/linktrack/tenants/"))
	}
	switch r.Method {
	case http.MethodGet:
		canonical, err := pathDomain(r)
		if err != nil {
			return err
		}
		rt, ok := api.app.registered(canonical)
		if !ok {
			return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: no tenant '%s'", canonical)}
		}
		return writeJSON(w, http.StatusOK, api.app.view(r.Context(), rt))
	case http.MethodPut:
		if api.refuseChange(w, r) {
			return nil
		}
		return api.recordChange(w, r, "put", api.handlePut)
	case http.MethodDelete:
		if api.refuseChange(w, r) {
			return nil
		}
		return api.recordChange(w, r, "delete", api.handleDelete)
	default:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
}

// handleCheck checks a tenant at once (App.checkNow): it revives a
// stalled tenant, checks a tenant pending ownership for its TXT record,
// records its DNS readiness check as a scheduled check would, and runs
// the checks of `caddy linktrack check`. It counts
// against change_limit, as a change does; a second call for a tenant
// whose check runs gets 409, and one past maxChecksAtOnce 429.
func (api *AdminAPI) handleCheck(w http.ResponseWriter, r *http.Request, domain string) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
	canonical, err := CanonicalDomain(domain)
	if err != nil || strings.Contains(domain, "/") {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("domain: the path must be /linktrack/tenants/<domain>/check")}
	}
	if strings.HasPrefix(canonical, "*.") {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("domain: '%s' is a wildcard tenant, whose names are not checked", canonical)}
	}
	rt, ok := api.app.registered(canonical)
	if !ok {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: no tenant '%s'", canonical)}
	}
	if api.refuseChange(w, r) {
		return nil
	}
	switch err := api.app.checks.start(canonical); {
	case errors.Is(err, errCheckRunning):
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("checking '%s': %v", canonical, err)}
	case err != nil:
		w.Header().Set("Retry-After", "1")
		return caddy.APIError{HTTPStatus: http.StatusTooManyRequests, Err: fmt.Errorf("checking '%s': %v", canonical, err)}
	}
	defer api.app.checks.end(canonical)
	return writeJSON(w, http.StatusOK, api.app.checkNow(r.Context(), rt))
}

// pathDomain returns the canonical domain of a /linktrack/tenants/<domain>
// path, or a 400 that names its fault.
func pathDomain(r *http.Request) (string, error) {
	domain := strings.TrimPrefix(r.URL.Path, "/linktrack/tenants/")
	if domain == "" || strings.Contains(domain, "/") {
		return "", caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("domain: the path must be /linktrack/tenants/<domain>")}
	}
	canonical, err := CanonicalDomain(domain)
	if err != nil {
		return "", caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("domain: %v", err)}
	}
	return canonical, nil
}

// changedDomain is pathDomain for a change, which a public suffix may
// not be; the domain, canonical or as sent, is recorded in c.
func changedDomain(r *http.Request, c *tenantChange) (string, error) {
	canonical, err := pathDomain(r)
	if err != nil {
		c.name(strings.TrimPrefix(r.URL.Path, "/linktrack/tenants/"))
		return "", err
	}
	c.name(canonical)
	if err := checkNotPublicSuffix(canonical); err != nil {
		return "", caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("domain: %v", err)}
	}
	return canonical, nil
}

// handlePut adds or replaces the tenant of the path.
func (api *AdminAPI) handlePut(w http.ResponseWriter, r *http.Request, c *tenantChange) error {
	canonical, err := changedDomain(r, c)
	if err != nil {
		return err
	}
	var t Tenant
	if err := decodeBody(w, r, MaxTenantBody, "tenant", &t); err != nil {
		return err
	}
	if t.Domain == "" {
		t.Domain = canonical
	} else if d, err := CanonicalDomain(t.Domain); err != nil || d != canonical {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("domain: '%s' in the body differs from '%s' in the path", shorten(t.Domain), canonical)}
	}
	rt, created, err := api.app.putStored(r.Context(), t)
	if err != nil {
		return changeError(err)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		c.created = 1
	}
	return writeJSON(w, status, api.app.view(r.Context(), rt))
}

// handleDelete removes the tenant of the path.
func (api *AdminAPI) handleDelete(w http.ResponseWriter, r *http.Request, c *tenantChange) error {
	canonical, err := changedDomain(r, c)
	if err != nil {
		return err
	}
	found, err := api.app.deleteStored(r.Context(), canonical)
	if err != nil {
		return changeError(err)
	}
	if !found {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: no tenant '%s'", canonical)}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// decodeBody decodes the JSON body of a change, what, into v. It
// answers 415 for a content type other than application/json (a
// request that sends none is taken as JSON), 413 for a body over limit
// bytes, and 400 for an empty body, one that is not JSON, names an
// unknown field or has data after the JSON value.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, what string, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return caddy.APIError{HTTPStatus: http.StatusUnsupportedMediaType, Err: fmt.Errorf("content type '%s': send application/json", shorten(ct))}
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			return nil
		} else if err == nil {
			err = errors.New("data after the JSON value")
		}
	}
	var tooLarge *http.MaxBytesError
	var wrongType *json.UnmarshalTypeError
	switch {
	case errors.As(err, &wrongType) && wrongType.Field != "":
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("decoding %s: %s: must be a JSON %s, not %s", what, wrongType.Field, wrongType.Type, wrongType.Value)}
	case errors.As(err, &tooLarge):
		return caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("decoding %s: the body exceeds the limit of %d bytes", what, limit)}
	case err == io.EOF:
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("decoding %s: the body is empty", what)}
	default:
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("decoding %s: %v", what, err)}
	}
}

var errNoApp = caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("the linktrack app is not configured")}

// changeError maps a failed change to its status: 409 for a tenant
// owned by another source, 400 for an invalid tenant (the message names
// the field), 503 for a storage failure, with its cause; the registry
// in use is kept.
func changeError(err error) error {
	switch {
	case errors.Is(err, errConflict):
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: err}
	case errors.Is(err, errStorage):
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	default:
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var (
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
