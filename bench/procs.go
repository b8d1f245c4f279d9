package main

// Child processes: start each in its own process group, stop the whole
// group, and account its CPU time from /proc.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one started child (caddy, nginx master, origin). Its process
// group holds everything it forks, e.g. nginx workers.
type proc struct {
	name string
	log  string // combined stdout+stderr
	cmd  *exec.Cmd
	done chan struct{} // closed when the child has exited
	err  error         // Wait's result, valid once done is closed
}

var (
	procsMu sync.Mutex
	procs   []*proc // every child started, for stopAll
)

// startProc runs bin with args, its output going to logPath. The child
// gets SIGTERM if this program dies, so nothing outlives a crashed run.
func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %v", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group (graceful for caddy, fast
// shutdown for nginx), waits up to 5s, then SIGKILLs whatever is left of
// the group.
func (p *proc) stop() {
	pg := -p.pid()
	if p.alive() {
		syscall.Kill(pg, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	syscall.Kill(pg, syscall.SIGKILL) // ESRCH when the group is already gone
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
	}
}

// stopAll stops every child, newest first (proxies before the origin).
func stopAll() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
	procs = nil
}

// logTail returns the last n lines of the child's log, for error reports.
func (p *proc) logTail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// treeCPU returns the CPU seconds (user+system, fields 14 and 15 of
// /proc/<pid>/stat, all threads included) used so far by root and all its
// descendants still alive, and how many processes that was.
func treeCPU(root int) (seconds float64, nprocs int) {
	type stat struct{ ppid, ticks int64 }
	all := map[int]stat{}
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if s, ok := readStat(path); ok {
			all[pid] = stat{s[1], s[11] + s[12]}
		}
	}
	// Walk down from root (pid -> children) breadth first.
	var ticks int64
	queue := []int{root}
	seen := map[int]bool{}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		s, ok := all[pid]
		if !ok || seen[pid] {
			continue
		}
		seen[pid] = true
		ticks += s.ticks
		for child, cs := range all {
			if cs.ppid == int64(pid) {
				queue = append(queue, child)
			}
		}
	}
	return float64(ticks) / clkTck, len(seen)
}

// readStat returns the numeric fields after "(comm)" in a stat file:
// index 0 is field 3 (state, as 0), 1 is ppid, 11 utime, 12 stime.
func readStat(path string) ([]int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // comm may hold spaces and ')'
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return nil, false
	}
	out := make([]int64, 13)
	for j := 1; j < 13; j++ {
		out[j], _ = strconv.ParseInt(f[j], 10, 64)
	}
	return out, true
}
