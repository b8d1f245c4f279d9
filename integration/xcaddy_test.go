package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/internal/buildspec"
)

// xcaddyPkg is xcaddy as users install it, from the module proxy at a
// pinned version: `go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5`.
// It is not a tool dependency in go.mod, which would build it with our
// versions of its dependencies rather than its own.
const (
	xcaddyPkg     = "github.com/caddyserver/xcaddy/cmd/xcaddy"
	xcaddyVersion = "v0.4.5"
	ourModule     = "github.com/caddy-linktrack/caddy-linktrack"
)

// TestXcaddyBuild runs the xcaddy command that `buildspec xcaddy` prints
// for a checkout, and the README shows, through sh with the real xcaddy,
// and checks that the Caddy it builds has every module of this
// repository, from this checkout. It shares the module and build caches
// of the rest of the run.
func TestXcaddyBuild(t *testing.T) {
	spec, err := buildspec.Load(filepath.Join("..", "xcaddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := linktrackModules(t)

	ctx := t.Context()
	if deadline, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-30*time.Second))
		defer cancel()
	}

	start := time.Now()
	bin := t.TempDir()
	install := exec.CommandContext(ctx, "go", "install", xcaddyPkg+"@"+xcaddyVersion)
	install.Env = append(os.Environ(), "GOBIN="+bin)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("installing xcaddy %s from the module proxy: %v\n%s", xcaddyVersion, err, out)
	}
	t.Logf("xcaddy %s installed in %v", xcaddyVersion, time.Since(start).Round(time.Second))

	start = time.Now()
	output := filepath.Join(t.TempDir(), "caddy")
	line := spec.XcaddyCommand(output)
	build := exec.CommandContext(ctx, "sh", "-c", line)
	build.Dir = ".."
	build.Env = append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TMPDIR="+t.TempDir(), // xcaddy's build module
		"GIT_TERMINAL_PROMPT=0",
	)
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("xcaddy failed to build the checkout with the command of `go run ./cmd/buildspec xcaddy` (%v):\n%s\n\nxcaddy's output, last lines:\n%s",
			err, line, lastLines(out, 60))
	}
	t.Logf("xcaddy built Caddy in %v", time.Since(start).Round(time.Second))

	got := make(map[string]listedModule)
	for _, m := range listModules(t, output) {
		got[m.Name] = m
	}
	for _, id := range want {
		m, ok := got[id]
		switch {
		case !ok:
			t.Errorf("the xcaddy build lacks module %s", id)
		case m.Package != ourModule || m.Version != buildspec.LocalVersion:
			t.Errorf("module %s comes from %s@%s, want %s@%s from the checkout", id, m.Package, m.Version, ourModule, buildspec.LocalVersion)
		}
	}

	// The two builds of xcaddy.json list the same modules.
	xcaddyList, err := exec.Command(output, "list-modules").Output()
	if err != nil {
		t.Fatalf("%s list-modules: %v", output, err)
	}
	goList, err := caddyCmd(t, "list-modules").Output()
	if err != nil {
		t.Fatalf("caddy list-modules: %v", err)
	}
	if string(xcaddyList) != string(goList) {
		t.Errorf("the xcaddy build lists\n%s\nthe go build of ./cmd/caddy lists\n%s", xcaddyList, goList)
	}
}

// listedModule is one entry of `caddy list-modules --json`.
type listedModule struct {
	Name    string `json:"module_name"`
	Type    string `json:"module_type"`
	Version string `json:"version"`
	Package string `json:"package_url"`
}

func listModules(t *testing.T, caddy string) []listedModule {
	t.Helper()
	out, err := exec.Command(caddy, "list-modules", "--json").Output()
	if err != nil {
		t.Fatalf("%s list-modules --json: %v", caddy, err)
	}
	var modules []listedModule
	if err := json.Unmarshal(out, &modules); err != nil {
		t.Fatalf("decoding list-modules --json: %v\n%s", err, out)
	}
	return modules
}

// linktrackModules returns the IDs of the modules this repository
// registers: the non-standard modules of the Caddy built from it whose
// package is in the main module, checked against the number of
// caddy.RegisterModule calls in its source outside integration/, so
// that a module not imported by the plugin is caught too.
func linktrackModules(t *testing.T) []string {
	t.Helper()
	var ids []string
	for _, m := range listModules(t, caddyBin) {
		if m.Type == "non-standard" && m.Package == "" {
			ids = append(ids, m.Name)
		}
	}

	register := regexp.MustCompile(`\bcaddy\.RegisterModule\(`)
	calls := 0
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// integration/ holds test-only modules, never in the shipped build
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "integration" || strings.HasPrefix(d.Name(), ".") && path != "..") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		calls += len(register.FindAll(src, -1))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) == 0 || len(ids) != calls {
		t.Fatalf("the Caddy built from this repository lists %d modules of it, %v, but its source makes %d caddy.RegisterModule calls", len(ids), ids, calls)
	}
	slices.Sort(ids)
	return ids
}

// lastLines returns at most the last n lines of out.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
