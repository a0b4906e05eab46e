package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
	"github.com/docuvault/docuvault/internal/tracing"
)

// runRelay runs r until the returned stop is called (or the test ends) and
// fails the test if Run returns an error.
func runRelay(t *testing.T, r *relay.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// drained waits (bounded) until the outbox is empty.
func drained(t *testing.T, db *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for unpublished(t, db) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows still in the outbox after %s", unpublished(t, db), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// advisoryLocks counts the advisory locks held in the test's database.
func advisoryLocks(t *testing.T, db *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `select count(*) from pg_locks l join pg_database d on d.oid = l.database
		where l.locktype = 'advisory' and l.granted and d.datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Events of one aggregate reach their stream in commit order, with 8
// writers whose transactions interleave and commit out of outbox-id order,
// and two relays (leader and standby) running.
func TestEventsOfOneAggregateArriveInCommitOrder(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx := context.Background()
	notify := store.NewNotifier(db, testenv.Logger(t))
	nctx, ncancel := context.WithCancel(ctx)
	defer ncancel()
	go notify.Run(nctx)
	for range 2 {
		runRelay(t, relay.New(relay.Config{BatchSize: 5, PollInterval: 50 * time.Millisecond}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb}))
	}

	const aggregates, writers, perWriter = 6, 8, 60
	owner := testenv.User(t, db, "")
	topics := make([]uuid.UUID, aggregates)
	for i := range topics {
		topics[i] = uuid.Must(uuid.NewV7())
		if _, err := db.Exec(ctx, `insert into topics (id, user_id, name) values ($1, $2, $3)`, topics[i], owner, strconv.Itoa(i)+"-0"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for range perWriter {
				id := topics[rnd.IntN(aggregates)]
				err := store.WithTx(ctx, db, func(tx pgx.Tx) error {
					// As every writer does: lock the aggregate's row, change
					// it, then write its event.
					var name string
					if err := tx.QueryRow(ctx, `select name from topics where id = $1 for update`, id).Scan(&name); err != nil {
						return err
					}
					prefix, n, _ := strings.Cut(name, "-")
					seq, _ := strconv.Atoi(n)
					next := prefix + "-" + strconv.Itoa(seq+1)
					if _, err := tx.Exec(ctx, `update topics set name = $2 where id = $1`, id, next); err != nil {
						return err
					}
					ev, err := events.New(events.TopicRenamed, "topic", id, events.System, uuid.Must(uuid.NewV7()), nil, events.Topic{ID: id, Name: next})
					if err != nil {
						return err
					}
					if err := store.Record(ctx, tx, ev, store.Origin{}); err != nil {
						return err
					}
					// Hold the commit a little so that transactions holding
					// later outbox ids commit first.
					time.Sleep(time.Duration(rnd.IntN(3000)) * time.Microsecond)
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				notify.Poke()
			}
		}()
	}
	wg.Wait()
	drained(t, db, 30*time.Second)

	entries, err := rdb.XRange(ctx, events.StreamTopics, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	last := map[uuid.UUID]int{}
	seen := map[string]bool{}
	for _, e := range entries {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
		if err != nil {
			t.Fatal(err)
		}
		if seen[msg.UUID] {
			continue // a duplicate is allowed; order is about first arrivals
		}
		seen[msg.UUID] = true
		var ev events.Envelope
		var data events.Topic
		if err := json.Unmarshal(msg.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			t.Fatal(err)
		}
		_, n, _ := strings.Cut(data.Name, "-")
		seq, _ := strconv.Atoi(n)
		if seq != last[ev.AggregateID]+1 {
			t.Errorf("topic %s: event %d arrived after event %d; want commit order", ev.AggregateID, seq, last[ev.AggregateID])
		}
		last[ev.AggregateID] = seq
	}
	if len(seen) != writers*perWriter {
		t.Errorf("%d events on the stream; want %d", len(seen), writers*perWriter)
	}
}

// countingPublisher counts the rows it published for one relay.
type countingPublisher struct {
	relay.StreamPublisher
	n atomic.Int64
}

func (p *countingPublisher) Publish(ctx context.Context, rows []store.OutboxRow) error {
	if err := p.StreamPublisher.Publish(ctx, rows); err != nil {
		return err
	}
	p.n.Add(int64(len(rows)))
	return nil
}

// Of several relays exactly one publishes; when it stops, one standby takes
// over and publishes alone.
func TestOnlyTheLeaderPublishes(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	pubs := make([]*countingPublisher, 3)
	stops := make([]func(), 3)
	for i := range pubs {
		pubs[i] = &countingPublisher{StreamPublisher: relay.StreamPublisher{Redis: rdb}}
		stops[i] = runRelay(t, relay.New(relay.Config{BatchSize: 100, PollInterval: 20 * time.Millisecond, LeaseRetry: 100 * time.Millisecond},
			testenv.Logger(t), db, pubs[i]))
	}
	publishers := func() (active []int) {
		for i, p := range pubs {
			if p.n.Load() > 0 {
				active = append(active, i)
			}
		}
		return active
	}
	testenv.Backlog(t, db, 3000)
	drained(t, db, 30*time.Second)
	first := publishers()
	if len(first) != 1 || pubs[first[0]].n.Load() != 3000 {
		t.Fatalf("relays %v published; want exactly one to publish all 3000", first)
	}
	if n := advisoryLocks(t, db); n != 1 {
		t.Errorf("%d advisory locks held; want the leader's one", n)
	}

	leader := first[0]
	stops[leader]()
	pubs[leader].n.Store(0)
	testenv.Backlog(t, db, 1000)
	drained(t, db, 30*time.Second)
	second := publishers()
	if len(second) != 1 || second[0] == leader || pubs[second[0]].n.Load() != 1000 {
		t.Fatalf("after the leader stopped, relays %v published; want exactly one standby to publish all 1000", second)
	}
	if n, _ := rdb.XLen(context.Background(), events.StreamDocuments).Result(); n != 4000 {
		t.Errorf("%d entries on the stream; want 4000 (none twice)", n)
	}
}

// blockingPublisher holds its first batch until released.
type blockingPublisher struct {
	relay.StreamPublisher
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (p *blockingPublisher) Publish(ctx context.Context, rows []store.OutboxRow) error {
	p.once.Do(func() {
		close(p.entered)
		<-p.release
	})
	return p.StreamPublisher.Publish(ctx, rows)
}

// Stopping the relay finishes and records the batch in flight and releases
// leadership; a restart sends nothing twice.
func TestStopFinishesTheBatchInFlight(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ids := testenv.Backlog(t, db, 50)
	pub := &blockingPublisher{StreamPublisher: relay.StreamPublisher{Redis: rdb}, entered: make(chan struct{}), release: make(chan struct{})}
	stop := runRelay(t, relay.New(relay.Config{BatchSize: 20}, testenv.Logger(t), db, pub))
	select {
	case <-pub.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no batch started within 10 s")
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(100 * time.Millisecond) // the stop is under way, the batch still in flight
	close(pub.release)
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of the stop")
	}
	if n, _ := rdb.XLen(context.Background(), events.StreamDocuments).Result(); n != 20 || unpublished(t, db) != 30 {
		t.Fatalf("after the stop: %d on the stream, %d in the outbox; want the batch in flight (20) published and recorded, 30 left",
			n, unpublished(t, db))
	}
	if n := advisoryLocks(t, db); n != 0 {
		t.Errorf("%d advisory locks held after the stop; want leadership released", n)
	}

	runRelay(t, relay.New(relay.Config{}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb}))
	drained(t, db, 10*time.Second)
	got := streamIDsOf(t, rdb, events.StreamDocuments)
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s on the stream %d times; want once", id, got[id])
		}
	}
}

// Redis killed and restarted empty: while it is down the outbox keeps every
// event; once it is back the relay reconnects and publishes them.
func TestRedisRestartedEmptyLosesNothingFromTheOutbox(t *testing.T) {
	t.Parallel()
	db := testenv.Pool(t, testenv.NewDB(t).AppURL)
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	runRelay(t, relay.New(relay.Config{PollInterval: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond},
		testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb}))
	ctx := context.Background()

	testenv.Backlog(t, db, 10)
	drained(t, db, 10*time.Second)

	srv.Kill()
	during := testenv.Backlog(t, db, 25)
	time.Sleep(time.Second) // several failed attempts
	if n := unpublished(t, db); n != 25 {
		t.Fatalf("%d rows in the outbox while Redis is down; want all 25 kept", n)
	}
	srv.Start()
	drained(t, db, 15*time.Second)
	got := streamIDsOf(t, rdb, events.StreamDocuments)
	for _, id := range during {
		if got[id] != 1 {
			t.Errorf("event %s written while Redis was down: on the stream %d times; want once", id, got[id])
		}
	}
	if n, _ := rdb.XLen(ctx, events.StreamDocuments).Result(); n != 25 {
		t.Errorf("%d entries after the restart; want the 25 written while Redis was down", n)
	}
}

// Trimming removes only what is past retention and acknowledged by every
// consumer group.
func TestTrimKeepsWhatAGroupHasNotAcknowledged(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx := context.Background()
	const stream = events.StreamDocuments
	testenv.Backlog(t, db, 30)
	r := relay.New(relay.Config{}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb})
	if n, err := r.PublishBatch(ctx); err != nil || n != 30 {
		t.Fatalf("publish: %d, %v", n, err)
	}
	if err := rdb.XGroupCreate(ctx, stream, "g1", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// g1 reads 20 (pending) and acknowledges the first 10.
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g1", Consumer: "c", Streams: []string{stream, ">"}, Count: 20}).Result()
	if err != nil {
		t.Fatal(err)
	}
	read := res[0].Messages
	for _, m := range read[:10] {
		rdb.XAck(ctx, stream, "g1", m.ID)
	}
	trim := func(retention time.Duration) int64 {
		t.Helper()
		tr := &relay.Trimmer{Redis: rdb, Config: relay.TrimConfig{Retention: retention}, Log: testenv.Logger(t)}
		n, err := tr.Trim(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := trim(time.Hour); n != 0 {
		t.Errorf("trimmed %d entries younger than retention; want 0", n)
	}
	time.Sleep(5 * time.Millisecond)
	if n := trim(time.Millisecond); n != 10 {
		t.Errorf("trimmed %d; want only the 10 acknowledged entries (10 pending, 10 unread)", n)
	}
	first, _ := rdb.XRangeN(ctx, stream, "-", "+", 1).Result()
	if len(first) != 1 || first[0].ID != read[10].ID {
		t.Errorf("the stream now starts at %v; want the first pending entry %s", first, read[10].ID)
	}

	// A second group that has read nothing holds everything.
	if err := rdb.XGroupCreate(ctx, stream, "g2", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range read[10:] {
		rdb.XAck(ctx, stream, "g1", m.ID)
	}
	if n := trim(time.Millisecond); n != 0 {
		t.Errorf("trimmed %d while group g2 has read nothing; want 0", n)
	}
	// Both groups read and acknowledged everything: all may go.
	for _, g := range []string{"g1", "g2"} {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g, Consumer: "c", Streams: []string{stream, ">"}, Count: 100}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res[0].Messages {
			rdb.XAck(ctx, stream, g, m.ID)
		}
	}
	if n := trim(time.Millisecond); n != 20 {
		t.Errorf("trimmed %d; want the remaining 20, acknowledged by both groups", n)
	}
}

// A stock watermill-redisstream subscriber, in its own consumer group,
// reads what the relay wrote: message UUID = event id, metadata, payload.
func TestStockSubscriberReadsTheRelaysEntries(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	runRelay(t, relay.New(relay.Config{PollInterval: 50 * time.Millisecond}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb}))
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{Client: rdb, ConsumerGroup: "downstream"}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, events.StreamTopics)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]events.Envelope{}
	for range 5 {
		ev := newEvent(t)
		if err := store.WithTx(ctx, db, func(tx pgx.Tx) error { return store.Record(ctx, tx, ev, store.Origin{}) }); err != nil {
			t.Fatal(err)
		}
		want[ev.ID.String()] = ev
	}
	for range 5 {
		select {
		case msg := <-msgs:
			ev, ok := want[msg.UUID]
			if !ok {
				t.Fatalf("unexpected message %s", msg.UUID)
			}
			delete(want, msg.UUID)
			var got events.Envelope
			if err := json.Unmarshal(msg.Payload, &got); err != nil || got.ID != ev.ID || got.Type != ev.Type {
				t.Errorf("message %s payload %s (%v); want the envelope", msg.UUID, msg.Payload, err)
			}
			if msg.Metadata.Get(events.MetaType) != ev.Type || msg.Metadata.Get(events.MetaCorrelationID) != ev.CorrelationID.String() ||
				msg.Metadata.Get(events.MetaAggregateID) != ev.AggregateID.String() {
				t.Errorf("message %s metadata %v", msg.UUID, msg.Metadata)
			}
			msg.Ack()
		case <-ctx.Done():
			t.Fatalf("%d events not received within 30 s", len(want))
		}
	}
}

// waitBackend waits (bounded) until a backend of the test's database runs a
// query matching like, and returns its pid.
func waitBackend(t *testing.T, db *pgxpool.Pool, where string) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var pid int
		err := db.QueryRow(context.Background(), `select pid from pg_stat_activity
			where datname = current_database() and pid <> pg_backend_pid() and `+where+` limit 1`).Scan(&pid)
		if err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backend where %s within 15 s (%v)", where, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Both of the relay's dedicated connections come back after PostgreSQL
// drops them: the LISTEN connection (NOTIFY wakes it again, with polling
// off) and the leader's (it takes the lock again and publishes).
func TestRelayConnectionsComeBack(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx := context.Background()
	runRelay(t, relay.New(relay.Config{PollInterval: time.Hour, MinBackoff: 50 * time.Millisecond},
		testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb}))
	published := func(what string) {
		t.Helper()
		id := record(t, db)
		deadline := time.Now().Add(15 * time.Second)
		for streamIDs(t, rdb)[id] == 0 {
			// Notify until it lands: the listener may still be reconnecting.
			if _, err := db.Exec(ctx, `select pg_notify($1, '')`, store.OutboxChannel); err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: event not published within 15 s without polling", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	listen := waitBackend(t, db, `query ilike 'listen %'`)
	leader := waitBackend(t, db, `application_name = 'docuvault-relay'`)
	published("before")

	if _, err := db.Exec(ctx, `select pg_terminate_backend($1)`, listen); err != nil {
		t.Fatal(err)
	}
	waitBackend(t, db, fmt.Sprintf(`query ilike 'listen %%' and pid <> %d`, listen))
	published("after the LISTEN connection was dropped")

	if _, err := db.Exec(ctx, `select pg_terminate_backend($1)`, leader); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	published("after the leader's connection was dropped")
	waitBackend(t, db, fmt.Sprintf(`application_name = 'docuvault-relay' and pid <> %d`, leader))
	if n := advisoryLocks(t, db); n != 1 {
		t.Errorf("%d advisory locks; want the new leader connection's one", n)
	}
}

// Every event also reaches the audit stream, once, in the order the relay
// published it, with its origin in the metadata and the same payload as on
// its own stream. The request id and traceparent are on both streams, the
// client IP and user agent on the audit stream only.
func TestEveryEventReachesTheAuditStream(t *testing.T) {
	t.Parallel()
	db, rdb := setup(t)
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.7")
	var ids []uuid.UUID
	var origins []store.Origin
	for i := range 6 {
		ev := newEvent(t)
		origin := store.Origin{}
		switch i % 3 {
		case 0: // an HTTP request's
			origin = store.Origin{ClientIP: &ip, UserAgent: "curl/8", RequestID: fmt.Sprintf("req-%d", i), Traceparent: tracing.Child("")}
		case 1: // a consumer's, caused by a request
			origin = store.Origin{RequestID: fmt.Sprintf("req-%d", i), Traceparent: tracing.Child("")}
		}
		origins = append(origins, origin)
		if err := store.WithTx(ctx, db, func(tx pgx.Tx) error { return store.Record(ctx, tx, ev, origin) }); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	r := relay.New(relay.Config{}, testenv.Logger(t), db, relay.StreamPublisher{Redis: rdb})
	if n, err := r.PublishBatch(ctx); err != nil || n != 6 {
		t.Fatalf("publish: %d %v", n, err)
	}
	entries, err := rdb.XRange(ctx, events.StreamAudit, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	own, err := rdb.XRange(ctx, events.StreamTopics, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 6 || len(own) != 6 {
		t.Fatalf("%d audit entries, %d topic entries; want 6 each", len(entries), len(own))
	}
	for i, e := range entries {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
		if err != nil {
			t.Fatal(err)
		}
		ownMsg, _ := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(own[i].Values)
		if msg.UUID != ids[i].String() || string(msg.Payload) != string(ownMsg.Payload) {
			t.Errorf("audit entry %d: %s; want event %s with the payload of its own stream", i, msg.UUID, ids[i])
		}
		o := origins[i]
		wantIP := ""
		if o.ClientIP != nil {
			wantIP = o.ClientIP.String()
		}
		if md := msg.Metadata; md.Get(events.MetaClientIP) != wantIP || md.Get(events.MetaUserAgent) != o.UserAgent ||
			md.Get(events.MetaRequestID) != o.RequestID || md.Get(events.MetaTraceparent) != o.Traceparent {
			t.Errorf("audit entry %d metadata %v; want client_ip %q, user_agent %q, request_id %q, traceparent %q",
				i, md, wantIP, o.UserAgent, o.RequestID, o.Traceparent)
		}
		if md := ownMsg.Metadata; md.Get(events.MetaRequestID) != o.RequestID || md.Get(events.MetaTraceparent) != o.Traceparent ||
			md.Get(events.MetaClientIP) != "" || md.Get(events.MetaUserAgent) != "" {
			t.Errorf("topic entry %d metadata %v; want request_id %q, traceparent %q and no client", i, md, o.RequestID, o.Traceparent)
		}
	}
}
