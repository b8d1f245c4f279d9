package linktrack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// webhookWorkers is how many deliveries of one webhook are attempted at
// once.
const webhookWorkers = 4

// maxWebhookRetryDelay caps the delay between two attempts of a
// delivery.
const maxWebhookRetryDelay = time.Hour

// webhookBackoff returns the delay before the next attempt of a
// delivery whose attempts failed failed times: first, doubled at each
// further failure, up to maxWebhookRetryDelay.
func webhookBackoff(first time.Duration, failed int) time.Duration {
	d := first
	for i := 1; i < failed && d < maxWebhookRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxWebhookRetryDelay)
}

// webhookQueue delivers events to a webhook's URLs from memory. It
// holds at most size deliveries (one per event and URL), queued, in
// flight or waiting to be retried; an event offered while it is full is
// dropped for that URL and counted, so that offering never waits. A
// delivery is retried with webhookBackoff until an attempt is answered
// 2xx, or dropped when its next attempt would come more than maxAge
// after the event. It outlives config reloads that keep the webhook's
// settings (see Webhook), so retries go on through them.
type webhookQueue struct {
	urls       []string
	secret     []byte
	size       int
	maxAge     time.Duration
	retryDelay time.Duration
	client     *http.Client
	logger     *zap.Logger
	// the metrics of the config in use; a reload swaps them
	metrics atomic.Pointer[webhookMetrics]

	ready   chan *webhookDelivery // never holds more than size: a send never waits
	ctx     context.Context       // ends at close, and with it the attempts in flight
	cancel  context.CancelFunc
	workers sync.WaitGroup

	mu      sync.Mutex
	pending int                              // deliveries queued, in flight or waiting to be retried
	waiting map[*webhookDelivery]*time.Timer // deliveries waiting to be retried
	failing map[string]bool                  // URLs whose last attempt failed
	full    bool                             // the last delivery offered was dropped
	closed  bool
}

// webhookDelivery is one event to deliver to one URL.
type webhookDelivery struct {
	url    string
	id     string    // the event's
	body   []byte    // signed as it is sent
	since  time.Time // the event's time: max_age counts from it
	failed int       // attempts that failed so far
}

// webhookQueueConfig are a webhook queue's settings, with their
// defaults applied.
type webhookQueueConfig struct {
	urls       []string
	secret     []byte
	size       int
	maxAge     time.Duration
	retryDelay time.Duration
	timeout    time.Duration
}

// newWebhookQueue returns a queue whose workers deliver until close.
func newWebhookQueue(cfg webhookQueueConfig, logger *zap.Logger, metrics *webhookMetrics) *webhookQueue {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = webhookWorkers
	q := &webhookQueue{
		urls:       cfg.urls,
		secret:     cfg.secret,
		size:       cfg.size,
		maxAge:     cfg.maxAge,
		retryDelay: cfg.retryDelay,
		client: &http.Client{
			Transport: transport,
			Timeout:   cfg.timeout,
			// a redirect is an answer, not a delivery: it is retried
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		logger:  logger,
		ready:   make(chan *webhookDelivery, cfg.size),
		waiting: make(map[*webhookDelivery]*time.Timer),
		failing: make(map[string]bool),
	}
	q.metrics.Store(metrics)
	q.ctx, q.cancel = context.WithCancel(context.Background())
	for range webhookWorkers {
		q.workers.Go(q.work)
	}
	return q
}

// offer queues an event's delivery to each URL, and drops it for the
// URLs it has no room for. It never waits.
func (q *webhookQueue) offer(id string, body []byte, since time.Time) {
	for _, u := range q.urls {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			q.metrics.Load().dropped.WithLabelValues("stopped").Inc()
			continue
		}
		if q.pending >= q.size {
			warn := !q.full
			q.full = true
			q.mu.Unlock()
			q.metrics.Load().dropped.WithLabelValues("queue_full").Inc()
			if warn {
				q.logger.Warn("webhook queue full; dropping events until it has room",
					zap.Int("queue_size", q.size), zap.String("url", loggedURL(u)))
			}
			continue
		}
		q.pending++
		q.full = false
		q.mu.Unlock()
		q.ready <- &webhookDelivery{url: u, id: id, body: body, since: since}
	}
}

// work attempts the deliveries that are ready until the queue closes.
func (q *webhookQueue) work() {
	for {
		select {
		case <-q.ctx.Done():
			return
		case d := <-q.ready:
			q.attempt(d)
		}
	}
}

// attempt sends a delivery once, and schedules its retry when it fails.
func (q *webhookQueue) attempt(d *webhookDelivery) {
	err := q.post(d)
	if q.ctx.Err() != nil {
		return // closing: close counts it
	}
	m := q.metrics.Load()
	if err == nil {
		m.delivered.Inc()
		q.mu.Lock()
		q.pending--
		recovered := q.failing[d.url]
		delete(q.failing, d.url)
		q.mu.Unlock()
		if recovered {
			q.logger.Info("webhook delivered again", zap.String("url", loggedURL(d.url)))
		}
		return
	}
	m.failed.Inc()
	d.failed++
	// d belongs to this call only until its retry is scheduled: the
	// retry may run, on another worker, before this call has logged
	attempts := d.failed
	delay := webhookBackoff(q.retryDelay, attempts)
	next := time.Now().Add(delay)
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return // close counts it
	}
	first := !q.failing[d.url]
	q.failing[d.url] = true
	if next.After(d.since.Add(q.maxAge)) {
		q.pending--
		q.mu.Unlock()
		m.dropped.WithLabelValues("max_age").Inc()
		q.logger.Error("webhook delivery dropped after max_age",
			zap.String("url", loggedURL(d.url)), zap.String("id", d.id), zap.Int("attempts", attempts),
			zap.Duration("max_age", q.maxAge), zap.Error(err))
		return
	}
	q.waiting[d] = time.AfterFunc(delay, func() { q.retry(d) })
	q.mu.Unlock()
	log := q.logger.Debug
	if first {
		log = q.logger.Warn
	}
	log("webhook delivery failed; retrying", zap.String("url", loggedURL(d.url)), zap.String("id", d.id),
		zap.Int("attempts", attempts), zap.Time("next_try", next), zap.Error(err))
}

// retry queues a delivery whose retry delay ended.
func (q *webhookQueue) retry(d *webhookDelivery) {
	q.mu.Lock()
	delete(q.waiting, d)
	closed := q.closed
	q.mu.Unlock()
	if !closed {
		q.ready <- d
	}
}

// post sends a delivery, signed now, and reports whether it was answered
// 2xx.
func (q *webhookQueue) post(d *webhookDelivery) error {
	req, err := http.NewRequestWithContext(q.ctx, http.MethodPost, d.url, bytes.NewReader(d.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-linktrack-webhook")
	req.Header.Set(webhookEventIDHeader, d.id)
	req.Header.Set(webhookSignatureHeader, signWebhook(q.secret, d.body, time.Now()))
	resp, err := q.client.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // without the URL, which may hold a token
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// loggedURL returns a webhook URL as logs show it: without a query or
// user info, which may hold a token.
func loggedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// Destruct implements caddy.Destructor: the last config using the queue
// is gone.
func (q *webhookQueue) Destruct() error {
	q.close()
	return nil
}

// close stops the workers and the retries, ending the attempts in
// flight, and counts what was not delivered as dropped.
func (q *webhookQueue) close() {
	q.mu.Lock()
	q.closed = true
	for _, t := range q.waiting {
		t.Stop()
	}
	q.mu.Unlock()
	q.cancel()
	q.workers.Wait()
	q.client.CloseIdleConnections()
	q.mu.Lock()
	lost := q.pending
	q.mu.Unlock()
	if lost > 0 {
		q.metrics.Load().dropped.WithLabelValues("stopped").Add(float64(lost))
		q.logger.Warn("webhook deliveries dropped: the webhook was removed or Caddy stopped", zap.Int("deliveries", lost))
	}
}

// Interface guards
var _ caddy.Destructor = (*webhookQueue)(nil)
