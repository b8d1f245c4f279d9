package linktrack

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// verifyLinktrack is the README's verification of a webhook delivery,
// word for word: TestReadmeWebhookVerification holds them together.
const verifyLinktrackSource = `// verifyLinktrack checks a delivery's Linktrack-Signature header against
// its exact body and the shared secret, and refuses a delivery signed
// more than 5 minutes from now (a replay).
func verifyLinktrack(secret []byte, header string, body []byte, now time.Time) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("no timestamp")
	}
	if d := now.Sub(time.Unix(unix, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("signed too far from now")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	if !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		return errors.New("bad signature")
	}
	return nil
}`

// verifyLinktrack checks a delivery's Linktrack-Signature header against
// its exact body and the shared secret, and refuses a delivery signed
// more than 5 minutes from now (a replay).
func verifyLinktrack(secret []byte, header string, body []byte, now time.Time) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("no timestamp")
	}
	if d := now.Sub(time.Unix(unix, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("signed too far from now")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	if !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		return errors.New("bad signature")
	}
	return nil
}

func TestReadmeWebhookVerification(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+verifyLinktrackSource+"\n```") {
		t.Errorf("the README's verifyLinktrack is not the one tested here:\n%s", verifyLinktrackSource)
	}
	src, err := os.ReadFile("webhook_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(src), verifyLinktrackSource[strings.Index(verifyLinktrackSource, "func "):]) != 2 {
		t.Error("verifyLinktrack differs from its source text in this file")
	}
}

func TestSignWebhook(t *testing.T) {
	secret, body := []byte("whsec_test"), []byte(`{"domain":"click.brand.test"}`)
	at := time.Unix(1700000000, 0)
	// printf '1700000000.{"domain":"click.brand.test"}' | openssl dgst -sha256 -hmac whsec_test
	const want = "t=1700000000,v1=a8df49c13ad340a94af5d23e4c5d7d3fb63fdd32d053ed9d01f59b57ff1c25a1"
	if got := signWebhook(secret, body, at); got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
	if err := verifyLinktrack(secret, want, body, at.Add(time.Minute)); err != nil {
		t.Errorf("a valid signature refused: %v", err)
	}
	for name, tc := range map[string]struct {
		secret, body []byte
		header       string
		now          time.Time
	}{
		"another body":        {secret, []byte(`{"domain":"click.brand.tesT"}`), want, at},
		"another secret":      {[]byte("whsec_tesT"), body, want, at},
		"another time":        {secret, body, strings.Replace(want, "t=1700000000", "t=1700000001", 1), at},
		"replayed an hour on": {secret, body, want, at.Add(time.Hour)},
	} {
		if err := verifyLinktrack(tc.secret, tc.header, tc.body, tc.now); err == nil {
			t.Errorf("%s: signature accepted", name)
		}
	}
}

func TestWebhookBackoff(t *testing.T) {
	for _, tc := range []struct {
		failed int
		want   time.Duration
	}{
		{1, 10 * time.Second},
		{2, 20 * time.Second},
		{3, 40 * time.Second},
		{9, 2560 * time.Second},
		{10, time.Hour},
		{11, time.Hour},
		{1000, time.Hour},
	} {
		if got := webhookBackoff(10*time.Second, tc.failed); got != tc.want {
			t.Errorf("after %d failures: %v, want %v", tc.failed, got, tc.want)
		}
	}
	if got := webhookBackoff(2*time.Hour, 1); got != time.Hour {
		t.Errorf("a first delay over the cap: %v, want %v", got, time.Hour)
	}
	// about 32 attempts in a day with the defaults
	var elapsed time.Duration
	attempts := 1
	for elapsed += webhookBackoff(DefaultWebhookRetryDelay, attempts); elapsed <= DefaultWebhookMaxAge; elapsed += webhookBackoff(DefaultWebhookRetryDelay, attempts) {
		attempts++
	}
	if attempts < 25 || attempts > 40 {
		t.Errorf("%d attempts in max_age, want about 32", attempts)
	}
}

// receiver is a webhook receiver on loopback that records every
// attempt and answers with respond's status.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	attempts []attempt
	arrived  chan attempt
	respond  func(n int) int // the status of the nth attempt, from 1
}

// attempt is one request a receiver got.
type attempt struct {
	id, signature string
	body          []byte
	err           error // of the signature
}

func newReceiver(t *testing.T, secret string, respond func(n int) int) *receiver {
	r := &receiver{arrived: make(chan attempt, 100), respond: respond}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		a := attempt{id: req.Header.Get("Linktrack-Event-Id"), signature: req.Header.Get("Linktrack-Signature"), body: body}
		a.err = verifyLinktrack([]byte(secret), a.signature, body, time.Now())
		r.mu.Lock()
		r.attempts = append(r.attempts, a)
		n := len(r.attempts)
		r.mu.Unlock()
		w.WriteHeader(r.respond(n))
		r.arrived <- a
	}))
	t.Cleanup(r.Close)
	return r
}

// next returns the next attempt the receiver got.
func (r *receiver) next(t *testing.T) attempt {
	t.Helper()
	select {
	case a := <-r.arrived:
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook attempt in 30s")
		return attempt{}
	}
}

// testQueue starts a queue and stops it when the test ends.
func testQueue(t *testing.T, cfg webhookQueueConfig, logger *zap.Logger) (*webhookQueue, *webhookMetrics) {
	t.Helper()
	m, err := newWebhookMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.maxAge == 0 {
		cfg.maxAge = time.Hour
	}
	if cfg.timeout == 0 {
		cfg.timeout = 10 * time.Second
	}
	q := newWebhookQueue(cfg, logger, m)
	t.Cleanup(q.close)
	return q, m
}

// TestWebhookRetries: a receiver that answers 500, then refuses
// connections, gets the same event again, signed each time, until it
// answers 2xx.
func TestWebhookRetries(t *testing.T) {
	rcv := newReceiver(t, "s3cret", func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusNoContent
	})
	// a receiver that refuses connections at first: a port that was
	// listened on and closed, listened on again once it was refused
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := ln.Addr().String()
	ln.Close()
	q, m := testQueue(t, webhookQueueConfig{
		urls: []string{rcv.URL + "/hook"}, secret: []byte("s3cret"), size: 10, retryDelay: time.Millisecond,
	}, zap.NewNop())
	q.offer("evt-1", []byte(`{"state":"valid"}`), time.Now())
	for i := range 3 {
		a := rcv.next(t)
		if a.id != "evt-1" || string(a.body) != `{"state":"valid"}` || a.err != nil {
			t.Errorf("attempt %d: id %q body %s signature %q (%v)", i+1, a.id, a.body, a.signature, a.err)
		}
	}
	waitCounter(t, m.delivered, 1)
	if n := testutil.ToFloat64(m.failed); n != 2 {
		t.Errorf("%v failed attempts counted, want 2", n)
	}

	refused := make(chan struct{})
	var once sync.Once
	logger := hookedLogger(func(e zapcore.Entry) {
		if e.Message == "webhook delivery failed; retrying" {
			once.Do(func() { close(refused) })
		}
	})
	down, downMetrics := testQueue(t, webhookQueueConfig{
		urls: []string{"http://" + downAddr + "/hook"}, secret: []byte("s3cret"), size: 10, retryDelay: time.Millisecond,
	}, logger)
	down.offer("evt-2", []byte(`{"state":"added"}`), time.Now())
	<-refused
	back := &http.Server{Handler: rcv.Config.Handler}
	ln, err = net.Listen("tcp", downAddr)
	if err != nil {
		t.Skipf("the refused port was taken meanwhile: %v", err)
	}
	go back.Serve(ln)
	t.Cleanup(func() { back.Close() })
	if a := rcv.next(t); a.id != "evt-2" || a.err != nil {
		t.Errorf("after refusals: id %q signature %v", a.id, a.err)
	}
	waitCounter(t, downMetrics.delivered, 1)
	if n := testutil.ToFloat64(downMetrics.failed); n < 1 {
		t.Errorf("%v failed attempts counted, want refusals", n)
	}
}

// TestWebhookMaxAge: a delivery still failing max_age after its event
// is dropped and counted.
func TestWebhookMaxAge(t *testing.T) {
	rcv := newReceiver(t, "s3cret", func(int) int { return http.StatusBadGateway })
	dropped := make(chan struct{})
	logger := hookedLogger(func(e zapcore.Entry) {
		if e.Message == "webhook delivery dropped after max_age" {
			close(dropped)
		}
	})
	q, m := testQueue(t, webhookQueueConfig{
		urls: []string{rcv.URL}, secret: []byte("s3cret"), size: 10, retryDelay: time.Millisecond, maxAge: 50 * time.Millisecond,
	}, logger)
	q.offer("evt-1", []byte(`{}`), time.Now())
	select {
	case <-dropped:
	case <-time.After(30 * time.Second):
		t.Fatal("a delivery failing past max_age was not dropped")
	}
	if n := testutil.ToFloat64(m.dropped.WithLabelValues("max_age")); n != 1 {
		t.Errorf("dropped{max_age} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.failed); n < 2 {
		t.Errorf("%v failed attempts before the drop, want retries", n)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending != 0 || len(q.waiting) != 0 {
		t.Errorf("%d deliveries pending, %d waiting after the drop", q.pending, len(q.waiting))
	}
}

// TestWebhookQueueFull: with the receiver stuck, offers beyond the
// queue's size are dropped at once and counted; the rest are delivered
// once it answers.
func TestWebhookQueueFull(t *testing.T) {
	release := make(chan struct{})
	rcv := newReceiver(t, "s3cret", func(int) int {
		<-release
		return http.StatusOK
	})
	q, m := testQueue(t, webhookQueueConfig{
		urls: []string{rcv.URL + "/a", rcv.URL + "/b"}, secret: []byte("s3cret"), size: 3, retryDelay: time.Millisecond,
	}, zap.NewNop())
	for i := range 5 {
		q.offer("evt-"+strconv.Itoa(i), []byte(`{}`), time.Now()) // returns with the receiver stuck
	}
	if n := testutil.ToFloat64(m.dropped.WithLabelValues("queue_full")); n != 7 {
		t.Errorf("dropped{queue_full} = %v for 10 deliveries into a queue of 3, want 7", n)
	}
	close(release)
	waitCounter(t, m.delivered, 3)
}

// TestWebhookHandle: a tenant_state event becomes the documented body;
// other events are ignored.
func TestWebhookHandle(t *testing.T) {
	rcv := newReceiver(t, "s3cret", func(int) int { return http.StatusOK })
	q, _ := testQueue(t, webhookQueueConfig{urls: []string{rcv.URL}, secret: []byte("s3cret"), size: 10, retryDelay: time.Second}, zap.NewNop())
	w := &Webhook{queue: q}
	ctx := caddy.Context{Context: context.Background()}
	other, _ := caddy.NewEvent(ctx, "tenant_added", map[string]any{"domain": "click.brand.test"})
	if err := w.Handle(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	notAfter := time.Date(2027, 2, 20, 23, 11, 5, 0, time.UTC)
	e, _ := caddy.NewEvent(ctx, tenantStateEvent, map[string]any{
		"domain": "click.brand.test", "state": stateFailed, "error": "dns not ready",
		"metadata": json.RawMessage(`{"customer":"c_42"}`), "provider": "customerio", "region": "eu",
		"not_after": notAfter, "time": time.Now(),
	})
	if err := w.Handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	a := rcv.next(t)
	var got map[string]any
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"id": e.ID().String(), "time": e.Timestamp().UTC().Format(time.RFC3339Nano),
		"domain": "click.brand.test", "state": "failed", "error": "dns not ready",
		"metadata": map[string]any{"customer": "c_42"}, "provider": "customerio", "region": "eu",
		"not_after": "2027-02-20T23:11:05Z",
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) || a.id != e.ID().String() {
		t.Errorf("body %s (id header %q), want %s", gotJSON, a.id, wantJSON)
	}
}

// TestWebhookReload: a config reload that keeps the webhook keeps its
// queue; removing it from every config stops the queue.
func TestWebhookReload(t *testing.T) {
	t.Setenv("LINKTRACK_TEST_WEBHOOK_SECRET", "s3cret")
	provision := func() (*Webhook, context.CancelFunc) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		w := &Webhook{URLs: []string{"http://127.0.0.1:9/hook"}, Secret: "{env.LINKTRACK_TEST_WEBHOOK_SECRET}"}
		if err := w.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return w, cancel
	}
	first, cancelFirst := provision()
	if string(first.queue.secret) != "s3cret" {
		t.Errorf("secret %q, want the environment's", first.queue.secret)
	}
	second, cancelSecond := provision()
	if first.queue != second.queue {
		t.Fatal("a reload with the same settings started another queue")
	}
	if first.Cleanup() != nil {
		t.Fatal("cleanup failed")
	}
	cancelFirst()
	if second.queue.ctx.Err() != nil {
		t.Fatal("the old config's cleanup stopped the queue the new config uses")
	}
	if second.Cleanup() != nil {
		t.Fatal("cleanup failed")
	}
	cancelSecond()
	if second.queue.ctx.Err() == nil {
		t.Fatal("the queue runs on after its last config")
	}
}

func TestWebhookCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input, err string
		want       Webhook
	}{
		{input: "linktrack_webhook https://a.test/h {\n secret x\n}", want: Webhook{URLs: []string{"https://a.test/h"}, Secret: "x"}},
		{
			input: "linktrack_webhook https://a.test/h {\n url https://b.test/h https://c.test/h\n secret {env.S}\n queue_size 5\n max_age 1h\n retry_delay 1s\n timeout 2s\n}",
			want: Webhook{URLs: []string{"https://a.test/h", "https://b.test/h", "https://c.test/h"}, Secret: "{env.S}", QueueSize: 5,
				MaxAge: caddy.Duration(time.Hour), RetryDelay: caddy.Duration(time.Second), Timeout: caddy.Duration(2 * time.Second)},
		},
		{input: "linktrack_webhook {\n secret x\n}", err: "at least one URL"},
		{input: "linktrack_webhook https://a.test/h", err: "secret is required"},
		{input: "linktrack_webhook https://a.test/h {\n secret x\n secret y\n}", err: "secret already specified"},
		{input: "linktrack_webhook https://a.test/h {\n secret x\n queue_size -1\n}", err: "not a positive integer"},
		{input: "linktrack_webhook https://a.test/h {\n secret x\n max_age soon\n}", err: "not a positive duration"},
		{input: "linktrack_webhook https://a.test/h {\n secret x\n retries 3\n}", err: "unrecognized subdirective 'retries'"},
	} {
		var w Webhook
		err := w.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.input, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.input, err)
			continue
		}
		got, _ := json.Marshal(w)
		want, _ := json.Marshal(tc.want)
		if string(got) != string(want) {
			t.Errorf("%q: %s, want %s", tc.input, got, want)
		}
	}
}

// hookedLogger returns a logger that calls hook with every entry
// logged, at any level.
func hookedLogger(hook func(zapcore.Entry)) *zap.Logger {
	core, _ := observer.New(zapcore.DebugLevel)
	return zap.New(zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
		hook(e)
		return nil
	}))
}

// waitCounter waits until c reaches want.
func waitCounter(t *testing.T, c prometheus.Counter, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for testutil.ToFloat64(c) < want {
		if time.Now().After(deadline) {
			t.Fatalf("counter at %v, want %v", testutil.ToFloat64(c), want)
		}
		time.Sleep(time.Millisecond)
	}
}
