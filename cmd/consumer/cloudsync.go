package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
)

// addCloudSyncHandler registers the cloud sync handler on router: one
// subscriber in its own consumer group (cloudsync.ConsumerName) on the
// document stream, under the router's retry, recovery and dead-letter
// middleware. The handler only records what is to be copied or removed,
// which is quick, so one subscriber keeps up; the copies themselves run in
// the syncer's workers (Syncer.Run).
func addCloudSyncHandler(log *slog.Logger, router *message.Router, redisOpts *redis.Options, name string, syncer *cloudsync.Syncer) error {
	wlog := watermill.NewSlogLogger(log)
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        redis.NewClient(redisOpts),
		ConsumerGroup: cloudsync.ConsumerName,
		Consumer:      name + "-cloud-sync",
		// As for the finalize group (router.go): claim what a dead
		// consumer left pending, and stop (so the process restarts and
		// re-creates the group) when Redis lost the group.
		MaxIdleTime:                   60 * time.Second,
		ClaimInterval:                 5 * time.Second,
		NackResendSleep:               500 * time.Millisecond,
		DisableIndefiniteInitialBlock: true,
		ShouldStopOnReadErrors: func(err error) bool {
			return strings.HasPrefix(err.Error(), "NOGROUP")
		},
	}, wlog)
	if err != nil {
		return err
	}
	router.AddConsumerHandler(cloudsync.ConsumerName, events.StreamDocuments, sub, func(msg *message.Message) error {
		err := syncer.Handle(msg)
		if errors.Is(err, cloudsync.ErrMalformed) {
			// The router's retry middleware gives up at once on
			// finalize.ErrMalformed: the message goes to the dead letters.
			return fmt.Errorf("%w: %w", finalize.ErrMalformed, err)
		}
		return err
	})
	return nil
}
