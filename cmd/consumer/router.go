package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
)

// DeadLetterStream receives messages that failed every retry, or can never
// be handled, with the failure in their metadata.
const DeadLetterStream = "docuvault.dead_letter"

// consumerName is this process's name in the consumer groups. It is stable
// across restarts (host name and metrics port) rather than random per
// start, so dead names do not pile up in the group and an operator sees
// which host holds which pending entries. Entries a killed process left
// pending are claimed by any live consumer once idle for MaxIdleTime.
func consumerName(metricsAddr string) string {
	host, _ := os.Hostname()
	if _, port, err := net.SplitHostPort(metricsAddr); err == nil && port != "0" {
		return host + "-" + port
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// newRouter wires the consumer's handlers: one consumer group per concern,
// each with retries, panic recovery and a dead-letter path.
func newRouter(log *slog.Logger, rdb redis.UniversalClient, name string, fin *finalize.Finalizer) (*message.Router, error) {
	wlog := watermill.NewSlogLogger(log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: rdb}, wlog)
	if err != nil {
		return nil, err
	}
	poison, err := middleware.PoisonQueue(pub, DeadLetterStream)
	if err != nil {
		return nil, err
	}
	router.AddMiddleware(
		poison,
		middleware.Retry{
			MaxRetries:      6,
			InitialInterval: 200 * time.Millisecond,
			MaxInterval:     5 * time.Second,
			Multiplier:      2,
			Logger:          wlog,
			ShouldRetry: func(p middleware.RetryParams) bool {
				return !errors.Is(p.Err, finalize.ErrMalformed)
			},
		}.Middleware,
		middleware.Recoverer,
	)

	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        rdb,
		ConsumerGroup: finalize.ConsumerName,
		Consumer:      name,
		// A message idle this long in another consumer's pending list is
		// taken over: that consumer died mid-handling.
		MaxIdleTime:                   15 * time.Second,
		ClaimInterval:                 5 * time.Second,
		NackResendSleep:               500 * time.Millisecond,
		DisableIndefiniteInitialBlock: true,
	}, wlog)
	if err != nil {
		return nil, err
	}
	router.AddConsumerHandler("finalize", events.StreamDocuments, sub, fin.Handle)
	return router, nil
}
