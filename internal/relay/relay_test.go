package relay_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

func setup(t *testing.T) (*pgxpool.Pool, *redis.Client) {
	t.Helper()
	db := testenv.NewDB(t)
	return testenv.Pool(t, db.AppURL), testenv.RedisClient(t, testenv.Redis(t))
}

// record writes one event in its own transaction and returns its id.
func record(t *testing.T, db store.Beginner) uuid.UUID {
	t.Helper()
	ev := newEvent(t)
	if err := store.WithTx(context.Background(), db, func(tx pgx.Tx) error {
		return store.Record(context.Background(), tx, ev, store.Origin{})
	}); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

func newEvent(t *testing.T) events.Envelope {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	ev, err := events.New(events.TopicCreated, "topic", id, events.System, uuid.Must(uuid.NewV7()), nil, events.Topic{ID: id, Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// streamIDs counts the event ids on the topic stream.
func streamIDs(t *testing.T, rdb redis.UniversalClient) map[uuid.UUID]int {
	t.Helper()
	return streamIDsOf(t, rdb, events.StreamTopics)
}

// streamIDsOf counts the event ids on stream.
func streamIDsOf(t *testing.T, rdb redis.UniversalClient, stream string) map[uuid.UUID]int {
	t.Helper()
	entries, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	out := map[uuid.UUID]int{}
	for _, e := range entries {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
		if err != nil {
			t.Fatalf("entry %s is not a Watermill message: %v", e.ID, err)
		}
		out[uuid.MustParse(msg.UUID)]++
	}
	return out
}

func unpublished(t *testing.T, db *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `select count(*) from outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A transaction that took its outbox id first but commits after a later
// one must still be published (DESIGN.md §6: no high-water mark).
func TestLateCommitIsStillPublished(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx := context.Background()
	r := relay.New(relay.Config{}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb})

	slow, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	early := newEvent(t)
	if err := store.Record(ctx, slow, early, store.Origin{}); err != nil { // takes the lower id
		t.Fatal(err)
	}
	late := record(t, db) // higher id, commits first

	if n, err := r.PublishBatch(ctx); err != nil || n != 1 {
		t.Fatalf("first batch: %d, %v; want the committed event only", n, err)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := r.PublishBatch(ctx); err != nil || n != 1 {
		t.Fatalf("second batch: %d, %v; want the late commit", n, err)
	}
	got := streamIDs(t, rdb)
	if got[early.ID] != 1 || got[late] != 1 {
		t.Errorf("stream holds %v; want both events once", got)
	}
}

// crashingPublisher publishes for real and then fails, as a relay killed
// between XADD and marking its rows published.
type crashingPublisher struct {
	relay.StreamPublisher
	crashes atomic.Int32
}

func (p *crashingPublisher) Publish(ctx context.Context, rows []store.OutboxRow) error {
	if err := p.StreamPublisher.Publish(ctx, rows); err != nil {
		return err
	}
	if p.crashes.Add(-1) >= 0 {
		return errors.New("relay killed after XADD")
	}
	return nil
}

func TestCrashBetweenPublishAndMarkLosesNothing(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx := context.Background()
	var ids []uuid.UUID
	for range 25 {
		ids = append(ids, record(t, db))
	}
	pub := &crashingPublisher{StreamPublisher: relay.StreamPublisher{Redis: rdb}}
	pub.crashes.Store(1)
	r := relay.New(relay.Config{BatchSize: 10}, testenv.Logger(t), db, pub)

	if _, err := r.PublishBatch(ctx); err == nil {
		t.Fatal("the injected crash did not surface")
	}
	if n := unpublished(t, db); n != 25 {
		t.Fatalf("%d unpublished after the crash; want all 25 still unpublished", n)
	}
	for {
		n, err := r.PublishBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	got := streamIDs(t, rdb)
	dups := 0
	for _, id := range ids {
		if got[id] == 0 {
			t.Errorf("event %s lost", id)
		}
		dups += got[id] - 1
	}
	if dups != 10 {
		t.Errorf("%d duplicates; want exactly the crashed batch (10)", dups)
	}
	if n := unpublished(t, db); n != 0 {
		t.Errorf("%d rows still unpublished", n)
	}
}

// Several relays running at once publish every event, none twice.
func TestConcurrentRelaysPublishEverythingOnce(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 3 {
		r := relay.New(relay.Config{BatchSize: 50, PollInterval: 20 * time.Millisecond}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb})
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx) }()
	}
	var mu sync.Mutex
	var ids []uuid.UUID
	var writers sync.WaitGroup
	for range 8 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for range 100 {
				id := record(t, db)
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}()
	}
	writers.Wait()
	drained(t, db, 30*time.Second)
	cancel()
	wg.Wait()
	got := streamIDs(t, rdb)
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s published %d times; want once", id, got[id])
		}
	}
	if len(got) != 800 {
		t.Errorf("%d distinct events on the stream; want 800", len(got))
	}
}

// With polling effectively off, a commit still reaches the stream at once:
// the relay wakes on NOTIFY.
func TestNotifyWakesTheRelay(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := relay.New(relay.Config{PollInterval: time.Hour}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb})
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	// Wait (bounded) until the listener's connection has run LISTEN.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var listening bool
		if err := db.QueryRow(ctx, `select exists (select 1 from pg_stat_activity
			where datname = current_database() and query ilike 'listen %')`).Scan(&listening); err != nil {
			t.Fatal(err)
		}
		if listening {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay did not LISTEN within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := record(t, db)
	// Writers notify after their commit (store.Notifier).
	if _, err := db.Exec(ctx, `select pg_notify($1, '')`, store.OutboxChannel); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for streamIDs(t, rdb)[id] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("event not published within 10 s without polling: NOTIFY did not wake the relay")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}
