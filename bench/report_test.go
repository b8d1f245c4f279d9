package main

import (
	"math"
	"testing"
)

func TestPairedRatios(t *testing.T) {
	run := func(round int, client string, cpu float64) roundResult {
		return roundResult{round: round, client: client, cpuUs: cpu}
	}
	// Round 2 of b failed, and a has a close run of its own: neither
	// may be paired with anything.
	a := &contender{key: "a", rounds: []roundResult{
		run(1, "keepalive", 90), run(1, "close", 500), run(2, "keepalive", 120), run(3, "keepalive", 80),
	}}
	b := &contender{key: "e", rounds: []roundResult{
		run(1, "keepalive", 100), run(3, "keepalive", 100),
	}}
	cpu := func(r roundResult) float64 { return r.cpuUs }
	rs := pairedRatios(a, b, "keepalive", cpu)
	want := []roundRatio{{1, 0.9}, {3, 0.8}}
	if len(rs) != len(want) {
		t.Fatalf("pairedRatios = %v, want %v", rs, want)
	}
	for i := range want {
		if rs[i].round != want[i].round || math.Abs(rs[i].v-want[i].v) > 1e-12 {
			t.Fatalf("pairedRatios = %v, want %v", rs, want)
		}
	}
	if got := pairedText(rs); got != "per round: 0.85 median, 0.80–0.90, 2 rounds" {
		t.Errorf("pairedText = %q", got)
	}
	if rs := pairedRatios(a, b, "close", cpu); len(rs) != 0 {
		t.Errorf("close: pairedRatios = %v, want none", rs)
	}
	if got := pairedText(nil); got != "per round: n/a (no round has both)" {
		t.Errorf("pairedText(nil) = %q", got)
	}

	// The machine's drift from round to round cancels within each round.
	a.rounds = []roundResult{run(1, "keepalive", 90), run(2, "keepalive", 45), run(3, "keepalive", 180)}
	b.rounds = []roundResult{run(1, "keepalive", 100), run(2, "keepalive", 50), run(3, "keepalive", 200)}
	med, lo, hi := ratioStats(pairedRatios(a, b, "keepalive", cpu))
	if math.Abs(med-0.9) > 1e-12 || math.Abs(lo-0.9) > 1e-12 || math.Abs(hi-0.9) > 1e-12 {
		t.Errorf("ratioStats = %v, %v, %v, want 0.9 each", med, lo, hi)
	}
}
