package main

// Running wrk and reading the line report.lua prints.

import (
	"context"
	_ "embed"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed report.lua
var reportLua []byte

// wrkResult is one wrk run. Errors counts socket errors plus responses
// with status >= 400.
type wrkResult struct {
	Requests   int64
	Seconds    float64
	P50us      float64
	P99us      float64
	Errors     int64
	ErrorsText string
}

func (r wrkResult) RPS() float64 { return float64(r.Requests) / r.Seconds }

// runWrk loads https://link.example.test:port<clickPath> (connecting to
// 127.0.0.1, see report.lua) for dur with keep-alive connections. It is
// killed if it runs 30s past dur. With closeEach, every request carries
// "Connection: close": the server closes the connection after the
// response and wrk opens a new one (TCP and TLS handshake) for the next
// request. wrk starts a request's latency clock when it writes the
// request, after the handshake.
func runWrk(ctx context.Context, script string, port, threads, conns int, dur time.Duration, closeEach bool) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
	defer cancel()
	url := fmt.Sprintf("https://%s:%d%s", trackingHost, port, clickPath)
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(dur.Seconds())),
		"-s", script, "-H", "Host: " + trackingHost}
	if closeEach {
		args = append(args, "-H", "Connection: close")
	}
	cmd := exec.CommandContext(ctx, "wrk", append(args, url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "BENCH "); ok {
			return parseWrk(rest)
		}
	}
	return wrkResult{}, fmt.Errorf("wrk printed no BENCH line: %s", strings.TrimSpace(string(out)))
}

// parseWrk reads "requests=N duration_us=N p50_us=N ..." (see report.lua).
func parseWrk(s string) (wrkResult, error) {
	v := map[string]int64{}
	for _, kv := range strings.Fields(s) {
		k, val, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return wrkResult{}, fmt.Errorf("wrk report %q: %v", s, err)
		}
		v[k] = n
	}
	if v["duration_us"] <= 0 {
		return wrkResult{}, fmt.Errorf("wrk report %q: no duration", s)
	}
	r := wrkResult{
		Requests: v["requests"],
		Seconds:  float64(v["duration_us"]) / 1e6,
		P50us:    float64(v["p50_us"]),
		P99us:    float64(v["p99_us"]),
	}
	var parts []string
	for _, k := range []string{"connect", "read", "write", "timeout", "status"} {
		if v[k] > 0 {
			r.Errors += v[k]
			parts = append(parts, fmt.Sprintf("%s %d", k, v[k]))
		}
	}
	r.ErrorsText = strings.Join(parts, ", ")
	return r, nil
}
