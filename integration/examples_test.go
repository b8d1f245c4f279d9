package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestExamples checks every example: its Caddyfile adapts to exactly its
// caddy.json, and `caddy validate` provisions both, app-link files and
// transport options included.
func TestExamples(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("..", "examples", "*", "Caddyfile"))
	if err != nil || len(dirs) < 5 {
		t.Fatalf("expected at least 5 examples, found %d (%v)", len(dirs), err)
	}
	for _, caddyfile := range dirs {
		dir, err := filepath.Abs(filepath.Dir(caddyfile))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(dir), func(t *testing.T) {
			cmd := caddyCmd(t, "adapt", "--config", "Caddyfile")
			cmd.Dir = dir
			adapted, err := cmd.Output()
			if err != nil {
				t.Fatalf("caddy adapt: %v", err)
			}
			wantRaw, err := os.ReadFile(filepath.Join(dir, "caddy.json"))
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			if err := json.Unmarshal(adapted, &got); err != nil {
				t.Fatalf("adapted config: %v", err)
			}
			if err := json.Unmarshal(wantRaw, &want); err != nil {
				t.Fatalf("caddy.json: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Caddyfile adapts to\n%s\nbut caddy.json holds\n%s", adapted, wantRaw)
			}

			for _, args := range [][]string{
				{"validate", "--config", "Caddyfile"},
				{"validate", "--config", "caddy.json"},
			} {
				cmd := caddyCmd(t, args...)
				cmd.Dir = dir
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("caddy %v: %v\n%s", args, err, out)
				}
			}
		})
	}
}

// TestValidateRejectsBadAppLinkFile checks that a broken app-link file
// is a config error naming the field.
func TestValidateRejectsBadAppLinkFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "aasa"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	caddyfile := "link.example.com {\n\tlinktrack sendgrid {\n\t\tapple_app_site_association aasa\n\t}\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := caddyCmd(t, "validate", "--config", "Caddyfile")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("validate accepted an invalid app-link file:\n%s", out)
	}
	if want := "apple_app_site_association: file 'aasa' does not hold valid JSON"; !strings.Contains(string(out), want) {
		t.Errorf("validate output lacks %q:\n%s", want, out)
	}
}
