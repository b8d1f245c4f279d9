package integration

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-linktrack/caddy-linktrack/integration/internal/standin"
)

// webhookSecret signs the deliveries of the tests' webhooks.
const webhookSecret = "whsec_linktrack_test"

// hookReceiver is a webhook receiver on loopback. It records every
// delivery attempt and answers with what answer returns.
type hookReceiver struct {
	server *httptest.Server
	mu     sync.Mutex
	got    []hookAttempt
	added  chan struct{} // closed and replaced at every attempt
	answer func(a hookAttempt, sameID int) int
}

// hookAttempt is one attempt at a delivery, as received.
type hookAttempt struct {
	ID        string // the Linktrack-Event-Id header
	Signed    bool   // the signature matched the body and the secret
	Status    int    // answered
	Body      map[string]any
	Signature string
}

// startHookReceiver starts a receiver; answer gets each attempt and how
// many attempts of its event id came before it, and returns the status.
func startHookReceiver(t *testing.T, answer func(a hookAttempt, sameID int) int) *hookReceiver {
	t.Helper()
	r := &hookReceiver{added: make(chan struct{}), answer: answer}
	r.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		raw, _ := io.ReadAll(req.Body)
		a := hookAttempt{ID: req.Header.Get("Linktrack-Event-Id"), Signature: req.Header.Get("Linktrack-Signature")}
		a.Signed = signatureValid(a.Signature, raw)
		if err := json.Unmarshal(raw, &a.Body); err != nil || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook request %s %q: %v %s", req.Method, req.Header.Get("Content-Type"), err, raw)
		}
		r.mu.Lock()
		same := 0
		for _, prior := range r.got {
			if prior.ID == a.ID {
				same++
			}
		}
		r.mu.Unlock()
		a.Status = r.answer(a, same) // may block, as a stuck receiver does
		w.WriteHeader(a.Status)
		r.mu.Lock()
		r.got = append(r.got, a)
		close(r.added)
		r.added = make(chan struct{})
		r.mu.Unlock()
	}))
	t.Cleanup(r.server.Close)
	return r
}

// signatureValid checks a Linktrack-Signature header, "t=<unix>,v1=<hex
// HMAC-SHA256 of '<unix>.<body>'>", independently of linktrack's code.
func signatureValid(header string, body []byte) bool {
	ts, sig, ok := strings.Cut(strings.TrimPrefix(header, "t="), ",v1=")
	if !ok {
		return false
	}
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	fmt.Fprintf(mac, "%s.%s", ts, body)
	return hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil))))
}

// waitFor waits until match accepts one of the attempts received, and
// returns the attempts so far.
func (r *hookReceiver) waitFor(t *testing.T, what string, match func(got []hookAttempt) bool) []hookAttempt {
	t.Helper()
	expired := time.After(time.Minute)
	for {
		r.mu.Lock()
		got, added := append([]hookAttempt(nil), r.got...), r.added
		r.mu.Unlock()
		if match(got) {
			return got
		}
		select {
		case <-added:
		case <-expired:
			t.Fatalf("no webhook %s in 1m; received:\n%s", what, describeAttempts(got))
		}
	}
}

// delivered returns the attempt answered 2xx of the domain's state, if
// any.
func delivered(got []hookAttempt, domain, state string) (hookAttempt, bool) {
	for _, a := range got {
		if a.Body["domain"] == domain && a.Body["state"] == state && a.Status < 300 {
			return a, true
		}
	}
	return hookAttempt{}, false
}

func describeAttempts(got []hookAttempt) string {
	var lines []string
	for _, a := range got {
		lines = append(lines, fmt.Sprintf("%s %d signed=%v %v", a.ID, a.Status, a.Signed, a.Body))
	}
	return strings.Join(lines, "\n")
}

// webhookNode is a Caddy with on-demand TLS from its internal CA and
// pre-issuance, whose tenant_state events go to a webhook at hookURL,
// configured in the Caddyfile's events option; hookOptions are more
// lines of the webhook's block.
type webhookNode struct {
	caddy                          *caddyProcess
	adminPort, httpPort, httpsPort int
}

func startWebhookNode(t *testing.T, hookURL, hookOptions string) *webhookNode {
	t.Helper()
	dir := t.TempDir()
	ca, caFile := newTestCA(t, dir)
	origin := startOrigin(t, ca, []string{"localhost"}, func(*standin.Received) standin.Response { return redirectResponse() })
	n := &webhookNode{adminPort: freePort(t), httpPort: freePort(t), httpsPort: freePort(t)}
	n.caddy = startCaddy(t, "caddyfile", fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	skip_install_trust
	storage file_system %s
	on_demand_tls {
		permission linktrack
	}
	servers {
		protocols h1
	}
	events {
		on tenant_state linktrack_webhook %s {
			secret %s
			%s
		}
	}
	linktrack {
		origin esp https://localhost:%d {
			tls_trust_pool file %s
		}
	}
}

https:// {
	tls {
		on_demand
		issuer internal
	}
	linktrack
}

http:// {
	linktrack
}
`, n.adminPort, n.httpPort, n.httpsPort, filepath.Join(dir, "storage"), hookURL, webhookSecret, hookOptions, origin.Port(), caFile))
	return n
}

// click sends a click for domain over HTTPS and returns its status.
func (n *webhookNode) click(t *testing.T, domain string) int {
	t.Helper()
	c, err := standin.DialRaw(fmt.Sprintf("127.0.0.1:%d", n.httpsPort), &tls.Config{ServerName: domain, InsecureSkipVerify: true}) //nolint:gosec // the internal CA's
	if err != nil {
		t.Fatalf("handshake for %s: %v", domain, err)
	}
	defer c.Close()
	res, err := c.Do(standin.RawRequest{Method: "GET", Target: "/ls/click?upn=x", Host: domain}, time.Minute)
	if err != nil {
		t.Fatalf("click on %s: %v", domain, err)
	}
	return res.Status
}

// TestWebhookTenantStates: a tenant added through the admin API is
// delivered as added, then valid once the background issuance got its
// certificate, then removed; each delivery is signed over its exact
// body, and its id header is the body's.
func TestWebhookTenantStates(t *testing.T) {
	t.Parallel()
	rcv := startHookReceiver(t, func(hookAttempt, int) int { return http.StatusNoContent })
	n := startWebhookNode(t, rcv.server.URL+"/hooks/linktrack", "")
	const domain = "click.hooks.test"
	if status, body := adminRequest(t, n.adminPort, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT: %d %s", status, body)
	}
	got := rcv.waitFor(t, "added and valid", func(got []hookAttempt) bool {
		_, added := delivered(got, domain, "added")
		_, valid := delivered(got, domain, "valid")
		return added && valid
	})
	added, _ := delivered(got, domain, "added")
	valid, _ := delivered(got, domain, "valid")
	for _, a := range []hookAttempt{added, valid} {
		if !a.Signed || a.ID == "" || a.Body["id"] != a.ID || a.Body["origin"] != "esp" || a.Body["time"] == nil {
			t.Errorf("%s delivery: id %q signature %q (valid: %v) body %v", a.Body["state"], a.ID, a.Signature, a.Signed, a.Body)
		}
	}
	if notAfter, _ := time.Parse(time.RFC3339, fmt.Sprint(valid.Body["not_after"])); notAfter.Before(time.Now()) {
		t.Errorf("valid delivery: not_after %v, want the certificate's expiry", valid.Body["not_after"])
	}
	if added.ID == valid.ID {
		t.Error("added and valid share an event id")
	}
	if status := n.click(t, domain); status != 302 {
		t.Errorf("click: %d", status)
	}

	if status, body := adminRequest(t, n.adminPort, "DELETE", "/linktrack/tenants/"+domain, ""); status != 200 && status != 204 {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	got = rcv.waitFor(t, "removed", func(got []hookAttempt) bool { _, ok := delivered(got, domain, "removed"); return ok })
	if removed, _ := delivered(got, domain, "removed"); !removed.Signed || removed.Body["origin"] != "esp" {
		t.Errorf("removed delivery: signature %q (valid: %v) body %v", removed.Signature, removed.Signed, removed.Body)
	}
	for _, a := range got {
		if !a.Signed {
			t.Errorf("an unsigned delivery: %s %v", a.Signature, a.Body)
		}
	}
	// counted once the receiver's answer is read
	waitMetric(t, n.adminPort, "caddy_linktrack_webhook_delivered_total", func(v float64) bool { return v >= 3 })
}

// waitMetric waits until the value of the metric named (labels
// included) satisfies ok.
func waitMetric(t *testing.T, adminPort int, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for metrics := scrapeMetrics(t, adminPort); !ok(metricValue(metrics, name)); metrics = scrapeMetrics(t, adminPort) {
		if time.Now().After(deadline) {
			t.Fatalf("%s at %v after 30s:\n%s", name, metricValue(metrics, name), grepLines(metrics, "webhook"))
		}
		time.Sleep(20 * time.Millisecond) // polls a counter, not a readiness guess
	}
}

// TestWebhookReceiverDown: a receiver that answers 500 gets the same
// event again, with backoff, until it answers 2xx.
func TestWebhookReceiverDown(t *testing.T) {
	t.Parallel()
	rcv := startHookReceiver(t, func(a hookAttempt, sameID int) int {
		if a.Body["state"] == "added" && sameID < 2 {
			return http.StatusInternalServerError // down for the first two attempts
		}
		return http.StatusOK
	})
	n := startWebhookNode(t, rcv.server.URL, "retry_delay 50ms")
	const domain = "down.hooks.test"
	if status, body := adminRequest(t, n.adminPort, "PUT", "/linktrack/tenants/"+domain, `{"origin": "esp"}`); status != 201 {
		t.Fatalf("PUT: %d %s", status, body)
	}
	got := rcv.waitFor(t, "added delivered after retries", func(got []hookAttempt) bool { _, ok := delivered(got, domain, "added"); return ok })
	success, _ := delivered(got, domain, "added")
	var failed int
	for _, a := range got {
		if a.ID == success.ID && a.Status == http.StatusInternalServerError {
			failed++
			if !a.Signed || a.Body["state"] != "added" {
				t.Errorf("retry of %s: signature valid %v, body %v", a.ID, a.Signed, a.Body)
			}
		}
	}
	if failed != 2 {
		t.Errorf("%d failed attempts of event %s before it was delivered, want 2:\n%s", failed, success.ID, describeAttempts(got))
	}
	// the failures were counted before the retry that succeeded
	n.caddy.waitLog(t, "webhook delivered again", nil)
	if v := metricValue(scrapeMetrics(t, n.adminPort), "caddy_linktrack_webhook_failed_total"); v != 2 {
		t.Errorf("caddy_linktrack_webhook_failed_total %v, want 2", v)
	}
}

// TestWebhookQueueFullNeverWaits: with the receiver stuck and a queue of
// one delivery, a bulk change of 20 tenants drops the deliveries it has
// no room for and counts them, while the tenants' certificates are
// issued and their clicks served.
func TestWebhookQueueFullNeverWaits(t *testing.T) {
	t.Parallel()
	stuck := make(chan struct{})
	rcv := startHookReceiver(t, func(hookAttempt, int) int {
		<-stuck
		return http.StatusOK
	})
	t.Cleanup(func() { close(stuck) }) // before the receiver closes
	n := startWebhookNode(t, rcv.server.URL, "queue_size 1\n\t\t\ttimeout 5m")
	var tenants []string
	for i := range 20 {
		tenants = append(tenants, fmt.Sprintf(`{"domain": "t%d.stuck-hooks.test", "origin": "esp"}`, i))
	}
	// the change emits its added events before it answers: it must not
	// wait on the stuck receiver
	answered := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/linktrack/tenants", n.adminPort),
			strings.NewReader(`{"tenants": [`+strings.Join(tenants, ",")+`]}`))
		req.Header.Set("Content-Type", "application/json")
		res, err := controlClient.Do(req)
		if err != nil {
			answered <- err.Error()
			return
		}
		res.Body.Close()
		answered <- res.Status
	}()
	select {
	case status := <-answered:
		if status != "200 OK" {
			t.Fatalf("bulk POST: %s", status)
		}
	case <-time.After(time.Minute):
		t.Fatal("the bulk POST waited a minute on the stuck webhook receiver")
	}
	// every tenant gets its certificate in the background, each
	// emitting valid into the full queue
	n.caddy.waitLogCount(t, 2*time.Minute, "tenant certificate obtained", 20, nil)
	for _, domain := range []string{"t0.stuck-hooks.test", "t19.stuck-hooks.test"} {
		if status := n.click(t, domain); status != 302 {
			t.Errorf("click on %s with the receiver stuck: %d", domain, status)
		}
	}
	// 40 events (added and valid for each) into a queue of one; the
	// last valid may follow its log line by a moment
	waitMetric(t, n.adminPort, `caddy_linktrack_webhook_dropped_total{reason="queue_full"}`, func(v float64) bool { return v == 39 })
	if len(n.caddy.logEntriesNamed("webhook queue full; dropping events until it has room")) != 1 {
		t.Error("the full queue was not logged once")
	}
}
