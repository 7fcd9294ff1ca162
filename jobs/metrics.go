package jobs

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the queue's Prometheus collectors. A nil Registerer leaves them unregistered (they still
// count, nobody scrapes them).
type metrics struct {
	submits  *prometheus.CounterVec // result: created, coalesced, error
	outcomes *prometheus.CounterVec // state: succeeded, failed
	retries  prometheus.Counter
	age      prometheus.Histogram // seconds from accept to finish
	running  prometheus.Gauge
}

// gauges lets a backend expose live values without keeping them in sync by hand.
type gauges struct {
	queued       func() float64 // jobs accepted and not started (including those waiting to retry)
	oldestQueued func() float64 // age in seconds of the oldest of those, 0 if none
}

func newMetrics(reg prometheus.Registerer, backend string, g gauges) (*metrics, error) {
	constLabels := prometheus.Labels{"backend": backend}
	m := &metrics{
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casearchiver_job_submits_total", ConstLabels: constLabels,
			Help: "Archive requests submitted, by result: created (new job), coalesced (into a queued or running job), error.",
		}, []string{"result"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casearchiver_job_outcomes_total", ConstLabels: constLabels,
			Help: "Jobs finished, by final state.",
		}, []string{"state"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "casearchiver_job_retries_total", ConstLabels: constLabels,
			Help: "Job attempts that failed with a retryable error and were scheduled again.",
		}),
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "casearchiver_job_age_seconds", ConstLabels: constLabels,
			Help:    "Time from accepting a job to its final state.",
			Buckets: []float64{0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600},
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "casearchiver_jobs_running", ConstLabels: constLabels,
			Help: "Jobs running on this instance.",
		}),
	}
	for _, s := range []string{"created", "coalesced", "error"} {
		m.submits.WithLabelValues(s)
	}
	for _, s := range []State{StateSucceeded, StateFailed} {
		m.outcomes.WithLabelValues(string(s))
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.submits, m.outcomes, m.retries, m.age, m.running}
	if g.queued != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "casearchiver_jobs_queued", ConstLabels: constLabels,
			Help: "Queue depth: jobs accepted on this instance and not started yet (including retries waiting for their backoff).",
		}, g.queued))
	}
	if g.oldestQueued != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "casearchiver_jobs_oldest_queued_age_seconds", ConstLabels: constLabels,
			Help: "Age of the oldest job waiting to start on this instance, 0 when none waits.",
		}, g.oldestQueued))
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("jobs: register metrics: %w", err)
	}
	return m, nil
}
