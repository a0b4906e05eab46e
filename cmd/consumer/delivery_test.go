package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// A pending entry is claimed from a consumer that stopped sending
// heartbeats, never from a live one however long its handler runs (a
// consumer's own entries are its subscriber's: streamsub tests).
func TestClaimOnlyFromDeadConsumers(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t, testenv.Redis(t))
	live := &liveness{ttl: DefaultClaimAfter, rdb: rdb, log: testenv.Logger(t), started: time.Now().Add(-time.Minute), names: []string{"alive-0"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); live.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Exists(context.Background(), aliveKey("alive-0")).Val() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	claim := live.shouldClaim()
	for _, c := range []struct {
		xp   redis.XPendingExt
		want bool
	}{
		{redis.XPendingExt{Consumer: "alive-0", Idle: time.Hour}, false},     // slow but live
		{redis.XPendingExt{Consumer: "dead-0", Idle: 6 * time.Second}, true}, // no heartbeat
	} {
		if got := claim(c.xp); got != c.want {
			t.Errorf("claim entry of %s idle %v: %v; want %v", c.xp.Consumer, c.xp.Idle, got, c.want)
		}
	}
	cancel()
	<-done
	if rdb.Exists(context.Background(), aliveKey("alive-0")).Val() != 0 {
		t.Error("heartbeat left behind after a clean stop")
	}
	if !claim(redis.XPendingExt{Consumer: "alive-0", Idle: 6 * time.Second}) {
		t.Error("the entries of a consumer that stopped are not claimed")
	}
}

// Poison entries (not a Watermill message at all, or an event whose JSON
// is broken) go to the dead-letter stream with the reason, and the
// subscription goes on: a good upload behind them is finalised. The log
// line of a dead letter names the message and the request and trace it
// belongs to.
func TestPoisonGoesToDeadLettersAndTheSubscriptionContinues(t *testing.T) {
	t.Parallel()
	db, s3 := testenv.NewDB(t), testenv.S3(t)
	env := testenv.ServiceEnv(t, db, s3)
	pool := testenv.Pool(t, db.AppURL)
	rdb := testenv.RedisClient(t, env["REDIS_URL"])
	ctx := context.Background()
	p := testenv.Start(t, run, nil, env)
	metricsAddr := p.Addr("metrics")

	// An entry that is not a Watermill message, and one whose payload is
	// not an event.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamDocuments, Values: map[string]any{"garbage": "\xff\x00"}}).Err(); err != nil {
		t.Fatal(err)
	}
	bad := message.NewMessage(uuid.NewString(), []byte("{not json"))
	bad.Metadata.Set(events.MetaType, events.DocumentUploaded)
	bad.Metadata.Set(events.MetaCorrelationID, uuid.NewString())
	bad.Metadata.Set(events.MetaRequestID, "poison-req-1")
	bad.Metadata.Set(events.MetaTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(events.StreamDocuments, bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamDocuments, Values: values}).Err(); err != nil {
		t.Fatal(err)
	}

	// A good upload behind them.
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("%PDF-1.4 behind the poison")
	id := uuid.Must(uuid.NewV7())
	if _, err := blobs.Put(ctx, blob.StagingKey(id), bytes.NewReader(content), 1<<20, "application/pdf"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	owner := testenv.User(t, pool, "")
	ev, err := events.New(events.DocumentUploaded, "document", id, events.Actor{Type: "user", ID: &owner}, uuid.Must(uuid.NewV7()), nil, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.InsertUpload(ctx, pool, store.Document{ID: id, UserID: &owner, Filename: "good.pdf", ContentType: "application/pdf",
		SizeBytes: int64(len(content)), SHA256: sum[:], StorageKey: blob.StagingKey(id)}, ev, store.Origin{}); err != nil {
		t.Fatal(err)
	}
	if n, err := relay.New(relay.Config{}, testenv.Logger(t), pool, relay.StreamPublisher{Redis: rdb}).PublishBatch(ctx); err != nil || n != 1 {
		t.Fatalf("publish: %d %v", n, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		doc, err := store.GetDocument(ctx, pool, id)
		if err == nil && doc.Status == store.StatusReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upload behind the poison is not ready within 30 s (%v, %v)", doc.Status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Both poison entries are dead letters of the finalize group, with why.
	reasons := map[string]string{}
	deadline = time.Now().Add(10 * time.Second)
	for len(reasons) < 2 && time.Now().Before(deadline) {
		entries, err := rdb.XRange(ctx, DeadLetterStream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
			if err != nil {
				t.Fatalf("dead letter %s is not a Watermill message: %v", e.ID, err)
			}
			if msg.Metadata.Get(middleware.PoisonedHandlerKey) == finalize.ConsumerName {
				reasons[msg.UUID] = msg.Metadata.Get(middleware.ReasonForPoisonedKey)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(reasons) != 2 {
		t.Fatalf("finalize dead letters %v; want the two poison entries", reasons)
	}
	if r := reasons[bad.UUID]; !strings.Contains(r, "malformed") {
		t.Errorf("reason for the broken event: %q", r)
	}
	for u, r := range reasons {
		if u != bad.UUID && !strings.Contains(r, "not a Watermill message") {
			t.Errorf("reason for the garbage entry: %q", r)
		}
	}
	logged := false
	for _, rec := range p.Records() {
		if rec["msg"] == "message dead-lettered" && rec["event_id"] == bad.UUID {
			logged = true
			if rec["type"] != events.DocumentUploaded || rec["correlation_id"] != bad.Metadata.Get(events.MetaCorrelationID) ||
				rec["request_id"] != "poison-req-1" || rec["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" ||
				rec["handler"] == nil || !strings.Contains(fmt.Sprint(rec["err"]), "malformed") {
				t.Errorf("dead letter log line %v; want the message's type, correlation, request and trace ids, handler and error", rec)
			}
		}
	}
	if !logged {
		t.Errorf("no 'message dead-lettered' log line for %s", bad.UUID)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`outcome="dead_lettered"`, `outcome="processed"`, "docuvault_consumer_handling_seconds_count",
		`docuvault_consumer_group_pending{group="finalize",stream="docuvault.documents"}`, `docuvault_consumer_group_lag{group="finalize"`,
		`docuvault_dead_letter_entries{stream="docuvault.dead_letter"} `} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
