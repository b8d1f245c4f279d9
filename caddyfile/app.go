package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-linktrack/caddy-linktrack/linktrack"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("linktrack", parseLinktrackApp)
}

// parseLinktrackApp sets up the linktrack app from the global option;
// see linktrack.App.UnmarshalCaddyfile for the syntax.
func parseLinktrackApp(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the linktrack global option may appear only once")
	}
	app := new(linktrack.App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{
		Name:  "linktrack",
		Value: caddyconfig.JSON(app, nil),
	}, nil
}
