package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// deadLetterCollector reads the length of DeadLetterStream at scrape time:
// the dead letters waiting for an operator (`consumer dead-letters`).
// docuvault_consumer_messages_total{outcome="dead_lettered"} counts them
// as they arrive; this says how many are still there.
type deadLetterCollector struct{ rdb *redis.Client }

var deadLettersDesc = prometheus.NewDesc("docuvault_dead_letter_entries",
	"Entries in the dead-letter stream, waiting for `consumer dead-letters retry` or `drop`.", []string{"stream"}, nil)

func (c deadLetterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- deadLettersDesc }

func (c deadLetterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := c.rdb.XLen(ctx, DeadLetterStream).Result()
	if err != nil {
		return // Redis away: nothing to report (a missing stream is 0)
	}
	ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.GaugeValue, float64(n), DeadLetterStream)
}
