package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/internal/buildspec"
)

// caddyBin is the Caddy binary built from this repository, as
// xcaddy.json describes, once per test run.
var caddyBin string

func TestMain(m *testing.M) {
	if addr := os.Getenv(lockHolderEnv); addr != "" {
		os.Exit(runLockHolder(addr)) // a child of TestRedisLockHolderKilled
	}
	if spec := os.Getenv(stormEnv); spec != "" {
		os.Exit(runStorm(spec)) // a child of TestChangeStorm
	}
	dir, err := os.MkdirTemp("", "linktrack-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		spec, err := buildspec.Load(filepath.Join("..", "xcaddy.json"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		caddyBin = filepath.Join(dir, "caddy")
		build := exec.Command("go", spec.GoBuildArgs(caddyBin)...)
		build.Dir = ".."
		build.Env = buildspec.GoBuildEnv(os.Environ())
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building caddy: %v\n", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// controlClient sends the tests' calls to the control APIs of the
// processes they start: Caddy's admin API, the mock DNS server's
// management API. Those processes come and go, and one may get a port
// another had before; an idle connection kept from the earlier process
// would meet the later one dead, and a POST on it fails with EOF rather
// than being sent again. So it keeps no connection.
var controlClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// freePort returns a loopback TCP port that was free a moment ago and
// that no other call in this run returned: the kernel may hand a port
// just closed to the next listener, and a config given the same port
// for two purposes (http_port and https_port) fails to load.
func freePort(t testing.TB) int {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		givenPorts.Lock()
		_, given := givenPorts.m[port]
		givenPorts.m[port] = struct{}{}
		givenPorts.Unlock()
		if !given {
			return port
		}
	}
}

// givenPorts are the ports freePort has returned in this run.
var givenPorts = struct {
	sync.Mutex
	m map[int]struct{}
}{m: make(map[int]struct{})}

// caddyCmd runs the built Caddy with a private environment: its own
// data and config directories, so no state leaks between tests.
func caddyCmd(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	return caddyCmdOf(t, caddyBin, args...)
}

// caddyCmdOf is caddyCmd with the Caddy binary bin.
func caddyCmdOf(t testing.TB, bin string, args ...string) *exec.Cmd {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
	)
	return cmd
}

// caddyProcess is a running Caddy whose JSON log lines are collected.
type caddyProcess struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line
	ready   chan struct{}
	done    chan struct{}
}

// startCaddy writes config to a file and runs `caddy run` on it. It
// returns once Caddy logs that it serves the configuration, i.e. after
// every listener is bound; it fails the test if Caddy exits first.
func startCaddy(t testing.TB, adapter, config string) *caddyProcess {
	t.Helper()
	return startCaddyOf(t, caddyBin, adapter, config)
}

// startCaddyOf is startCaddy with the Caddy binary bin.
func startCaddyOf(t testing.TB, bin, adapter, config string) *caddyProcess {
	t.Helper()
	return startCaddyEnv(t, bin, adapter, config)
}

// startCaddyEnv is startCaddyOf with more environment variables
// (NAME=value).
func startCaddyEnv(t testing.TB, bin, adapter, config string, env ...string) *caddyProcess {
	t.Helper()
	name := "caddy.json"
	if adapter == "caddyfile" {
		name = "Caddyfile"
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--config", path}
	if adapter != "json" {
		args = append(args, "--adapter", adapter)
	}
	cmd := caddyCmdOf(t, bin, args...)
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &caddyProcess{cmd: cmd, changed: make(chan struct{}), ready: make(chan struct{}), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.collect(stderr)
	t.Cleanup(p.stop)

	select {
	case <-p.ready:
		return p
	case <-p.done:
		t.Fatalf("caddy exited before serving:\n%s\nconfig:\n%s", p.logText(), config)
	case <-time.After(60 * time.Second):
		t.Fatalf("caddy not serving after 60s:\n%s", p.logText())
	}
	return nil
}

func (p *caddyProcess) collect(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	readySeen := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		if !readySeen && strings.Contains(line, "serving initial configuration") {
			readySeen = true
			close(p.ready)
		}
	}
	_ = p.cmd.Wait()
}

func (p *caddyProcess) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *caddyProcess) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// logEntries returns the decoded JSON log entries whose message is
// msg, and a channel closed when the next line arrives.
func (p *caddyProcess) logEntries(msg string) ([]map[string]any, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var entries []map[string]any
	for _, line := range p.lines {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e["msg"] == msg {
			entries = append(entries, e)
		}
	}
	return entries, p.changed
}

// logEntriesNamed returns the entries logged so far with the message msg.
func (p *caddyProcess) logEntriesNamed(msg string) []map[string]any {
	entries, _ := p.logEntries(msg)
	return entries
}

// waitLog returns the first entry with the message msg for which match
// returns true, waiting for Caddy to write it: a response can reach the
// client before the log line is read from Caddy's stderr.
func (p *caddyProcess) waitLog(t testing.TB, msg string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	return p.waitLogFor(t, 10*time.Second, msg, match)
}

// waitLogFor is waitLog with a timeout of the caller's choice.
func (p *caddyProcess) waitLogFor(t testing.TB, timeout time.Duration, msg string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	expired := time.After(timeout)
	for {
		entries, changed := p.logEntries(msg)
		for _, e := range entries {
			if match == nil || match(e) {
				return e
			}
		}
		select {
		case <-changed:
		case <-p.done:
			t.Fatalf("caddy exited; log:\n%s", p.logText())
		case <-expired:
			t.Fatalf("no log entry %q matched; log:\n%s", msg, p.logText())
		}
	}
}

// waitLogCount waits until count entries with the message msg match,
// and returns them.
func (p *caddyProcess) waitLogCount(t testing.TB, timeout time.Duration, msg string, count int, match func(map[string]any) bool) []map[string]any {
	t.Helper()
	expired := time.After(timeout)
	for {
		entries, changed := p.logEntries(msg)
		var matched []map[string]any
		for _, e := range entries {
			if match == nil || match(e) {
				matched = append(matched, e)
			}
		}
		if len(matched) >= count {
			return matched
		}
		select {
		case <-changed:
		case <-p.done:
			t.Fatalf("caddy exited; log:\n%s", p.logText())
		case <-expired:
			t.Fatalf("%d log entries %q matched, want %d", len(matched), msg, count)
		}
	}
}

// settleCount numbers the requests of settle.
var settleCount atomic.Int64

// settle returns once Caddy's log has been read up to now, the positive
// marker before counting what did not happen: it sends the admin
// endpoint on adminPort a request of its own, which Caddy logs before it
// handles it, and waits for that line. Whatever Caddy logged before the
// call is then in the collected log.
func (p *caddyProcess) settle(t testing.TB, adminPort int) {
	t.Helper()
	uri := fmt.Sprintf("/config/?settle=%d", settleCount.Add(1))
	res, err := controlClient.Get(fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, uri))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	p.waitLog(t, "received request", func(e map[string]any) bool { return e["uri"] == uri })
}

// runCaddy runs a Caddy subcommand to completion and returns its
// combined output.
func runCaddy(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := caddyCmd(t, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
