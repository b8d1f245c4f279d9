package linktrack

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "linktrack",
		Short: "Commands for linktrack, the email link-tracking proxy",
		Long: `
Commands for linktrack, the plugin that serves an email provider's click and
open tracking links on a branded domain.
`,
		CobraFunc: func(cmd *cobra.Command) {
			providersCmd := &cobra.Command{
				Use:   "providers [--json]",
				Short: "Lists the provider catalog: regions, origins and health checks",
				Long: `
Lists every provider and region linktrack knows, the tracking origin each one
forwards to, and the provider's own check of a tracking domain, which
'caddy linktrack check' runs.
`,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdProviders),
			}
			providersCmd.Flags().Bool("json", false, "Print JSON")
			cmd.AddCommand(providersCmd)
		},
	})
}

// catalogRow is one provider and region of the catalog.
type catalogRow struct {
	Provider string `json:"provider"`
	Region   string `json:"region"`
	Default  bool   `json:"default,omitempty"`
	Origin   string `json:"origin"`
	Check    string `json:"check,omitempty"`
}

func catalogRows() []catalogRow {
	var rows []catalogRow
	for _, p := range Providers() {
		check := ""
		if p.Check != nil {
			check = p.Check.Method + " " + p.Check.Path + " → " + p.Check.Expect
			if !p.Check.Confirmed {
				check += " (unconfirmed: warns)"
			}
		}
		regions := p.RegionNames()
		if regions == nil {
			regions = []string{"<" + p.RegionHelp + ">"}
		}
		for _, region := range regions {
			origin := "https://r.<region>.awstrack.me"
			if u, _, err := p.Origin(region); err == nil {
				origin = u.String()
			}
			rows = append(rows, catalogRow{Provider: p.Name, Region: region, Default: region == p.DefaultRegion, Origin: origin, Check: check})
		}
	}
	return rows
}

func cmdProviders(fl caddycmd.Flags) (int, error) {
	rows := catalogRows()
	if fl.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "\t")
		if err := enc.Encode(rows); err != nil {
			return 1, err
		}
		return 0, nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROVIDER\tREGION\tORIGIN\tHEALTH CHECK")
	for _, r := range rows {
		region := r.Region
		if r.Default {
			region += " (default)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Provider, region, r.Origin, strings.TrimSpace(r.Check))
	}
	return 0, w.Flush()
}
