package main

// BENCH_PROFILE: after a scenario's timed rounds, one more run each of
// linktrack and the Go floor per client mode under a CPU profile, and the
// report's "Where the time goes" from those profiles.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// profileRun is one profiled run. Profiling costs the process a little
// CPU of its own, so these runs stay out of the medians.
type profileRun struct {
	client string
	c      *contender
	file   string
	rr     roundResult
	prof   *cpuProfile
	err    error
}

// profileScenario runs, for each client mode, linktrack and the Go floor
// once more (warm-up, then the timed run) while fetching a CPU profile of
// the timed window from the contender's pprof port.
func profileScenario(ctx context.Context, cfg config, s *setup, sc *scenario) {
	if !slices.ContainsFunc(sc.cs, func(c *contender) bool { return c.pprofPort != 0 && c.failed == "" }) {
		return
	}
	step(fmt.Sprintf("profiling a) and e) against the %s origin, one run each per client mode, not in the medians", sc.origin))
	for _, cm := range cfg.clients {
		for _, c := range sc.cs {
			if c.pprofPort == 0 || c.failed != "" || ctx.Err() != nil {
				continue
			}
			pr := profileOne(ctx, cfg, s, c, sc.origin, cm)
			sc.profiles = append(sc.profiles, pr)
			if pr.err != nil {
				if ctx.Err() == nil {
					fmt.Printf("  ERROR profiling %s) %s: %v\n", c.key, c.name, pr.err)
				}
				continue
			}
			fmt.Printf("  profile %-9s %s) %-34s %s; %.2f s of samples in %s\n",
				cm, c.key, c.name, pr.rr.line(), pr.prof.total().Seconds(), pr.file)
		}
	}
}

// profileOne runs c once in client mode cm under a CPU profile, and writes
// the profile to BENCH_PROFILE's directory.
func profileOne(ctx context.Context, cfg config, s *setup, c *contender, origin, cm string) *profileRun {
	who := "linktrack"
	if c.key == "e" {
		who = "gofloor"
	}
	pr := &profileRun{client: cm, c: c,
		file: filepath.Join(cfg.profileDir, fmt.Sprintf("%s-%s-%s.pprof", who, origin, cm))}
	var data []byte
	pr.rr, pr.err = timedRun(ctx, cfg, s, c, cm, func(ctx context.Context) error {
		var err error
		data, err = fetchProfile(ctx, c.pprofPort, cfg.duration)
		return err
	})
	if pr.err == nil {
		pr.err = os.WriteFile(pr.file, data, 0o644)
	}
	if pr.err == nil {
		pr.prof, pr.err = parseCPUProfile(data)
	}
	return pr
}

// fetchProfile asks the pprof endpoint on 127.0.0.1:port for a CPU
// profile of the next d, which is when wrk runs.
func fetchProfile(ctx context.Context, port int, d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching profile: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetching profile: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching profile: %s: %s", resp.Status, firstLine(strings.TrimSpace(string(body))))
	}
	return body, nil
}

// The categories of "Where the time goes", in the report's order. Each
// sample goes to the first rule that takes it (see categorize and
// bench/README.md).
const (
	catProfiling = iota
	catSyscall
	catGC
	catStack
	catSched
	catCrypto
	catHandler
	catCaddy
	catClient
	catServer
	catOther
	numCats
)

var catNames = [numCats]string{
	catProfiling: "profiling itself (runtime/pprof)",
	catSyscall:   "syscalls (kernel time included)",
	catGC:        "GC and allocation",
	catStack:     "goroutine stack growth",
	catSched:     "scheduler",
	catCrypto:    "TLS and crypto",
	catHandler:   "the handler: linktrack, or the Go floor's package main",
	catCaddy:     "Caddy server",
	catClient:    "net/http client: Transport, ReadResponse",
	catServer:    "net/http server",
	catOther:     "other",
}

// syscallLeaves are the runtime's own system call wrappers: a sample
// whose leaf is one of them was in the kernel or on its way.
var syscallLeaves = map[string]bool{
	"runtime.futex": true, "runtime.epollwait": true, "runtime.epollctl": true,
	"runtime.usleep": true, "runtime.nanosleep": true, "runtime.osyield": true,
	"runtime.write1": true, "runtime.read": true, "runtime.madvise": true,
	"runtime.mmap": true, "runtime.sysMmap": true, "runtime.munmap": true,
	"runtime.tgkill": true, "runtime.getpid": true, "runtime.timer_settime": true,
	"runtime.rtsigprocmask": true, "runtime.sigaltstack": true, "runtime.clone": true,
}

var (
	// internal/runtime/syscall/linux since Go 1.25
	syscallFrames = []string{"syscall.", "internal/runtime/syscall", "runtime/internal/syscall."}
	gcFrames      = []string{
		"runtime.mallocgc", "runtime.newobject", "runtime.gcBgMarkWorker", "runtime.gcAssistAlloc",
		"runtime.gcDrain", "runtime.gcStart", "runtime.gcMark", "runtime.gcSweep", "runtime.bgsweep",
		"runtime.bgscavenge", "runtime.sweepone", "runtime.markroot", "runtime.scanobject",
		"runtime.scanstack", "runtime.greyobject", "runtime.wbBufFlush", "runtime.gcWriteBarrier",
		"runtime.(*mheap)", "runtime.(*mcache)", "runtime.(*mcentral)", "runtime.(*gcWork)",
		"runtime.(*sweepLocked)", "runtime.(*scavengerState)", "runtime.(*pageAlloc)",
	}
	stackFrames  = []string{"runtime.newstack", "runtime.copystack", "runtime.morestack"}
	cryptoFrames = []string{"crypto/", "vendor/golang.org/x/crypto/", "golang.org/x/crypto/"}
	schedFrames  = []string{
		"runtime.schedule", "runtime.findRunnable", "runtime.park_m", "runtime.mcall",
		"runtime.gopark", "runtime.goready", "runtime.ready", "runtime.wakep", "runtime.startm",
		"runtime.stopm", "runtime.mstart", "runtime.newproc", "runtime.goexit0", "runtime.gosched",
		"runtime.goschedImpl", "runtime.goyield", "runtime.entersyscall", "runtime.exitsyscall",
		"runtime.reentersyscall", "runtime.netpoll", "runtime.sysmon", "runtime.notewakeup",
		"runtime.notesleep", "runtime.stealWork", "runtime.runqsteal", "runtime.runqgrab",
		"runtime.checkTimers", "runtime.handoffp", "runtime.execute", "runtime.injectglist",
		"runtime.resetspinning",
	}
	handlerFrames = []string{"github.com/caddy-linktrack/", "main."}
	caddyFrames   = []string{"github.com/caddyserver/"}
	clientFrames  = []string{
		"net/http.(*Transport)", "net/http.(*persistConn)", "net/http.persistConnWriter",
		"net/http.(*wantConn", "net/http.(*transportRequest)", "net/http.(*Request).write",
		"net/http.ReadResponse", "net/http.(*bodyEOFSignal)", "net/http.(*readTrackingBody)",
		"net/http.(*connectMethod", "net/http.(*http2Transport)", "net/http.(*http2ClientConn)",
		"net/http.(*http2clientStream)", "net/http.(*http2clientConnReadLoop)",
	}
)

func hasPrefix(f string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	return false
}

// categorize says where a sample's CPU went, from its frames, leaf first.
// The mechanisms come first, wherever on the stack they are: the
// profiler, system calls, GC and allocation, stack growth, the scheduler,
// then TLS (all that runs inside crypto/tls and crypto/..., once its
// system calls, allocations and parking are counted above). What remains
// goes to the innermost frame that belongs to an owner: the handler,
// Caddy, net/http's client side, net/http's server side.
func categorize(frames []string) int {
	onStack := func(prefixes []string) bool {
		for _, f := range frames {
			if hasPrefix(f, prefixes) {
				return true
			}
		}
		return false
	}
	switch {
	case len(frames) == 0:
		return catOther
	case onStack([]string{"runtime/pprof."}):
		return catProfiling
	case syscallLeaves[frames[0]] || onStack(syscallFrames):
		return catSyscall
	case onStack(gcFrames):
		return catGC
	case onStack(stackFrames):
		return catStack
	case onStack(schedFrames):
		return catSched
	case onStack(cryptoFrames):
		return catCrypto
	}
	for _, f := range frames {
		switch {
		case hasPrefix(f, handlerFrames):
			return catHandler
		case hasPrefix(f, caddyFrames):
			return catCaddy
		case hasPrefix(f, clientFrames):
			return catClient
		case strings.HasPrefix(f, "net/http."):
			return catServer
		}
	}
	return catOther
}

// byCategory sums a profile's CPU by category, in nanoseconds.
func byCategory(p *cpuProfile) [numCats]int64 {
	var out [numCats]int64
	for _, s := range p.samples {
		out[categorize(s.frames)] += s.nanos
	}
	return out
}

// printProfiles prints "Where the time goes": per origin and client mode,
// each profiled contender's CPU per request by category.
func printProfiles(cfg config, scenarios []*scenario) {
	if !slices.ContainsFunc(scenarios, func(sc *scenario) bool { return len(sc.profiles) > 0 }) {
		return
	}
	fmt.Printf("\n### Where the time goes\n\n")
	fmt.Printf("From one extra run of a) and e) per origin and client mode after the rounds, each under a CPU profile "+
		"of its timed %s (not in the medians above; profiling costs a little CPU). CPU µs per request by what the sampled "+
		"stack was doing (rules in bench/README.md): a category's sample time ÷ the run's requests. "+
		"Profiles in %s.\n", cfg.duration, cfg.profileDir)
	for _, sc := range scenarios {
		for _, cm := range cfg.clients {
			var runs []*profileRun
			for _, pr := range sc.profiles {
				if pr.client == cm {
					runs = append(runs, pr)
				}
			}
			if len(runs) == 0 {
				continue
			}
			fmt.Printf("\n#### Origin %s, clients %s\n\n", originLabel(sc.origin), clientLabel(cm))
			// a − e, when both were profiled: what linktrack spends beyond the floor
			diff := len(runs) == 2 && runs[0].err == nil && runs[1].err == nil
			head, sep := "| CPU µs/req |", "|---|"
			for _, pr := range runs {
				head += fmt.Sprintf(" %s) %s |", pr.c.key, pr.c.name)
				sep += "---:|"
			}
			if diff {
				head += fmt.Sprintf(" %s − %s |", runs[0].c.key, runs[1].c.key)
				sep += "---:|"
			}
			fmt.Println(head)
			fmt.Println(sep)
			cats := make([][numCats]int64, len(runs))
			for i, pr := range runs {
				if pr.err == nil {
					cats[i] = byCategory(pr.prof)
				}
			}
			row := func(label, format string, f func(i int, pr *profileRun) float64) {
				line := "| " + label + " |"
				for i, pr := range runs {
					if pr.err != nil {
						line += " – |"
					} else {
						line += " " + fmt.Sprintf(format, f(i, pr)) + " |"
					}
				}
				if diff {
					line += " " + fmt.Sprintf(format, f(0, runs[0])-f(1, runs[1])) + " |"
				}
				fmt.Println(line)
			}
			// per request: a sample time in ns over the run's requests, in µs
			perReq := func(ns int64, pr *profileRun) float64 { return float64(ns) / 1e3 / float64(pr.rr.wrk.Requests) }
			for k := range numCats {
				row(catNames[k], "%.1f", func(i int, pr *profileRun) float64 { return perReq(cats[i][k], pr) })
			}
			row("**total of the samples**", "**%.1f**", func(_ int, pr *profileRun) float64 {
				return perReq(int64(pr.prof.total()), pr)
			})
			row("not in the samples: the run's proxy CPU − the samples", "%.1f", func(_ int, pr *profileRun) float64 {
				return pr.rr.cpuUs - perReq(int64(pr.prof.total()), pr)
			})
			row("**the run's proxy CPU, from /proc**", "**%.1f**", func(_ int, pr *profileRun) float64 { return pr.rr.cpuUs })
			row("req/s of the run", "%.0f", func(_ int, pr *profileRun) float64 { return pr.rr.wrk.RPS() })
			for _, pr := range runs {
				if pr.err != nil {
					fmt.Printf("\n%s) %s: no profile: %v\n", pr.c.key, pr.c.name, pr.err)
				}
			}
		}
	}
}
