package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/redistest"
	"github.com/caddy-linktrack/caddy-linktrack/internal/buildspec"
)

// backend is a storage that the nodes of a cluster share: the Caddy
// binary that has its module and the Caddyfile's storage option.
type backend struct {
	name string
	bin  string
	// option is the global option, e.g. "storage file_system /path".
	option string
	// dir is the file_system storage's directory; redis the Redis
	// server.
	dir   string
	redis *redistest.Server
}

// backendNames are the backends the cluster tests run on.
var backendNames = []string{"file_system", "redis"}

// newBackend returns a fresh, empty storage of the kind name in dir.
func newBackend(t *testing.T, name, dir string) *backend {
	t.Helper()
	switch name {
	case "file_system":
		storage := filepath.Join(dir, "storage")
		return &backend{name: name, bin: caddyBin, option: "storage file_system " + storage, dir: storage}
	case "redis":
		srv := redistest.Start(t)
		return &backend{name: name, bin: redisCaddy(t), redis: srv, option: fmt.Sprintf(`storage linktrack_test_redis {
		address %s
		timeout 1s
		lock_ttl 5s
		lock_refresh 2s
	}`, srv.Addr())}
	}
	t.Fatalf("no backend %q", name)
	return nil
}

// forEachBackend runs test once per backend, as a subtest named after
// it.
func forEachBackend(t *testing.T, test func(t *testing.T, kind string)) {
	for _, name := range backendNames {
		t.Run(name, func(t *testing.T) { test(t, name) })
	}
}

var (
	redisCaddyOnce sync.Once
	redisCaddyBin  string
	redisCaddyErr  error
)

// redisCaddy returns the test Caddy with the Redis storage module,
// integration/internal/rediscaddy, built once per test run with the
// flags of xcaddy.json, on first use. It shares Go's build cache with
// the Caddy of TestMain, so it compiles little more than the module.
func redisCaddy(t testing.TB) string {
	t.Helper()
	redistest.Binary(t) // no Redis, no need for this Caddy
	redisCaddyOnce.Do(func() {
		spec, err := buildspec.Load(filepath.Join("..", "xcaddy.json"))
		if err != nil {
			redisCaddyErr = err
			return
		}
		bin := filepath.Join(filepath.Dir(caddyBin), "caddy-redis")
		args := spec.GoBuildArgs(bin)
		args[len(args)-1] = "./integration/internal/rediscaddy"
		build := exec.Command("go", args...)
		build.Dir = ".."
		build.Env = buildspec.GoBuildEnv(os.Environ())
		out, err := build.CombinedOutput()
		if err != nil {
			redisCaddyErr = fmt.Errorf("building the Redis Caddy: %v\n%s", err, out)
			return
		}
		redisCaddyBin = bin
	})
	if redisCaddyErr != nil {
		t.Fatal(redisCaddyErr)
	}
	return redisCaddyBin
}
