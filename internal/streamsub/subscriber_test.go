package streamsub_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/streamsub"
	"github.com/docuvault/docuvault/internal/testenv"
)

const stream = "test.stream"

// server is a private redis-server (so its command counters are the
// test's) and a client of it.
func server(t *testing.T) (*testenv.RedisServer, *redis.Client) {
	t.Helper()
	srv := testenv.StartRedis(t)
	return srv, testenv.RedisClient(t, srv.URL())
}

// publish adds n messages to stream with watermill-redisstream's own
// publisher (the wire format) and returns their UUIDs in order.
func publish(t *testing.T, rdb *redis.Client, n int) []string {
	t.Helper()
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: rdb}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i := range n {
		ids[i] = watermill.NewUUID()
		msg := message.NewMessage(ids[i], []byte(strconv.Itoa(i)))
		msg.Metadata.Set("n", strconv.Itoa(i))
		if err := pub.Publish(stream, msg); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func subscriber(t *testing.T, srv *testenv.RedisServer, cfg streamsub.Config) *streamsub.Subscriber {
	t.Helper()
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Client = redis.NewClient(opts)
	if cfg.Group == "" {
		cfg.Group = "g"
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "c1"
	}
	cfg.Logger = testenv.Logger(t)
	s, err := streamsub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// calls is how many times the server ran command (INFO commandstats).
func calls(t *testing.T, rdb *redis.Client, command string) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+command+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

func pending(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), stream, "g").Result()
	if err != nil {
		t.Fatal(err)
	}
	return p.Count
}

// receive takes messages from ch until it has n or 10 s passed, handling
// each with handle in its own goroutine (as Watermill's router does).
func receive(t *testing.T, ch <-chan *message.Message, n int, handle func(*message.Message)) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case msg, ok := <-ch:
			if !ok {
				t.Fatal("subscription ended early")
			}
			go handle(msg)
		case <-deadline:
			t.Fatalf("fewer than %d messages within 10 s", n)
		}
	}
}

// 300 messages with Concurrency 16: every one is handed out once, up to
// 16 at a time and more than one at a time, the reads and acks are
// batched (fewer XREADGROUP and XACK calls than messages), and nothing is
// pending after Close.
func TestHandsOutConcurrentlyAndAcknowledgesInBatches(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	const n, concurrency = 300, 16
	ids := publish(t, rdb, n)
	s := subscriber(t, srv, streamsub.Config{Concurrency: concurrency})
	reads, acks := calls(t, rdb, "xreadgroup"), calls(t, rdb, "xack")
	ch, err := s.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var now, most atomic.Int32
	var wg sync.WaitGroup
	wg.Add(n)
	receive(t, ch, n, func(msg *message.Message) {
		defer wg.Done()
		c := now.Add(1)
		for m := most.Load(); c > m && !most.CompareAndSwap(m, c); m = most.Load() {
		}
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		seen[msg.UUID]++
		mu.Unlock()
		now.Add(-1)
		msg.Ack()
	})
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("message %s handed out %d times; want 1", id, seen[id])
		}
	}
	if m := most.Load(); m < 2 || m > concurrency {
		t.Errorf("at most %d messages in flight at once; want 2 to %d", m, concurrency)
	}
	r, a := calls(t, rdb, "xreadgroup")-reads, calls(t, rdb, "xack")-acks
	// Reads take up to 32 entries; acks take what came in while the
	// previous XACK was on its way (fewer under load, so a looser bound).
	if r > n/4 || a > n/2 {
		t.Errorf("%d XREADGROUP and %d XACK calls for %d messages; want at most %d and %d", r, a, n, n/4, n/2)
	}
	if p := pending(t, rdb); p != 0 {
		t.Errorf("%d entries pending after Close; want 0", p)
	}
	t.Logf("%d messages: %d XREADGROUP, %d XACK, at most %d in flight", n, r, a, most.Load())
}

// Concurrency 1 hands out one message at a time, in stream order, though
// entries are read ahead.
func TestOneAtATimeKeepsStreamOrder(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	const n = 50
	publish(t, rdb, n)
	s := subscriber(t, srv, streamsub.Config{Concurrency: 1, Prefetch: 16})
	ch, err := s.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case msg := <-ch:
			if got := msg.Metadata.Get("n"); got != strconv.Itoa(i) {
				t.Fatalf("message %d is the stream's %s", i, got)
			}
			select {
			case extra := <-ch:
				t.Fatalf("message %s handed out before %d was acked", extra.Metadata.Get("n"), i)
			case <-time.After(5 * time.Millisecond):
			}
			msg.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not handed out within 10 s", i)
		}
	}
}

// Close lets the messages in flight finish and acknowledges them before
// it returns (the stock subscriber dropped the acknowledgement of a
// message acked while it closed, which then stayed pending).
func TestCloseWaitsForMessagesInFlightAndAcknowledgesThem(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	publish(t, rdb, 5)
	s := subscriber(t, srv, streamsub.Config{Concurrency: 8})
	ch, err := s.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var handled atomic.Int32
	receive(t, ch, 5, func(msg *message.Message) {
		<-release
		handled.Add(1)
		msg.Ack()
	})
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while messages were in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10 s of the messages' acks")
	}
	if handled.Load() != 5 {
		t.Errorf("%d messages handled; want 5", handled.Load())
	}
	if p := pending(t, rdb); p != 0 {
		t.Errorf("%d entries pending after Close; want 0", p)
	}
}

// A message in flight longer than CloseWait is handed back: its context
// is cancelled and its entry stays pending, for the next run.
func TestCloseHandsBackWhatOutlastsCloseWait(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	publish(t, rdb, 1)
	s := subscriber(t, srv, streamsub.Config{CloseWait: 100 * time.Millisecond})
	ch, err := s.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	cancelled := make(chan struct{})
	receive(t, ch, 1, func(msg *message.Message) {
		<-msg.Context().Done()
		close(cancelled)
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the message's context was not cancelled")
	}
	if p := pending(t, rdb); p != 1 {
		t.Errorf("%d entries pending; want the one handed back", p)
	}
}

// A nacked message is handed out again, until it is acked.
func TestNackedMessageIsHandedOutAgain(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	ids := publish(t, rdb, 1)
	s := subscriber(t, srv, streamsub.Config{NackResendSleep: 10 * time.Millisecond})
	ch, err := s.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := range 3 {
		select {
		case msg := <-ch:
			if msg.UUID != ids[0] {
				t.Fatalf("attempt %d: message %s; want %s", attempt, msg.UUID, ids[0])
			}
			if attempt < 2 {
				msg.Nack()
			} else {
				msg.Ack()
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d not handed out within 10 s", attempt)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if p := pending(t, rdb); p != 0 {
		t.Errorf("%d entries pending; want 0", p)
	}
}

// Entries pending with a consumer that ShouldClaim gives up (dead) are
// claimed once idle for MinIdle; those of a live consumer never are.
func TestClaimsOnlyWhatShouldClaimAllows(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	ctx := context.Background()
	publish(t, rdb, 6)
	if err := rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	taken := map[string][]string{}
	for _, consumer := range []string{"dead", "live"} {
		xss, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: consumer, Streams: []string{stream, ">"}, Count: 3}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, xm := range xss[0].Messages {
			taken[consumer] = append(taken[consumer], fmt.Sprint(xm.Values[redisstream.UUIDHeaderKey]))
		}
	}
	s := subscriber(t, srv, streamsub.Config{
		MinIdle: 100 * time.Millisecond, ClaimInterval: 50 * time.Millisecond,
		ShouldClaim: func(p redis.XPendingExt) bool { return p.Consumer == "dead" },
	})
	ch, err := s.Subscribe(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 3 {
		select {
		case msg := <-ch:
			got[msg.UUID] = true
			msg.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("claimed %d of the dead consumer's 3 entries within 10 s", len(got))
		}
	}
	for _, id := range taken["dead"] {
		if !got[id] {
			t.Errorf("the dead consumer's %s was not claimed", id)
		}
	}
	select {
	case msg := <-ch:
		t.Errorf("message %s of the live consumer was claimed", msg.UUID)
	case <-time.After(500 * time.Millisecond):
	}
	if p := pending(t, rdb); p != 3 {
		t.Errorf("%d entries pending; want the live consumer's 3", p)
	}
}

// A read error that ShouldStop ends the subscription: its channel closes
// (Redis lost the group: the consumer then subscribes again).
func TestReadErrorThatShouldStopEndsTheSubscription(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	s := subscriber(t, srv, streamsub.Config{BlockTime: 20 * time.Millisecond,
		ShouldStop: func(err error) bool { return strings.HasPrefix(err.Error(), "NOGROUP") }})
	ch, err := s.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := rdb.Del(context.Background(), stream).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("a message on a deleted stream")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription did not end within 10 s of losing its group")
	}
}

// A restarted consumer (same name) hands out first what its previous run
// left pending (read ahead, or in flight at Close), in stream order, then
// new entries: one at a time, the order of the stream holds across the
// restart.
func TestRestartHandsOutTheOwnPendingEntriesFirstInOrder(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	publish(t, rdb, 5)
	first := subscriber(t, srv, streamsub.Config{Concurrency: 1, Prefetch: 16, CloseWait: 50 * time.Millisecond})
	ch, err := first.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch: // in flight, never acked
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10 s")
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if p := pending(t, rdb); p != 5 {
		t.Fatalf("%d entries pending after the first run; want 5", p)
	}
	publish(t, rdb, 3)
	second := subscriber(t, srv, streamsub.Config{Concurrency: 1, Prefetch: 16})
	ch, err = second.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for range 8 {
		select {
		case msg := <-ch:
			order = append(order, msg.Metadata.Get("n"))
			msg.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v within 10 s", order)
		}
	}
	if got := strings.Join(order, " "); got != "0 1 2 3 4 0 1 2" {
		t.Errorf("handed out %s; want the first run's five in order, then the three new", got)
	}
}

// An entry that went pending with this consumer without reaching it (a
// read whose reply was lost) is taken back once idle for MinIdle, though
// the consumer is alive; entries it holds (in flight) are not.
func TestTakesBackOwnEntriesItDoesNotHold(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	ctx := context.Background()
	ids := publish(t, rdb, 3)
	if err := rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// The first entry goes to another, live consumer.
	xss, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "other", Streams: []string{stream, ">"}, Count: 1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	lost := xss[0].Messages[0].ID
	s := subscriber(t, srv, streamsub.Config{Concurrency: 4, MinIdle: 200 * time.Millisecond, ClaimInterval: 50 * time.Millisecond, CloseWait: 50 * time.Millisecond,
		ShouldClaim: func(redis.XPendingExt) bool { return false }})
	ch, err := s.Subscribe(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	// The other two: handed out and held, never acked.
	held := map[string]bool{}
	for range 2 {
		select {
		case msg := <-ch:
			held[msg.UUID] = true
		case <-time.After(10 * time.Second):
			t.Fatal("the new entries were not handed out within 10 s")
		}
	}
	// Now the first lands in this consumer's pending list behind its back.
	if err := rdb.XClaim(ctx, &redis.XClaimArgs{Stream: stream, Group: "g", Consumer: "c1", Messages: []string{lost}}).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-ch:
		if msg.UUID != ids[0] {
			t.Fatalf("handed out %s; want the lost entry %s", msg.UUID, ids[0])
		}
		msg.Ack()
	case <-time.After(10 * time.Second):
		t.Fatal("the lost entry was not taken back within 10 s")
	}
	select {
	case msg := <-ch:
		t.Errorf("message %s (held: %v) handed out again while in flight", msg.UUID, held[msg.UUID])
	case <-time.After(500 * time.Millisecond):
	}
}

// Entries read ahead wait their turn longer than MinIdle when handling is
// slow: they are this consumer's, held, and never claimed back and handed
// out a second time.
func TestSlowHandlingNeverHandsOutAReadAheadEntryTwice(t *testing.T) {
	t.Parallel()
	srv, rdb := server(t)
	const n = 8
	publish(t, rdb, n)
	s := subscriber(t, srv, streamsub.Config{Concurrency: 1, Prefetch: n, MinIdle: 100 * time.Millisecond, ClaimInterval: 20 * time.Millisecond})
	ch, err := s.Subscribe(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for range n {
		select {
		case msg := <-ch:
			order = append(order, msg.Metadata.Get("n"))
			time.Sleep(150 * time.Millisecond) // longer than MinIdle
			msg.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v within 10 s", order)
		}
	}
	select {
	case msg := <-ch:
		t.Errorf("message %s handed out again (order so far %v)", msg.Metadata.Get("n"), order)
	case <-time.After(300 * time.Millisecond):
	}
	if got := strings.Join(order, " "); got != "0 1 2 3 4 5 6 7" {
		t.Errorf("handed out %s; want each once, in order", got)
	}
}
