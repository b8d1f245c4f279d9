package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddy-linktrack/caddy-linktrack/internal/buildspec"
)

// TestReadmeJSON validates every JSON block of the README with the
// built Caddy: a whole config as it stands, a lone handler inside a
// minimal site, a tenants file as the tenants_file of an app that
// defines the origin esp.
func TestReadmeJSON(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d JSON blocks in the README", len(blocks))
	}
	// the webhook's secret placeholder, read when the config loads
	t.Setenv("LINKTRACK_WEBHOOK_SECRET", "readme-test")
	for i, block := range blocks {
		var doc map[string]any
		if err := json.Unmarshal(block[1], &doc); err != nil {
			t.Errorf("README JSON block %d does not parse: %v", i+1, err)
			continue
		}
		dir := t.TempDir()
		if doc["tenants"] != nil {
			tenantsFile := filepath.Join(dir, "tenants.json")
			if err := os.WriteFile(tenantsFile, block[1], 0o600); err != nil {
				t.Fatal(err)
			}
			doc = map[string]any{"apps": map[string]any{"linktrack": map[string]any{
				"origins":      map[string]any{"esp": map[string]any{"upstream": "https://10.0.0.5"}},
				"tenants_file": tenantsFile,
			}}}
		}
		if doc["handler"] != nil {
			doc = map[string]any{"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
				"srv0": map[string]any{"listen": []string{":443"}, "routes": []any{map[string]any{"handle": []any{doc}}}},
			}}}}
		}
		config, _ := json.Marshal(doc)
		path := filepath.Join(dir, "caddy.json")
		if err := os.WriteFile(path, config, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := caddyCmd(t, "validate", "--config", path)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("README JSON block %d is not a valid config: %v\n%s", i+1, err, out)
		}
	}
}

// TestReadmeSyntaxMatchesDocs checks that the README's syntax blocks
// are the ones in the UnmarshalCaddyfile doc comments, which become the
// module docs.
func TestReadmeSyntaxMatchesDocs(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, first string }{
		{"caddyfile.go", "linktrack [<provider> [<region>]] {"},
		{"app_caddyfile.go", "linktrack {"},
		{"webhook_caddyfile.go", "linktrack_webhook [<url...>] {"},
	} {
		src, err := os.ReadFile(filepath.Join("..", "linktrack", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		var block []string
		in := false
		for _, line := range strings.Split(string(src), "\n") {
			text, ok := strings.CutPrefix(line, "//\t")
			if ok && text == tc.first {
				in = true
			}
			if !in {
				continue
			}
			if line == "//" {
				text, ok = "", true // a blank line inside the block
			}
			if !ok {
				break
			}
			block = append(block, text)
			if text == "}" {
				break
			}
		}
		if len(block) < 3 {
			t.Fatalf("%s: no syntax block starting %q", tc.file, tc.first)
		}
		want := "```\n" + strings.Join(block, "\n") + "\n```"
		if !strings.Contains(string(readme), want) {
			t.Errorf("README lacks the syntax block of %s:\n%s", tc.file, want)
		}
	}
}

// TestReadmeNamesTests checks that every README sentence that says
// "tested" names the test or test file that asserts it, and that every
// test the README names in backticks exists (a subtest: in its test's
// file).
func TestReadmeNamesTests(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	testName := regexp.MustCompile("`((?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*)(?:/([A-Za-z0-9_ -]+))?`")
	testFile := regexp.MustCompile("`[A-Za-z0-9_/.-]+_test\\.go`")
	// sentences, table cells and list items
	for _, sentence := range regexp.MustCompile(`\.\s|\n\s*\n|\||\n\s*- `).Split(string(readme), -1) {
		if regexp.MustCompile(`(?i)\btested\b`).MatchString(sentence) &&
			!testName.MatchString(sentence) && !testFile.MatchString(sentence) {
			t.Errorf("README says tested but names no test: %q", strings.Join(strings.Fields(sentence), " "))
		}
	}

	sources := map[string]string{} // test file path: content
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, "_test.go") {
			raw, err := os.ReadFile(path)
			sources[path] = string(raw)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	names := testName.FindAllStringSubmatch(string(readme), -1)
	if len(names) == 0 {
		t.Fatal("the README names no test")
	}
	for _, m := range names {
		found := false
		for _, src := range sources {
			if strings.Contains(src, "\nfunc "+m[1]+"(") && (m[2] == "" || strings.Contains(src, `"`+m[2]+`"`)) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("the README names %s, which no test file defines", strings.Trim(m[0], "`"))
		}
	}
}

// TestReadmeBuilding checks the README's build commands against
// xcaddy.json, and its list of modules against the Caddy built from it.
func TestReadmeBuilding(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := buildspec.Load(filepath.Join("..", "xcaddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	modules, err := caddyCmd(t, "list-modules", "--skip-standard").Output()
	if err != nil {
		t.Fatalf("caddy list-modules: %v", err)
	}
	for _, want := range []string{
		"(`go install " + xcaddyPkg + "@" + xcaddyVersion + "`)",
		"```sh\nxcaddy build " + spec.CaddyVersion + " --with " + ourModule + "\n```",
		"```sh\n$ go run ./cmd/buildspec xcaddy\n" + spec.XcaddyCommand("caddy") + "\n```",
		"```sh\n$ ./caddy list-modules --skip-standard\n" + string(modules) + "```",
	} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README lacks:\n%s", want)
		}
	}
}
