package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestProvidersCommand runs `caddy linktrack providers` and checks that
// it prints the whole catalog with each provider's health check.
func TestProvidersCommand(t *testing.T) {
	out, err := caddyCmd(t, "linktrack", "providers", "--json").Output()
	if err != nil {
		t.Fatalf("caddy linktrack providers --json: %v", err)
	}
	var rows []struct {
		Provider, Region, Origin, Check string
		Default                         bool
		CNAME                           []string
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("decoding %s: %v", out, err)
	}
	got, cnames := make(map[string]string), make(map[string]string)
	for _, r := range rows {
		got[r.Provider+" "+r.Region] = r.Origin + " | " + r.Check
		cnames[r.Provider+" "+r.Region] = strings.Join(r.CNAME, " ")
		if r.Provider == "sendgrid" && (r.Region == "global") != r.Default {
			t.Errorf("sendgrid %s: default %v", r.Region, r.Default)
		}
	}
	for key, want := range map[string]string{
		"customerio eu": "https://track-eu.customer.io | GET /health → 200 with body {}",
		"sparkpost us":  "https://spgo.io | GET /f/a/b/c/d → 302",
		"mailgun eu":    "http://eu.mailgun.org | ",
		"iterable us":   "https://links.iterable.com | ",
		"sendgrid eu":   "https://eu.sendgrid.net | ",
	} {
		if !strings.HasPrefix(got[key], want) {
			t.Errorf("%s: %q, want %q", key, got[key], want)
		}
	}
	for key, want := range map[string]string{
		"customerio us": "e.customeriomail.com",
		"sparkpost eu":  "eu.spgo.io eu.v2.spgo.io",
		"ses <an AWS region name such as us-east-1 or eu-west-1>": "r.<region>.awstrack.me",
		"sendgrid global": "sendgrid.net",
	} {
		if cnames[key] != want {
			t.Errorf("%s: CNAME targets %q, want %q", key, cnames[key], want)
		}
	}
	if len(rows) != 11 {
		t.Errorf("%d catalog rows, want 11", len(rows))
	}
	table, err := caddyCmd(t, "linktrack", "providers").Output()
	if err != nil || !strings.Contains(string(table), "sendgrid    global (default)") {
		t.Errorf("table output: %v\n%s", err, table)
	}
}
