package finalize

import "github.com/prometheus/client_golang/prometheus"

// metrics count the finalizer's outcomes. A nil *metrics records nothing.
type metrics struct {
	documents *prometheus.CounterVec
	groups    prometheus.Histogram
}

// Instrument registers f's metrics on reg: documents finalised, by outcome
// (ready, or rejected and why; rejected with reason quota_exceeded is the
// finalize stage's quota rejections). Call it before Handle.
func (f *Finalizer) Instrument(reg prometheus.Registerer) {
	m := &metrics{
		documents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docuvault_finalize_documents_total",
			Help: "Uploads finalised, by status (ready or rejected) and reject reason (empty when ready).",
		}, []string{"status", "reason"}),
		groups: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "docuvault_finalize_group_documents",
			Help:    "Uploads handed to each finalisation group (RunBatches); those it does not finish ready are finalised one by one.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
	}
	reg.MustRegister(m.documents, m.groups)
	f.metrics = m
}

// finished counts one committed outcome.
func (m *metrics) finished(status, reason string) {
	if m == nil {
		return
	}
	m.documents.WithLabelValues(status, reason).Inc()
}

// grouped records the size of one finalisation group.
func (m *metrics) grouped(n int) {
	if m == nil {
		return
	}
	m.groups.Observe(float64(n))
}
