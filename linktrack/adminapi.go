package linktrack

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI manages the tenant registry at runtime through Caddy's admin
// endpoint:
//
//	GET    /linktrack/tenants           a page of tenants in domain order, with their source and certificate status
//	POST   /linktrack/tenants           add, replace and remove many tenants in one change
//	GET    /linktrack/tenants/<domain>  one tenant and its certificate state
//	PUT    /linktrack/tenants/<domain>  add or replace a tenant (JSON body)
//	DELETE /linktrack/tenants/<domain>  remove a tenant
//
// Changes are kept in Caddy's storage, so every node that shares the
// storage serves them; each costs the same whatever the number of
// tenants. Tenants defined in the config or the tenants file are
// read-only here.
type AdminAPI struct {
	app *App
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
	Certificate *certificateState `json:"certificate,omitempty"`
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
		return api.handleBulk(w, r)
	default:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
}

func (api *AdminAPI) handleTenant(w http.ResponseWriter, r *http.Request) error {
	if api.app == nil {
		return errNoApp
	}
	domain := strings.TrimPrefix(r.URL.Path, "/linktrack/tenants/")
	if domain == "" || strings.Contains(domain, "/") {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("domain: the path must be /linktrack/tenants/<domain>")}
	}
	canonical, err := CanonicalDomain(domain)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("domain: %v", err)}
	}

	switch r.Method {
	case http.MethodGet:
		rt, ok := api.app.registered(canonical)
		if !ok {
			return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: no tenant '%s'", canonical)}
		}
		state := api.app.certs.state(r.Context(), canonical)
		return writeJSON(w, http.StatusOK, tenantView{registeredTenant: rt, Certificate: &state})

	case http.MethodPut:
		var t Tenant
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("decoding tenant: %v", err)}
		}
		if t.Domain == "" {
			t.Domain = canonical
		} else if d, err := CanonicalDomain(t.Domain); err != nil || d != canonical {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("domain: '%s' in the body differs from '%s' in the path", t.Domain, canonical)}
		}
		rt, created, err := api.app.putStored(r.Context(), t)
		if err != nil {
			return changeError(err)
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		state := api.app.certs.state(r.Context(), rt.Domain)
		return writeJSON(w, status, tenantView{registeredTenant: rt, Certificate: &state})

	case http.MethodDelete:
		found, err := api.app.deleteStored(r.Context(), canonical)
		if err != nil {
			return changeError(err)
		}
		if !found {
			return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: no tenant '%s'", canonical)}
		}
		w.WriteHeader(http.StatusNoContent)
		return nil

	default:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
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
