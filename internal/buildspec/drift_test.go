package buildspec

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/mod/modfile"
)

const ourModule = "github.com/caddy-linktrack/caddy-linktrack"

// TestSpecMatchesRepository fails when xcaddy.json, go.mod and
// cmd/caddy/main.go describe different builds.
func TestSpecMatchesRepository(t *testing.T) {
	root := filepath.Join("..", "..")
	spec, err := Load(filepath.Join(root, "xcaddy.json"))
	if err != nil {
		t.Fatal(err)
	}

	goModRaw, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goMod, err := modfile.Parse("go.mod", goModRaw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if goMod.Module.Mod.Path != ourModule {
		t.Errorf("go.mod module is %s, want %s", goMod.Module.Mod.Path, ourModule)
	}
	required := make(map[string]string)
	for _, r := range goMod.Require {
		required[r.Mod.Path] = r.Mod.Version
	}
	if got := required["github.com/caddyserver/caddy/v2"]; got != spec.CaddyVersion {
		t.Errorf("xcaddy.json caddy_version is %s, go.mod requires caddy %s", spec.CaddyVersion, got)
	}

	if spec.Plugins[0].Module != ourModule || spec.Plugins[0].Replace != "." {
		t.Errorf("first plugin must be %s replaced by '.', got %+v", ourModule, spec.Plugins[0])
	}
	for _, p := range spec.Plugins[1:] {
		if got := required[p.Module]; got != p.Version {
			t.Errorf("xcaddy.json wants %s@%s, go.mod requires %q", p.Module, p.Version, got)
		}
	}

	mainFile, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, "cmd", "caddy", "main.go"), nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var imports []string
	for _, imp := range mainFile.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		imports = append(imports, path)
	}
	want := []string{"github.com/caddyserver/caddy/v2/cmd", "github.com/caddyserver/caddy/v2/modules/standard"}
	for _, p := range spec.Plugins {
		want = append(want, p.Module)
	}
	slices.Sort(imports)
	slices.Sort(want)
	if !slices.Equal(imports, want) {
		t.Errorf("cmd/caddy/main.go imports %v; xcaddy.json implies %v", imports, want)
	}
}

func TestLoadRejectsBadSpecs(t *testing.T) {
	for name, content := range map[string]string{
		"not json":        `{`,
		"bad version":     `{"caddy_version":"2.11","plugins":[{"module":"m","replace":"."}]}`,
		"no plugins":      `{"caddy_version":"v2.11.9"}`,
		"version+replace": `{"caddy_version":"v2.11.9","plugins":[{"module":"m","version":"v1","replace":"."}]}`,
		"no module":       `{"caddy_version":"v2.11.9","plugins":[{"version":"v1"}]}`,
	} {
		path := filepath.Join(t.TempDir(), "xcaddy.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); err == nil {
			t.Errorf("%s: expected an error", name)
		}
	}
}

func TestArgs(t *testing.T) {
	spec := &Spec{
		CaddyVersion: "v2.11.9",
		Plugins:      []Plugin{{Module: ourModule, Replace: "."}, {Module: "github.com/x/storage", Version: "v1.2.3"}},
		BuildTags:    []string{"nobadger"},
		BuildFlags:   []string{"-trimpath", "-ldflags=-s -w"},
	}
	gotX := spec.XcaddyArgs("out")
	wantX := []string{"build", "v2.11.9", "--with", ourModule + "@v0.0.0-00010101000000-000000000000=.", "--with", "github.com/x/storage@v1.2.3", "--output", "out"}
	if !slices.Equal(gotX, wantX) {
		t.Errorf("XcaddyArgs = %q, want %q", gotX, wantX)
	}
	gotC := spec.XcaddyCommand("my caddy")
	wantC := `XCADDY_GO_BUILD_FLAGS="-trimpath -ldflags='-s -w' -tags=nobadger" xcaddy build v2.11.9 --with ` +
		ourModule + `@v0.0.0-00010101000000-000000000000=. --with github.com/x/storage@v1.2.3 --output "my caddy"`
	if gotC != wantC {
		t.Errorf("XcaddyCommand =\n%s\nwant\n%s", gotC, wantC)
	}
	if got := spec.XcaddyEnv(); !slices.Equal(got, []string{"XCADDY_GO_BUILD_FLAGS=-trimpath -ldflags='-s -w' -tags=nobadger"}) {
		t.Errorf("XcaddyEnv = %q", got)
	}
	for env, want := range map[string]string{"": "CGO_ENABLED=0", "CGO_ENABLED=1": "CGO_ENABLED=1", "CGO_ENABLED=0": "CGO_ENABLED=0"} {
		environ := []string{"HOME=/h"}
		if env != "" {
			environ = append(environ, env)
		}
		got := GoBuildEnv(environ)
		if got[0] != "HOME=/h" || got[len(got)-1] != want {
			t.Errorf("GoBuildEnv(%q) = %q, want last %s", environ, got, want)
		}
	}
	gotG := spec.GoBuildArgs("out")
	wantG := []string{"build", "-trimpath", "-ldflags=-s -w", "-tags=nobadger", "-o", "out", "./cmd/caddy"}
	if !slices.Equal(gotG, wantG) {
		t.Errorf("GoBuildArgs = %q, want %q", gotG, wantG)
	}
}

// TestShellQuote checks the quoting, and that sh reads each quoted
// word back as the original.
func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"caddy":                      "caddy",
		"./out/caddy":                "./out/caddy",
		ourModule + "@v0.0.0-1=../x": ourModule + "@v0.0.0-1=../x",
		"":                           `""`,
		"my caddy":                   `"my caddy"`,
		"-ldflags='-s -w'":           `"-ldflags='-s -w'"`,
		"a\"$HOME`id`\\":             "\"a\\\"\\$HOME\\`id\\`\\\\\"",
	} {
		got := shellQuote(in)
		if got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
		out, err := exec.Command("sh", "-c", "printf %s "+got).Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if string(out) != in {
			t.Errorf("sh reads %s as %q, want %q", got, out, in)
		}
	}
}
