package linktrack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Webhook{})
}

// Default settings of a webhook.
const (
	DefaultWebhookQueueSize  = 10000
	DefaultWebhookMaxAge     = 24 * time.Hour
	DefaultWebhookRetryDelay = 10 * time.Second
	DefaultWebhookTimeout    = 10 * time.Second
)

// webhookQueues holds the queue of each webhook's settings, so that a
// config reload that keeps a webhook keeps its queue and the retries in
// it; a queue ends when no config uses it any more.
var webhookQueues = caddy.NewUsagePool()

// Webhook is an event handler that delivers tenant_state events, which
// the linktrack app emits at every change of a tenant's lifecycle state,
// to URLs as signed JSON. Subscribe it to tenant_state in the events app;
// it ignores other events. Handle only queues, so it never holds up
// issuance or a handshake; delivery happens in the background, with
// retries. The body of a delivery:
//
//	{"id": "<event id>", "time": "<RFC 3339>", "domain": "...", "state": "...",
//	 "error": "...", "metadata": {...}, "provider": "...", "region": "...",
//	 "origin": "...", "not_after": "<RFC 3339>"}
//
// with error, metadata, provider, region, origin and not_after only when
// set. The header Linktrack-Signature is `t=<unix seconds>,v1=<hex>`: the
// HMAC-SHA256, keyed with the secret, of the unix seconds, a '.' and the
// body. Linktrack-Event-Id repeats the id, the same at every attempt.
//
// EXPERIMENTAL: like Caddy's events app.
type Webhook struct {
	// The URLs each event is delivered to; each gets its own delivery,
	// retried on its own. Placeholders such as `{env.HOOK_URL}` are
	// replaced. REQUIRED.
	URLs []string `json:"urls"`

	// The key of the HMAC-SHA256 signature of each delivery. Placeholders
	// such as `{env.LINKTRACK_WEBHOOK_SECRET}` are replaced, so the secret
	// need not be written in the config. REQUIRED.
	Secret string `json:"secret"`

	// At most this many deliveries (an event to a URL) are held in
	// memory, queued, in flight or waiting to be retried; an event that
	// finds the queue full is dropped and counted in
	// caddy_linktrack_webhook_dropped_total{reason="queue_full"}.
	// Default: 10000.
	QueueSize int `json:"queue_size,omitempty"`

	// A delivery is retried until this long after its event, then
	// dropped and counted. Default: `24h`.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// The delay before the first retry of a delivery; it doubles at
	// each further failure, up to 1h. Default: `10s`.
	RetryDelay caddy.Duration `json:"retry_delay,omitempty"`

	// How long one attempt may take, from dialing to the end of the
	// response; longer is a failure, retried. Default: `10s`.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	queue    *webhookQueue
	poolKey  string
	metrics  *webhookMetrics
	previous *webhookMetrics // the queue's metrics before this config's
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Webhook) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "events.handlers.linktrack_webhook",
		New: func() caddy.Module { return new(Webhook) },
	}
}

// Provision checks the settings, sets defaults, and takes the queue of
// these settings, which a previous config may have started.
func (w *Webhook) Provision(ctx caddy.Context) error {
	w.logger = ctx.Logger()
	if w.QueueSize == 0 {
		w.QueueSize = DefaultWebhookQueueSize
	}
	if w.MaxAge == 0 {
		w.MaxAge = caddy.Duration(DefaultWebhookMaxAge)
	}
	if w.RetryDelay == 0 {
		w.RetryDelay = caddy.Duration(DefaultWebhookRetryDelay)
	}
	if w.Timeout == 0 {
		w.Timeout = caddy.Duration(DefaultWebhookTimeout)
	}
	if w.QueueSize < 0 || w.MaxAge < 0 || w.RetryDelay < 0 || w.Timeout < 0 {
		return errors.New("queue_size, max_age, retry_delay and timeout must be positive")
	}
	repl := caddy.NewReplacer()
	cfg := webhookQueueConfig{
		secret:     []byte(repl.ReplaceKnown(w.Secret, "")),
		size:       w.QueueSize,
		maxAge:     time.Duration(w.MaxAge),
		retryDelay: time.Duration(w.RetryDelay),
		timeout:    time.Duration(w.Timeout),
	}
	if len(w.URLs) == 0 {
		return errors.New("urls: at least one URL is required")
	}
	for _, raw := range w.URLs {
		u, err := url.Parse(repl.ReplaceKnown(raw, ""))
		if err != nil {
			return fmt.Errorf("urls: '%s': %v", raw, err)
		}
		if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("urls: '%s' must be an http or https URL with a host", raw)
		}
		cfg.urls = append(cfg.urls, u.String())
	}
	if len(cfg.secret) == 0 {
		return errors.New("secret is required (it is empty once its placeholders are replaced)")
	}

	var err error
	if w.metrics, err = newWebhookMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering webhook metrics: %v", err)
	}
	w.poolKey = cfg.key()
	q, _, err := webhookQueues.LoadOrNew(w.poolKey, func() (caddy.Destructor, error) {
		return newWebhookQueue(cfg, w.logger, w.metrics), nil
	})
	if err != nil {
		return err
	}
	w.queue = q.(*webhookQueue)
	w.previous = w.queue.metrics.Swap(w.metrics)
	return nil
}

// key names the queue of these settings, without holding the secret.
func (cfg webhookQueueConfig) key() string {
	raw, _ := json.Marshal([]any{cfg.urls, cfg.secret, cfg.size, cfg.maxAge, cfg.retryDelay, cfg.timeout})
	sum := sha256.Sum256(raw)
	return "linktrack_webhook " + hex.EncodeToString(sum[:])
}

// webhookPayload is the body of a delivery.
type webhookPayload struct {
	ID       string          `json:"id"`
	Time     time.Time       `json:"time"`
	Domain   string          `json:"domain"`
	State    string          `json:"state"`
	Error    string          `json:"error,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Provider string          `json:"provider,omitempty"`
	Region   string          `json:"region,omitempty"`
	Origin   string          `json:"origin,omitempty"`
	NotAfter *time.Time      `json:"not_after,omitempty"`
}

// Handle queues a tenant_state event's delivery to each URL and returns
// at once; a full queue drops it.
func (w *Webhook) Handle(_ context.Context, e caddy.Event) error {
	if e.Name() != tenantStateEvent {
		return nil
	}
	p := webhookPayload{ID: e.ID().String(), Time: e.Timestamp().UTC()}
	p.Domain, _ = e.Data["domain"].(string)
	p.State, _ = e.Data["state"].(string)
	p.Error, _ = e.Data["error"].(string)
	p.Provider, _ = e.Data["provider"].(string)
	p.Region, _ = e.Data["region"].(string)
	p.Origin, _ = e.Data["origin"].(string)
	if notAfter, ok := e.Data["not_after"].(time.Time); ok {
		notAfter = notAfter.UTC()
		p.NotAfter = &notAfter
	}
	switch md := e.Data["metadata"].(type) {
	case nil:
	case json.RawMessage:
		if json.Valid(md) {
			p.Metadata = md
		}
	default:
		p.Metadata, _ = json.Marshal(md)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding the webhook body of '%s': %v", p.Domain, err)
	}
	w.queue.offer(p.ID, body, e.Timestamp())
	return nil
}

// Cleanup lets go of the queue; the last config to use it stops it.
func (w *Webhook) Cleanup() error {
	if w.queue == nil {
		return nil
	}
	// a config that failed to load hands the metrics back to the one
	// still running
	if w.previous != nil {
		w.queue.metrics.CompareAndSwap(w.metrics, w.previous)
	}
	_, err := webhookQueues.Delete(w.poolKey)
	return err
}

// Interface guards
var (
	_ caddy.Provisioner   = (*Webhook)(nil)
	_ caddy.CleanerUpper  = (*Webhook)(nil)
	_ caddyevents.Handler = (*Webhook)(nil)
)
