// Package redistest runs a real redis-server on a loopback port for a
// test, in a directory of its own, with no persistence unless the test
// asks for a save.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server run by a test.
type Server struct {
	Port int
	Dir  string

	t    testing.TB
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  []string
}

// Binary returns the path of redis-server. When it is not installed,
// it installs Debian's package once per test run, as root with apt-get,
// so that the README's test command runs the Redis tests on a fresh
// machine too. When that fails too it skips the test, except under
// CI=true, where it fails it.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		installOnce.Do(func() { installErr = install() })
		if bin, err = exec.LookPath("redis-server"); err != nil && installErr != nil {
			err = installErr
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed, and CI must run the Redis tests: %v", err)
		}
		t.Skipf("redis-server is not installed (apt-get install -y redis-server): %v; skipping the Redis tests", err)
	}
	return bin
}

var (
	installOnce sync.Once
	installErr  error
)

// install installs Debian's redis-server package.
func install() error {
	if os.Geteuid() != 0 {
		return errors.New("installing redis-server needs root")
	}
	for _, args := range [][]string{
		{"apt-get", "update", "-qq"},
		{"apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"},
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Start runs redis-server on a free loopback port and stops it when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	Binary(t)
	s := &Server{Port: freePort(t), Dir: t.TempDir(), t: t}
	s.Start()
	t.Cleanup(func() { s.kill() })
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start starts the server again after Stop, on the same port and in the
// same directory: it loads what Stop saved, if anything. It returns
// once the server accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	cmd := exec.Command(Binary(s.t), "--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.Dir, "--daemonize", "no")
	cmd.Dir = s.Dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done, ready := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			s.mu.Lock()
			s.log = append(s.log, sc.Text())
			s.mu.Unlock()
			if !seen && strings.Contains(sc.Text(), "Ready to accept connections") {
				seen = true
				close(ready)
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-done:
		s.t.Fatalf("redis-server exited before it was ready:\n%s", s.Log())
	case <-time.After(30 * time.Second):
		s.t.Fatalf("redis-server not ready after 30s:\n%s", s.Log())
	}
}

// Stop shuts the server down, saving its data first when save is true
// (the next Start loads it) and deleting any saved data when not (the
// next Start is empty).
func (s *Server) Stop(save bool) {
	s.t.Helper()
	c := s.Client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if save {
		err = c.ShutdownSave(ctx).Err()
	} else {
		err = c.ShutdownNoSave(ctx).Err()
		_ = os.Remove(s.Dir + "/dump.rdb")
	}
	// the connection closes as the server goes: that is no error
	if err != nil && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "connection reset") {
		s.t.Fatalf("shutting redis-server down: %v", err)
	}
	s.wait()
}

// Kill ends the server with SIGKILL; nothing is saved.
func (s *Server) Kill() {
	s.kill()
	_ = os.Remove(s.Dir + "/dump.rdb")
}

func (s *Server) kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
	s.wait()
}

func (s *Server) wait() {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.t.Errorf("redis-server on port %d did not exit in 30s", s.Port)
	}
}

// Client returns a new client of the server.
func (s *Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
}

// Log returns what the server printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.log, "\n")
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
