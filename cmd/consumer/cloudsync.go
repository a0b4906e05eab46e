package main

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/streamsub"
)

// cloudSyncConsumer is the consumer name of the cloud sync subscriber.
func cloudSyncConsumer(name string) string { return name + "-cloud-sync" }

// addCloudSyncHandler registers the cloud sync handler on router: one
// subscriber in its own consumer group (cloudsync.ConsumerName) on the
// document stream, under the router's retry, recovery and dead-letter
// middleware. The handler only records what is to be copied or removed,
// which is quick, so one subscriber keeps up; the copies themselves run in
// the syncer's workers (Syncer.Run).
func addCloudSyncHandler(d routerDeps, router *message.Router, syncer *cloudsync.Syncer) error {
	// One message at a time, in stream order (a document's deletion is
	// planned after its copies), read ahead in batches.
	sub, err := streamsub.New(subscriberConfig(d.redisOpts, cloudsync.ConsumerName, cloudSyncConsumer(d.name), 1, d.live, d.lost, d.log))
	if err != nil {
		return err
	}
	router.AddConsumerHandler(cloudsync.ConsumerName, events.StreamDocuments, sub, syncer.Handle)
	return nil
}
