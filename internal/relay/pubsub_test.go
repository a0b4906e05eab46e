package relay_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/testenv"
)

// pubSubFeatures are the Features watermill-redisstream declares for its
// own publisher with redisstream.Subscriber (pkg/redisstream/pubsub_test.go
// at v1.4.5). They describe the subscriber as much as the publisher: no
// exactly-once (acks are separate from delivery, and idle messages are
// claimed again), order only with one consumer (a consumer group spreads
// messages over its consumers, and claims re-deliver old messages late),
// and a new consumer group reads the stream from the start.
// RestartServiceCommand is unset: the suite would restart the shared Redis
// server, so TestReconnect is skipped, as it is upstream.
//
// ForceShort runs the suite at its -short sizes (100 messages where it
// would send 5000-10000), as watermill-redisstream's own race run does
// (make test_race: -short -race). At full size the parallel tests are
// bound by the stock subscriber (an XREADGROUP and an XACK round trip per
// message; TestConcurrentSubscribe's 50 subscribers are 50 consumer groups
// each reading all 5000 messages), and under -race on two cores
// TestContinueAfterSubscribeClose missed its single 15 s window to read
// its 5000 messages back (3262 read; alone it passes in 13 s).
// TestPubSubInOrderWithSingleSubscriber keeps its full 1000 messages.
var pubSubFeatures = tests.Features{
	ConsumerGroups:                      true,
	ExactlyOnceDelivery:                 false,
	GuaranteedOrder:                     false,
	GuaranteedOrderWithSingleSubscriber: true,
	Persistent:                          true,
	RequireSingleInstance:               false,
	NewSubscriberReceivesOldMessages:    true,
	ForceShort:                          true,
}

// pubSubConstructors returns the suite's constructors for the Redis
// database at url: a fresh consumer group per pair, or the given one.
func pubSubConstructors(url string) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
			return newPubSub(t, url, watermill.NewShortUUID())
		}, func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
			return newPubSub(t, url, group)
		}
}

// newPubSub pairs a WatermillPublisher with a stock redisstream.Subscriber
// in consumer group, configured as watermill-redisstream's own tests are.
// Each gets its own client: the subscriber closes its client on Close, and
// the suite publishes after closing a pair's subscriber. Every client is
// closed when the test ends, and so is the subscriber, which the suite
// does not always close (TestPublishSubscribeInOrder "defers" the Close of
// its subscriber with its argument evaluated at once, before Subscribe).
func newPubSub(t *testing.T, url, group string) (message.Publisher, message.Subscriber) {
	pub, err := relay.NewWatermillPublisher(testenv.RedisClient(t, url), relay.WatermillPublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        testenv.RedisClient(t, url),
		Consumer:      watermill.NewShortUUID(),
		ConsumerGroup: group,
		BlockTime:     10 * time.Millisecond,
		ClaimInterval: 3 * time.Second,
		MaxIdleTime:   5 * time.Second,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return pub, sub
}

// TestPubSub runs Watermill's universal Pub/Sub tests against
// WatermillPublisher and the stock subscriber.
func TestPubSub(t *testing.T) {
	pubSub, groupPubSub := pubSubConstructors(testenv.Redis(t))
	tests.TestPubSub(t, pubSubFeatures, pubSub, groupPubSub)
}

// TestPubSubInOrderWithSingleSubscriber runs the suite's order test, which
// TestPubSub skips because GuaranteedOrder is false (the suite reads
// GuaranteedOrderWithSingleSubscriber only when GuaranteedOrder is true).
// It publishes 1000 messages (100 with -short) in one Publish call and
// reads them with one consumer, so it checks the publisher's order within
// a pipeline. Order holds here because the consumer is alone in its group
// and acks at once, long before MaxIdleTime would let another consumer
// claim a message.
func TestPubSubInOrderWithSingleSubscriber(t *testing.T) {
	pubSub, _ := pubSubConstructors(testenv.Redis(t))
	features := pubSubFeatures
	features.GuaranteedOrder = true
	features.ForceShort = false
	tests.TestPublishSubscribeInOrder(t, tests.TestContext{TestID: tests.NewTestID(), Features: features}, pubSub)
}

// pipelineCounter counts the XADDs a client sends alone and in pipelines.
type pipelineCounter struct {
	mu                   sync.Mutex
	single, pipes, added int
}

func (c *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xadd" {
			c.mu.Lock()
			c.single++
			c.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "xadd" {
			c.mu.Lock()
			c.pipes++
			c.added += len(cmds)
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// TestWatermillPublisherPublishEntries checks that one PublishEntries call
// is one pipeline, and that a stock subscriber reads its messages on each
// of two streams in order, with uuid, metadata and payload intact.
func TestWatermillPublisherPublishEntries(t *testing.T) {
	url := testenv.Redis(t)
	client := testenv.RedisClient(t, url)
	counter := &pipelineCounter{}
	client.AddHook(counter)
	pub, err := relay.NewWatermillPublisher(client, relay.WatermillPublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}

	streams := []string{"dv:test:a", "dv:test:b"}
	var entries []relay.Entry
	sent := map[string][]*message.Message{}
	for i := range 20 {
		stream := streams[i%len(streams)]
		msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"n":%d}`, i))
		msg.Metadata.Set("n", fmt.Sprint(i))
		msg.Metadata.Set("stream", stream)
		if i == 0 {
			msg.Payload = nil // an empty payload and ...
		}
		if i == 1 {
			msg.Metadata = message.Metadata{} // ... empty metadata survive too
		}
		entries = append(entries, relay.Entry{Stream: stream, Message: msg})
		sent[stream] = append(sent[stream], msg)
	}
	if err := pub.PublishEntries(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	if counter.single != 0 || counter.pipes != 1 || counter.added != len(entries) {
		t.Fatalf("sent %d single XADDs and %d pipelines of %d XADDs, want one pipeline of %d",
			counter.single, counter.pipes, counter.added, len(entries))
	}

	for _, stream := range streams {
		got := readStream(t, url, stream, len(sent[stream]))
		for i, want := range sent[stream] {
			if got[i].UUID != want.UUID {
				t.Fatalf("%s[%d]: uuid %s, want %s (out of order?)", stream, i, got[i].UUID, want.UUID)
			}
			if string(got[i].Payload) != string(want.Payload) {
				t.Errorf("%s[%d]: payload %q, want %q", stream, i, got[i].Payload, want.Payload)
			}
			if !maps.Equal(got[i].Metadata, want.Metadata) {
				t.Errorf("%s[%d]: metadata %v, want %v", stream, i, got[i].Metadata, want.Metadata)
			}
		}
	}
}

// readStream reads n messages from stream with a stock subscriber in a new
// consumer group, acking each.
func readStream(t *testing.T, url, stream string, n int) []*message.Message {
	t.Helper()
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        testenv.RedisClient(t, url),
		ConsumerGroup: "test",
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	var got []*message.Message
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case msg := <-ch:
			msg.Ack()
			got = append(got, msg)
		case <-timeout:
			t.Fatalf("%s: read %d of %d messages", stream, len(got), n)
		}
	}
	return got
}

// TestWatermillPublisherErrors checks that a refused XADD fails the call
// naming its message and stream while the rest of the pipeline is applied
// (a call is not atomic), and that Close stops the publisher but leaves a
// shared client open.
func TestWatermillPublisherErrors(t *testing.T) {
	client := testenv.RedisClient(t, testenv.Redis(t))
	ctx := context.Background()
	if err := client.Set(ctx, "dv:test:not-a-stream", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pub, err := relay.NewWatermillPublisher(client, relay.WatermillPublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}

	ok1 := message.NewMessage(watermill.NewUUID(), []byte("1"))
	bad := message.NewMessage(watermill.NewUUID(), []byte("2"))
	ok2 := message.NewMessage(watermill.NewUUID(), []byte("3"))
	err = pub.PublishEntries(ctx, []relay.Entry{
		{Stream: "dv:test:ok", Message: ok1},
		{Stream: "dv:test:not-a-stream", Message: bad},
		{Stream: "dv:test:ok", Message: ok2},
	})
	if err == nil || !strings.Contains(err.Error(), bad.UUID) || !strings.Contains(err.Error(), "dv:test:not-a-stream") ||
		!strings.Contains(err.Error(), "WRONGTYPE") || strings.Contains(err.Error(), ok1.UUID) || strings.Contains(err.Error(), ok2.UUID) {
		t.Fatalf("want an error naming only %s on dv:test:not-a-stream, got %v", bad.UUID, err)
	}
	if n, err := client.XLen(ctx, "dv:test:ok").Result(); err != nil || n != 2 {
		t.Fatalf("stream dv:test:ok has %d entries (%v), want the 2 that Redis accepted", n, err)
	}

	// The reserved uuid field in metadata fails the call before anything
	// is sent.
	reserved := message.NewMessage(watermill.NewUUID(), nil)
	reserved.Metadata.Set(redisstream.UUIDHeaderKey, "x")
	if err := pub.Publish("dv:test:ok", ok1, reserved); err == nil {
		t.Fatal("published a message with the reserved metadata key")
	}
	if n, _ := client.XLen(ctx, "dv:test:ok").Result(); n != 2 {
		t.Fatalf("a call failing to marshal appended %d entries", n-2)
	}

	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := pub.Publish("dv:test:ok", message.NewMessage(watermill.NewUUID(), nil)); !errors.Is(err, relay.ErrPublisherClosed) {
		t.Fatalf("Publish after Close: %v, want ErrPublisherClosed", err)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("Close closed the shared client: %v", err)
	}
}
