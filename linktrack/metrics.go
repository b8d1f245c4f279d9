package linktrack

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// appMetrics are the linktrack app's metrics, registered in the metrics
// registry of the config that loaded the app. Labels never name a
// tenant: a platform may have hundreds of thousands.
type appMetrics struct {
	tenants       *prometheus.GaugeVec
	reloads       *prometheus.CounterVec
	tenantChanges *prometheus.CounterVec
	certEvents    *prometheus.CounterVec
}

func newAppMetrics(registry *prometheus.Registry) (*appMetrics, error) {
	m := &appMetrics{
		tenants: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "caddy",
			Subsystem: "linktrack",
			Name:      "tenants",
			Help:      "Number of domains in the tenant registry in use.",
		}, nil),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linktrack",
			Name:      "registry_reloads_total",
			Help:      "Registry reloads by source and result: ok, error, or behind (storage had lost changes; the registry was kept).",
		}, []string{"source", "result"}),
		tenantChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linktrack",
			Name:      "tenant_changes_total",
			Help:      "Tenants added to or removed from the registry after it first loaded.",
		}, []string{"change"}),
		certEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linktrack",
			Name:      "certificate_events_total",
			Help:      "Tenants' certificates obtained, renewed or failed.",
		}, []string{"event"}),
	}
	var err error
	if m.tenants, err = register(registry, m.tenants); err != nil {
		return nil, err
	}
	if m.reloads, err = register(registry, m.reloads); err != nil {
		return nil, err
	}
	if m.tenantChanges, err = register(registry, m.tenantChanges); err != nil {
		return nil, err
	}
	m.certEvents, err = register(registry, m.certEvents)
	return m, err
}

// webhookMetrics are the webhooks' delivery metrics, shared by every
// webhook of a config: their labels never name a URL, which may carry a
// token.
type webhookMetrics struct {
	delivered prometheus.Counter
	failed    prometheus.Counter
	dropped   *prometheus.CounterVec
}

func newWebhookMetrics(registry *prometheus.Registry) (*webhookMetrics, error) {
	m := &webhookMetrics{
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linktrack",
			Name:      "webhook_delivered_total",
			Help:      "Webhook deliveries answered 2xx.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linktrack",
			Name:      "webhook_failed_total",
			Help:      "Webhook delivery attempts that failed (an error or a status other than 2xx); each is retried until max_age.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linktrack",
			Name:      "webhook_dropped_total",
			Help:      "Webhook deliveries given up, by reason: queue_full (never queued), max_age (retried for max_age), stopped (the webhook was removed or Caddy stopped).",
		}, []string{"reason"}),
	}
	var err error
	if m.delivered, err = register(registry, m.delivered); err != nil {
		return nil, err
	}
	if m.failed, err = register(registry, m.failed); err != nil {
		return nil, err
	}
	if m.dropped, err = register(registry, m.dropped); err != nil {
		return nil, err
	}
	for _, reason := range []string{"queue_full", "max_age", "stopped"} {
		m.dropped.WithLabelValues(reason) // shown at 0, for alerts
	}
	return m, nil
}

// proxyMetrics are one origin's request metrics, bound to its provider
// and region once, so that a request updates them without label lookups.
type proxyMetrics struct {
	requests [6]prometheus.Counter // by status class: index 1 for 1xx ... 5 for 5xx
	duration prometheus.Observer
	errorVec *prometheus.CounterVec
	provider string
	region   string
}

// errors returns the counter of origin errors with the given cause.
func (m *proxyMetrics) errors(cause string) prometheus.Counter {
	return m.errorVec.WithLabelValues(m.provider, m.region, cause)
}

// observe records a request's status and its time to the origin's
// response headers.
func (m *proxyMetrics) observe(status int, roundTrip time.Duration) {
	if class := status / 100; class > 0 && class < len(m.requests) {
		m.requests[class].Inc()
	}
	m.duration.Observe(roundTrip.Seconds())
}

func newProxyMetrics(registry *prometheus.Registry, provider, region string) (*proxyMetrics, error) {
	requests, err := register(registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "requests_total",
		Help:      "Requests forwarded to tracking origins, by provider, region and status class.",
	}, []string{"provider", "region", "status_class"}))
	if err != nil {
		return nil, err
	}
	duration, err := register(registry, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "origin_duration_seconds",
		Help:      "Time from sending a request to the origin to its response headers.",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"provider", "region"}))
	if err != nil {
		return nil, err
	}
	errorVec, err := register(registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "origin_errors_total",
		Help:      "Requests the origin did not answer, by provider, region and cause.",
	}, []string{"provider", "region", "cause"}))
	if err != nil {
		return nil, err
	}
	m := &proxyMetrics{
		duration: duration.WithLabelValues(provider, region),
		errorVec: errorVec,
		provider: provider,
		region:   region,
	}
	for class := 1; class < len(m.requests); class++ {
		m.requests[class] = requests.WithLabelValues(provider, region, statusClass(class*100))
	}
	return m, nil
}

// newRejections returns the counter of requests answered 421 because no
// tenant matched, by reason: unknown_host or sni_mismatch.
func newRejections(registry *prometheus.Registry) (*prometheus.CounterVec, error) {
	return register(registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "rejected_requests_total",
		Help:      "Requests answered locally with 421 and never forwarded, by reason.",
	}, []string{"reason"}))
}

// newTenantRequests returns the opt-in per-tenant request counter.
func newTenantRequests(registry *prometheus.Registry) (*prometheus.CounterVec, error) {
	return register(registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "linktrack",
		Name:      "tenant_requests_total",
		Help:      "Requests forwarded, by tenant and status class (opt-in: per_tenant_metrics).",
	}, []string{"tenant", "status_class"}))
}

func statusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}

// register registers c, or returns the collector already registered
// under the same description.
func register[C prometheus.Collector](registry *prometheus.Registry, c C) (C, error) {
	if registry == nil {
		return c, nil
	}
	if err := registry.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
