package main

// The final markdown: summary table, ratios, raw per-round numbers.

import (
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strings"
)

// roundResult is one timed run of one contender.
type roundResult struct {
	round       int
	client      string // "keepalive" or "close"
	wrk         wrkResult
	procs       int     // processes in the contender's tree (nginx: master + workers)
	cpuUs       float64 // proxy CPU µs per completed request
	originCPUUs float64 // origin CPU µs per request, for context
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// med returns the median over c's rounds in client mode cm of f.
func (c *contender) med(cm string, f func(roundResult) float64) float64 {
	var xs []float64
	for _, r := range c.rounds {
		if r.client == cm {
			xs = append(xs, f(r))
		}
	}
	return median(xs)
}

func (c *contender) count(cm string) int {
	n := 0
	for _, r := range c.rounds {
		if r.client == cm {
			n++
		}
	}
	return n
}

func (c *contender) rps(cm string) float64 {
	return c.med(cm, func(r roundResult) float64 { return r.wrk.RPS() })
}

func (c *contender) cpu(cm string) float64 {
	return c.med(cm, func(r roundResult) float64 { return r.cpuUs })
}

func printReport(cfg config, s *setup, scenarios []*scenario) {
	fmt.Printf("\n## Benchmark: linktrack vs Caddy reverse_proxy vs nginx vs the Go floor\n\n")
	fmt.Printf("%s\n", describe(cfg, s))
	for _, sc := range scenarios {
		for _, cm := range cfg.clients {
			printTable(cfg, sc, cm)
		}
	}
	fmt.Println("\np50 and p99 are medians over rounds of wrk's per-run percentiles; wrk starts a request's " +
		"clock when it writes it, so with Connection: close the client's handshake is not in them.")
	printProfiles(cfg, scenarios)

	fmt.Println("\n### Raw rounds")
	fmt.Println("\n| origin | client | round | contender | req/s | p50 ms | p99 ms | proxy CPU µs/req | origin CPU µs/req | procs | errors |")
	fmt.Println("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
	for _, sc := range scenarios {
		for r := 1; r <= cfg.rounds; r++ {
			for _, cm := range cfg.clients {
				for _, c := range sc.cs {
					for _, rr := range c.rounds {
						if rr.round != r || rr.client != cm {
							continue
						}
						errs := rr.wrk.ErrorsText
						if errs == "" {
							errs = "0"
						}
						fmt.Printf("| %s | %s | %d | %s) %s | %.0f | %.2f | %.2f | %.1f | %.1f | %d | %s |\n",
							sc.origin, cm, r, c.key, c.name, rr.wrk.RPS(), rr.wrk.P50us/1e3, rr.wrk.P99us/1e3,
							rr.cpuUs, rr.originCPUUs, rr.procs, errs)
					}
				}
			}
		}
	}
	printPairedRounds(cfg, scenarios)
	for _, sc := range scenarios {
		for _, c := range sc.cs {
			if c.failed != "" {
				fmt.Printf("\n%s origin: %s) %s failed: %s\n", sc.origin, c.key, c.name, briefly(c.failed))
			}
		}
	}
}

// printTable prints the medians of one origin kind and client mode, with
// each contender's CPU per request as a ratio to linktrack's, then the
// headline ratios.
func printTable(cfg config, sc *scenario, cm string) {
	fmt.Printf("\n### Origin %s, clients %s (wrk -t%d -c%d)\n\n", originLabel(sc.origin), clientLabel(cm), cfg.threads, cfg.conns)
	fmt.Println("| contender | req/s | p50 ms | p99 ms | proxy CPU µs/req | CPU ratio to linktrack | origin CPU µs/req | rounds |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	byKey := map[string]*contender{}
	for _, c := range sc.cs {
		byKey[c.key] = c
	}
	lt := byKey["a"]
	for _, c := range sc.cs {
		n := c.count(cm)
		if n == 0 {
			fmt.Printf("| %s) %s | failed | – | – | – | – | – | 0/%d |\n", c.key, c.name, cfg.rounds)
			continue
		}
		rel := "–"
		if lt != nil && lt.count(cm) > 0 && lt.cpu(cm) > 0 {
			rel = fmt.Sprintf("%.2f", c.cpu(cm)/lt.cpu(cm))
		}
		fmt.Printf("| %s) %s | %.0f | %.2f | %.2f | %.1f | %s | %.1f | %d/%d |\n", c.key, c.name, c.rps(cm),
			c.med(cm, func(r roundResult) float64 { return r.wrk.P50us / 1e3 }),
			c.med(cm, func(r roundResult) float64 { return r.wrk.P99us / 1e3 }),
			c.cpu(cm), rel, c.med(cm, func(r roundResult) float64 { return r.originCPUUs }), n, cfg.rounds)
	}

	fmt.Println("\nRatios: of the medians over rounds, then paired, each round's own ratio (median, min–max):")
	ratio := func(label, ka, kb string, f func(roundResult) float64, unit string) {
		a, b := byKey[ka], byKey[kb]
		switch {
		case a == nil || b == nil:
			fmt.Printf("- %s: not run\n", label)
		case a.count(cm) == 0 || b.count(cm) == 0 || b.med(cm, f) == 0:
			fmt.Printf("- %s: n/a (a contender failed)\n", label)
		default:
			ma, mb := a.med(cm, f), b.med(cm, f)
			fmt.Printf("- %s: **%.2f** (%.1f / %.1f %s, ratio of medians); %s\n",
				label, ma/mb, ma, mb, unit, pairedText(pairedRatios(a, b, cm, f)))
		}
	}
	cpu := func(r roundResult) float64 { return r.cpuUs }
	rps := func(r roundResult) float64 { return r.wrk.RPS() }
	ratio("linktrack CPU / Go floor CPU", "a", "e", cpu, "µs/req")
	ratio("linktrack on a linktrack-only server CPU / Go floor CPU", "g", "e", cpu, "µs/req")
	ratio("linktrack on a linktrack-only server CPU / linktrack CPU", "g", "a", cpu, "µs/req")
	// the least flattering comparison once linktrack itself is built with PGO
	ratio("linktrack CPU / Go floor with PGO CPU", "a", "f", cpu, "µs/req")
	for _, v := range cfg.gogc {
		ratio("linktrack CPU / Go floor CPU, both at GOGC="+gcName(v), "a"+v, "e"+v, cpu, "µs/req")
		ratio("linktrack CPU / Go floor with PGO CPU, both at GOGC="+gcName(v), "a"+v, "f"+v, cpu, "µs/req")
		ratio("linktrack on a linktrack-only server CPU / Go floor CPU, both at GOGC="+gcName(v), "g"+v, "e"+v, cpu, "µs/req")
	}
	ratio("linktrack CPU / stock caddy CPU", "a", "b", cpu, "µs/req")
	ratio("linktrack req/s / nginx-documented req/s", "a", "c", rps, "req/s")
	ratio("linktrack CPU / nginx-tuned CPU", "a", "d", cpu, "µs/req")
	for _, v := range cfg.gogc {
		// as the README deploys it, against nginx at its best
		ratio("linktrack on a linktrack-only server at GOGC="+gcName(v)+" CPU / nginx-tuned CPU", "g"+v, "d", cpu, "µs/req")
	}
}

// roundRatio is one round's ratio of two contenders' figures.
type roundRatio struct {
	round int
	v     float64
}

// pairedRatios returns f(a)/f(b) for each round in which both a and b
// completed a run in client mode cm, in round order. A round runs every
// contender within minutes of each other, so whatever drifts over a whole
// run (a neighbour's load, the machine's clock speed) weighs on both
// sides of each of these ratios alike.
func pairedRatios(a, b *contender, cm string, f func(roundResult) float64) []roundRatio {
	var out []roundRatio
	for _, ra := range a.rounds {
		if ra.client != cm {
			continue
		}
		for _, rb := range b.rounds {
			if rb.client == cm && rb.round == ra.round && f(rb) != 0 {
				out = append(out, roundRatio{ra.round, f(ra) / f(rb)})
			}
		}
	}
	return out
}

// ratioStats returns the median, min and max of rs.
func ratioStats(rs []roundRatio) (med, lo, hi float64) {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = r.v
	}
	if len(xs) == 0 {
		return 0, 0, 0
	}
	return median(xs), slices.Min(xs), slices.Max(xs)
}

// pairedText summarizes paired ratios: their median and range.
func pairedText(rs []roundRatio) string {
	med, lo, hi := ratioStats(rs)
	switch len(rs) {
	case 0:
		return "per round: n/a (no round has both)"
	case 1:
		return fmt.Sprintf("per round: %.2f, 1 round", med)
	}
	return fmt.Sprintf("per round: %.2f median, %.2f–%.2f, %d rounds", med, lo, hi, len(rs))
}

// printPairedRounds prints linktrack's CPU per request over the Go
// floor's round by round (and at each BENCH_GOGC value), to show how far
// single rounds swing around the medians.
func printPairedRounds(cfg config, scenarios []*scenario) {
	cpu := func(r roundResult) float64 { return r.cpuUs }
	var rows []string
	for _, sc := range scenarios {
		byKey := map[string]*contender{}
		for _, c := range sc.cs {
			byKey[c.key] = c
		}
		keys := [][2]string{{"a", "e"}, {"g", "e"}, {"a", "f"}}
		for _, v := range cfg.gogc {
			keys = append(keys, [2]string{"a" + v, "e" + v}, [2]string{"g" + v, "e" + v})
		}
		for _, cm := range cfg.clients {
			for _, k := range keys {
				a, b := byKey[k[0]], byKey[k[1]]
				if a == nil || b == nil {
					continue
				}
				rs := pairedRatios(a, b, cm, cpu)
				row := fmt.Sprintf("| %s | %s | %s/%s |", sc.origin, cm, a.key, b.key)
				for r := 1; r <= cfg.rounds; r++ {
					i := slices.IndexFunc(rs, func(x roundRatio) bool { return x.round == r })
					if i < 0 {
						row += " – |"
					} else {
						row += fmt.Sprintf(" %.2f |", rs[i].v)
					}
				}
				if med, lo, hi := ratioStats(rs); len(rs) > 0 {
					row += fmt.Sprintf(" %.2f | %.2f–%.2f |", med, lo, hi)
				} else {
					row += " – | – |"
				}
				rows = append(rows, row)
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Println("\n### linktrack CPU / each yardstick's CPU, per round")
	head, sep := "\n| origin | client | contenders |", "|---|---|---|"
	for r := 1; r <= cfg.rounds; r++ {
		head += fmt.Sprintf(" round %d |", r)
		sep += "---:|"
	}
	fmt.Println(head + " median | range |")
	fmt.Println(sep + "---:|---:|")
	for _, row := range rows {
		fmt.Println(row)
	}
}

// describe is one paragraph on the setup, with tool versions.
func describe(cfg config, s *setup) string {
	var v []string
	if s.caddyBin != "" {
		v = append(v, "Caddy "+firstField(cmdOut(s.caddyBin, "version")))
	}
	if nv := cmdOut(s.nginxBin, "-v"); nv != "" {
		v = append(v, strings.TrimPrefix(nv, "nginx version: "))
	}
	if wv := strings.Fields(cmdOut("wrk", "-v")); len(wv) > 1 {
		v = append(v, "wrk "+wv[1])
	}
	v = append(v, runtime.Version())
	return fmt.Sprintf("Loopback, TLS on both sides; origins: %s; clients: %s; wrk -t%d -c%d, "+
		"%s timed after a %s warm-up per contender per client mode per round, %d interleaved rounds; %d CPUs. "+
		"Proxy CPU = utime+stime of the proxy's process tree over the timed run ÷ requests. %s.",
		strings.Join(cfg.origins, ", "), strings.Join(cfg.clients, ", "),
		cfg.threads, cfg.conns, cfg.duration, cfg.warmup, cfg.rounds, runtime.NumCPU(), strings.Join(v, ", "))
}

// cmdOut runs a version command and returns its first output line.
func cmdOut(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput()
	return firstLine(strings.TrimSpace(string(out)))
}

// briefly shortens a multi-line failure to its first and last lines.
func briefly(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) == 1 {
		return lines[0]
	}
	return strings.TrimSuffix(lines[0], " log:") + " … " + strings.TrimSpace(lines[len(lines)-1])
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}
