package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/streamsub"
	"github.com/docuvault/docuvault/internal/tracing"
)

// finalizeWorkers is how many messages of the document stream one
// consumer process handles concurrently in its finalize group. The
// uploads among them are finalised together (finalize.RunBatches), in up
// to finalizeGroups groups at once.
const (
	finalizeWorkers = 32
	finalizeGroups  = 2
)

// DeadLetterStream receives messages that failed every retry, or can never
// be handled, with the failure in their metadata.
const DeadLetterStream = "docuvault.dead_letter"

// consumerName is this process's name in the consumer groups. It is stable
// across restarts (host name and metrics port) rather than random per
// start, so a restarted process takes back the entries its previous run
// left pending (see liveness), dead names do not pile up in the group, and
// an operator sees which host holds which pending entries.
func consumerName(metricsAddr string) string {
	host, _ := os.Hostname()
	if _, port, err := net.SplitHostPort(metricsAddr); err == nil && port != "0" {
		return host + "-" + port
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// finalizeConsumer is the consumer name of the finalize subscriber.
func finalizeConsumer(name string) string { return name + "-finalize" }

// routerDeps are what the consumer's router is built from.
type routerDeps struct {
	log       *slog.Logger
	redisOpts *redis.Options
	name      string
	fin       *finalize.Finalizer
	live      *liveness
	metrics   *handlerMetrics
	// lost is set when a subscription stopped because Redis lost its
	// consumer group.
	lost *atomic.Bool
}

// newRouter wires the consumer's handlers: one consumer group per concern,
// each with retries, panic recovery, metrics and a dead-letter path. Each
// subscriber and the dead-letter publisher get their own Redis client:
// closing a subscriber closes its client.
func newRouter(d routerDeps) (*message.Router, error) {
	wlog := watermill.NewSlogLogger(d.log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: redis.NewClient(d.redisOpts)}, wlog)
	if err != nil {
		return nil, err
	}
	poison, err := middleware.PoisonQueue(pub, DeadLetterStream)
	if err != nil {
		return nil, err
	}
	// Outermost first: a message that still fails after its retries (or
	// is malformed) goes to the dead letters with the reason and is
	// acknowledged, so it never blocks or ends the subscription.
	msgLog := messageLog{log: d.log}
	router.AddMiddleware(
		poison,
		d.metrics.outer,
		msgLog.final,
		rejectMalformed,
		middleware.Retry{
			MaxRetries:      6,
			InitialInterval: 200 * time.Millisecond,
			MaxInterval:     5 * time.Second,
			Multiplier:      2,
			// No Logger: its lines do not name the message; msgLog.attempt
			// logs each failed attempt instead.
			ShouldRetry: func(p middleware.RetryParams) bool {
				// A message no handler can ever read goes to the dead
				// letters at once.
				return !errors.Is(p.Err, finalize.ErrMalformed) && !errors.Is(p.Err, cloudsync.ErrMalformed)
			},
		}.Middleware,
		d.metrics.inner,
		msgLog.attempt,
		middleware.Recoverer,
	)

	// One subscriber hands up to finalizeWorkers messages to the handler at
	// once (streamsub; the router handles each in its own goroutine), and
	// the finaliser groups the uploads among them.
	sub, err := streamsub.New(subscriberConfig(d.redisOpts, finalize.ConsumerName, finalizeConsumer(d.name), finalizeWorkers, d.live, d.lost, d.log))
	if err != nil {
		return nil, err
	}
	router.AddConsumerHandler(finalize.ConsumerName, events.StreamDocuments, sub, d.fin.Handle)
	return router, nil
}

// messageLog logs what goes wrong with a message, each line naming the
// message by its event id, type, correlation id, request id and trace id
// (tracing.MessageAttrs), and the handler: every failed attempt (warn) and
// the failure that sends the message to the dead letters (error).
type messageLog struct{ log *slog.Logger }

// final wraps the retrying chain: it sees the error a message is
// dead-lettered with.
func (l messageLog) final(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			l.log.Error("message dead-lettered", append(tracing.MessageAttrs(msg),
				"handler", message.HandlerNameFromCtx(msg.Context()), "err", err)...)
		}
		return out, err
	}
}

// attempt wraps each attempt.
func (l messageLog) attempt(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			attrs := append(tracing.MessageAttrs(msg), "handler", message.HandlerNameFromCtx(msg.Context()), "err", err)
			if n, ok := msg.Context().Value(attemptsKey{}).(*atomic.Int32); ok {
				attrs = append(attrs, "attempt", n.Load())
			}
			l.log.Warn("message handling failed", attrs...)
		}
		return out, err
	}
}
