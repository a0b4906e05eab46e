package cloudsync_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

const (
	secretKey = "test-secret-key-0123456789abcdef0123456789"
	// canary is the WebDAV password: it must never show up in a log, an
	// error, an event or an audit row.
	canary = "canary-pw-5b1d9e0f"
)

// fastRetry retries within milliseconds, so tests see many attempts.
var fastRetry = cloudsync.RetryPolicy{MaxAttempts: 30, BaseDelay: 20 * time.Millisecond, MaxDelay: 150 * time.Millisecond}

type fixture struct {
	db, admin *pgxpool.Pool
	blobs     *blob.Store // DocuVault's own bucket
	remote    config.S3   // a second bucket, the S3 connections' target
	remoteS3  *blob.Store
	dav       *testenv.WebDAV
	conns     *cloudsync.Connector
	logs      *testenv.SyncBuffer
	log       *slog.Logger
	user      uuid.UUID // owns the fixture's connections and documents
}

func setup(t *testing.T) *fixture {
	t.Helper()
	db := testenv.NewDB(t)
	own, err := blob.New(testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	remote := testenv.S3(t)
	remoteS3, err := blob.New(remote)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := cloudsync.NewSealer(secretKey)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	admin := testenv.Pool(t, db.AdminDSN())
	return &fixture{
		db: testenv.Pool(t, db.AppURL), admin: admin, user: testenv.User(t, admin, ""),
		blobs: own, remote: remote, remoteS3: remoteS3,
		dav:   testenv.StartWebDAV(t, "alice", canary),
		conns: cloudsync.NewConnector(sealer),
		logs:  logs, log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (f *fixture) syncer(cfg cloudsync.Config) *cloudsync.Syncer {
	if cfg.Retry.MaxAttempts == 0 {
		cfg.Retry = fastRetry
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 10 * time.Millisecond
	}
	return cloudsync.New(f.log, f.db, f.blobs, f.conns, nil, cfg)
}

// connect stores a connection as the API does (validated, sealed).
func (f *fixture) connect(t *testing.T, provider string, settings, creds any, deleteRemote bool) store.CloudConnection {
	t.Helper()
	rawSettings, _ := json.Marshal(settings)
	rawCreds, _ := json.Marshal(creds)
	s, err := cloudsync.ParseSettings(provider, rawSettings)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudsync.ParseCredentials(provider, rawCreds)
	if err != nil {
		t.Fatal(err)
	}
	conn := store.CloudConnection{ID: uuid.Must(uuid.NewV7()), UserID: &f.user, Provider: provider, Name: testenv.Unique("conn-"),
		Settings: s, KeyVersion: cloudsync.KeyVersion, Status: store.ConnectionActive, DeleteRemote: deleteRemote}
	conn.Credentials = f.conns.Seal(conn.ID, c)
	err = store.WithTx(context.Background(), f.db, func(tx pgx.Tx) error {
		conn, err = store.InsertCloudConnection(context.Background(), tx, conn)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (f *fixture) webdavConn(t *testing.T, deleteRemote bool) store.CloudConnection {
	return f.connect(t, "webdav", map[string]any{"url": f.dav.URL, "prefix": "DocuVault/"},
		map[string]any{"username": f.dav.User, "password": f.dav.Password}, deleteRemote)
}

func (f *fixture) s3Conn(t *testing.T, deleteRemote bool) store.CloudConnection {
	return f.connect(t, "s3", map[string]any{"endpoint": f.remote.Endpoint.HostPort, "bucket": f.remote.Bucket,
		"prefix": "docuvault/", "use_ssl": false, "region": "us-east-1"},
		map[string]any{"access_key_id": f.remote.AccessKey, "secret_access_key": f.remote.SecretKey}, deleteRemote)
}

// readyDocument stores a finalised document of the fixture's user (row and object, as
// the finalizer leaves them) with its document.finalized event.
func (f *fixture) readyDocument(t *testing.T, content []byte) (store.Document, events.Envelope) {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	key := blob.FinalKey(&f.user, id)
	if _, err := f.blobs.Put(ctx, key, bytes.NewReader(content), 1<<30, "application/pdf"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	var doc store.Document
	var ev events.Envelope
	err := store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
		_, err := store.InsertDocument(ctx, tx, store.Document{ID: id, UserID: &f.user, Filename: "Report Q3 #1.pdf", ContentType: "application/pdf",
			SizeBytes: int64(len(content)), SHA256: sum[:], StorageKey: blob.StagingKey(id)})
		if err != nil {
			return err
		}
		if doc, err = store.FinishDocument(ctx, tx, id, store.StatusReady, key, nil); err != nil {
			return err
		}
		if ev, err = events.New(events.DocumentFinalized, "document", id, events.System, uuid.Must(uuid.NewV7()), nil, doc.EventData()); err != nil {
			return err
		}
		return store.Record(ctx, tx, ev, store.Origin{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return doc, ev
}

// deleteDocument deletes a document as the API does.
func (f *fixture) deleteDocument(t *testing.T, id uuid.UUID) events.Envelope {
	t.Helper()
	ctx := context.Background()
	var ev events.Envelope
	err := store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
		doc, err := store.MarkDeleted(ctx, tx, id)
		if err != nil {
			return err
		}
		if ev, err = events.New(events.DocumentDeleted, "document", id, events.Actor{Type: "user", ID: &f.user}, uuid.Must(uuid.NewV7()), nil, doc.EventData()); err != nil {
			return err
		}
		return store.Record(ctx, tx, ev, store.Origin{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (f *fixture) row(t *testing.T, doc uuid.UUID, conn uuid.UUID) store.CloudSync {
	t.Helper()
	rows, err := store.DocumentCloudSync(context.Background(), f.db, doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.ConnectionID == conn {
			return r
		}
	}
	t.Fatalf("no cloud_sync row for document %s on connection %s", doc, conn)
	return store.CloudSync{}
}

// outboxEvents returns the events of type typ in the outbox (nothing
// publishes them in these tests).
func (f *fixture) outboxEvents(t *testing.T, typ string) []events.Envelope {
	t.Helper()
	rows, err := f.admin.Query(context.Background(), `select payload::text from outbox where event_type = $1 order by id`, typ)
	if err != nil {
		t.Fatal(err)
	}
	payloads, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Envelope
	for _, p := range payloads {
		var ev events.Envelope
		if err := json.Unmarshal([]byte(p), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func (f *fixture) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := f.admin.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// assertNoCanary fails if the canary appears in the logs, the outbox, the
// audit log, or any text column of the sync state or the connections.
func (f *fixture) assertNoCanary(t *testing.T) {
	t.Helper()
	if strings.Contains(f.logs.String(), canary) {
		t.Errorf("the password is in the logs:\n%s", f.logs.String())
	}
	var leaks int
	err := f.admin.QueryRow(context.Background(), `select
		(select count(*) from outbox where payload::text like '%' || $1 || '%') +
		(select count(*) from audit_log where details::text like '%' || $1 || '%') +
		(select count(*) from cloud_sync where coalesce(last_error, '') like '%' || $1 || '%') +
		(select count(*) from cloud_connections where coalesce(last_error, '') like '%' || $1 || '%'
			or settings::text like '%' || $1 || '%' or position(convert_to($1, 'UTF8') in credentials) > 0)`,
		canary).Scan(&leaks)
	if err != nil {
		t.Fatal(err)
	}
	if leaks != 0 {
		t.Errorf("the password appears in %d stored rows", leaks)
	}
}

// eventually polls cond (bounded) until it holds.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomContent(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func remoteS3Object(t *testing.T, s *blob.Store, key string) ([]byte, bool) {
	t.Helper()
	obj, _, err := s.Open(context.Background(), key)
	if err != nil {
		return nil, false
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

func TestSealer(t *testing.T) {
	t.Parallel()
	s, err := cloudsync.NewSealer(secretKey)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7())
	plain := []byte(`{"username":"alice","password":"` + canary + `"}`)
	sealed := s.Seal(id, plain)
	if bytes.Contains(sealed, []byte(canary)) || bytes.Contains(sealed, plain) {
		t.Fatal("sealed credentials contain the plaintext")
	}
	if again := s.Seal(id, plain); bytes.Equal(again, sealed) {
		t.Error("two seals of the same plaintext are equal: the nonce is not random")
	}
	got, err := s.Open(id, sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %q, %v", got, err)
	}
	other, _ := cloudsync.NewSealer(secretKey + "-rotated")
	if _, err := other.Open(id, sealed); err != cloudsync.ErrUnsealable {
		t.Errorf("opened with another SECRET_KEY: %v", err)
	}
	if _, err := s.Open(uuid.Must(uuid.NewV7()), sealed); err != cloudsync.ErrUnsealable {
		t.Errorf("opened for another connection id: %v", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := s.Open(id, tampered); err != cloudsync.ErrUnsealable {
		t.Errorf("opened tampered bytes: %v", err)
	}
	if _, err := cloudsync.NewSealer("k3y-xyz"); err == nil || strings.Contains(err.Error(), "k3y-xyz") {
		t.Errorf("a short key: error %v (must name the key, not repeat it)", err)
	}
}

func TestRetryPolicyBacksOffToACap(t *testing.T) {
	t.Parallel()
	p := cloudsync.RetryPolicy{MaxAttempts: 10, BaseDelay: time.Second, MaxDelay: 30 * time.Second}
	prevMax := time.Duration(0)
	for n := 1; n <= 10; n++ {
		want := min(time.Second<<(n-1), 30*time.Second)
		for range 50 {
			d := p.Delay(n)
			if d < want*8/10 || d > want*12/10 {
				t.Fatalf("delay after attempt %d = %v; want %v ±20%%", n, d, want)
			}
		}
		if want < prevMax {
			t.Fatalf("backoff shrank at attempt %d", n)
		}
		prevMax = want
	}
}

// A finalised document is copied to every connection of its owner, with
// one completed event each, and its state says where and with which ETag.
func TestCopiesToS3AndWebDAV(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dav, s3 := f.webdavConn(t, true), f.s3Conn(t, true)
	content := randomContent(300 << 10)
	doc, ev := f.readyDocument(t, content)
	s := f.syncer(cloudsync.Config{})
	ctx := context.Background()
	if err := s.HandleEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if n := s.Drain(ctx); n != 2 {
		t.Errorf("%d attempts; want 2", n)
	}

	davRow, s3Row := f.row(t, doc.ID, dav.ID), f.row(t, doc.ID, s3.ID)
	wantKey := "docuvault/" + doc.ID.String() + "/Report Q3 #1.pdf"
	if s3Row.Status != store.SyncSynced || s3Row.RemoteKey != wantKey || s3Row.ETag == nil || s3Row.SyncedAt == nil || s3Row.Attempts != 1 {
		t.Errorf("s3 row %+v", s3Row)
	}
	if got, ok := remoteS3Object(t, f.remoteS3, wantKey); !ok || !bytes.Equal(got, content) {
		t.Errorf("S3 copy missing or different (found %v)", ok)
	}
	if davRow.Status != store.SyncSynced || davRow.RemoteKey != "DocuVault/"+doc.ID.String()+"/Report Q3 #1.pdf" || davRow.ETag == nil {
		t.Errorf("webdav row %+v", davRow)
	}
	if got, ok := f.dav.ReadFile("/DocuVault/" + doc.ID.String() + "/Report Q3 #1.pdf"); !ok || !bytes.Equal(got, content) {
		t.Errorf("WebDAV copy missing or different (found %v)", ok)
	}

	completed := f.outboxEvents(t, events.CloudSyncCompleted)
	if len(completed) != 2 {
		t.Fatalf("%d completed events; want 2", len(completed))
	}
	for _, c := range completed {
		var data events.CloudSync
		_ = json.Unmarshal(c.Data, &data)
		if c.AggregateType != "document" || c.AggregateID != doc.ID || c.Stream() != events.StreamDocuments ||
			c.CausationID == nil || *c.CausationID != ev.ID || c.CorrelationID != ev.CorrelationID ||
			data.DocumentID != doc.ID || data.Operation != "copy" || data.ETag == "" || data.SizeBytes != int64(len(content)) {
			t.Errorf("completed event %+v data %+v", c, data)
		}
	}
	if n := f.count(t, `select count(*) from audit_log where action = $1 and aggregate_id = $2`, events.CloudSyncCompleted, doc.ID); n != 2 {
		t.Errorf("%d audit rows for completed; want 2", n)
	}
	if n := f.count(t, `select count(*) from cloud_connections where last_synced_at is not null`); n != 2 {
		t.Errorf("%d connections with last_synced_at; want 2", n)
	}
	f.assertNoCanary(t)
}

// The same document.finalized delivered many times, concurrently and
// then again, to several consumers: one copy on each remote (one PUT) and
// one completed event each.
func TestDuplicateAndConcurrentDeliveryCopiesOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dav, s3 := f.webdavConn(t, true), f.s3Conn(t, true)
	content := randomContent(64 << 10)
	doc, ev := f.readyDocument(t, content)
	syncers := []*cloudsync.Syncer{f.syncer(cloudsync.Config{}), f.syncer(cloudsync.Config{}), f.syncer(cloudsync.Config{})}
	ctx := context.Background()

	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 8 {
		wg.Go(func() {
			<-start
			if err := syncers[i%len(syncers)].HandleEvent(ctx, ev); err != nil {
				t.Error(err)
			}
		})
	}
	for _, s := range syncers {
		wg.Go(func() {
			<-start
			for range 5 {
				s.Drain(ctx)
			}
		})
	}
	close(start)
	wg.Wait()
	// Late duplicates, after everything settled.
	for _, s := range syncers {
		if err := s.HandleEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
		s.Drain(ctx)
	}

	if got := f.dav.Puts(); got != 1 {
		t.Errorf("%d PUTs to WebDAV; want 1", got)
	}
	var keys []string
	for obj := range f.remoteS3.Client().ListObjects(ctx, f.remote.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		keys = append(keys, obj.Key)
	}
	if len(keys) != 1 {
		t.Errorf("S3 holds %v; want one copy", keys)
	}
	for _, c := range []store.CloudConnection{dav, s3} {
		if r := f.row(t, doc.ID, c.ID); r.Status != store.SyncSynced || r.Attempts != 1 {
			t.Errorf("%s row: %s after %d attempts; want synced after 1", c.Provider, r.Status, r.Attempts)
		}
	}
	if n := len(f.outboxEvents(t, events.CloudSyncCompleted)); n != 2 {
		t.Errorf("%d completed events; want 2 (one per connection)", n)
	}
	if n := f.count(t, `select count(*) from processed_events where consumer = $1`, cloudsync.ConsumerName); n != 1 {
		t.Errorf("%d processed events; want 1", n)
	}
}

// The remote is down (connections refused, or 503): the copy is retried
// with growing delays, and once it is back the document is synced.
func TestRemoteDownThenBack(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"stopped", "unavailable"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			conn := f.webdavConn(t, true)
			content := randomContent(10 << 10)
			doc, ev := f.readyDocument(t, content)
			if mode == "stopped" {
				f.dav.Stop()
			} else {
				f.dav.SetUnavailable(true)
			}
			s := f.syncer(cloudsync.Config{Retry: cloudsync.RetryPolicy{MaxAttempts: 50, BaseDelay: 30 * time.Millisecond, MaxDelay: 200 * time.Millisecond}})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); s.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			if err := s.HandleEvent(ctx, ev); err != nil {
				t.Fatal(err)
			}

			// Failures are recorded with a delay that grows.
			var delays []time.Duration
			lastAttempt := 0
			eventually(t, 20*time.Second, "four failed attempts", func() bool {
				// A failed attempt leaves the row pending with an error and
				// due after the backoff (a claimed one is due after the
				// lease of two minutes and more instead).
				r := f.row(t, doc.ID, conn.ID)
				if delay := r.NextAttemptAt.Sub(r.UpdatedAt); r.Attempts > lastAttempt && r.LastError != nil && delay > 0 && delay < time.Minute {
					lastAttempt = r.Attempts
					delays = append(delays, delay)
				}
				return len(delays) >= 4
			})
			r := f.row(t, doc.ID, conn.ID)
			if r.Status != store.SyncPending || r.LastError == nil {
				t.Fatalf("while down: %+v", r)
			}
			want := "connection refused"
			if mode == "unavailable" {
				want = "503"
			}
			if !strings.Contains(*r.LastError, want) {
				t.Errorf("last_error %q does not say %q", *r.LastError, want)
			}
			if delays[len(delays)-1] <= delays[0] {
				t.Errorf("delays did not grow: %v", delays)
			}
			if n := len(f.outboxEvents(t, events.CloudSyncCompleted)); n != 0 {
				t.Fatalf("%d completed events while down", n)
			}

			if mode == "stopped" {
				f.dav.Start()
			} else {
				f.dav.SetUnavailable(false)
			}
			eventually(t, 20*time.Second, "the copy once the remote is back", func() bool {
				return f.row(t, doc.ID, conn.ID).Status == store.SyncSynced
			})
			r = f.row(t, doc.ID, conn.ID)
			if r.Attempts <= lastAttempt || r.LastError != nil {
				t.Errorf("synced row %+v; want more than %d attempts and no error", r, lastAttempt)
			}
			if got, ok := f.dav.ReadFile("/" + r.RemoteKey); !ok || !bytes.Equal(got, content) {
				t.Error("the remote copy is missing or different")
			}
			if n := len(f.outboxEvents(t, events.CloudSyncCompleted)); n != 1 {
				t.Errorf("%d completed events; want 1", n)
			}
			f.assertNoCanary(t)
		})
	}
}

// Deleting a document removes its remote copy on connections with
// delete_remote, and keeps it on the others.
func TestDeleteRemovesRemoteCopyUnlessKept(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dav, s3 := f.webdavConn(t, true), f.s3Conn(t, false)
	doc, ev := f.readyDocument(t, randomContent(20<<10))
	s := f.syncer(cloudsync.Config{})
	ctx := context.Background()
	if err := s.HandleEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	s.Drain(ctx)
	davKey, s3Key := f.row(t, doc.ID, dav.ID).RemoteKey, f.row(t, doc.ID, s3.ID).RemoteKey
	if _, ok := f.dav.ReadFile("/" + davKey); !ok {
		t.Fatal("not copied to WebDAV")
	}

	del := f.deleteDocument(t, doc.ID)
	for range 2 { // a duplicate too
		if err := s.HandleEvent(ctx, del); err != nil {
			t.Fatal(err)
		}
		s.Drain(ctx)
	}
	if f.dav.Exists("/"+davKey) || f.dav.Exists("/DocuVault/"+doc.ID.String()) {
		t.Error("the WebDAV copy (or its folder) is still there")
	}
	if !f.dav.Exists("/DocuVault") {
		t.Error("the prefix folder went too")
	}
	if r := f.row(t, doc.ID, dav.ID); r.Operation != store.SyncRemove || r.Status != store.SyncRemoved {
		t.Errorf("webdav row %s/%s; want remove/removed", r.Operation, r.Status)
	}
	if _, ok := remoteS3Object(t, f.remoteS3, s3Key); !ok {
		t.Error("the S3 copy was removed although delete_remote is false")
	}
	if r := f.row(t, doc.ID, s3.ID); r.Status != store.SyncSynced {
		t.Errorf("s3 row %s; want synced (kept)", r.Status)
	}
	removed := f.outboxEvents(t, events.CloudSyncRemoved)
	if len(removed) != 1 || removed[0].CausationID == nil || *removed[0].CausationID != del.ID {
		t.Errorf("removed events %+v; want one caused by the delete", removed)
	}
}

// Events out of order: a document deleted before its copy was made gets
// no copy, whether the delete is handled before the copy is attempted or
// before the finalized event arrives at all.
func TestDeleteBeforeCopyLeavesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	conn := f.webdavConn(t, true)
	s := f.syncer(cloudsync.Config{})
	ctx := context.Background()

	doc1, fin1 := f.readyDocument(t, randomContent(1000))
	if err := s.HandleEvent(ctx, fin1); err != nil {
		t.Fatal(err)
	}
	if err := s.HandleEvent(ctx, f.deleteDocument(t, doc1.ID)); err != nil {
		t.Fatal(err)
	}
	s.Drain(ctx)
	if r := f.row(t, doc1.ID, conn.ID); r.Status != store.SyncRemoved {
		t.Errorf("row %s/%s; want removed", r.Operation, r.Status)
	}

	doc2, fin2 := f.readyDocument(t, randomContent(1000))
	if err := s.HandleEvent(ctx, f.deleteDocument(t, doc2.ID)); err != nil {
		t.Fatal(err)
	}
	if err := s.HandleEvent(ctx, fin2); err != nil {
		t.Fatal(err)
	}
	s.Drain(ctx)
	if n := f.count(t, `select count(*) from cloud_sync where document_id = $1`, doc2.ID); n != 0 {
		t.Errorf("%d sync rows for a document deleted before its finalized event", n)
	}
	if f.dav.Puts() != 0 {
		t.Errorf("%d PUTs; want none", f.dav.Puts())
	}
	if n := len(f.outboxEvents(t, events.CloudSyncCompleted)); n != 0 {
		t.Errorf("%d completed events; want none", n)
	}
}

// A paused connection holds its copies until it is active again.
func TestPausedConnectionHoldsCopies(t *testing.T) {
	t.Parallel()
	f := setup(t)
	conn := f.webdavConn(t, true)
	ctx := context.Background()
	if _, err := f.admin.Exec(ctx, `update cloud_connections set status = 'paused' where id = $1`, conn.ID); err != nil {
		t.Fatal(err)
	}
	doc, ev := f.readyDocument(t, randomContent(1000))
	s := f.syncer(cloudsync.Config{})
	if err := s.HandleEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if n := s.Drain(ctx); n != 0 || f.row(t, doc.ID, conn.ID).Status != store.SyncPending {
		t.Fatalf("a paused connection was synced (%d attempts)", n)
	}
	if _, err := f.admin.Exec(ctx, `update cloud_connections set status = 'active' where id = $1`, conn.ID); err != nil {
		t.Fatal(err)
	}
	s.Drain(ctx)
	if r := f.row(t, doc.ID, conn.ID); r.Status != store.SyncSynced {
		t.Errorf("status %s after resuming; want synced", r.Status)
	}
}

// After the last attempt the sync fails for good: cloud_sync.failed, the
// connection marked failing. A remote that quotes the secret back in its
// errors does not get it into the state, the events or the logs.
func TestPermanentFailureEmitsFailedWithoutSecrets(t *testing.T) {
	t.Parallel()
	f := setup(t)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>`+
			`<Message>Access denied for secret `+canary+`</Message><RequestId>1</RequestId></Error>`)
	}))
	t.Cleanup(hostile.Close)
	conn := f.connect(t, "s3", map[string]any{"endpoint": strings.TrimPrefix(hostile.URL, "http://"), "bucket": "remote-bucket",
		"region": "us-east-1"}, map[string]any{"access_key_id": "AKIDEXAMPLE", "secret_access_key": canary}, true)
	doc, ev := f.readyDocument(t, randomContent(1000))
	s := f.syncer(cloudsync.Config{Retry: cloudsync.RetryPolicy{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond}})
	ctx := context.Background()
	if err := s.HandleEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the sync to fail for good", func() bool {
		s.Drain(ctx)
		return f.row(t, doc.ID, conn.ID).Status == store.SyncFailed
	})
	r := f.row(t, doc.ID, conn.ID)
	if r.Attempts != 3 || r.LastError == nil || !strings.Contains(*r.LastError, "Access denied") {
		t.Errorf("failed row %+v", r)
	}
	failed := f.outboxEvents(t, events.CloudSyncFailed)
	if len(failed) != 1 {
		t.Fatalf("%d failed events; want 1", len(failed))
	}
	var data events.CloudSync
	_ = json.Unmarshal(failed[0].Data, &data)
	if data.Operation != "copy" || data.Attempts != 3 || data.Error == "" || data.ConnectionID != conn.ID {
		t.Errorf("failed event data %+v", data)
	}
	var status, lastError string
	if err := f.admin.QueryRow(ctx, `select status, last_error from cloud_connections where id = $1`, conn.ID).Scan(&status, &lastError); err != nil {
		t.Fatal(err)
	}
	if status != store.ConnectionFailing || lastError == "" {
		t.Errorf("connection %s (%q); want failing with the error", status, lastError)
	}
	// The connection's event carries the error too, redacted like the
	// rest (assertNoCanary below).
	if failing := f.outboxEvents(t, events.CloudConnectionFailing); len(failing) != 1 || !strings.Contains(string(failing[0].Data), "Access denied") {
		t.Errorf("cloud_connection.failing events %+v; want one with the error", failing)
	}
	if !strings.Contains(f.logs.String(), "failed for good") {
		t.Error("the final failure was not logged")
	}
	// Nothing more is attempted.
	if n := s.Drain(ctx); n != 0 {
		t.Errorf("%d attempts after the final failure", n)
	}
	f.assertNoCanary(t)
}
