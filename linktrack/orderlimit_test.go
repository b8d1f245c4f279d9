package linktrack

import (
	"context"
	"testing"
	"time"
)

func TestOrderLimiter(t *testing.T) {
	l := newOrderLimiter(3, time.Hour)
	for i := range 3 {
		if err := l.wait(context.Background()); err != nil {
			t.Fatalf("order %d of the first 3: %v", i+1, err)
		}
	}
	// the fourth must wait about 20 minutes for a token
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.wait(ctx); err == nil {
		t.Fatal("a fourth order within the window got a token")
	}
	l.last = l.last.Add(-20 * time.Minute) // as if 20 minutes had passed
	if err := l.wait(ctx); err != nil {
		t.Fatalf("no token 20 minutes later: %v", err)
	}
}
