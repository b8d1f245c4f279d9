package main

// The seven contenders: how each is configured and started. Edit the
// templates here when the linktrack Caddyfile syntax changes.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// setup is what every contender needs: certificates, the origin's port,
// the Caddy binaries and a scratch directory.
type setup struct {
	dir           string // scratch directory for configs and logs
	ca, cert, key string // bench CA; link.example.test leaf and key
	originPort    int
	originMode    string // "h1" or "h2", names the configs and logs of a scenario
	caddyBin      string // ./cmd/caddy, with linktrack
	nginxBin      string
	origin        *proc
}

type contender struct {
	key, name string
	port      int
	start     func(s *setup, c *contender) (*proc, error)
	// pprofPort, when not 0, is where the contender serves
	// /debug/pprof/ on 127.0.0.1 (BENCH_PROFILE: a and e only).
	pprofPort int

	proc   *proc
	failed string // why it was dropped, "" while it is fine
	rounds []roundResult
}

// contenders returns the seven contenders, plus both linktracks and
// both Go floors once more for each GOGC value in gogc, keyed
// "a<value>", "g<value>", "e<value>" and "f<value>", run when a), g),
// e) and f) are.
func contenders(gogc []string) []*contender {
	cs := []*contender{
		{key: "a", name: "linktrack", start: startLinktrack},
	}
	for _, v := range gogc {
		cs = append(cs, &contender{key: "a" + v, name: "linktrack, GOGC=" + gcName(v), start: startLinktrackGOGC(v)})
	}
	cs = append(cs, &contender{key: "g", name: "linktrack, linktrack-only server", start: startLinktrackOnly})
	for _, v := range gogc {
		cs = append(cs, &contender{key: "g" + v, name: "linktrack-only server, GOGC=" + gcName(v), start: startLinktrackOnlyGOGC(v)})
	}
	cs = append(cs,
		&contender{key: "b", name: "caddy reverse_proxy (stock)", start: startStockCaddy},
		&contender{key: "c", name: "nginx, documented config", start: startNginx(nginxDocumented)},
		&contender{key: "d", name: "nginx tuned (upstream keepalive)", start: startNginx(nginxTuned)},
		&contender{key: "e", name: "the Go floor (net/http + Transport)", start: startGoFloor(gofloorBin, nil)},
	)
	// the Go floor at the same settings, so that each ratio is like for like
	for _, v := range gogc {
		cs = append(cs, &contender{key: "e" + v, name: "the Go floor, GOGC=" + gcName(v), start: startGoFloor(gofloorBin, gcEnv(v))})
	}
	// and built with PGO: the strictest Go yardstick
	cs = append(cs, &contender{key: "f", name: "the Go floor, built with PGO", start: startGoFloor(gofloorPGOBin, nil)})
	for _, v := range gogc {
		cs = append(cs, &contender{key: "f" + v, name: "the Go floor with PGO, GOGC=" + gcName(v), start: startGoFloor(gofloorPGOBin, gcEnv(v))})
	}
	return cs
}

// runOrder returns the order in which round r runs the contenders cs:
// linktrack next to its yardsticks (a, g, e, f, then a, g, e and f at
// each BENCH_GOGC value in turn), the others after them, and every even
// round backwards. A ratio's two sides then run seconds apart, not
// minutes, and a drift over the run (a neighbour's load) falls on each
// side alike: before it in one round, after it in the next.
func runOrder(cs []*contender, gogc []string, r int) []*contender {
	rank := func(c *contender) int {
		letter, value := c.key[:1], c.key[1:]
		if value == "" {
			if i := strings.Index("agef", letter); i >= 0 {
				return i
			}
			return 1000 + slices.Index(cs, c)
		}
		return 10 + 4*slices.Index(gogc, value) + strings.Index("agef", letter)
	}
	order := slices.Clone(cs)
	slices.SortStableFunc(order, func(x, y *contender) int { return rank(x) - rank(y) })
	if r%2 == 0 {
		slices.Reverse(order)
	}
	return order
}

// gcEnv returns the environment for a BENCH_GOGC value: GOGC, and
// GOMEMLIMIT too when value is "<gogc>@<limit>", e.g. "off@512MiB".
func gcEnv(value string) []string {
	gogc, limit, _ := strings.Cut(value, "@")
	env := []string{"GOGC=" + gogc}
	if limit != "" {
		env = append(env, "GOMEMLIMIT="+limit)
	}
	return env
}

// gcName names a BENCH_GOGC value in the report.
func gcName(value string) string {
	if gogc, limit, ok := strings.Cut(value, "@"); ok {
		return gogc + " GOMEMLIMIT=" + limit
	}
	return value
}

// caddyGlobal is the global options block shared by contenders a, b
// and g, with serverLines added to its servers block. Its admin
// endpoint is off unless the contender is profiled.
const caddyGlobal = `{
	admin off
	auto_https off
	servers {
		protocols h1 h2%s
	}
}
`

// linktrackOnlyServer is what the README advises for a server that
// serves only linktrack: Caddy's per-request idle-timeout wrappers off,
// linktrack's client_idle_timeout guarding what can stall instead.
const linktrackOnlyServer = `
		timeouts {
			read_body_idle -1s
			write_idle -1s
		}`

const linktrackSite = `https://%[1]s:%[2]d {
	tls %[3]s %[4]s
	linktrack {
		upstream https://localhost:%[5]d
		tls_trust_pool file %[6]s
	}
}
`

const stockSite = `https://%[1]s:%[2]d {
	tls %[3]s %[4]s
	reverse_proxy https://localhost:%[5]d {
		header_up Host {host}
		transport http {
			tls_trust_pool file %[6]s
		}
	}
}
`

func startLinktrack(s *setup, c *contender) (*proc, error) {
	return startCaddy(s, c, "a", s.caddyBin, linktrackSite)
}

// startLinktrackOnly starts linktrack as a) is, on a server set up as
// the README advises when it serves only linktrack.
func startLinktrackOnly(s *setup, c *contender) (*proc, error) {
	return startCaddyWith(s, c, "g", s.caddyBin, linktrackOnlyServer, linktrackSite)
}

// startLinktrackGOGC starts linktrack as a) is, with the environment
// of a BENCH_GOGC value.
func startLinktrackGOGC(value string) func(s *setup, c *contender) (*proc, error) {
	return func(s *setup, c *contender) (*proc, error) {
		return startCaddy(s, c, "a"+value, s.caddyBin, linktrackSite, gcEnv(value)...)
	}
}

// startLinktrackOnlyGOGC starts linktrack as g) is, with the
// environment of a BENCH_GOGC value: at 400, as the README's systemd
// unit and linktrack-only server deploy it.
func startLinktrackOnlyGOGC(value string) func(s *setup, c *contender) (*proc, error) {
	return func(s *setup, c *contender) (*proc, error) {
		return startCaddyWith(s, c, "g"+value, s.caddyBin, linktrackOnlyServer, linktrackSite, gcEnv(value)...)
	}
}

func startStockCaddy(s *setup, c *contender) (*proc, error) {
	return startCaddy(s, c, "b", s.caddyBin, stockSite)
}

// startCaddy writes <dir>/<key>.Caddyfile and runs `caddy run` on it, with
// Caddy's data and config directories inside the scratch directory. A
// profiled contender gets Caddy's admin endpoint on its pprof port, for
// the admin API's /debug/pprof/ (BENCH_PROFILE).
func startCaddy(s *setup, c *contender, key, bin, site string, extraEnv ...string) (*proc, error) {
	return startCaddyWith(s, c, key, bin, "", site, extraEnv...)
}

// startCaddyWith is startCaddy with serverLines added to the global
// servers block.
func startCaddyWith(s *setup, c *contender, key, bin, serverLines, site string, extraEnv ...string) (*proc, error) {
	global := fmt.Sprintf(caddyGlobal, serverLines)
	if c.pprofPort != 0 {
		global = strings.Replace(global, "admin off", fmt.Sprintf("admin 127.0.0.1:%d", c.pprofPort), 1)
	}
	cfg := global + "\n" + fmt.Sprintf(site, trackingHost, c.port, s.cert, s.key, s.originPort, s.ca)
	key += "-" + s.originMode
	path := filepath.Join(s.dir, key+".Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	env := []string{
		"XDG_DATA_HOME=" + filepath.Join(s.dir, key+"-data"),
		"XDG_CONFIG_HOME=" + filepath.Join(s.dir, key+"-config"),
	}
	env = append(env, extraEnv...)
	return startProc("caddy ("+key+")", filepath.Join(s.dir, key+".log"), env,
		bin, "run", "--config", path, "--adapter", "caddyfile")
}

// nginxMain wraps a server block: foreground master, workers tracked as
// its children, everything nginx writes kept under its own prefix.
const nginxMain = `# generated by bench/contenders.go
worker_processes auto;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;   # Caddy logs no requests by default either
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
%[2]s
	server {
		listen 127.0.0.1:%[3]d ssl;
		server_name %[4]s;
		ssl_certificate %[5]s;
		ssl_certificate_key %[6]s;
		location / {
%[7]s
			proxy_set_header Host %[4]s;
			proxy_ssl_server_name on;
			proxy_ssl_name localhost;
			proxy_ssl_verify on;
			proxy_ssl_trusted_certificate %[8]s;
		}
	}
}
`

// nginxConf is the part that differs: an http-level block and the
// proxy_pass lines.
type nginxConf struct{ key, httpBlock, proxyPass string }

// nginxDocumented is what providers' setup guides show: a new TLS
// connection to the origin for every request.
func nginxDocumented(originPort int) nginxConf {
	return nginxConf{key: "c", proxyPass: fmt.Sprintf("\t\t\tproxy_pass https://localhost:%d;", originPort)}
}

// nginxTuned reuses upstream connections (and TLS sessions).
func nginxTuned(originPort int) nginxConf {
	return nginxConf{
		key:       "d",
		httpBlock: fmt.Sprintf("\tupstream origin {\n\t\tserver localhost:%d;\n\t\tkeepalive 128;\n\t}", originPort),
		proxyPass: "\t\t\tproxy_pass https://origin;\n" +
			"\t\t\tproxy_http_version 1.1;\n" +
			"\t\t\tproxy_set_header Connection \"\";\n" +
			"\t\t\tproxy_ssl_session_reuse on;",
	}
}

func startNginx(conf func(originPort int) nginxConf) func(*setup, *contender) (*proc, error) {
	return func(s *setup, ct *contender) (*proc, error) {
		c := conf(s.originPort)
		prefix := filepath.Join(s.dir, "nginx-"+c.key+"-"+s.originMode)
		if err := os.MkdirAll(prefix, 0o755); err != nil {
			return nil, err
		}
		cfg := fmt.Sprintf(nginxMain, prefix, c.httpBlock, ct.port, trackingHost, s.cert, s.key, c.proxyPass, s.ca)
		path := filepath.Join(prefix, "nginx.conf")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		// Check the config first, for a clear error instead of a dead master.
		if out, err := exec.Command(s.nginxBin, "-p", prefix, "-e", filepath.Join(prefix, "error.log"),
			"-c", path, "-t", "-q").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("nginx -t: %v: %s", err, out)
		}
		return startProc("nginx ("+c.key+")", filepath.Join(prefix, "stderr.log"), nil,
			s.nginxBin, "-p", prefix, "-e", filepath.Join(prefix, "error.log"), "-c", path)
	}
}

// The Go floor's two builds in the scratch directory: e) a plain `go
// build`, f) one with -pgo=gofloorPGO (see prepare).
const (
	gofloorBin    = "gofloor"
	gofloorPGOBin = "gofloor-pgo"
)

// gofloorPGO is f)'s profile, merged from the Go floor's BENCH_PROFILE
// profiles. It is not named default.pgo, which `go build` would pick up
// for e) too. To make it again, from the repository root:
//
//	BENCH_ONLY=a,e BENCH_ORIGIN=h1,h2 BENCH_CLIENT=keepalive,close BENCH_DURATION=8 BENCH_ROUNDS=1 BENCH_PROFILE=/tmp/benchprof bash bench/run.sh
//	go tool pprof -proto /tmp/benchprof/gofloor-*.pprof > bench/gofloor/gofloor.pgo

const gofloorPGO = "bench/gofloor/gofloor.pgo"

// startGoFloor runs bin, a build of bench/gofloor in the scratch
// directory: the leanest faithful Go proxy, HTTP/1.1 keep-alive to the
// origin whatever the origin offers; env adds GOGC settings. A profiled Go
// floor serves net/http/pprof on its pprof port.
func startGoFloor(bin string, env []string) func(s *setup, c *contender) (*proc, error) {
	return func(s *setup, c *contender) (*proc, error) {
		name := bin
		if len(env) > 0 {
			name += "-" + strings.Join(env, "-")
		}
		args := []string{"-port", fmt.Sprint(c.port),
			"-cert", s.cert, "-key", s.key, "-ca", s.ca,
			"-upstream", fmt.Sprintf("https://localhost:%d", s.originPort), "-host", trackingHost}
		if c.pprofPort != 0 {
			args = append(args, "-pprof", fmt.Sprintf("127.0.0.1:%d", c.pprofPort))
		}
		return startProc(name, filepath.Join(s.dir, name+"-"+s.originMode+".log"), env,
			filepath.Join(s.dir, bin), args...)
	}
}
