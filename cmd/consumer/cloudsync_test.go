package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// The consumer process, through its Watermill router and Redis, copies a
// finalised document to a WebDAV connection once however often the event
// is delivered, and removes the copy when the document is deleted.
func TestCloudSyncThroughTheRouter(t *testing.T) {
	t.Parallel()
	const password = "canary-pw-3d80c2"
	db, s3 := testenv.NewDB(t), testenv.S3(t)
	env := testenv.ServiceEnv(t, db, s3)
	pool := testenv.Pool(t, db.AppURL)
	owner := testenv.User(t, pool, "alice@example.org") // the connection's and the document's
	dav := testenv.StartWebDAV(t, "alice", password)
	ctx := context.Background()

	// A connection, stored as the API stores it.
	sealer, err := cloudsync.NewSealer(env["SECRET_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	settings, err := cloudsync.ParseSettings("webdav", json.RawMessage(`{"url":"`+dav.URL+`","prefix":"DocuVault"}`))
	if err != nil {
		t.Fatal(err)
	}
	conn := store.CloudConnection{ID: uuid.Must(uuid.NewV7()), UserID: &owner, Provider: "webdav", Name: "nc", Settings: settings,
		KeyVersion: cloudsync.KeyVersion, Status: store.ConnectionActive, DeleteRemote: true}
	conn.Credentials = sealer.Seal(conn.ID, []byte(`{"username":"alice","password":"`+password+`"}`))

	// A ready document, as the finalizer leaves it.
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("%PDF-1.4 through the router")
	id := uuid.Must(uuid.NewV7())
	if _, err := blobs.Put(ctx, blob.FinalKey(&owner, id), bytes.NewReader(content), 1<<20, "application/pdf"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	var doc store.Document
	err = store.WithTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := store.InsertCloudConnection(ctx, tx, conn); err != nil {
			return err
		}
		if _, err := store.InsertDocument(ctx, tx, store.Document{ID: id, UserID: &owner, Filename: "router.pdf", ContentType: "application/pdf",
			SizeBytes: int64(len(content)), SHA256: sum[:], StorageKey: blob.StagingKey(id)}); err != nil {
			return err
		}
		doc, err = store.FinishDocument(ctx, tx, id, store.StatusReady, blob.FinalKey(&owner, id), nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	p := testenv.Start(t, run, nil, env)
	p.Addr("metrics")

	// What the relay would publish: the event, three times.
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: testenv.RedisClient(t, env["REDIS_URL"])}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(ev events.Envelope) {
		t.Helper()
		payload, _ := json.Marshal(ev)
		msg := message.NewMessage(ev.ID.String(), payload)
		msg.Metadata.Set(events.MetaType, ev.Type)
		if err := pub.Publish(events.StreamDocuments, msg); err != nil {
			t.Fatal(err)
		}
	}
	finalized, err := events.New(events.DocumentFinalized, "document", id, events.System, uuid.Must(uuid.NewV7()), nil, doc.EventData())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		publish(finalized)
	}
	key := "/DocuVault/" + id.String() + "/router.pdf"
	waitFor(t, p, "the copy", func() bool {
		rows, err := store.DocumentCloudSync(ctx, pool, id)
		return err == nil && len(rows) == 1 && rows[0].Status == store.SyncSynced
	})
	if got, ok := dav.ReadFile(key); !ok || !bytes.Equal(got, content) {
		t.Errorf("remote copy missing or different")
	}
	if dav.Puts() != 1 {
		t.Errorf("%d PUTs; want 1", dav.Puts())
	}
	var completed int
	if err := pool.QueryRow(ctx, `select count(*) from outbox where event_type = $1`, events.CloudSyncCompleted).Scan(&completed); err != nil {
		t.Fatal(err)
	}
	if completed != 1 {
		t.Errorf("%d completed events; want 1", completed)
	}

	// Deleted: the remote copy goes.
	var deleted events.Envelope
	err = store.WithTx(ctx, pool, func(tx pgx.Tx) error {
		d, err := store.MarkDeleted(ctx, tx, id)
		if err != nil {
			return err
		}
		deleted, err = events.New(events.DocumentDeleted, "document", id, events.Anonymous, uuid.Must(uuid.NewV7()), nil, d.EventData())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	publish(deleted)
	waitFor(t, p, "the removal", func() bool { return !dav.Exists(key) })
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v", err)
	}
	if strings.Contains(p.Log(), password) {
		t.Error("the WebDAV password is in the consumer's log")
	}
}

func waitFor(t *testing.T, p *testenv.Proc, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30 s; log:\n%s", what, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
