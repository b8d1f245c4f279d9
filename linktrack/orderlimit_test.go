package linktrack

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestOrderLimiter(t *testing.T) {
	l := newOrderLimiter(3, time.Hour, 50, time.Hour)
	for i, name := range []string{"a.one.test", "b.two.test", "c.three.test"} {
		if err := l.wait(context.Background(), name, nil); err != nil {
			t.Fatalf("order %d of the first 3: %v", i+1, err)
		}
	}
	// the fourth must wait about 20 minutes for a token
	now := time.Now()
	if at := l.readyAt("d.four.test", now); at.Sub(now) < 19*time.Minute || at.Sub(now) > 21*time.Minute {
		t.Errorf("a fourth order is ready in %s, want about 20m", at.Sub(now))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var until time.Time
	if err := l.wait(ctx, "d.four.test", func(u time.Time) { until = u }); err == nil {
		t.Fatal("a fourth order within the window got a token")
	}
	if left := time.Until(until); left < 19*time.Minute || left > 21*time.Minute {
		t.Errorf("a fourth order waits %s, want about 20m", left)
	}
	l.last = l.last.Add(-20 * time.Minute) // as if 20 minutes had passed
	if err := l.wait(ctx, "d.four.test", nil); err != nil {
		t.Fatalf("no token 20 minutes later: %v", err)
	}
}

func TestRegisteredDomainLimit(t *testing.T) {
	l := newOrderLimiter(1000, time.Hour, 2, 24*time.Hour)
	for _, name := range []string{"a.shop.example.co.uk", "b.example.co.uk"} {
		if err := l.wait(context.Background(), name, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if err := l.wait(context.Background(), "c.example.co.uk", nil); !errors.Is(err, errRegisteredDomainLimit) {
		t.Errorf("a third order for example.co.uk: %v, want the registered domain limit", err)
	}
	first := l.domains["example.co.uk"][0]
	if at := l.readyAt("c.example.co.uk", time.Now()); !at.Equal(first.Add(24 * time.Hour)) {
		t.Errorf("a third order for example.co.uk is ready at %s, want the first order's time + 24h, %s", at, first.Add(24*time.Hour))
	}
	if now := time.Now(); !l.readyAt("a.third.co.uk", now).Equal(now) {
		t.Error("another registered domain is not ready now")
	}
	if err := l.wait(context.Background(), "a.other.co.uk", nil); err != nil {
		t.Errorf("another registered domain under the same suffix: %v", err)
	}
	for i := range l.domains["example.co.uk"] {
		l.domains["example.co.uk"][i] = l.domains["example.co.uk"][i].Add(-25 * time.Hour)
	}
	if err := l.wait(context.Background(), "c.example.co.uk", nil); err != nil {
		t.Errorf("an order for example.co.uk once its window passed: %v", err)
	}
}
