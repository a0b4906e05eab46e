package relay

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/docuvault/docuvault/internal/store"
)

// Metrics are the relay's Prometheus measurements. A nil *Metrics records
// nothing.
type Metrics struct {
	eventsPublished *prometheus.CounterVec
	batchSize       prometheus.Histogram
	xaddTime        prometheus.Histogram
	commitToPublish prometheus.Histogram
	failures        prometheus.Counter
	leader          prometheus.Gauge
	trimmedEntries  *prometheus.CounterVec
}

// NewMetrics registers the relay's metrics on reg, including the outbox
// backlog (rows waiting, age of the oldest), read from db at each scrape.
func NewMetrics(reg prometheus.Registerer, db *pgxpool.Pool) *Metrics {
	m := &Metrics{
		eventsPublished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docuvault_relay_events_published_total",
			Help: "Outbox events published to Redis Streams (and removed from the outbox), by stream.",
		}, []string{"stream"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "docuvault_relay_batch_size",
			Help:    "Events per published batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7), // 1 .. 4096
		}),
		xaddTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "docuvault_relay_publish_seconds",
			Help:    "Time Redis took to accept one batch (one pipelined round trip of XADDs).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8), // 100µs .. 1.6s
		}),
		commitToPublish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "docuvault_relay_event_age_seconds",
			Help:    "Age of an event when its batch committed: from the writer's event time to the relay's commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5ms .. 131s
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "docuvault_relay_batch_failures_total",
			Help: "Batches rolled back (Redis refused, connection lost); their events stay in the outbox.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "docuvault_relay_leader",
			Help: "1 while this relay holds the leader lock and publishes, 0 on standby.",
		}),
		trimmedEntries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docuvault_relay_stream_entries_trimmed_total",
			Help: "Stream entries removed by the retention rule, by stream.",
		}, []string{"stream"}),
	}
	reg.MustRegister(m.eventsPublished, m.batchSize, m.xaddTime, m.commitToPublish, m.failures, m.leader, m.trimmedEntries,
		backlogCollector{db: db})
	return m
}

func (m *Metrics) published(rows []store.OutboxRow, took time.Duration) {
	if m == nil {
		return
	}
	m.batchSize.Observe(float64(len(rows)))
	m.xaddTime.Observe(took.Seconds())
}

func (m *Metrics) committed(rows []store.OutboxRow) {
	if m == nil || len(rows) == 0 {
		return
	}
	now := time.Now()
	for _, row := range rows {
		m.eventsPublished.WithLabelValues(row.Stream).Inc()
		m.commitToPublish.Observe(now.Sub(row.CreatedAt).Seconds())
	}
}

func (m *Metrics) failed() {
	if m != nil {
		m.failures.Inc()
	}
}

func (m *Metrics) setLeader(on bool) {
	if m == nil {
		return
	}
	if on {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

func (m *Metrics) trimmed(stream string, n int64) {
	if m != nil {
		m.trimmedEntries.WithLabelValues(stream).Add(float64(n))
	}
}

// backlogCollector reads the outbox backlog at scrape time.
type backlogCollector struct{ db *pgxpool.Pool }

var (
	backlogDesc = prometheus.NewDesc("docuvault_outbox_backlog",
		"Events waiting in the outbox.", nil, nil)
	oldestDesc = prometheus.NewDesc("docuvault_outbox_oldest_age_seconds",
		"Age of the oldest event waiting in the outbox (0 when it is empty).", nil, nil)
)

func (c backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backlogDesc
	ch <- oldestDesc
}

func (c backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, oldest, err := store.OutboxBacklog(ctx, c.db)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(backlogDesc, err)
		return
	}
	age := 0.0
	if !oldest.IsZero() {
		age = max(0, time.Since(oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
}
