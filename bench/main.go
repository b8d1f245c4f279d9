// Command bench measures linktrack against stock Caddy reverse_proxy,
// nginx (as providers document it, and tuned) and the Go floor (the
// leanest faithful Go proxy, built plainly and with PGO), all proxying
// TLS clicks on loopback to one stand-in origin, once with an
// HTTP/1.1-only origin and once with an origin that offers HTTP/2, and
// with clients that keep connections alive and clients that open a new
// TLS connection per click. Run it through bench/run.sh, which installs
// wrk and nginx first; see bench/README.md.
//
// Environment (all optional):
//
//	BENCH_DURATION  timed seconds per contender per round (default 10)
//	BENCH_ROUNDS    interleaved rounds (default 3)
//	BENCH_CONNS     wrk connections (default 64)
//	BENCH_THREADS   wrk threads (default 2)
//	BENCH_WARMUP    untimed warm-up seconds before each timed run (default 2)
//	BENCH_ONLY      contenders to run, e.g. "a,e" (default all: a,b,c,d,e,f,g)
//	BENCH_ORIGIN    origin kinds, in order: h1 (HTTP/1.1 only), h2 (offers
//	                HTTP/2 and HTTP/1.1) (default "h1,h2")
//	BENCH_CLIENT    client modes: keepalive, close (a new connection per
//	                request, "Connection: close") (default "keepalive,close")
//	BENCH_KEEP      1 keeps the scratch directory (configs, logs)
//	BENCH_GOGC      GOGC values for extra linktrack and Go floor contenders
//	                run beside a), e) and f), each optionally with @GOMEMLIMIT,
//	                e.g. "200,400,off@512MiB" (default none)
//	BENCH_PROFILE   a directory (absolute, or relative to the repository
//	                root) for CPU profiles of linktrack and the Go floor,
//	                each from one extra run after the rounds, outside the
//	                medians (default none)
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	duration, warmup time.Duration
	rounds, conns    int
	threads          int
	only             map[string]bool
	origins          []string // "h1", "h2"
	clients          []string // "keepalive", "close"
	keep             bool
	gogc             []string // GOGC values of extra linktrack contenders
	profileDir       string   // BENCH_PROFILE, absolute; "" for no profiles
}

// scenario is one origin kind and the contenders run against it.
type scenario struct {
	origin   string
	cs       []*contender
	profiles []*profileRun // BENCH_PROFILE's runs, by client mode, a before e
}

func main() {
	os.Exit(run())
}

func run() int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	defer stopAll() // every child, on every return path (os.Exit is only in main)

	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if _, err := os.Stat("go.mod"); err != nil {
		fmt.Fprintln(os.Stderr, "bench: run from the repository root (bash bench/run.sh does)")
		return 2
	}
	s, err := prepare(ctx, cfg)
	if s != nil && s.dir != "" {
		if cfg.keep {
			fmt.Println("scratch directory kept:", s.dir)
		} else {
			defer os.RemoveAll(s.dir)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}

	var scenarios []*scenario
	failed := false
	for _, om := range cfg.origins {
		if ctx.Err() != nil {
			break
		}
		sc, err := runScenario(ctx, cfg, s, om)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		scenarios = append(scenarios, sc)
		for _, c := range sc.cs {
			failed = failed || c.failed != ""
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 130
	}
	printReport(cfg, s, scenarios)
	if failed {
		return 1
	}
	return 0
}

// runScenario starts an origin of the given kind and the contenders in
// front of it, measures them in interleaved rounds (each round runs
// every client mode against every contender in turn, in runOrder), and
// stops them all again.
func runScenario(ctx context.Context, cfg config, s *setup, originMode string) (*scenario, error) {
	if err := startOrigin(ctx, s, originMode); err != nil {
		return nil, err
	}
	defer s.origin.stop()
	sc := &scenario{origin: originMode}
	for _, c := range contenders(cfg.gogc) {
		if cfg.only[c.key[:1]] {
			sc.cs = append(sc.cs, c)
		}
	}
	nports := len(sc.cs)
	if cfg.profileDir != "" {
		nports *= 2 // a pprof port each, of which a and e use theirs
	}
	ports, err := freePorts(nports)
	if err != nil {
		return nil, err
	}
	for i, c := range sc.cs {
		c.port = ports[i]
		if cfg.profileDir != "" && (c.key == "a" || c.key == "e") {
			c.pprofPort = ports[len(sc.cs)+i]
		}
		launch(ctx, s, c)
	}
	defer func() {
		for _, c := range sc.cs {
			if c.proc != nil {
				c.proc.stop()
			}
		}
	}()
	for r := 1; r <= cfg.rounds && ctx.Err() == nil; r++ {
		order := runOrder(sc.cs, cfg.gogc, r)
		for _, cm := range cfg.clients {
			for _, c := range order {
				if c.failed == "" && ctx.Err() == nil {
					measure(ctx, cfg, s, c, r, cm)
				}
			}
		}
	}
	if cfg.profileDir != "" {
		profileScenario(ctx, cfg, s, sc)
	}
	return sc, nil
}

func loadConfig() (config, error) {
	cfg := config{only: map[string]bool{}}
	var err error
	// num reads a whole number in [lo, hi]; a trailing "s" is allowed.
	num := func(name string, def, lo, hi int) int {
		v := os.Getenv(name)
		if v == "" || err != nil {
			return def
		}
		n, e := strconv.Atoi(strings.TrimSuffix(v, "s"))
		if e != nil || n < lo || n > hi {
			err = fmt.Errorf("%s=%q: want a whole number from %d to %d", name, v, lo, hi)
		}
		return n
	}
	cfg.duration = time.Duration(num("BENCH_DURATION", 10, 1, 600)) * time.Second
	cfg.rounds = num("BENCH_ROUNDS", 3, 1, 20)
	cfg.conns = num("BENCH_CONNS", 64, 1, 4000)
	cfg.threads = min(num("BENCH_THREADS", 2, 1, 64), cfg.conns)
	cfg.warmup = time.Duration(num("BENCH_WARMUP", 2, 0, 60)) * time.Second
	only := os.Getenv("BENCH_ONLY")
	if only == "" {
		only = "a,b,c,d,e,f,g"
	}
	for _, k := range strings.Split(only, ",") {
		k = strings.TrimSpace(k)
		if k < "a" || k > "g" || len(k) != 1 {
			return cfg, fmt.Errorf("BENCH_ONLY=%q: want letters a-g separated by commas", only)
		}
		cfg.only[k] = true
	}
	// list reads a comma-separated subset of allowed, keeping its order.
	list := func(name, def string, allowed ...string) []string {
		v := os.Getenv(name)
		if v == "" {
			v = def
		}
		var out []string
		for _, x := range strings.Split(v, ",") {
			x = strings.TrimSpace(x)
			if !slices.Contains(allowed, x) {
				if err == nil {
					err = fmt.Errorf("%s=%q: want some of %s separated by commas", name, v, strings.Join(allowed, ", "))
				}
				return nil
			}
			if !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
		return out
	}
	cfg.origins = list("BENCH_ORIGIN", "h1,h2", "h1", "h2")
	cfg.clients = list("BENCH_CLIENT", "keepalive,close", "keepalive", "close")
	cfg.keep = os.Getenv("BENCH_KEEP") == "1"
	if v := os.Getenv("BENCH_GOGC"); v != "" {
		for _, x := range strings.Split(v, ",") {
			x = strings.TrimSpace(x)
			gogc, _, _ := strings.Cut(x, "@")
			if _, convErr := strconv.Atoi(gogc); convErr != nil && gogc != "off" && err == nil {
				err = fmt.Errorf("BENCH_GOGC=%q: want GOGC values (a number or off, optionally @GOMEMLIMIT) separated by commas", v)
			}
			cfg.gogc = append(cfg.gogc, x)
		}
	}
	if v := os.Getenv("BENCH_PROFILE"); v != "" && err == nil {
		// the working directory is the repository root (see run)
		cfg.profileDir, err = filepath.Abs(v)
	}
	return cfg, err
}

// prepare builds the helpers and Caddy, writes the certificates and
// starts the origin.
func prepare(ctx context.Context, cfg config) (*setup, error) {
	dir, err := os.MkdirTemp("", "linktrack-bench-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755) // nginx workers run as nobody
	s := &setup{
		dir: dir, ca: filepath.Join(dir, "ca.pem"),
		cert: filepath.Join(dir, "link.pem"), key: filepath.Join(dir, "link.key"),
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return s, fmt.Errorf("BENCH_PROFILE: %v", err)
		}
	}
	for _, tool := range []string{"wrk", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return s, fmt.Errorf("%s not found (bench/run.sh installs wrk)", tool)
		}
	}
	if s.nginxBin, err = exec.LookPath("nginx"); err != nil {
		s.nginxBin = "/usr/sbin/nginx"
	}

	step("building bench/certs, bench/origin and bench/gofloor")
	for _, pkg := range []string{"certs", "origin", "gofloor"} {
		if out, err := goBuild(ctx, filepath.Join(dir, pkg), "./bench/"+pkg); err != nil {
			return s, fmt.Errorf("building bench/%s: %v\n%s", pkg, err, out)
		}
	}
	if cfg.only["f"] {
		step("building bench/gofloor with -pgo=" + gofloorPGO + " for f)")
		if _, err := os.Stat(gofloorPGO); err != nil {
			return s, fmt.Errorf("f) needs %s (bench/README.md says how to make it): %v", gofloorPGO, err)
		}
		if out, err := goBuild(ctx, filepath.Join(dir, gofloorPGOBin), "./bench/gofloor", "-pgo="+gofloorPGO); err != nil {
			return s, fmt.Errorf("building bench/gofloor with PGO: %v\n%s", err, lastLines(out, 8))
		}
	}
	if out, err := exec.CommandContext(ctx, filepath.Join(dir, "certs"), "-dir", dir).CombinedOutput(); err != nil {
		return s, fmt.Errorf("making certificates: %v\n%s", err, out)
	}

	if cfg.only["a"] || cfg.only["b"] || cfg.only["g"] {
		step("building ./cmd/caddy (linktrack and stock reverse_proxy run on this one binary)")
		if out, err := goBuild(ctx, filepath.Join(dir, "caddy"), "./cmd/caddy"); err != nil {
			return s, fmt.Errorf("building ./cmd/caddy: %v\n%s", err, lastLines(out, 8))
		}
		s.caddyBin = filepath.Join(dir, "caddy")
	}

	return s, nil
}

// startOrigin starts the origin: "h1" speaks HTTP/1.1 only, "h2" offers
// HTTP/2 as well.
func startOrigin(ctx context.Context, s *setup, mode string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	s.originPort, s.originMode = ports[0], mode
	args := []string{"-port", strconv.Itoa(s.originPort),
		"-cert", filepath.Join(s.dir, "origin.pem"), "-key", filepath.Join(s.dir, "origin.key")}
	if mode == "h2" {
		args = append(args, "-h2")
	}
	step(fmt.Sprintf("starting origin (%s) on https://localhost:%d", originLabel(mode), s.originPort))
	p, err := startProc("origin ("+mode+")", filepath.Join(s.dir, "origin-"+mode+".log"), nil,
		filepath.Join(s.dir, "origin"), args...)
	if err != nil {
		return err
	}
	s.origin = p
	c, err := newClient(s.ca, "localhost")
	if err != nil {
		return err
	}
	return waitReady(ctx, p, c, s.originPort, "localhost")
}

func originLabel(mode string) string {
	if mode == "h2" {
		return "offers HTTP/2 and HTTP/1.1"
	}
	return "HTTP/1.1 only"
}

func clientLabel(mode string) string {
	if mode == "close" {
		return "Connection: close, a new TLS connection per click"
	}
	return "keep-alive"
}

// launch starts one contender, waits until it answers and checks one
// click end to end. On any failure the contender is stopped and marked.
func launch(ctx context.Context, s *setup, c *contender) {
	step(fmt.Sprintf("starting %s) %s on 127.0.0.1:%d", c.key, c.name, c.port))
	fail := func(err error) {
		c.failed = err.Error()
		fmt.Printf("  ERROR %s) %s: %v\n", c.key, c.name, err)
		if c.proc != nil {
			c.proc.stop()
		}
	}
	p, err := c.start(s, c)
	if err != nil {
		fail(err)
		return
	}
	c.proc = p
	client, err := newClient(s.ca, trackingHost)
	if err != nil {
		fail(err)
		return
	}
	if err := waitReady(ctx, p, client, c.port, trackingHost); err != nil {
		fail(err)
		return
	}
	if err := verifyClick(ctx, client, c.port); err != nil {
		fail(fmt.Errorf("proxying check failed: %v", err))
		return
	}
	fmt.Printf("  ok: a click comes back as 302 to the shop, Host %s reached the origin\n", trackingHost)
}

// measure runs one warm-up and one timed wrk run against c, sampling the
// CPU time of c's process tree (and of the origin) around the timed run.
func measure(ctx context.Context, cfg config, s *setup, c *contender, round int, client string) {
	rr, err := timedRun(ctx, cfg, s, c, client, nil)
	if err != nil {
		c.failed = fmt.Sprintf("round %d: %v", round, err)
		if ctx.Err() == nil { // an interrupt is reported once, by run
			fmt.Printf("  ERROR %s) %s: %s\n", c.key, c.name, c.failed)
		}
		c.proc.stop()
		return
	}
	rr.round = round
	c.rounds = append(c.rounds, rr)
	fmt.Printf("  round %d %-9s %s) %-34s %s\n", round, client, c.key, c.name, rr.line())
}

// timedRun runs the warm-up and then the timed run against c in client
// mode cm, and returns the timed run's figures. alongside, if not nil,
// runs while wrk does, started just before it (a profile's fetch); its
// error fails the run too.
func timedRun(ctx context.Context, cfg config, s *setup, c *contender, cm string,
	alongside func(context.Context) error) (roundResult, error) {
	if !c.proc.alive() {
		return roundResult{}, fmt.Errorf("process exited: %v\n%s", c.proc.err, c.proc.logTail(10))
	}
	script := filepath.Join(s.dir, "report.lua")
	if err := os.WriteFile(script, reportLua, 0o644); err != nil {
		return roundResult{}, err
	}
	if cfg.warmup > 0 {
		if _, err := runWrk(ctx, script, c.port, cfg.threads, cfg.conns, cfg.warmup, cm == "close"); err != nil {
			return roundResult{}, fmt.Errorf("warm-up: %v", err)
		}
	}
	var side chan error
	if alongside != nil {
		side = make(chan error, 1)
		go func() { side <- alongside(ctx) }()
	}
	cpu0, _ := treeCPU(c.proc.pid())
	ocpu0, _ := treeCPU(s.origin.pid())
	res, err := runWrk(ctx, script, c.port, cfg.threads, cfg.conns, cfg.duration, cm == "close")
	cpu1, nprocs := treeCPU(c.proc.pid())
	ocpu1, _ := treeCPU(s.origin.pid())
	if side != nil {
		// after the CPU samples: what alongside costs the contender once
		// wrk is done (writing a profile out) is not the run's
		if sideErr := <-side; err == nil {
			err = sideErr
		}
	}
	if err != nil {
		return roundResult{}, err
	}
	if res.Requests == 0 {
		return roundResult{}, fmt.Errorf("no requests completed (%s)", res.ErrorsText)
	}
	return roundResult{
		client: cm, wrk: res, procs: nprocs,
		cpuUs:       (cpu1 - cpu0) * 1e6 / float64(res.Requests),
		originCPUUs: (ocpu1 - ocpu0) * 1e6 / float64(res.Requests),
	}, nil
}

// line is a run's figures as the progress lines print them.
func (rr roundResult) line() string {
	return fmt.Sprintf("%9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  proxy CPU %6.1f µs/req (%d procs)  origin CPU %6.1f µs/req%s",
		rr.wrk.RPS(), rr.wrk.P50us/1e3, rr.wrk.P99us/1e3, rr.cpuUs, rr.procs, rr.originCPUUs, errNote(rr.wrk))
}

func errNote(r wrkResult) string {
	if r.Errors == 0 {
		return ""
	}
	return "  errors: " + r.ErrorsText
}

// goBuild runs `go build -o out [flags] pkg` from the repository root.
func goBuild(ctx context.Context, out, pkg string, flags ...string) (string, error) {
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	b, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	return string(b), err
}

// freePorts asks the kernel for n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func step(msg string) { fmt.Printf("== %s\n", msg) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }
