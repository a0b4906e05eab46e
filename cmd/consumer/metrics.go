package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
)

// handlerMetrics measure each handler: deliveries by final outcome,
// attempts (each retry is one), retries, and handling time per attempt.
type handlerMetrics struct {
	deliveries *prometheus.CounterVec
	attempts   *prometheus.CounterVec
	retries    *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

func newHandlerMetrics(reg prometheus.Registerer, rdb *redis.Client) *handlerMetrics {
	m := &handlerMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docuvault_consumer_messages_total",
			Help: "Messages delivered to a handler, by final outcome: processed, or dead_lettered after its retries (or at once when malformed).",
		}, []string{"handler", "outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docuvault_consumer_attempts_total",
			Help: "Handler attempts (a retried message counts once per attempt), by result: ok or failed.",
		}, []string{"handler", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docuvault_consumer_retries_total",
			Help: "Attempts after a message's first (retries).",
		}, []string{"handler"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "docuvault_consumer_handling_seconds",
			Help:    "Time of one handler attempt.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 10), // 1 ms .. 20 s
		}, []string{"handler"}),
	}
	reg.MustRegister(m.deliveries, m.attempts, m.retries, m.duration, groupCollector{rdb: rdb, stream: events.StreamDocuments},
		deadLetterCollector{rdb: rdb})
	return m
}

type attemptsKey struct{}

// outer wraps the retrying chain: it sees each delivery's final outcome
// (the poison queue middleware, outside it, turns a final error into a
// dead letter).
func (m *handlerMetrics) outer(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		msg.SetContext(context.WithValue(msg.Context(), attemptsKey{}, new(atomic.Int32)))
		out, err := h(msg)
		outcome := "processed"
		if err != nil {
			outcome = "dead_lettered"
		}
		m.deliveries.WithLabelValues(message.HandlerNameFromCtx(msg.Context()), outcome).Inc()
		return out, err
	}
}

// inner wraps each attempt.
func (m *handlerMetrics) inner(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		name := message.HandlerNameFromCtx(msg.Context())
		if n, ok := msg.Context().Value(attemptsKey{}).(*atomic.Int32); ok && n.Add(1) > 1 {
			m.retries.WithLabelValues(name).Inc()
		}
		start := time.Now()
		out, err := h(msg)
		m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		result := "ok"
		if err != nil {
			result = "failed"
		}
		m.attempts.WithLabelValues(name, result).Inc()
		return out, err
	}
}

// groupCollector reads the consumer groups of a stream at scrape time:
// entries pending (delivered, not acknowledged) and lag (not yet
// delivered).
type groupCollector struct {
	rdb    *redis.Client
	stream string
}

var (
	pendingDesc = prometheus.NewDesc("docuvault_consumer_group_pending",
		"Entries delivered to a consumer group and not yet acknowledged.", []string{"stream", "group"}, nil)
	lagDesc = prometheus.NewDesc("docuvault_consumer_group_lag",
		"Entries of the stream not yet delivered to a consumer group.", []string{"stream", "group"}, nil)
)

func (c groupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- lagDesc
}

func (c groupCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	groups, err := c.rdb.XInfoGroups(ctx, c.stream).Result()
	if err != nil {
		return // no stream yet, or Redis away: nothing to report
	}
	for _, g := range groups {
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(g.Pending), c.stream, g.Name)
		if g.Lag >= 0 {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(g.Lag), c.stream, g.Name)
		}
	}
}
