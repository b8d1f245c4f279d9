#!/usr/bin/env bash
# bench/run.sh — benchmark linktrack against stock Caddy reverse_proxy,
# nginx (documented config, and tuned with upstream keep-alive) and the Go
# floor (bench/gofloor, built plainly and with PGO), against an HTTP/1.1-only origin and one that
# offers HTTP/2, with keep-alive and Connection: close clients.
#
# Usage, from anywhere in the repository:
#
#   bash bench/run.sh
#
# Optional environment: BENCH_DURATION (s per timed run, default 10),
# BENCH_ROUNDS (default 3), BENCH_CONNS (default 64), BENCH_THREADS (2),
# BENCH_WARMUP (s, default 2), BENCH_ONLY (e.g. "a,e"), BENCH_ORIGIN
# (h1,h2), BENCH_CLIENT (keepalive,close), BENCH_KEEP=1, BENCH_GOGC,
# BENCH_PROFILE (a directory for CPU profiles of linktrack and the Go floor).
#
# It installs wrk and nginx with apt-get when missing (needs root), builds
# the Go orchestrator (bench/*.go) and runs it. The orchestrator builds
# ./cmd/caddy, bench/origin, bench/gofloor and bench/certs, starts everything on
# 127.0.0.1 only, and prints a markdown report on stdout. Every process it
# started is stopped on exit, Ctrl-C included. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

if ! have wrk || ! have nginx; then
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
		echo "bench: wrk and nginx are needed; install them (apt-get install wrk nginx-light) or run as root" >&2
		exit 1
	fi
	nginx_was_running=$([ -s /run/nginx.pid ] && echo yes || echo no)
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends wrk nginx-light ||
		apt-get install -y -qq --no-install-recommends wrk nginx
	# The package may start the system nginx (port 80); we did not ask for it.
	if [ "$nginx_was_running" = no ] && [ -s /run/nginx.pid ]; then
		/usr/sbin/nginx -s quit || true
	fi
fi
export PATH="$PATH:/usr/sbin"

tmp=$(mktemp -d)
pid=
cleanup() {
	# The orchestrator stops its own children when it gets SIGTERM.
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

go build -o "$tmp/bench" ./bench
"$tmp/bench" &
pid=$!
wait "$pid"
