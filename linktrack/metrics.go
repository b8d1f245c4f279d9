package linktrack

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// appMetrics are the linktrack app's metrics, registered in the metrics
// registry of the config that loaded the app. Labels never name a
// tenant: a platform may have hundreds of thousands.
type appMetrics struct {
	tenants *prometheus.GaugeVec
	reloads *prometheus.CounterVec
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
			Help:      "Registry reloads by source and result (ok or error).",
		}, []string{"source", "result"}),
	}
	var err error
	m.tenants, err = register(registry, m.tenants)
	if err != nil {
		return nil, err
	}
	m.reloads, err = register(registry, m.reloads)
	return m, err
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
